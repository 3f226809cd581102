"""Supervised baseline (the papers' "US-4-supervised"): cross-entropy on labels only."""

from __future__ import annotations

import torch

from pipeline.losses import labelled_cross_entropy
from pipeline.methods.base import Method, MethodConfig, register


@register("supervised")
class Supervised(Method):
    """Backbone + linear classifier; ``L = (CE(view1) + CE(view2)) / 2`` on labelled samples."""

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.classifier = torch.nn.Linear(self.features, config.num_classes)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ce = [labelled_cross_entropy(self.classifier(self.backbone(batch[view])), batch["label"])
              for view in ("view1", "view2")]
        total = (ce[0] + ce[1]) / 2
        return {"supervised": total, "total": total}
