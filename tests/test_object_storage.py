"""Training input read from object storage: a real S3-compatible server (moto's server mode,
in its own process on 127.0.0.1, :mod:`tests.s3_server`) holding a decoded dataset, read in
place by URL; the DataLoader's worker processes inherit its AWS variables."""

from __future__ import annotations

import hashlib
import io
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
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import DecodeConfig, TrainConfig
from pipeline.data.frames import frame_locations
from pipeline.data.ingest import decode_sources, ingest, inventory
from pipeline.data.manifest import (
    SOURCES_FILE,
    SPLIT_FILE,
    VIDEOS_FILE,
    ManifestError,
    load_manifest,
    load_split,
    publish,
)
from pipeline.data.sources import HASH_CACHE
from pipeline.data.splits import split_table
from pipeline.data.synthetic import write_dataset
from pipeline.data.synthetic_exports import write_exports
from pipeline.pretrain.engine import BACKBONE, CARD, pretrain
from pipeline.storage import dataset_path, is_remote
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


@pytest.fixture(scope="module")
def raw_on_s3(s3_endpoint, tmp_path_factory) -> tuple[Path, str]:
    """Source files of every kind (videos in several containers, DICOM cines, a frame folder,
    stills, labels.csv with a hidden file and a note beside them), on disk and in a bucket."""
    folder = tmp_path_factory.mktemp("raw")
    write_dataset(folder, count=3, seed=5, group_prefix="s3")
    write_exports(folder, seed=5, group_prefix="s3")
    (folder / "videos" / ".DS_Store").write_bytes(b"\0")
    (folder / "videos" / "notes.txt").write_text("not a video")
    url = f"s3://{BUCKET}/raw"
    fsspec.filesystem("s3").put(f"{folder}/", url, recursive=True)
    return folder, url


def test_sources_on_s3_decode_to_the_bytes_of_the_same_files_on_disk(raw_on_s3, tmp_path):
    """Listing, hashing (DICOM patient groups included), decoding: a bucket and a folder with
    the same files give the same manifests, shards and receipts, byte for byte."""
    local, url = raw_on_s3
    outputs = {"disk": tmp_path / "disk", "s3": tmp_path / "s3"}
    for name, root in (("disk", local), ("s3", dataset_path(url))):
        summary = ingest(root / "videos", root / "labels.csv", outputs[name],
                         DecodeConfig(workers=2), progress=False)
        assert summary.decoded == 8 and summary.counts == {"ok": 8}, summary.counts
    videos = {name: load_manifest(out).videos for name, out in outputs.items()}
    assert videos["disk"].equals(videos["s3"])
    assert videos["s3"]["group"].str.startswith("patient-").sum() == 2  # from the DICOM headers
    assert set(videos["s3"]["source_path"]) >= {"frames/clip_frames", "stills/still.png"}
    files = {name: sorted(path.relative_to(out) for path in out.rglob("*")
                          if path.is_file() and path.name != HASH_CACHE)
             for name, out in outputs.items()}
    assert files["disk"] == files["s3"]
    assert all((outputs["disk"] / path).read_bytes() == (outputs["s3"] / path).read_bytes()
               for path in files["disk"])


def test_an_unchanged_bucket_is_not_read_again_and_a_changed_object_is(raw_on_s3, tmp_path):
    """Objects whose size and ETag are unchanged keep their hash and their shard; a rewritten
    object is hashed and decoded again, alone."""
    local, url = raw_on_s3
    copy = f"s3://{BUCKET}/raw-changing"
    s3 = fsspec.filesystem("s3")
    s3.copy(f"{url}/", copy, recursive=True)
    root, out, config = dataset_path(copy), tmp_path / "out", DecodeConfig(workers=1)
    first = ingest(root / "videos", root / "labels.csv", out, config, progress=False)
    again = ingest(root / "videos", root / "labels.csv", out, config, progress=False)
    assert (first.decoded, again.decoded, again.reused) == (8, 0, 8)
    still = f"{copy}/videos/stills/still.png"
    image = Image.open(local / "videos" / "stills" / "still.png").transpose(
        Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    s3.pipe(still, buffer.getvalue())
    changed = ingest(root / "videos", root / "labels.csv", out, config, progress=False)
    assert (changed.decoded, changed.reused) == (1, 7)
    row = load_manifest(out).videos.set_index("source_path").loc["stills/still.png"]
    assert row["content_sha256"] == hashlib.sha256(buffer.getvalue()).hexdigest()


def test_objects_deleted_or_rewritten_after_the_listing_are_their_own_errors(raw_on_s3,
                                                                           tmp_path):
    """Listed, then deleted or rewritten before decoding: each of those entries fails with a
    message naming it; the others decode."""
    _, url = raw_on_s3
    copy = f"s3://{BUCKET}/raw-vanishing"
    s3 = fsspec.filesystem("s3")
    s3.copy(f"{url}/", copy, recursive=True)
    root = dataset_path(copy)
    sources = inventory(root / "videos", root / "labels.csv", tmp_path / "out")
    s3.rm(f"{copy}/videos/stills/still.jpg")
    s3.pipe(f"{copy}/videos/stills/still.png", s3.cat(f"{url}/videos/stills/still.jpg"))
    summary = decode_sources(sources, tmp_path / "out", DecodeConfig(workers=1), progress=False)
    assert summary.counts == {"ok": 6, "error": 2}
    errors = sorted(failed.video["error"] for failed in summary.failures)
    assert errors[0].startswith("stills/still.jpg: cannot fetch s3://")
    assert errors[1].startswith("stills/still.png: cannot fetch s3://")
    assert errors[1].endswith("changed since the inventory listed it")


def test_the_inventory_and_decode_stages_take_a_bucket_as_root(raw_on_s3, tmp_path):
    """``data.<dataset>.root: s3://...``: the stages list, hash and decode from the bucket
    (as ``dvc exp run -S data.pretrain.root=s3://...`` runs them)."""
    local, url = raw_on_s3
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["pretrain"]["root"] = url
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("inventory", "decode"):
        done = subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py"), "pretrain"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
    assert "8 videos (8 ok)" in done.stdout
    listed = pd.read_parquet(tmp_path / "data" / "pretrain" / SOURCES_FILE)
    assert sorted(listed["source_path"]) == sorted(
        str(path.relative_to(local / "videos")) for path in (local / "videos").rglob("*")
        if (path.is_file() and path.parent.name != "clip_frames"
            and not path.name.startswith(".") and path.suffix != ".txt")
        or path.name == "clip_frames")


def test_publish_uploads_shards_before_the_manifests_and_skips_what_is_there(dataset_on_s3):
    local, _ = dataset_on_s3
    url = f"s3://{BUCKET}/published/sample"
    result = CliRunner().invoke(app, ["publish", str(local), url])
    assert result.exit_code == 0, result.output
    first = publish(local, f"s3://{BUCKET}/published/again")
    shards = sorted(p.relative_to(local).as_posix() for p in (local / "shards").glob("*.tar"))
    assert first == [*shards, SPLIT_FILE, VIDEOS_FILE, "frames.parquet", "checksums.json"]
    assert load_manifest(url).frames.equals(load_manifest(local).frames)
    assert load_split(url).equals(load_split(local))
    assert publish(local, url) == [VIDEOS_FILE, "frames.parquet", "checksums.json"]
    shard = local / shards[0]
    original = shard.read_bytes()
    try:
        shard.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # padding byte: verifies
        assert publish(local, url)[0] == shards[0]  # a changed shard goes again
    finally:
        shard.write_bytes(original)
    damaged = bytearray((local / VIDEOS_FILE).read_bytes())
    try:
        (local / VIDEOS_FILE).write_bytes(bytes(damaged[:-1]) + b"x")
        with pytest.raises(ManifestError):
            publish(local, url)
    finally:
        (local / VIDEOS_FILE).write_bytes(bytes(damaged))
