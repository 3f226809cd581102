"""Looking at a backbone: t-SNE of frame embeddings (Meta-USCL Fig. 7) and Grad-CAM maps
(USCL Fig. 4), as PNGs.

A pretrained backbone has no classifier, so Grad-CAM here explains the representation itself:
the target is the squared norm of the pooled feature vector, and the map is the ReLU of the
last convolutional stage's activations weighted by their spatially averaged gradients
(Selvaraju et al. 2017, Eq. 1-2 with that target).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.card import Normalisation
from pipeline.data.frames import frame_locations
from pipeline.data.manifest import Manifest
from pipeline.data.views import plain_view
from pipeline.evaluate.plotting import pyplot, save_png


def frames_of(manifest: Manifest, videos: pd.DataFrame, per_video: int, size: int,
              normalisation: Normalisation) -> tuple[torch.Tensor, list[str], list[str]]:
    """Up to ``per_video`` evenly spaced frames of each video, resized and normalised, with
    their video ids and labels."""
    images, ids, labels = [], [], []
    for video, label, locations in zip(videos["video_id"], videos["label"],
                                       frame_locations(manifest, videos["video_id"].tolist()),
                                       strict=True):
        picks = np.unique(np.linspace(0, len(locations) - 1, per_video).round().astype(int))
        for pick in picks:
            images.append(plain_view(locations[pick].image(size), size, normalisation.mean,
                                     normalisation.std))
            ids.append(video)
            labels.append(str(label))
    return torch.stack(images), ids, labels


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, batch: int = 128) -> np.ndarray:
    return torch.cat([model(images[i:i + batch]) for i in range(0, len(images), batch)]).numpy()


def tsne_figure(features: np.ndarray, video_ids: list[str], labels: list[str], path: Path,
                title: str, seed: int = 0) -> Path:
    """Two t-SNE panels of the same embedding: coloured by video and by class."""
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    points = TSNE(perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        (features - features.mean(0)) / (features.std(0) + 1e-8))
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    videos = {video: i for i, video in enumerate(dict.fromkeys(video_ids))}
    axes[0].scatter(points[:, 0], points[:, 1], s=8, cmap="tab20",
                    c=[videos[v] % 20 for v in video_ids])
    axes[0].set_title(f"by video ({len(videos)} videos)", fontsize=9)
    for name in sorted(set(labels)):
        chosen = [i for i, label in enumerate(labels) if label == name]
        axes[1].scatter(points[chosen, 0], points[chosen, 1], s=8, label=name)
    axes[1].legend(fontsize=8)
    axes[1].set_title("by class", fontsize=9)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{title}: t-SNE of frame embeddings", fontsize=10)
    return save_png(figure, path)


def grad_cam(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Maps (N, H, W) in [0, 1]: ReLU(sum_k a_k A_k) of the last stage (``layer4`` or
    ``conv5``), a_k the mean gradient of ||h||^2 over the map, upsampled to the input."""
    stage = model.layer4 if hasattr(model, "layer4") else model.conv5
    captured = {}
    handle = stage.register_forward_hook(lambda _, __, output: captured.update(maps=output))
    try:
        images = images.clone().requires_grad_(True)
        target = model(images).pow(2).sum()
        maps = captured["maps"]
        gradients, = torch.autograd.grad(target, maps)
    finally:
        handle.remove()
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * maps).sum(1, keepdim=True))
    cams = nn.functional.interpolate(cams, size=images.shape[-2:], mode="bilinear")[:, 0]
    peak = cams.flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1)
    return (cams / peak).detach()


def grad_cam_figure(model: nn.Module, images: torch.Tensor, labels: list[str],
                    normalisation: Normalisation, path: Path, title: str) -> Path:
    """Each frame with its Grad-CAM map overlaid."""
    cams = grad_cam(model, images).numpy()
    mean = torch.tensor(normalisation.mean).view(3, 1, 1)
    std = torch.tensor(normalisation.std).view(3, 1, 1)
    pictures = (images * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    plt = pyplot()
    figure, axes = plt.subplots(1, len(images), figsize=(2.2 * len(images), 2.6),
                                squeeze=False)
    for axis, picture, cam, label in zip(axes[0], pictures, cams, labels, strict=True):
        axis.imshow(picture)
        axis.imshow(cam, cmap="jet", alpha=0.4)
        axis.set_title(label, fontsize=8)
        axis.axis("off")
    figure.suptitle(f"{title}: Grad-CAM of the representation", fontsize=10)
    return save_png(figure, path)
