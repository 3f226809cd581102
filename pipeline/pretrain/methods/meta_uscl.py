"""Meta-USCL (IEEE TMI 2022): positive pairs weighted by a meta-learned CMW-Net (Eqs. 1, 5-9).

Every iteration (Meta-USCL §III.C, docs/methods.md §6.2), around one forward pass of the batch:

1. virtual step (Eq. 7): ``theta_hat(phi) = theta - a * grad_theta L_w(theta, phi)``, the
   CMW-Net-weighted loss of the batch;
2. meta step (Eq. 8): one Adam step of CMW-Net on the unweighted InfoNCE of a meta batch
   through ``theta_hat`` (``torch.func.functional_call`` on the live modules). Its gradient in
   ``phi`` is computed exactly with a forward-mode Jacobian-vector product instead of a
   second-order backward (:meth:`MetaUSCL.meta_gradient`);
3. real step (Eq. 9): one SGD step of the main model on the batch, weighted by the updated
   CMW-Net (weights as constants), differentiating the same forward pass.

``meta_simclr`` is the same update on SimCLR's frame-level pairs (Meta-USCL Table II).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch
from torch import nn
from torch.autograd import forward_ad
from torch.func import functional_call

from pipeline import distributed
from pipeline.config import TrainConfig
from pipeline.data.views import AugmentSpec
from pipeline.pretrain.heads import ProjectionHead
from pipeline.pretrain.losses import nt_xent
from pipeline.pretrain.methods.base import Method, register
from pipeline.pretrain.pairs import PairSpec
from pipeline.pretrain.schedules import warmup_then_cosine

WEIGHT_NET = "weight_net."
PROJECTION_DIM = 128  # the released feat_dim (Meta-USCL is not given train.projection_dim)


class CMWNet(nn.Sequential):
    """Pair weight from the two backbone representations (docs/methods.md §6.1):
    ``sigmoid(W2 relu(W1 [h_a; h_b]))``, hidden width 10."""

    def __init__(self, features: int, hidden: int = 10) -> None:
        super().__init__(nn.Linear(2 * features, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1), nn.Sigmoid())

    def forward(self, h_a: torch.Tensor, h_b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(torch.cat([h_a, h_b], dim=1)).squeeze(1)


@register("meta_uscl")
class MetaUSCL(Method):
    """Backbone, projection (n -> n -> 128, the released ``feat_dim``), CMW-Net; no classifier.

    Presets (docs/methods.md §6, :class:`~pipeline.config.MetaConfig`): ``code`` normalises the
    weighted loss by the weights' sum, draws meta pairs from first frames of a random 20 % of
    all videos (leaking training videos) and takes the virtual step with the main optimiser's
    momentum and weight decay; ``paper`` uses Eq. 1 as written, held-out PPI meta pairs and a
    plain gradient virtual step.
    """

    has_unused_parameters = True  # CMW-Net gets its gradient from the meta step, not forward

    def __init__(self, config: TrainConfig, num_classes: int = 2) -> None:
        super().__init__(config, num_classes)
        meta, code = config.meta, config.preset == "code"
        self.divide_by_weight_sum = (code if meta.divide_by_weight_sum is None
                                     else meta.divide_by_weight_sum)
        self.virtual_momentum = code if meta.virtual_momentum is None else meta.virtual_momentum
        self.projection = ProjectionHead(self.features, PROJECTION_DIM)
        self.weight_net = CMWNet(self.features, meta.weight_net_hidden)
        self.weight_optimiser = torch.optim.Adam(self.weight_net.parameters(),
                                                 lr=meta.weight_net_lr)

    # ---- what the engine asks -------------------------------------------------------------
    def pair_spec(self) -> tuple[PairSpec, bool]:
        """Meta-USCL's PPI (§2.2): time order, two independent Beta(3, 5) weights, mixed on
        raw frames before augmenting (the same in both presets; the paper gives no values)."""
        config = self.config
        return PairSpec(mode=self.pair_mode or config.pair_mode, alpha=config.mix_alpha or 3.0,
                        beta=config.mix_beta or 5.0, chronological=True), True

    def augment_spec(self) -> AugmentSpec:
        """Meta-USCL's views (§3.1, released defaults): crop scale from 0.7, colour jitter
        0.8 x 0.8 (b, c, s 0.64, hue 0.16), normalisation 0.18 / 0.24."""
        return AugmentSpec(size=self.config.image_size, crop_scale=(0.7, 1.0),
                           jitter=(0.64, 0.64, 0.64, 0.16), mean=(0.18,) * 3, std=(0.24,) * 3)

    def configure_optimiser(self) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
        """SGD with momentum on the main model (CMW-Net has its own Adam), warm-up then
        cosine (§6.4)."""
        config, meta = self.config, self.config.meta
        optimiser = torch.optim.SGD(self.main_parameters().values(), lr=meta.lr,
                                    momentum=meta.momentum,
                                    weight_decay=config.weight_decay)
        return optimiser, lambda epoch: warmup_then_cosine(epoch, config.epochs,
                                                           meta.warmup_epochs)

    def meta_set(self, train_videos: list[str], held_out_videos: list[str]
                 ) -> tuple[list[str], PairSpec]:
        """``held_out``: PPI pairs of the held-out split, never a training video (paper).
        ``released``: the first frame of a random 20 % of all videos, twice (the released
        code; most of these are training videos: the meta set LEAKS)."""
        if self.meta_set_kind == "held_out":
            if not held_out_videos:
                raise ValueError("meta_set held_out needs held-out videos (split.val_fraction "
                                 "> 0, and a split with a val part)")
            spec, _ = self.pair_spec()
            return sorted(held_out_videos), PairSpec(mode="ppi", alpha=spec.alpha,
                                                     beta=spec.beta, chronological=True)
        everything = sorted(train_videos + held_out_videos)
        count = max(1, math.ceil(0.2 * len(everything)))
        chosen = np.random.default_rng(self.config.seed).choice(len(everything), count,
                                                           replace=False)
        return [everything[i] for i in sorted(chosen)], PairSpec(mode="first_frame")

    @property
    def meta_set_kind(self) -> str:
        kind = self.config.meta.meta_set
        return kind or ("released" if self.config.preset == "code" else "held_out")

    # ---- the losses -------------------------------------------------------------------------
    def embed(self, views: torch.Tensor, parameters: dict[str, torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Representation h and projection z of ``views``, with the module's own weights or
        (``parameters``, names as in ``named_parameters``) functionally substituted ones."""
        if parameters is None:
            h = self.backbone(views)
            return h, self.projection(h)
        h = functional_call(self.backbone, _part(parameters, "backbone."), (views,))
        return h, functional_call(self.projection, _part(parameters, "projection."), (h,))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The training batch's representations ``h1, h2`` and projections ``z1, z2``: the
        one forward pass that both the virtual and the real step differentiate."""
        h1, z1 = self.embed(batch["view1"])
        h2, z2 = self.embed(batch["view2"])
        return {"h1": h1, "z1": z1, "h2": h2, "z2": z2}

    def weighted_loss(self, z1: torch.Tensor, z2: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
        """Meta-USCL Eq. 1, normalised by the weights' sum or not per preset (§5.4)."""
        return nt_xent(z1, z2, self.config.temperature, weights, self.divide_by_weight_sum)

    def virtual_loss(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The virtual step's loss (Eq. 7): weights from the live representations, so its
        gradient also flows through CMW-Net's input (as released, §6.2)."""
        weights = self.weight_net(outputs["h1"], outputs["h2"])
        return self.weighted_loss(outputs["z1"], outputs["z2"], weights)

    def real_loss(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The real step's loss (Eq. 9): pairs weighted by the current CMW-Net, as constants."""
        with torch.no_grad():
            weights = self.weight_net(outputs["h1"], outputs["h2"])
        total = self.weighted_loss(outputs["z1"], outputs["z2"], weights)
        return {"contrastive": total, "pair_weight": weights.mean(), "total": total}

    def loss(self, outputs: dict[str, torch.Tensor],
             batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The real step's loss terms (:meth:`real_loss`)."""
        return self.real_loss(outputs)

    # ---- the three-step update -----------------------------------------------------------
    def main_parameters(self) -> dict[str, nn.Parameter]:
        """The main model's trainable parameters (theta), CMW-Net's excluded."""
        return {name: p for name, p in self.named_parameters()
                if not name.startswith(WEIGHT_NET) and p.requires_grad}

    def virtual_step(self, outputs: dict[str, torch.Tensor], optimiser: torch.optim.SGD
                     ) -> tuple[dict[str, torch.Tensor], float]:
        """Eq. 7 at the current CMW-Net: ``theta_hat = theta - a * d`` as plain tensors, and
        ``a``. ``d`` is the virtual loss's gradient, plus momentum and weight decay as the
        main optimiser would apply them (code) or alone (paper)."""
        theta = self.main_parameters()
        gradients = torch.autograd.grad(self.virtual_loss(outputs), list(theta.values()),
                                        retain_graph=True)  # the real step reuses the pass
        group = optimiser.param_groups[0]
        lr = self.config.meta.virtual_lr or group["lr"]
        stepped = {}
        with torch.no_grad():
            for (name, value), gradient in zip(theta.items(), gradients, strict=True):
                direction = gradient
                if self.virtual_momentum:
                    direction = direction + group["weight_decay"] * value
                    buffer = optimiser.state.get(value, {}).get("momentum_buffer")
                    if buffer is not None:
                        direction = direction + group["momentum"] * buffer
                stepped[name] = value - lr * direction
        return stepped, lr

    def meta_gradient(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                      optimiser: torch.optim.SGD) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Eq. 8's objective, the meta batch's unweighted InfoNCE through ``theta_hat``, and
        its gradient in the CMW-Net parameters ``phi``.

        Only ``d``'s gradient term depends on ``phi``, so the chain rule gives
        ``dL/dphi = -a * d/dphi <g, grad_theta L_w(theta, phi)>`` with
        ``g = grad L_meta(theta_hat)``: the derivative of ``L_w`` along ``g`` is one
        forward-mode pass (a Jacobian-vector product), where differentiating through the
        virtual gradient would take a second-order backward. The result is the same.
        BatchNorm runs on batch statistics; running statistics are left untouched.
        """
        virtual, lr = self.virtual_step(outputs, optimiser)
        leaves = {name: value.requires_grad_() for name, value in virtual.items()}
        _, z1 = self.embed(batch["meta_view1"], {**leaves, **self._buffer_copies()})
        _, z2 = self.embed(batch["meta_view2"], {**leaves, **self._buffer_copies()})
        meta_loss = nt_xent(z1, z2, self.config.temperature)
        direction = torch.autograd.grad(meta_loss, list(leaves.values()))
        with forward_ad.dual_level():
            dual = {name: forward_ad.make_dual(p.detach(), tangent) for (name, p), tangent
                    in zip(self.main_parameters().items(), direction, strict=True)}
            h1, z1 = self.embed(batch["view1"], {**dual, **self._buffer_copies()})
            h2, z2 = self.embed(batch["view2"], {**dual, **self._buffer_copies()})
            loss = self.virtual_loss({"h1": h1, "z1": z1, "h2": h2, "z2": z2})
            slope = forward_ad.unpack_dual(loss).tangent
        gradients = torch.autograd.grad(-lr * slope, list(self.weight_net.parameters()))
        return meta_loss.detach(), list(gradients)

    def meta_step(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                  optimiser: torch.optim.SGD) -> torch.Tensor:
        """Eq. 8: CMW-Net's Adam step on :meth:`meta_gradient`, gradients averaged over
        ranks. Returns the meta loss."""
        meta_loss, gradients = self.meta_gradient(outputs, batch, optimiser)
        for parameter, gradient in zip(self.weight_net.parameters(), gradients, strict=True):
            parameter.grad = distributed.average_(gradient)
        self.weight_optimiser.step()
        self.weight_optimiser.zero_grad(set_to_none=True)  # not carried into DDP buckets
        return meta_loss

    def training_step(self, forward: Callable, batch: dict[str, torch.Tensor],
                      optimiser: torch.optim.Optimizer,
                      autocast: AbstractContextManager) -> dict[str, torch.Tensor]:
        """Virtual, meta and real step (Eqs. 7-9) around one forward pass of the batch."""
        with autocast:
            outputs = forward(batch)
            meta_loss = self.meta_step(outputs, batch, optimiser)
            terms = self.real_loss(outputs)
        optimiser.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimiser.step()
        return {**terms, "meta": meta_loss}

    def _buffer_copies(self) -> dict[str, torch.Tensor]:
        return {name: b.clone() for name, b in self.named_buffers()}

    # ---- CMW-Net's optimiser travels in checkpoints -------------------------------------------
    def get_extra_state(self) -> dict:
        return {"weight_optimiser": self.weight_optimiser.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        self.weight_optimiser.load_state_dict(state["weight_optimiser"])


@register("meta_simclr")
class MetaSimCLR(MetaUSCL):
    """Meta+SimCLR (Meta-USCL Table II): CMW-Net weighting of frame-level SimCLR pairs."""

    frame_level = True
    pair_mode = "same_frame"


def _part(parameters: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: value for name, value in parameters.items()
            if name.startswith(prefix)}
