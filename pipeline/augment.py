"""Per-view augmentation of pretraining frames (``docs/method-spec.md`` §3.1).

Resize to a square, random resized crop, horizontal flip, colour jitter, normalisation, as in
the released USCL/HiCo code (the defaults of :class:`AugmentSpec`). Randomness comes from
the global torch generator: :mod:`pipeline.loader` seeds it per sample, so a sample's views do
not depend on which worker draws them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

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
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)


def load_rgb(data: bytes, size: int) -> Image.Image:
    """Decode a JPEG for a view of ``size`` px: with PIL's draft mode the decoder itself
    scales by 1/2, 1/4 or 1/8 while the image stays at least ``size`` on each side."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (size, size))
    return image.convert("RGB")


def view_transform(spec: AugmentSpec, size: int | None = None) -> v2.Compose:
    """The random transform of one view: a uint8 PIL image in (all geometric and colour
    operations run on PIL, the fast path), a normalised float tensor (3, S, S) out."""
    size = size or spec.size
    return v2.Compose([
        v2.Resize((size, size), antialias=True),
        v2.RandomResizedCrop(size, scale=spec.crop_scale, ratio=spec.crop_ratio,
                             antialias=True),
        v2.RandomHorizontalFlip(spec.flip),
        v2.ColorJitter(*spec.jitter),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(spec.mean, spec.std),
    ])
