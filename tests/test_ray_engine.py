"""`decode.engine: ray`: the same unit of work as Ray tasks on a local Ray started for the run."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import DecodeConfig
from pipeline.data.ingest import ingest
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
from pipeline.data.ingest import ingest
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
