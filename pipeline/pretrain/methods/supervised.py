"""Supervised baseline (the papers' "US-4-supervised"): cross-entropy on labels only."""

from __future__ import annotations

import torch

from pipeline.config import TrainConfig
from pipeline.pretrain.losses import labelled_cross_entropy
from pipeline.pretrain.methods.base import Method, register


@register("supervised")
class Supervised(Method):
    """Backbone + linear classifier; ``L = (CE(view1) + CE(view2)) / 2`` on labelled samples."""

    def __init__(self, config: TrainConfig, num_classes: int = 2) -> None:
        super().__init__(config, num_classes)
        self.classifier = torch.nn.Linear(self.features, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"logits{k}": self.classifier(self.backbone(batch[f"view{k}"])) for k in (1, 2)}

    def loss(self, outputs: dict[str, torch.Tensor],
             batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ce = [labelled_cross_entropy(outputs[f"logits{k}"], batch["label"]) for k in (1, 2)]
        total = (ce[0] + ce[1]) / 2
        return {"supervised": total, "total": total}
