"""The pretraining input path: SPG batches of PPI pairs read straight from the per-video shards.

For every video of a batch, :func:`~pipeline.pretrain.pairs.plan_pair` picks its (at most
three) frames, which are read by byte offset from the video's tar (never the whole shard),
decoded at reduced size (grey frames on one channel), cropped and flipped; colour jitter,
mixing and normalisation (:func:`~pipeline.pretrain.augment.make_views`) follow in the
workers (the fast path on a CPU) or batch-wise on the training device (on a GPU: the
workers ship small uint8 frames).
Deterministic under a seed: a batch's content depends only on (seed, epoch, item), never on
the number of workers or ranks.
Batches are split across distributed ranks (``torch.distributed``), then DataLoader workers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline import distributed
from pipeline.data.frames import frame_locations, mix_images
from pipeline.data.manifest import Manifest
from pipeline.data.views import AugmentSpec, crop_view, draw_view
from pipeline.pretrain.augment import make_views
from pipeline.pretrain.losses import UNLABELLED
from pipeline.pretrain.pairs import PairPlan, PairSpec, plan_pair, video_batches


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _stack(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}


class PairDataset(IterableDataset):
    """Yields batches of pairs: finished views, or frames for
    :func:`~pipeline.pretrain.augment.make_views`.

    A batch is ``{"view1", "view2": float (B, 3, S, S), "label", "video": (B,)}`` with
    ``views_in_workers``, else ``{"frames": uint8 (B, F, 3, S, S), "weights": (B, 2),
    "factors", "order": (B, F, 4), "label", "video"}``: the cropped and flipped frames (see
    :mod:`pipeline.pretrain.augment`) with their jitter draws, for the training device to finish.
    One pair per video per epoch (SPG, negatives only across videos), or with
    ``frame_level`` one pair per frame, frames shuffled across videos (SimCLR; USCL Table 2
    "I2 only"), so that frames of one video can be negatives of each other. A frame-level
    item in ``same_frame`` mode is that frame augmented twice; in the other modes its pair
    is planned from its whole video.

    Args:
        manifest: the decoded dataset.
        video_ids: the videos to draw from (e.g. the train split).
        labels: class index per video (:data:`~pipeline.pretrain.losses.UNLABELLED` for
            none), or None.
        pairs, augment: how pairs are drawn and views augmented.
        mix_first: mix raw frames, then augment each view (paper, Meta-USCL code; F = 2);
            False: augment each frame, then mix (USCL/HiCo code; F = 3, the anchor augmented
            once for both views).
        batch_size: videos per batch; seed: base seed; epoch: see :meth:`set_epoch`.
        views_in_workers: finish the views here (colour jitter on PIL, mix, normalisation:
            fast on a CPU) instead of leaving them to the device (fast on a GPU); the same
            draws either way.
        meta: a second dataset (e.g. Meta-USCL's meta set) of which every batch carries a
            random batch, under keys prefixed ``meta_``.
    """

    def __init__(self, manifest: Manifest, video_ids: list[str], labels: list[int] | None,
                 pairs: PairSpec, augment: AugmentSpec, mix_first: bool, batch_size: int,
                 seed: int = 0, drop_last: bool = True, frame_level: bool = False,
                 views_in_workers: bool = False, meta: PairDataset | None = None) -> None:
        super().__init__()
        self.video_ids = list(video_ids)
        self.locations = frame_locations(manifest, self.video_ids)
        # An item is (video, frame): frame None = the pair is planned from the whole video.
        self.items: list[tuple[int, int | None]] = (
            [(video, frame) for video, frames in enumerate(self.locations)
             for frame in range(len(frames))] if frame_level
            else [(video, None) for video in range(len(self.locations))])
        self.labels = torch.tensor(labels if labels is not None else
                                   [UNLABELLED] * len(video_ids), dtype=torch.long)
        self.pairs, self.augment, self.mix_first = pairs, augment, mix_first
        self.batch_size, self.seed, self.drop_last = batch_size, seed, drop_last
        self.views_in_workers, self.meta = views_in_workers, meta
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use a new shuffle and new pairs; call before iterating each epoch. The epoch
        lives in shared memory, so persistent DataLoader workers see it too."""
        self._epoch.fill_(epoch)

    def batches(self) -> list[list[int]]:
        """This rank's batches of item indices for the current epoch."""
        rank, world = distributed.rank_and_world()
        rng = np.random.default_rng(_seed(self.seed, self.epoch))
        return video_batches(len(self.items), self.batch_size, rng, rank, world,
                             self.drop_last)

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self):
        worker = get_worker_info()
        positions = list(enumerate(self.batches()))
        if worker is not None:
            positions = positions[worker.id::worker.num_workers]
        rank, _ = distributed.rank_and_world()
        for position, batch in positions:
            videos = torch.tensor([self.items[item][0] for item in batch])
            loaded = {**_stack([self.sample(item) for item in batch]),
                      "label": self.labels[videos], "video": videos}
            if self.meta is not None:
                meta = self.meta.random_batch((self.epoch, rank, position))
                loaded.update({f"meta_{key}": value for key, value in meta.items()})
            yield loaded

    def random_batch(self, key: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """A batch of ``batch_size`` distinct items (all, if fewer) drawn at random, seeded
        by ``key``: a fresh random batch per training step (Meta-USCL's meta batches)."""
        rng = np.random.default_rng(_seed(self.seed, *key))
        items = rng.choice(len(self.items), min(self.batch_size, len(self.items)), replace=False)
        videos = torch.tensor([self.items[item][0] for item in items])
        return {**_stack([self.sample(int(item), key) for item in items]), "video": videos}

    def plan(self, item: int, rng: np.random.Generator) -> PairPlan:
        video, frame = self.items[item]
        if frame is not None and self.pairs.mode == "same_frame":
            return PairPlan((frame, frame, frame), (0.0, 0.0))
        return plan_pair(rng, len(self.locations[video]), self.pairs)

    def sample(self, item: int, key: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
        """One item's two views, or its frames and draws, deterministic in (seed, ``key``,
        item); ``key`` defaults to the current epoch. Frames a view does not use (weight 0
        or 1) are left black, unread."""
        key = (self.epoch,) if key is None else key
        rng = np.random.default_rng(_seed(self.seed, *key, item))
        plan = self.plan(item, rng)
        first, anchor, last = plan.frames
        w1, w2 = plan.weights
        locations, size = self.locations[self.items[item][0]], self.augment.size
        # augment-then-mix slots (perturbation 1, anchor, perturbation 2); None = unused
        slots = [first if w1 < 1 else None, anchor if w1 > 0 or w2 > 0 else None,
                 last if w2 < 1 else None]
        needed = set(plan.frames) if self.mix_first else set(slots) - {None}
        images = {index: locations[index].frame(size) for index in needed}
        if self.mix_first:  # mix the raw frames (uint8, as Meta-USCL), then augment each view
            sources = [mix_images(images[anchor], images[first], w1),
                       mix_images(images[anchor], images[last], w2)]
        else:
            sources = [None if index is None else images[index] for index in slots]
        draws = [draw_view(rng, self.augment) for _ in sources]
        blank = torch.zeros(3, size, size, dtype=torch.uint8)
        frames = [crop_view(image, draw, size, self.views_in_workers) if image is not None
                  else blank for image, draw in zip(sources, draws, strict=True)]
        sample = {"frames": torch.stack(frames), "weights": torch.tensor(plan.weights)}
        if self.views_in_workers:  # one sample at a time: its pixels stay in cache
            view1, view2 = make_views({key: value[None] for key, value in sample.items()},
                                      self.augment)
            return {"view1": view1[0], "view2": view2[0]}
        sample["factors"] = torch.tensor([draw.factors for draw in draws])
        sample["order"] = torch.tensor([draw.order for draw in draws])
        return sample
