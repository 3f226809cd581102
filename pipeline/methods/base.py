"""What every pretraining method is: a backbone, its heads, a loss on a batch of pairs, and
how it is optimised (the defaults are USCL's; a method overrides what it does differently)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from pipeline.augment import AugmentSpec
from pipeline.config import MetaConfig, TrainConfig
from pipeline.models import build_backbone
from pipeline.pairs import PairSpec
from pipeline.schedules import constant_then_cosine

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
    meta: MetaConfig = field(default_factory=MetaConfig)  # Meta-USCL (§6)

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

    def pair_spec(self, config: TrainConfig) -> tuple[PairSpec, bool]:
        """How pairs are drawn, and whether frames are mixed before augmenting (method-spec
        §2.1): the released USCL/HiCo code draws three frames in any order with one shared
        Beta(0.5, 0.5) weight and augments before mixing; the paper draws them in time order
        with two independent weights and mixes first."""
        code = config.preset == "code"
        return PairSpec(mode=self.pair_mode or config.pair_mode,
                        alpha=config.mix_alpha or 0.5, beta=config.mix_beta or 0.5,
                        chronological=not code, shared_weight=code), not code

    def augment_spec(self, config: TrainConfig) -> AugmentSpec:
        """One view's augmentation: USCL/HiCo's (method-spec §3.1) at ``image_size``."""
        return AugmentSpec(size=config.image_size)

    def configure_optimiser(self, config: TrainConfig
                            ) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
        """Adam (lr, weight decay) and the per-epoch lr factor: constant, then cosine (§7)."""
        optimiser = torch.optim.Adam(self.parameters(), lr=config.lr,
                                     weight_decay=config.weight_decay)
        return optimiser, lambda epoch: constant_then_cosine(epoch, config.epochs,
                                                             config.constant_epochs)

    def meta_set(self, train_videos: list[str], held_out_videos: list[str],
                 config: TrainConfig) -> tuple[list[str], PairSpec] | None:
        """Videos and pair rule of a second stream of pairs the update needs (Meta-USCL's
        meta set), or None; its batches reach :meth:`training_step` as ``meta_view1/2``."""
        return None

    def training_step(self, forward: Callable, batch: dict[str, torch.Tensor],
                      optimiser: torch.optim.Optimizer,
                      autocast: AbstractContextManager) -> dict[str, torch.Tensor]:
        """One optimisation step on ``batch``; ``forward`` is this method as the engine runs
        it (wrapped in DDP and/or compiled), ``autocast`` the precision context of forward
        passes. Methods with their own update override this."""
        with autocast:
            terms = forward(batch)
        optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimiser.step()
        return terms

    def supervised_total(self, ce_1: torch.Tensor, ce_2: torch.Tensor) -> torch.Tensor:
        """The two views' supervised terms: weighted per view (code) or averaged (paper)."""
        weight = self.config.supervised_weight
        return weight * (ce_1 + ce_2) * (1.0 if self.config.preset == "code" else 0.5)
