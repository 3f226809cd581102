"""Positive pairs from videos: which frames make the two views, and how they are mixed.

Sample pair generation (SPG, USCL §2.2): a batch holds one positive pair per video, so no two
samples of a batch come from one video (:func:`video_batches`). Positive pair interpolation
(PPI, USCL Eq. 2, Meta-USCL §III.B): three frames of the clip, the middle one the anchor, each
view ``x_k = w_k * anchor + (1 - w_k) * perturbation_k`` with ``w_k ~ Beta(alpha, beta)``.
Pair modes S1/S2/S3 of Meta-USCL Table II are ``same_frame``, ``two_frames`` and ``ppi``.
Everything here is index arithmetic on a seeded :class:`numpy.random.Generator`; reading and
augmenting the frames is the loader's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

PairMode = Literal["same_frame", "first_frame", "two_frames", "ppi"]


@dataclass(frozen=True)
class PairSpec:
    """How a video's positive pair is drawn.

    Attributes:
        mode: S1 ``same_frame`` (one frame, two augmentations), S2 ``two_frames``, S3 ``ppi``;
            ``first_frame``: the video's first frame, twice (the released Meta-USCL code's
            S1 and meta pairs).
        alpha, beta: the Beta distribution of the anchor weights ``w_k``.
        chronological: three frames in time order with the middle one as anchor (papers);
            False: three distinct frames in drawn order, the second as anchor (USCL code).
        shared_weight: one ``w`` for both views (USCL code) instead of two independent draws.
        max_distance: largest frame distance from the first to the last sampled frame
            (Meta-USCL ``max_dist``); None = unrestricted.
    """

    mode: PairMode = "ppi"
    alpha: float = 0.5
    beta: float = 0.5
    chronological: bool = True
    shared_weight: bool = False
    max_distance: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("same_frame", "first_frame", "two_frames", "ppi"):
            raise ValueError(f"unknown pair mode {self.mode!r}")
        if self.alpha <= 0 or self.beta <= 0:
            raise ValueError(f"Beta parameters must be positive, got {self.alpha}, {self.beta}")
        if self.max_distance is not None and self.max_distance < 1:
            raise ValueError(f"max_distance must be >= 1 or None, got {self.max_distance}")


@dataclass(frozen=True)
class PairPlan:
    """Kept-frame indices ``(perturbation_1, anchor, perturbation_2)`` and anchor weights:
    view k is ``weights[k] * anchor + (1 - weights[k]) * perturbation_k``."""

    frames: tuple[int, int, int]
    weights: tuple[float, float]

    def view(self, k: int) -> tuple[tuple[int, float], tuple[int, float]]:
        """View ``k`` (0 or 1) as ``((anchor, w), (perturbation, 1 - w))``."""
        w = self.weights[k]
        return (self.frames[1], w), (self.frames[2 * k], 1.0 - w)


def _two_distinct(rng: np.random.Generator, count: int, max_distance: int | None) -> list[int]:
    """Two frames in time order, at most ``max_distance`` apart."""
    span = min(count - 1, max_distance or count - 1)
    gap = int(rng.integers(1, span + 1))
    start = int(rng.integers(0, count - gap))
    return [start, start + gap]


def _three_distinct(rng: np.random.Generator, count: int, spec: PairSpec) -> list[int]:
    if spec.max_distance is None:
        frames = rng.choice(count, size=3, replace=False).tolist()
        return sorted(frames) if spec.chronological else frames
    # Meta-USCL: offsets d1 < d2 <= max_distance from a start frame (always chronological).
    span = min(count - 1, spec.max_distance)
    d1, d2 = sorted(rng.choice(np.arange(1, span + 1), size=2, replace=False).tolist())
    start = int(rng.integers(0, count - d2))
    return [start, start + d1, start + d2]


def plan_pair(rng: np.random.Generator, frame_count: int, spec: PairSpec) -> PairPlan:
    """Draw the positive pair of one video with ``frame_count`` kept frames.

    Videos too short for the mode fall back: ``ppi`` with 2 frames behaves as
    ``two_frames``, and any mode with 1 frame as ``same_frame``.
    """
    if frame_count < 1:
        raise ValueError("a video needs at least one frame to make a pair")
    mode = spec.mode
    if mode == "first_frame":
        return PairPlan((0, 0, 0), (0.0, 0.0))
    if (mode == "ppi" and frame_count < 3) or (mode == "two_frames" and frame_count < 2):
        mode = "two_frames" if frame_count == 2 else "same_frame"
    if mode == "same_frame":  # two views of one frame, each its own augmentation
        frame = int(rng.integers(frame_count))
        return PairPlan((frame, frame, frame), (0.0, 0.0))
    if mode == "two_frames":
        first, second = _two_distinct(rng, frame_count, spec.max_distance)
        return PairPlan((first, first, second), (1.0, 0.0))
    first, anchor, last = _three_distinct(rng, frame_count, spec)
    w1 = float(rng.beta(spec.alpha, spec.beta))
    w2 = w1 if spec.shared_weight else float(rng.beta(spec.alpha, spec.beta))
    return PairPlan((first, anchor, last), (w1, w2))


def video_batches(video_count: int, batch_size: int, rng: np.random.Generator,
                  rank: int = 0, world_size: int = 1, drop_last: bool = False
                  ) -> list[list[int]]:
    """One epoch of SPG batches for one rank: each video at most once per batch and epoch.

    Videos are shuffled, cut to a multiple of ``world_size`` (so every rank gets the same
    number of batches; DDP would otherwise hang), dealt round-robin to the ranks, and chunked
    into batches. Seed ``rng`` identically on every rank (e.g. from seed and epoch).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    order = rng.permutation(video_count)
    order = order[: len(order) - len(order) % world_size][rank::world_size]
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches
