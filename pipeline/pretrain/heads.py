"""Projection heads and HiCo's ResNet-FPN (``docs/methods.md`` §4).

HiCo's heads are pooled, so the model is not locked to one image size; the released code's
flattening heads (~273 M parameters, 224 px only) are not provided.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Sequential):
    """Two-layer MLP ``Linear -> ReLU -> Linear`` (USCL §3.3: g(r) = W2 relu(W1 r))."""

    def __init__(self, in_features: int, out_features: int = 256,
                 hidden_features: int | None = None) -> None:
        hidden = hidden_features or in_features
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_features))


class ResNetFPN(nn.Module):
    """ResNet bottom-up path with HiCo's top-down feature pyramid (HiCo §3.1, Fig. 2).

    Returns ``{"C5_pooled", "P2", "P3", "P4", "P5"}``. The released code's FPN (default,
    ``batch_norm=False``): 1x1 lateral convs, bilinear top-down sums, 3x3 smoothing of P2-P4
    only, convolutions with bias and no normalisation; ``batch_norm=True`` follows the paper
    text (every convolution followed by BatchNorm and ReLU).
    """

    def __init__(self, backbone: nn.Module, channels: int = 256,
                 batch_norm: bool = False) -> None:
        super().__init__()
        if not all(hasattr(backbone, f"layer{i}") for i in range(1, 5)):
            raise ValueError("ResNetFPN needs a ResNet backbone (layer1..layer4)")
        self.body = backbone
        widths = [getattr(backbone, f"layer{i}")[-1].conv1.in_channels for i in range(1, 5)]

        def conv(in_channels: int, kernel: int) -> nn.Module:
            layer = nn.Conv2d(in_channels, channels, kernel, padding=kernel // 2,
                              bias=not batch_norm)
            if not batch_norm:
                return layer
            return nn.Sequential(layer, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))

        self.lateral = nn.ModuleList(conv(width, 1) for width in widths)  # C2..C5
        self.smooth = nn.ModuleList(conv(channels, 3) for _ in range(3))  # P2..P4

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        body = self.body
        x = body.maxpool(body.relu(body.bn1(body.conv1(images))))
        stages = []
        for i in range(1, 5):
            x = getattr(body, f"layer{i}")(x)
            stages.append(x)
        top = self.lateral[3](stages[3])
        outputs = {"C5_pooled": torch.flatten(F.adaptive_avg_pool2d(stages[3], 1), 1),
                   "P5": top}
        for level in (2, 1, 0):  # C4, C3, C2
            top = F.interpolate(top, size=stages[level].shape[-2:], mode="bilinear") \
                + self.lateral[level](stages[level])
            outputs[f"P{level + 2}"] = self.smooth[level](top)
        return outputs


class PooledLevelHead(nn.Module):
    """A pyramid level's embedding: global average pool, then a projection MLP.

    Pooling replaces the released code's flattening (802,816 inputs for P2 at 224 px), so one
    model serves 64, 128 and 224 px.
    """

    def __init__(self, channels: int = 256, out_features: int = 256) -> None:
        super().__init__()
        self.project = ProjectionHead(channels, out_features)

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        return self.project(torch.flatten(F.adaptive_avg_pool2d(level, 1), 1))
