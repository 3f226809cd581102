"""The shard-native pair loader on decoded sample clips."""

import io

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import pipeline.data.frames as frames_module
from pipeline.data.frames import load_frame
from pipeline.data.manifest import load_manifest
from pipeline.data.views import AugmentSpec
from pipeline.pretrain.augment import make_views
from pipeline.pretrain.loader import PairDataset
from pipeline.pretrain.pairs import PairSpec

SMALL = AugmentSpec(size=32)


def dataset(decoded_sample, **overrides):
    manifest = load_manifest(decoded_sample)
    videos = manifest.videos["video_id"].tolist()
    options = dict(labels=list(range(len(videos))), pairs=PairSpec(), augment=SMALL,
                   mix_first=True, batch_size=3, seed=0, drop_last=False)
    options.update(overrides)
    return PairDataset(manifest, videos, **options)


def test_batches_hold_distinct_videos_with_their_labels(decoded_sample):
    data = dataset(decoded_sample)
    batches = list(data)
    assert [len(b["video"]) for b in batches] == [3, 3, 2]
    for batch in batches:
        count = len(batch["video"])
        assert batch["frames"].shape == (count, 2, 3, 32, 32)  # mix first: the two views
        assert batch["frames"].dtype == torch.uint8
        assert batch["factors"].shape == batch["order"].shape == (count, 2, 4)
        assert len(set(batch["video"].tolist())) == len(batch["video"])
        assert torch.equal(batch["label"], batch["video"])  # labels were 0..7 by position
        view1, view2 = make_views(batch, SMALL)
        assert view1.shape == view2.shape == (count, 3, 32, 32)
        assert torch.isfinite(view1).all()
    assert sorted(v for b in batches for v in b["video"].tolist()) == list(range(8))


def test_same_seed_same_batches_whatever_the_workers(decoded_sample):
    reference = list(dataset(decoded_sample))
    again = list(dataset(decoded_sample))
    parallel = list(DataLoader(dataset(decoded_sample), batch_size=None, num_workers=2))
    key = lambda batch: batch["video"][0].item()  # noqa: E731
    for other in (again, parallel):
        for a, b in zip(sorted(reference, key=key), sorted(other, key=key), strict=True):
            assert a.keys() == b.keys()
            assert all(torch.equal(a[key], b[key]) for key in a)
    other_seed = list(dataset(decoded_sample, seed=1))
    assert not torch.equal(reference[0]["frames"], other_seed[0]["frames"])


def test_persistent_workers_follow_the_epochs(decoded_sample):
    data = dataset(decoded_sample)
    loader = DataLoader(data, batch_size=None, num_workers=2, persistent_workers=True)
    key = lambda batch: batch["video"][0].item()  # noqa: E731
    seen = []
    for epoch in (0, 1, 2):
        data.set_epoch(epoch)
        batches = sorted(loader, key=key)
        in_process = sorted(data, key=key)
        for a, b in zip(in_process, batches, strict=True):
            assert all(torch.equal(a[name], b[name]) for name in a)
        seen.append(batches[0]["frames"])
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


def test_new_epoch_new_pairs(decoded_sample):
    data = dataset(decoded_sample)
    first = data.sample(0)
    assert all(torch.equal(first[key], data.sample(0)[key]) for key in first)
    data.set_epoch(1)
    assert not torch.equal(first["frames"], data.sample(0)["frames"])


def test_only_the_sampled_frames_are_read(decoded_sample, monkeypatch):
    reads = []
    original = frames_module.read_range

    def counting(path, offset, size, cached=None):
        reads.append((path, offset))
        return original(path, offset, size, cached)

    monkeypatch.setattr(frames_module, "read_range", counting)
    data = dataset(decoded_sample)
    list(data)
    per_video = {}
    for path, offset in reads:
        per_video.setdefault(path, set()).add(offset)
    assert len(per_video) == 8
    assert all(len(offsets) <= 3 for offsets in per_video.values())
    assert len(reads) == sum(len(offsets) for offsets in per_video.values()), "no frame twice"


@pytest.mark.parametrize("mix_first", [True, False])
@pytest.mark.parametrize("mode", ["same_frame", "two_frames", "ppi"])
def test_the_two_views_differ_in_every_mode(decoded_sample, mode, mix_first):
    data = dataset(decoded_sample, pairs=PairSpec(mode=mode), mix_first=mix_first)
    batch = next(iter(data))
    assert batch["frames"].shape[1] == (2 if mix_first else 3)
    view1, view2 = make_views(batch, SMALL)
    assert view1.shape == (3, 3, 32, 32)
    assert all(not torch.equal(a, b) for a, b in zip(view1, view2, strict=True))


@pytest.mark.parametrize("mix_first", [True, False])
def test_views_in_workers_ship_the_views_the_device_would_make(decoded_sample, mix_first):
    device = next(iter(dataset(decoded_sample, mix_first=mix_first)))
    workers = next(iter(dataset(decoded_sample, mix_first=mix_first, views_in_workers=True)))
    assert "factors" in device and "frames" not in workers and "factors" not in workers
    assert torch.equal(device["video"], workers["video"])
    for made, shipped in zip(make_views(device, SMALL), (workers["view1"], workers["view2"]),
                             strict=True):
        assert shipped.shape == made.shape and shipped.dtype == torch.float32
        assert (shipped - made).abs().mean() < 0.1  # the same draws, the jitter on PIL
    unrelated = next(iter(dataset(decoded_sample, seed=9, views_in_workers=True)))
    assert (unrelated["view1"] - workers["view1"]).abs().mean() > 0.3


def test_frames_a_view_does_not_use_are_not_read(decoded_sample):
    data = dataset(decoded_sample, pairs=PairSpec(mode="two_frames"), mix_first=False)
    frames = next(iter(data))["frames"]  # two_frames: view 1 = the anchor (w = 1)
    assert (frames[:, 0] == 0).all() and (frames[:, 1:] > 0).any(dim=(1, 2, 3, 4)).all()
    same = dataset(decoded_sample, pairs=PairSpec(mode="same_frame"), mix_first=False)
    frames = next(iter(same))["frames"]  # same_frame: no anchor, each view its own crop
    assert (frames[:, 1] == 0).all() and not torch.equal(frames[:, 0], frames[:, 2])


def test_unlabelled_videos_and_missing_frames(decoded_sample):
    data = dataset(decoded_sample, labels=None)
    assert (next(iter(data))["label"] == -1).all()
    manifest = load_manifest(decoded_sample)
    with pytest.raises(ValueError, match="no frames"):
        PairDataset(manifest, ["nope"], None, PairSpec(), SMALL, True, 2)
    assert len(data) == 3


@pytest.mark.parametrize("mode", ["same_frame", "ppi"])
def test_frame_level_batches_mix_frames_of_videos(decoded_sample, mode):
    """SimCLR (same_frame) and USCL Table 2 "I2 only" (ppi): pairs drawn per frame."""
    manifest = load_manifest(decoded_sample)
    data = dataset(decoded_sample, frame_level=True, batch_size=16,
                   pairs=PairSpec(mode=mode))
    batches = list(data)
    assert sum(len(b["video"]) for b in batches) == len(manifest.frames)
    assert any(len(set(b["video"].tolist())) < len(b["video"]) for b in batches), \
        "frames of one video can meet in a batch (SimCLR's similarity conflict)"
    weights = torch.cat([b["weights"] for b in batches])
    if mode == "same_frame":
        assert (weights == 0).all()
        assert data.plan(5, None).frames == (data.items[5][1],) * 3  # that very frame
    else:
        assert ((weights > 0) & (weights < 1)).float().mean() > 0.9, "mixed positives"


def test_jpegs_are_decoded_at_reduced_size_when_the_view_is_small():
    buffer = io.BytesIO()
    Image.new("RGB", (352, 352), "teal").save(buffer, "JPEG")
    small, full = load_frame(buffer.getvalue(), 64), load_frame(buffer.getvalue(), 224)
    assert small.size == (88, 88) and small.mode == "RGB"  # 1/4 scale, still >= 64
    assert full.size == (352, 352)
