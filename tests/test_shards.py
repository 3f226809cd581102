"""Per-video tars: WebDataset-readable, offsets byte-exact, atomic, deterministic."""

import gc
import hashlib
import io
import tarfile
import weakref
from fractions import Fraction

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from pipeline.data.shards import write_video_shard
from pipeline.data.video import SampledFrame
from pipeline.storage import read_range

VIDEO = "convex__Cov-Atlas_44_gif-c7fea090"


def frames(count: int, fail_after: int | None = None):
    rng = np.random.default_rng(0)
    for index in range(count):
        if fail_after is not None and index == fail_after:
            raise RuntimeError("decoder broke")
        pixels = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
        yield SampledFrame(index * 8, Fraction(index, 3), index * 800, Image.fromarray(pixels))


def test_offsets_read_each_frame_byte_exact(tmp_path):
    shard = tmp_path / f"{VIDEO}.tar"
    records = write_video_shard(shard, VIDEO, frames(5), jpeg_quality=90)
    assert [r.kept_index for r in records] == list(range(5))
    with tarfile.open(shard) as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    for record in records:
        data = read_range(shard, record.offset, record.size)
        assert data == members[record.member]
        assert hashlib.sha256(data).hexdigest() == record.sha256
        assert Image.open(io.BytesIO(data)).size == (record.width, record.height) == (64, 48)


def test_webdataset_reads_samples_with_dotless_keys_and_metadata(tmp_path):
    shard = tmp_path / f"{VIDEO}.tar"
    records = write_video_shard(shard, VIDEO, frames(4))
    dataset = wds.WebDataset(str(shard), shardshuffle=False).decode("pil")
    samples = list(dataset)
    assert [s["__key__"] for s in samples] == [f"{VIDEO}/{i:06d}" for i in range(4)]
    for sample, record in zip(samples, records, strict=True):
        assert sample["json"] == {"video_id": VIDEO, "kept_index": record.kept_index,
                                  "frame_index": record.frame_index,
                                  "timestamp_s": record.timestamp_s, "pts": record.pts}
        assert sample["jpg"].size == (64, 48)
    assert records[1].timestamp_s == pytest.approx(1 / 3)


def test_interrupted_write_leaves_nothing(tmp_path):
    shard = tmp_path / f"{VIDEO}.tar"
    with pytest.raises(RuntimeError, match="decoder broke"):
        write_video_shard(shard, VIDEO, frames(5, fail_after=3))
    assert list(tmp_path.iterdir()) == []


def test_same_frames_give_the_same_bytes(tmp_path):
    first, second = tmp_path / "a" / "x.tar", tmp_path / "b" / "x.tar"
    write_video_shard(first, VIDEO, frames(3))
    write_video_shard(second, VIDEO, frames(3))
    assert first.read_bytes() == second.read_bytes()


def test_short_read_is_an_error(tmp_path):
    shard = tmp_path / "x.tar"
    record = write_video_shard(shard, VIDEO, frames(1))[0]
    with pytest.raises(OSError, match="short read"):
        read_range(shard, shard.stat().st_size - 10, record.size)


def test_frames_are_released_as_they_are_written(tmp_path):
    """Memory stays flat in clip length: no kept image outlives its own write."""
    alive = []

    def tracked():
        for frame in frames(30):
            gc.collect()
            assert sum(ref() is not None for ref in alive) <= 1
            alive.append(weakref.ref(frame.image))
            yield frame

    write_video_shard(tmp_path / "x.tar", VIDEO, tracked())
    gc.collect()
    assert all(ref() is None for ref in alive)


def test_grey_frames_are_stored_with_one_channel_and_the_same_pixels(tmp_path):
    rng = np.random.default_rng(1)
    grey = np.repeat(rng.integers(0, 255, size=(48, 64, 1), dtype=np.uint8), 3, axis=2)
    almost = grey.copy()
    almost[10, 20, 2] ^= 1  # one channel of one pixel off: a colour frame
    images = [Image.fromarray(grey), Image.fromarray(almost)]
    records = write_video_shard(tmp_path / "v.tar", "v", (
        SampledFrame(i, Fraction(i, 3), i, image) for i, image in enumerate(images)))
    stored = [Image.open(io.BytesIO(read_range(tmp_path / "v.tar", r.offset, r.size)))
              for r in records]
    assert [image.mode for image in stored] == ["L", "RGB"]
    as_rgb = io.BytesIO()
    images[0].save(as_rgb, format="JPEG", quality=95)  # what an RGB JPEG would have stored
    np.testing.assert_array_equal(np.asarray(stored[0].convert("RGB")),
                                  np.asarray(Image.open(as_rgb).convert("RGB")))
