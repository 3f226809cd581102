"""Pretraining views, batch-wise (``docs/methods.md`` §3.1).

A pretraining sample is two views of a clip's frames. Each frame's crop, flip and (on a CPU)
colour jitter are drawn and applied per sample in the loader workers
(:mod:`pipeline.data.views`); on a GPU the workers ship small uint8 frames with their jitter
draws and this module finishes them on whole batches on the device (:func:`colour_jitter`,
each frame with its own factors and order, as torchvision's ``ColorJitter``). The PPI mix
and the normalisation (:func:`make_views`) follow where the jitter ran.
"""

from __future__ import annotations

import torch

from pipeline.data.views import AugmentSpec

GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


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
