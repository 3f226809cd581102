"""What every pretraining method is: a backbone, its heads, a loss on a batch of pairs, and
how it is optimised (the defaults are USCL's; a method overrides what it does differently)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from torch import nn

from pipeline.backbones import build_backbone
from pipeline.card import RunCard
from pipeline.config import TrainConfig
from pipeline.data.views import AugmentSpec
from pipeline.pretrain.pairs import PairSpec
from pipeline.pretrain.schedules import constant_then_cosine, cosine_per_step

METHODS: dict[str, type[Method]] = {}


def load_trained(card: RunCard, checkpoint: Path) -> Method:
    """The method a pretraining run trained, rebuilt from its card and the engine's
    checkpoint (heads included, not just the exported backbone), in eval mode."""
    method = build_method(card.train_config(), len(card.classes))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    method.load_state_dict(state["model"])
    return method.eval()


def register(name: str):
    """Class decorator: make a :class:`Method` available as ``train.method: name``."""
    def decorate(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls
    return decorate


def build_method(config: TrainConfig, num_classes: int = 2) -> Method:
    """``config.method`` with the knobs of ``config`` (its preset's where null) and a
    classifier (if it has one) over ``num_classes`` classes."""
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; choose from "
                         f"{', '.join(sorted(METHODS))}")
    return METHODS[config.method](config.resolved(), max(1, num_classes))


class Method(nn.Module):
    """Base class: owns ``self.backbone`` (a torchvision model without classifier).

    ``self.config`` is the run's validated ``train:`` section, the one place every knob is
    read from (``preset`` picks the paper's or the released code's reading where they
    disagree, ``docs/methods.md`` §12). Subclasses add heads and implement :meth:`forward`
    and :meth:`loss`. ``frame_level`` methods draw batches of frames instead of one pair per
    video, ``pair_mode`` fixes how a pair is drawn (SimCLR:
    two augmentations of one frame, whatever ``train.pair_mode``); ``trains`` is False
    for methods that export their initialisation unchanged; ``has_unused_parameters`` for
    methods whose forward leaves some parameters without gradient.
    """

    name = "base"
    frame_level = False
    pair_mode: str | None = None
    trains = True
    has_unused_parameters = False  # DDP must then look for them every step

    def __init__(self, config: TrainConfig, num_classes: int = 2) -> None:
        super().__init__()
        self.config, self.num_classes = config, num_classes
        self.backbone, self.features = build_backbone(config.backbone, config.imagenet)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One forward pass of a batch ``{"view1", "view2", "label"}``: the named outputs
        (representations, embeddings, logits) that :meth:`loss` needs. The engine calls the
        module as it runs it (wrapped in DDP and/or compiled), so gradients sync."""
        raise NotImplementedError

    def loss(self, outputs: dict[str, torch.Tensor],
             batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Loss terms from :meth:`forward`'s ``outputs``; ``"total"`` is optimised."""
        raise NotImplementedError

    def pair_spec(self) -> tuple[PairSpec, bool]:
        """How pairs are drawn, and whether frames are mixed before augmenting (docs/methods.md
        §2.1): the released USCL/HiCo code draws three frames in any order with one shared
        Beta(0.5, 0.5) weight and augments before mixing; the paper draws them in time order
        with two independent weights and mixes first."""
        config = self.config
        code = config.preset == "code"
        return PairSpec(mode=self.pair_mode or config.pair_mode,
                        alpha=config.mix_alpha or 0.5, beta=config.mix_beta or 0.5,
                        chronological=not code, shared_weight=code), not code

    def augment_spec(self) -> AugmentSpec:
        """One view's augmentation: USCL/HiCo's (``docs/methods.md`` §3.1) at ``image_size``."""
        return AugmentSpec(size=self.config.image_size, jitter_p=self.config.jitter_p)

    def configure_optimiser(self) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
        """Adam (lr, weight decay) and the lr factor of ``train.lr_schedule`` (§7)."""
        config = self.config
        optimiser = torch.optim.Adam(self.parameters(), lr=config.lr,
                                     weight_decay=config.weight_decay)
        if config.lr_schedule == "cosine_per_step":
            return optimiser, lambda epoch: cosine_per_step(epoch, config.epochs)
        return optimiser, lambda epoch: constant_then_cosine(epoch, config.epochs,
                                                             config.constant_epochs)

    def meta_set(self, train_videos: list[str], held_out_videos: list[str]
                 ) -> tuple[list[str], PairSpec] | None:
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
            terms = self.loss(forward(batch), batch)
        optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimiser.step()
        return terms

    def supervised_total(self, ce_1: torch.Tensor, ce_2: torch.Tensor) -> torch.Tensor:
        """The two views' supervised terms: weighted per view (code) or averaged (paper)."""
        weight = self.config.supervised_weight
        return weight * (ce_1 + ce_2) * (1.0 if self.config.preset == "code" else 0.5)
