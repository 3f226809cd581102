"""``dvc repro`` on the embedded sample in a fresh copy of the project; a rerun is a no-op."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.data.synthetic_exports import PATIENT_ID, PATIENT_NAME
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def project_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, check=True, capture_output=True, text=True).stdout
    return [line for line in listed.splitlines() if (REPO / line).is_file()]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in project_files():
        if name.startswith("data/"):
            continue
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    (root / "dvc.lock").unlink(missing_ok=True)
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(command, cwd=root, check=True)
    return root


def dvc(project: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_repro_builds_everything_then_is_a_no_op(project):
    first = dvc(project, "repro")
    for stage in ("sample_data", "decode@pretrain", "decode@downstream", "split@pretrain",
                  "split@downstream"):
        assert f"Running stage '{stage}'" in first
    for dataset, folds in (("pretrain", False), ("downstream", True)):
        videos = pd.read_parquet(project / "data" / dataset / "videos.parquet")
        assert (videos["status"] == "ok").all() and len(videos) > 30
        split = pd.read_csv(project / "data" / dataset / "split.csv")
        assert set(split["video_id"]) == set(videos["video_id"])
        assert ("fold" in split.columns) == folds

    # Only the inventory stages run again (always_changed: they re-list the roots, since DVC
    # cannot hash an arbitrary root); their unchanged listings leave every other stage cached.
    # the sample's DICOM cines went through every stage; no identifying value came out
    assert {"ok"} == set(pd.read_parquet(project / "data/pretrain/videos.parquet").loc[
        lambda v: v["source_path"].str.endswith(".dcm"), "status"])
    secrets = [PATIENT_NAME, PATIENT_ID, "19800101", "20260101"]
    written = [path for folder in ("data/pretrain", "data/downstream", "models", "results")
               for path in (project / folder).rglob("*") if path.is_file()]
    for path in [*written, project / "dvc.lock"]:
        assert not [s for s in secrets if s.encode() in path.read_bytes()], path
    assert not [s for s in secrets if s in first]

    # the image tasks ran on the lesion phantom: both kinds' metrics, bounded
    for task in ("lesion_classification", "lesion_segmentation"):
        assert f"Running stage 'task@{task}'" in first
    classification = json.loads(
        (project / "results/tasks/lesion_classification/metrics.json").read_text())
    assert classification["binary"]["last_epoch"]["positive"] == "malignant"
    assert classification["last_epoch"]["pooled"]["samples"] == 60
    segmentation = json.loads(
        (project / "results/tasks/lesion_segmentation/metrics.json").read_text())
    assert segmentation["last_epoch"]["images"] == 60 and not segmentation["excluded"]
    assert 0 <= segmentation["last_epoch"]["pooled"]["dice"] <= 1

    second = dvc(project, "repro")
    assert sorted(ran(second)) == ["inventory@downstream", "inventory@lesions",
                                   "inventory@pretrain"]
    status = dvc(project, "status")
    assert "decode@" not in status and "split@" not in status


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def test_changing_split_params_reruns_only_the_splits(project):
    dvc(project, "repro")
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("val_fraction: 0.2", "val_fraction: 0.25"))
    rerun = dvc(project, "repro")
    assert "Running stage 'split@pretrain'" in rerun
    assert "Running stage 'decode@pretrain'" not in rerun
    assert "Running stage 'sample_data'" not in rerun


def test_exp_run_on_a_hostile_root_finishes_and_lists_every_entry(project, tmp_path):
    """`dvc exp run -S data.downstream.root=...`, the documented way to run your own data, on a
    root with a named pipe, a dangling link, a link loop and links out of the root: DVC never
    hashes the root (the inventory stage lists it), so nothing hangs or fails."""
    dvc(project, "repro", "decode@downstream")
    root = tmp_path / "hostile"
    (root / "videos").mkdir(parents=True)
    clips = sorted((project / "data/sample/downstream/videos").rglob("*.mp4"))[:2]
    for clip in clips:
        shutil.copy(clip, root / "videos" / clip.name)
    outside = tmp_path / "elsewhere.mp4"
    shutil.copy(clips[0], outside)
    os.mkfifo(root / "videos" / "pipe.mp4")
    (root / "videos" / "dangling.mp4").symlink_to(tmp_path / "nothing.mp4")
    (root / "videos" / "loop_a.mp4").symlink_to(root / "videos" / "loop_b.mp4")
    (root / "videos" / "loop_b.mp4").symlink_to(root / "videos" / "loop_a.mp4")
    (root / "videos" / "outside.mp4").symlink_to(outside)
    (root / "videos" / "inside.mp4").symlink_to(root / "videos" / clips[1].name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "exp", "run", "decode@downstream",
         "-S", f"data.downstream.root={root}", "-S", "data.downstream.labels=null"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    videos = pd.read_parquet(project / "data/downstream/videos.parquet")
    status = dict(zip(videos["source_path"], videos["status"], strict=True))
    assert status == {clips[0].name: "ok", clips[1].name: "ok", "inside.mp4": "ok",
                      "pipe.mp4": "special_file", "dangling.mp4": "broken_link",
                      "loop_a.mp4": "link_loop", "loop_b.mp4": "link_loop",
                      "outside.mp4": "outside_root"}
