"""What every pretraining method is: a backbone, its heads, and a loss on a batch of pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from pipeline.models import build_backbone

Preset = Literal["paper", "code"]
METHODS: dict[str, type[Method]] = {}


@dataclass(frozen=True)
class MethodConfig:
    """The knobs the methods share (``docs/method-spec.md`` §4-5); each reads what it needs.

    ``preset`` picks the paper's or the released code's reading where they disagree.
    """

    backbone: str = "resnet18"
    imagenet: bool | str | Path = False
    preset: Preset = "code"
    num_classes: int = 2
    projection_dim: int = 256
    temperature: float = 0.5
    supervised_weight: float = 0.2   # USCL lambda / HiCo beta
    hico_peer_weight: float = 0.5     # HiCo lambda
    hico_alpha: float = 0.2           # softened-CE alpha
    hico_fpn_batch_norm: bool | None = None  # None: per preset (paper True, code False)

    def __post_init__(self) -> None:
        if self.preset not in ("paper", "code"):
            raise ValueError(f"preset must be 'paper' or 'code', got {self.preset!r}")


def register(name: str):
    """Class decorator: make a :class:`Method` available as ``train.method: name``."""
    def decorate(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls
    return decorate


def build_method(name: str, config: MethodConfig) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name](config)


class Method(nn.Module):
    """Base class: owns ``self.backbone`` (a torchvision model without classifier).

    Subclasses add heads and implement :meth:`loss`. ``frame_level`` methods draw batches of
    frames instead of one pair per video, ``pair_mode`` fixes how a pair is drawn (SimCLR:
    two augmentations of one frame, whatever ``train.pair_mode``); ``trains`` is False
    for methods that export their initialisation unchanged; ``has_unused_parameters`` for
    methods whose forward leaves some parameters without gradient.
    """

    name = "base"
    frame_level = False
    pair_mode: str | None = None
    trains = True
    has_unused_parameters = False  # DDP must then look for them every step

    def __init__(self, config: MethodConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone, self.features = build_backbone(config.backbone, config.imagenet)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss terms on a batch ``{"view1", "view2", "label"}``; ``"total"`` is optimised."""
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss terms: calling the module (not :meth:`loss`) lets DDP sync gradients."""
        return self.loss(batch)

    def supervised_total(self, ce_1: torch.Tensor, ce_2: torch.Tensor) -> torch.Tensor:
        """The two views' supervised terms: weighted per view (code) or averaged (paper)."""
        weight = self.config.supervised_weight
        return weight * (ce_1 + ce_2) * (1.0 if self.config.preset == "code" else 0.5)
