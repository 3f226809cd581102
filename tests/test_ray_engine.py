"""`decode.engine: ray`: the same unit of work as Ray tasks on a local Ray started for the run."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config import DecodeConfig
from pipeline.data.ingest import ingest, start_local_ray
from pipeline.data.manifest import load_manifest
from pipeline.data.synthetic import FORMATS, clip_specs, write_clip
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def files(folder: Path) -> dict[str, bytes]:
    """Every output file by relative path (the hash cache holds inodes and mtimes: skipped)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*")
            if path.is_file() and path.name != ".hash-cache.json"}


def test_ray_engine_writes_the_local_pools_bytes(sample_videos, tmp_path):
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        summary = ingest(sample_videos / "videos", sample_videos / "labels.csv", out,
                         DecodeConfig(workers=2, engine=engine), progress=False)
        assert summary.decoded == 8 and summary.counts["ok"] == 8
        outputs[engine] = files(out)
    assert outputs["ray"].keys() == outputs["local"].keys()
    assert [name for name in outputs["local"]
            if outputs["local"][name] != outputs["ray"][name]] == []
    rerun = ingest(sample_videos / "videos", sample_videos / "labels.csv", tmp_path / "ray",
                   DecodeConfig(workers=2, engine="ray"), progress=False)
    assert rerun.decoded == 0 and rerun.reused == 8  # receipts keep it incremental


DRIVER = """
import sys
from pathlib import Path
from pipeline.config import DecodeConfig
from pipeline.data.ingest import ingest, start_local_ray
from pipeline.data.manifest import load_manifest
from pipeline.data.synthetic import FORMATS, clip_specs, write_clip
from tests.conftest import REPO
videos = Path(sys.argv[1])
ingest(videos / "videos", videos / "labels.csv", Path(sys.argv[2]),
       DecodeConfig(workers=1, engine="ray"), progress=False)
"""


def test_a_killed_ray_driver_resumes_from_its_receipts(sample_videos, tmp_path):
    """SIGKILL the driver once a video is done: the rerun reuses what the tasks finished
    (receipts written by the tasks themselves) and ends with the local pool's bytes."""
    out = tmp_path / "ray"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(sample_videos), str(out)],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list((out / "shards").glob("*.receipt.json")):
        assert driver.poll() is None and time.monotonic() < deadline, "no video finished"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert not (out / "videos.parquet").exists()  # killed before the manifests
    finished = len(list((out / "shards").glob("*.receipt.json")))
    resumed = ingest(sample_videos / "videos", sample_videos / "labels.csv", out,
                     DecodeConfig(workers=2, engine="ray"), progress=False)
    assert resumed.reused >= finished >= 1 and resumed.decoded == 8 - resumed.reused
    local = tmp_path / "local"
    ingest(sample_videos / "videos", sample_videos / "labels.csv", local,
           DecodeConfig(workers=2), progress=False)
    assert files(out) == files(local)


def test_a_ray_worker_killed_mid_task_fails_only_its_video(tmp_path):
    """SIGKILL the Ray worker process while it decodes a long clip: that video is `crashed`,
    named; the other videos decode."""
    videos = tmp_path / "videos"
    specs = clip_specs(3, seed=11)
    write_clip(replace(specs[0], seconds=90.0, video_format=FORMATS[0]), videos / "long.mp4")
    for index, spec in enumerate(specs[1:]):
        write_clip(spec, videos / f"short{index}{spec.video_format.extension}")
    out = tmp_path / "out"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER.replace(
        'videos / "videos", videos / "labels.csv"', "videos, None"), str(videos), str(out)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, killed = time.monotonic() + 240, None
    while killed is None:
        assert driver.poll() is None and time.monotonic() < deadline, "no worker seen"
        for status in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if status.read_bytes().startswith(b"ray::decode_video"):
                    killed = int(status.parent.name)
                    os.kill(killed, signal.SIGKILL)
                    break
            except OSError:
                continue
        time.sleep(0.02)
    assert driver.wait(timeout=240) == 0
    videos_table = load_manifest(out).videos
    crashed = videos_table[videos_table["status"] == "crashed"]
    assert crashed["source_path"].tolist() == ["long.mp4"]  # decoded first: largest file
    assert (videos_table["status"] == "ok").sum() == 2
    assert crashed["error"].iloc[0].endswith("the Ray task died on this video: "
                                             "WorkerCrashedError")


def test_a_local_ray_runs_its_workers_at_the_callers_priority():
    """Ray's default runs workers at nice 15, below every other process (a training job would
    take the cores from the decode); a Ray started for the stage uses the stage's priority."""
    import ray

    start_local_ray(1)
    try:
        worker_nice = ray.get(ray.remote(lambda: os.nice(0)).remote())
    finally:
        ray.shutdown()
    assert worker_nice == os.nice(0)


def test_decode_workers_start_without_the_heavy_imports():
    """A Ray worker (or any spawned one) imports the decode module before its first video:
    pandas and pyarrow are left to the parent, which writes the manifests; pydicom and scipy
    to the first DICOM and the first scan area."""
    code = ("import sys, pipeline.data.decode; print(sorted("
            "{'pandas', 'pyarrow', 'torch', 'pydicom', 'scipy'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
