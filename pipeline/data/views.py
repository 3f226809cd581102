"""One view of one frame, drawn per sample on the CPU (``docs/methods.md`` §3).

The view geometry (random resized crop and flip, as torchvision draws them) and the colour
jitter on PIL, shared by pretraining (:mod:`pipeline.pretrain.augment` adds the PPI mix and a
batched jitter for the training device) and fine-tuning (crop and flip only), and the
un-augmented, normalised view that evaluation and the figures embed. Every random parameter is
drawn from a seeded NumPy generator, so a view does not depend on which worker draws it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from pipeline.tv_compat import transforms_v2 as v2


@dataclass(frozen=True)
class AugmentSpec:
    """One view's augmentation; defaults are USCL/HiCo's (code = paper, §3.1)."""

    size: int = 224
    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.8, 1.25)
    flip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.2)  # b, c, s, hue
    jitter_p: float = 1.0  # probability that the jitter applies (torchvision RandomApply)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class ViewParams:
    """The random draw of one augmented frame.

    ``box``: crop (left, top, right, bottom) as fractions of the frame; ``flip``;
    ``factors``: brightness, contrast, saturation, hue; ``order``: the jitter operations'
    order as a permutation of (0, 1, 2, 3) in that numbering.
    """

    box: tuple[float, float, float, float]
    flip: bool
    factors: tuple[float, float, float, float]
    order: tuple[int, int, int, int]


WHOLE_FRAME = ViewParams((0.0, 0.0, 1.0, 1.0), False, (1.0, 1.0, 1.0, 0.0), (0, 1, 2, 3))
"""The un-augmented view: the whole frame resized to the square (evaluation views)."""


def normalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 images (..., 3, H, W) -> floats standardised per channel."""
    mean = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (images.float() / 255 - mean) / std


def plain_view(image: Image.Image, size: int, mean, std) -> torch.Tensor:
    """The un-augmented, normalised view of a frame (evaluation, embeddings)."""
    return normalised(crop_view(image, WHOLE_FRAME, size), mean, std)


def _crop_box(rng: np.random.Generator, spec: AugmentSpec) -> tuple[float, float, float, float]:
    """torchvision's RandomResizedCrop draw on the unit square: area ~ U(scale), log-ratio ~
    U(log ratio), up to 10 tries, else the central crop clamped to the ratio range."""
    log_ratio = np.log(spec.crop_ratio)
    for _ in range(10):
        area = rng.uniform(*spec.crop_scale)
        ratio = math.exp(rng.uniform(*log_ratio))
        width, height = math.sqrt(area * ratio), math.sqrt(area / ratio)
        if width <= 1 and height <= 1:
            left, top = rng.uniform(0, 1 - width), rng.uniform(0, 1 - height)
            return left, top, left + width, top + height
    ratio = min(max(1.0, spec.crop_ratio[0]), spec.crop_ratio[1])
    width, height = (1.0, 1.0 / ratio) if ratio >= 1 else (ratio, 1.0)
    left, top = (1 - width) / 2, (1 - height) / 2
    return left, top, left + width, top + height


def draw_view(rng: np.random.Generator, spec: AugmentSpec) -> ViewParams:
    """Draw one frame's crop, flip and jitter (brightness, contrast and saturation factors
    ~ U[1 - j, 1 + j], hue ~ U[-j, j], random order), as torchvision's transforms do."""
    box = _crop_box(rng, spec)
    flip = bool(rng.random() < spec.flip)
    *scalars, hue = spec.jitter
    factors = tuple(float(rng.uniform(max(0.0, 1 - j), 1 + j)) for j in scalars)
    factors += (float(rng.uniform(-hue, hue)),)
    order = tuple(int(i) for i in rng.permutation(4))
    if spec.jitter_p < 1 and rng.random() >= spec.jitter_p:  # no draw when it always applies
        factors = WHOLE_FRAME.factors
    return ViewParams(box, flip, factors, order)  # type: ignore[arg-type]


PIL_JITTER = (v2.functional.adjust_brightness, v2.functional.adjust_contrast,
              v2.functional.adjust_saturation, v2.functional.adjust_hue)
COLOUR_ONLY = (2, 3)  # saturation and hue: identities on grey pixels


def crop_view(image: Image.Image, params: ViewParams, size: int,
              jitter: bool = False) -> torch.Tensor:
    """The crop of ``params.box`` resampled to ``size`` x ``size`` (the square resize and the
    crop in one step), flipped if drawn, colour-jittered on PIL if ``jitter``: a uint8 tensor
    (3, size, size).

    A grey (``L``) image is processed on its one channel and repeated at the end: the same
    result as on its RGB form, where saturation and hue leave grey pixels unchanged, for a
    third of the work.
    """
    width, height = image.size
    left, top, right, bottom = params.box
    view = image.resize((size, size), Image.BILINEAR,
                        box=(left * width, top * height, right * width, bottom * height))
    if params.flip:
        view = view.transpose(Image.FLIP_LEFT_RIGHT)
    grey = view.mode == "L"
    if jitter:
        for operation in params.order:
            if not (grey and operation in COLOUR_ONLY):
                view = PIL_JITTER[operation](view, params.factors[operation])
    channels = 1 if grey else 3
    pixels = torch.frombuffer(bytearray(view.tobytes()), dtype=torch.uint8) \
        .view(size, size, channels).permute(2, 0, 1)
    return pixels.expand(3, -1, -1) if grey else pixels
