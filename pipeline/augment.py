"""Pretraining augmentation (``docs/method-spec.md`` §3.1), split where it runs cheapest.

The released USCL/HiCo code applies, per frame: resize to a square, random resized crop,
horizontal flip, colour jitter, normalisation. Here every random parameter is drawn per sample
from a seeded NumPy generator (so a sample does not depend on which worker draws it), and:

* the geometry runs in the loader workers on PIL images: the square resize and the crop
  compose into one resampling of the source region (:func:`crop_view`), then the flip; the
  result is a small uint8 tensor;
* the colour jitter runs either there too, on PIL (the fast path on a CPU), or on whole
  batches on the training device (:func:`colour_jitter`; the fast path on a GPU), in both
  cases with each frame's own factors and its own order of the four operations, as
  torchvision's ``ColorJitter`` applies them;
* the PPI mix and the normalisation (:func:`make_views`) follow where the jitter ran.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from pipeline.tv_compat import transforms_v2 as v2

GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


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


def load_frame(data: bytes, size: int) -> Image.Image:
    """Decode a stored frame for a view of ``size`` px, in its own mode: ``L`` for the grey
    frames the decode stage stores with one channel (:func:`pipeline.shards.encode_jpeg`),
    RGB otherwise. With PIL's draft mode the decoder itself scales by 1/2, 1/4 or 1/8 while
    the image stays at least ``size`` on each side."""
    image = Image.open(io.BytesIO(data))
    grey = image.mode == "L"
    image.draft("L" if grey else "RGB", (size, size))
    return image.convert("L" if grey else "RGB")


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


def _gray(images: torch.Tensor) -> torch.Tensor:
    weights = images.new_tensor(GRAY).view(3, 1, 1)
    return (images * weights).sum(dim=-3, keepdim=True)


def _rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(dim=-3)
    value, _ = images.max(dim=-3)
    delta = value - images.min(dim=-3).values
    saturation = torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value))
    safe = delta.clamp_min(1e-12)
    hue = torch.where(value == r, (g - b) / safe,
                      torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(delta > 0, hue / 6 % 1.0, torch.zeros_like(hue))
    return torch.stack((hue, saturation, value), dim=-3)


def _hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """``c_n = V - V S clamp(min(k, 4 - k), 0, 1)``, ``k = (n + 6 H) mod 6``, n = 5, 3, 1."""
    hue, saturation, value = (part.unsqueeze(-3) for part in images.unbind(dim=-3))
    k = (images.new_tensor([5.0, 3.0, 1.0]).view(3, 1, 1) + 6 * hue) % 6
    return value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1)


def _adjust(images: torch.Tensor, operation: int, factor: torch.Tensor) -> torch.Tensor:
    """One ColorJitter operation on float images in [0, 1], per-image ``factor`` (N, 1, 1, 1)."""
    if operation == 0:  # brightness: blend with black
        return (images * factor).clamp(0, 1)
    if operation == 1:  # contrast: blend with the mean grey level
        mean = _gray(images).mean(dim=(-3, -2, -1), keepdim=True)
        return (factor * images + (1 - factor) * mean).clamp(0, 1)
    if operation == 2:  # saturation: blend with the grey image
        return (factor * images + (1 - factor) * _gray(images)).clamp(0, 1)
    hsv = _rgb_to_hsv(images)
    hue = (hsv[:, :1] + factor) % 1.0
    return _hsv_to_rgb(torch.cat((hue, hsv[:, 1:]), dim=1))


def colour_jitter(images: torch.Tensor, factors: torch.Tensor,
                  order: torch.Tensor) -> torch.Tensor:
    """torchvision's ColorJitter on a batch, each image with its own factors and order.

    Args:
        images: float (N, 3, H, W) in [0, 1].
        factors: (N, 4) brightness, contrast, saturation, hue.
        order: (N, 4) each row a permutation of the operations 0..3.
    """
    images = images.clone()
    for position in range(4):
        for operation in range(4):
            chosen = (order[:, position] == operation).nonzero().squeeze(1)
            if len(chosen):
                factor = factors[chosen, operation].view(-1, 1, 1, 1).to(images.dtype)
                images[chosen] = _adjust(images[chosen], operation, factor)
    return images


def make_views(batch: dict[str, torch.Tensor],
               spec: AugmentSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The two normalised views of a batch of frames, computed on the batch's device.

    ``batch["frames"]`` is uint8 (B, F, 3, S, S), with jitter ``factors``/``order``
    (B, F, 4) when the colour jitter is still to be applied (else it was, in the loader).
    F = 2: the views themselves (mixed before augmenting, or unmixed). F = 3: frames
    (perturbation 1, anchor, perturbation 2), view k = ``w_k * anchor + (1 - w_k) *
    perturbation_k`` with ``batch["weights"]`` (B, 2) (USCL Eq. 2, mixed after augmenting).
    The mix and the normalisation are one affine map per pixel, applied in place.
    """
    frames = batch["frames"]
    count, slots = frames.shape[:2]
    images = frames.to(torch.float32, copy=True)  # worked on in place below
    if "factors" in batch:
        images = colour_jitter(images.flatten(0, 1).div_(255), batch["factors"].flatten(0, 1),
                               batch["order"].flatten(0, 1)).mul_(255).view(frames.shape)
    if slots == 3:
        weights = batch["weights"].to(images.dtype).view(count, 2, 1, 1, 1)
        views = torch.lerp(images[:, 0::2], images[:, 1:2], weights)
    else:
        views = images
    std = views.new_tensor(spec.std).view(3, 1, 1)
    views = views.mul_(1 / (255 * std)).sub_(views.new_tensor(spec.mean).view(3, 1, 1) / std)
    return views[:, 0], views[:, 1]
