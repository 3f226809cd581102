"""The pretraining input path: SPG batches of PPI pairs read straight from the per-video shards.

For every video of a batch, :func:`pipeline.pairs.plan_pair` picks its (at most three) frames,
which are read by byte offset from the video's tar (never the whole shard), decoded, mixed and
augmented into two views. Deterministic under a seed: a batch's content depends only on
(seed, epoch, video), never on the number of workers or ranks. Batches are split across
distributed ranks (``torch.distributed``) and then across DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.augment import AugmentSpec, load_rgb, view_transform
from pipeline.losses import UNLABELLED
from pipeline.manifest import Manifest
from pipeline.pairs import PairPlan, PairSpec, plan_pair, video_batches
from pipeline.shards import read_member


@dataclass(frozen=True)
class FrameLocation:
    shard: Path
    offset: int
    size: int


def frame_index(manifest: Manifest, video_ids: list[str]) -> list[list[FrameLocation]]:
    """Per video (in ``video_ids`` order), where its kept frames are, in time order."""
    frames = manifest.frames[manifest.frames["video_id"].isin(video_ids)]
    grouped = {video: rows.sort_values("kept_index")
               for video, rows in frames.groupby("video_id", sort=False)}
    missing = [video for video in video_ids if video not in grouped]
    if missing:
        raise ValueError(f"no frames in {manifest.root} for video(s) {', '.join(missing[:5])}")
    return [[FrameLocation(manifest.shard_path(row.shard), int(row.offset), int(row.size))
             for row in grouped[video].itertuples()] for video in video_ids]


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class PairDataset(IterableDataset):
    """Yields batches ``{"view1", "view2": (B, 3, S, S), "label": (B,), "video": (B,)}``.

    One pair per video per epoch (SPG), or with ``frame_level`` one pair per frame (two
    augmentations of it), frames shuffled across videos as in SimCLR.

    Args:
        manifest: the decoded dataset.
        video_ids: the videos to draw from (e.g. the train split).
        labels: class index per video (:data:`~pipeline.losses.UNLABELLED` for none), or None.
        pairs, augment: how pairs are drawn and views augmented.
        mix_first: mix raw frames, then augment each view (paper, Meta-USCL code); False:
            augment each frame, then mix (USCL/HiCo code; the anchor is augmented once).
        batch_size: videos per batch; seed: base seed; epoch: see :meth:`set_epoch`.
    """

    def __init__(self, manifest: Manifest, video_ids: list[str], labels: list[int] | None,
                 pairs: PairSpec, augment: AugmentSpec, mix_first: bool, batch_size: int,
                 seed: int = 0, drop_last: bool = True, frame_level: bool = False) -> None:
        super().__init__()
        self.locations = frame_index(manifest, video_ids)
        # An item is (video, frame): frame None = the pair is planned from the whole video.
        self.items: list[tuple[int, int | None]] = (
            [(video, frame) for video, frames in enumerate(self.locations)
             for frame in range(len(frames))] if frame_level
            else [(video, None) for video in range(len(self.locations))])
        self.labels = torch.tensor(labels if labels is not None else
                                   [UNLABELLED] * len(video_ids), dtype=torch.long)
        self.pairs, self.augment, self.mix_first = pairs, augment, mix_first
        self.batch_size, self.seed, self.drop_last = batch_size, seed, drop_last
        self.epoch = 0
        self.transform = view_transform(augment)

    def set_epoch(self, epoch: int) -> None:
        """Use a new shuffle and new pairs; call before iterating each epoch."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This rank's batches of item indices for the current epoch."""
        rank, world = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        rng = np.random.default_rng(_seed(self.seed, self.epoch))
        return video_batches(len(self.items), self.batch_size, rng, rank, world,
                             self.drop_last)

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self):
        worker = get_worker_info()
        batches = self.batches()
        if worker is not None:
            batches = batches[worker.id::worker.num_workers]
        for batch in batches:
            views = [self.pair(item) for item in batch]
            videos = torch.tensor([self.items[item][0] for item in batch])
            yield {"view1": torch.stack([v[0] for v in views]),
                   "view2": torch.stack([v[1] for v in views]),
                   "label": self.labels[videos], "video": videos}

    def pair(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views of one item for the current epoch (deterministic).

        View k is ``w_k * anchor + (1 - w_k) * perturbation_k``, mixed before augmenting the
        view (``mix_first``) or from separately augmented frames, the anchor augmented once
        and shared by both views (USCL/HiCo code).
        """
        sample_seed = _seed(self.seed, self.epoch, item)
        video, frame = self.items[item]
        locations = self.locations[video]
        plan = (PairPlan((frame, frame, frame), (0.0, 0.0)) if frame is not None
                else plan_pair(np.random.default_rng(sample_seed), len(locations), self.pairs))
        first, anchor, last = plan.frames
        size = self.augment.size
        images = {index: load_rgb(read_member(locations[index].shard, locations[index].offset,
                                              locations[index].size), size)
                  for index in set(plan.frames)}
        parts = ((first, plan.weights[0]), (last, plan.weights[1]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            if self.mix_first:  # mix the raw frames (uint8, as Meta-USCL), then augment
                return tuple(self.transform(_mix_images(images[anchor], images[other], w))
                             for other, w in parts)
            augmented_anchor = self.transform(images[anchor]) if any(w for _, w in parts) \
                else None
            return tuple(_mix(augmented_anchor, self.transform(images[other]), w)
                         for other, w in parts)


def _mix_images(anchor: Image.Image, other: Image.Image, weight: float) -> Image.Image:
    """``weight * anchor + (1 - weight) * other`` on raw frames (USCL Eq. 2), as uint8."""
    if weight == 0:
        return other
    if other.size != anchor.size:  # a clip that changes resolution mid-way
        other = other.resize(anchor.size, Image.BILINEAR)
    return Image.blend(other, anchor, weight)


def _mix(anchor: torch.Tensor | None, other: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * anchor + (1 - weight) * other`` on augmented, normalised views."""
    if weight == 0:
        return other
    return weight * anchor + (1 - weight) * other
