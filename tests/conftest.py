"""Shared fixtures: real data locations (skipped where absent) and small generated datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import DecodeConfig
from pipeline.data.ingest import ingest
from pipeline.data.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("USPIPE_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """``../shared/data/<name>`` or a clean skip where it is absent (e.g. on a user's machine)."""
    root = SHARED_DATA / name
    if not (root / "videos").is_dir() or not (root / "labels.csv").is_file():
        pytest.skip(f"real dataset {name} not found at {root}")
    return root


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight synthetic clips (every container, several rates) with labels.csv."""
    folder = tmp_path_factory.mktemp("sample")
    write_dataset(folder, count=8, seed=7, group_prefix="test")
    return folder


@pytest.fixture(scope="session")
def decoded_sample(sample_videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``sample_videos`` decoded at 3 fps: a dataset folder with shards and manifests."""
    out = tmp_path_factory.mktemp("decoded") / "sample"
    ingest(sample_videos / "videos", sample_videos / "labels.csv", out,
           DecodeConfig(workers=1), progress=False)
    return out
