"""Training input read from object storage: a real S3-compatible server (moto's server mode,
in its own process on 127.0.0.1, :mod:`tests.s3_server`) holding a decoded dataset, read in
place by URL; the DataLoader's worker processes inherit its AWS variables."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import fsspec
import pandas as pd
import pytest
import torch
import yaml

from pipeline.config import TrainConfig
from pipeline.data.frames import frame_locations
from pipeline.data.manifest import (
    SPLIT_FILE,
    VIDEOS_FILE,
    ManifestError,
    load_manifest,
    load_split,
)
from pipeline.data.splits import split_table
from pipeline.data.storage import dataset_path, is_remote
from pipeline.pretrain.engine import BACKBONE, CARD, pretrain
from tests.conftest import REPO
from tests.s3_server import local_s3_server

pytestmark = pytest.mark.slow
BUCKET = "uspipe-test"
TWO_EPOCHS = TrainConfig(epochs=2, image_size=32, batch_size=4, workers=2, constant_epochs=1)


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    with local_s3_server(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def dataset_on_s3(decoded_sample, s3_endpoint, tmp_path_factory) -> tuple[Path, str]:
    """The decoded sample with its split, on disk and uploaded as it is to ``s3://``."""
    local = tmp_path_factory.mktemp("data") / "sample"
    shutil.copytree(decoded_sample, local)
    split = split_table(load_manifest(local).videos, 0.25, 0)
    (local / SPLIT_FILE).write_text(split.to_csv(index=False))
    url = f"s3://{BUCKET}/data/sample"
    fsspec.filesystem("s3").put(f"{local}/", url, recursive=True)
    return local, url


def test_a_url_is_remote_and_a_folder_or_file_url_is_local(tmp_path):
    assert is_remote(dataset_path("s3://bucket/data"))
    assert dataset_path(f"file://{tmp_path}") == tmp_path
    assert dataset_path(str(tmp_path)) == tmp_path and not is_remote(tmp_path)


def test_manifests_on_s3_read_and_checked_as_on_disk(dataset_on_s3):
    local, url = dataset_on_s3
    on_disk, remote = load_manifest(local), load_manifest(url)
    assert remote.videos.equals(on_disk.videos) and remote.frames.equals(on_disk.frames)
    s3 = fsspec.filesystem("s3")
    damaged = f"s3://{BUCKET}/data/damaged"
    s3.copy(f"{url}/", damaged, recursive=True)
    content = bytearray((local / VIDEOS_FILE).read_bytes())
    content[len(content) // 2] ^= 0xFF
    s3.pipe(f"{damaged}/{VIDEOS_FILE}", bytes(content))
    with pytest.raises(ManifestError, match=f"{damaged}/{VIDEOS_FILE}: SHA-256 differs"):
        load_manifest(damaged)
    with pytest.raises(FileNotFoundError, match=f"no manifest in s3://{BUCKET}/data/absent"):
        load_manifest(f"s3://{BUCKET}/data/absent")


def test_two_epochs_read_from_s3_give_the_weights_read_from_disk(dataset_on_s3, tmp_path):
    """Worker processes (2) read every frame by byte range from the server, or from a local
    cache of whole shards fetched from it."""
    local, url = dataset_on_s3
    cache = tmp_path / "cache"
    cards = {}
    for name, manifest in (("disk", load_manifest(local)), ("s3", load_manifest(url)),
                           ("s3+cache", load_manifest(url, shard_cache=cache))):
        cards[name], _ = pretrain(manifest, manifest.videos, TWO_EPOCHS, tmp_path / name,
                                  progress=False, log_metrics=False)
    weights = {name: torch.load(tmp_path / name / BACKBONE, weights_only=True) for name in cards}
    for name in ("s3", "s3+cache"):
        assert weights[name].keys() == weights["disk"].keys()
        assert all(torch.equal(weights["disk"][key], weights[name][key])
                   for key in weights["disk"])
    untimed = {name: replace(card, final_losses={
        term: value for term, value in card.final_losses.items()
        if term not in ("epoch_s", "images_per_s")}) for name, card in cards.items()}
    assert untimed["disk"] == untimed["s3"] == untimed["s3+cache"]  # fingerprint, losses...
    folder = load_manifest(url, shard_cache=cache).shard_cache
    copies = {path.relative_to(folder) for path in cache.rglob("*") if path.is_file()}
    assert copies == {path.relative_to(local) for path in local.rglob("*.tar")}  # all, once
    assert all((folder / path).read_bytes() == (local / path).read_bytes() for path in copies)


def test_the_cache_is_ignored_on_disk_and_keyed_by_the_frame_table(dataset_on_s3, tmp_path):
    local, url = dataset_on_s3
    assert load_manifest(local, shard_cache=tmp_path).shard_cache is None
    first, again = (load_manifest(url, shard_cache=tmp_path) for _ in range(2))
    assert first.shard_cache == again.shard_cache and first.shard_cache.parent == tmp_path


def test_the_pretrain_stage_takes_a_url(dataset_on_s3, tmp_path):
    local, url = dataset_on_s3
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(epochs=1, image_size=32, batch_size=4, workers=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(
        [sys.executable, str(REPO / "stages" / "pretrain.py"), "--dataset", "sample", "--data",
         url.rsplit("/", 1)[0], "--out", "models"], cwd=tmp_path, capture_output=True,
        text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "models" / BACKBONE).is_file() and (tmp_path / "models" / CARD).is_file()
    train = (pd.read_csv(local / SPLIT_FILE)["split"] == "train").sum()
    assert 0 < train < 8 and f"on {train} videos" in done.stdout  # the split, from the bucket


def test_a_missing_split_on_s3_names_the_url(dataset_on_s3):
    _, url = dataset_on_s3
    assert len(load_split(url)) == len(load_manifest(url).videos)
    with pytest.raises(FileNotFoundError, match=f"no {SPLIT_FILE} in s3://{BUCKET}/nowhere"):
        load_split(f"s3://{BUCKET}/nowhere")


def test_a_frame_read_by_range_from_the_bucket_is_the_frame_on_disk(dataset_on_s3):
    local, url = dataset_on_s3
    manifest = load_manifest(url)
    first = frame_locations(manifest, manifest.videos["video_id"].tolist()[:1])[0][0]
    on_disk = replace(first, shard=local / first.shard.path.split("/data/sample/", 1)[1])
    assert first.image(32).tobytes() == on_disk.image(32).tobytes()
