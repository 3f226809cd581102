"""``dvc repro`` on the embedded sample in a fresh copy of the project; a rerun is a no-op."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

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

    second = dvc(project, "repro")
    assert "Running stage" not in second
    assert "Data and pipelines are up to date" in second
    assert dvc(project, "status").strip().endswith("Data and pipelines are up to date.")


def test_changing_split_params_reruns_only_the_splits(project):
    dvc(project, "repro")
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("val_fraction: 0.2", "val_fraction: 0.25"))
    rerun = dvc(project, "repro")
    assert "Running stage 'split@pretrain'" in rerun
    assert "Running stage 'decode@pretrain'" not in rerun
    assert "Running stage 'sample_data'" not in rerun
