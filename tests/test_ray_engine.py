"""`decode.engine: ray`: the same unit of work as Ray tasks on a local Ray started for the run."""

from pathlib import Path

import pytest

from pipeline.config import DecodeConfig
from pipeline.data.ingest import ingest

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
