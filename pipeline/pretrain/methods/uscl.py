"""USCL (MICCAI 2021): NT-Xent on PPI pairs plus a supervised CE branch (USCL Eq. 1/6)."""

from __future__ import annotations

import torch

from pipeline.config import TrainConfig
from pipeline.pretrain.heads import ProjectionHead
from pipeline.pretrain.losses import labelled_cross_entropy, nt_xent
from pipeline.pretrain.methods.base import Method, register


@register("uscl")
class USCL(Method):
    """Backbone f, projection g (512 -> 512 -> 256), linear classifier h.

    The classifier reads the representation r (paper) or the projection z (code, §4.1).
    ``L = NT-Xent(z1, z2) + supervised terms`` (see :meth:`Method.supervised_total`); batches
    without a labelled sample contribute 0, not NaN.
    """

    def __init__(self, config: TrainConfig, num_classes: int = 2) -> None:
        super().__init__(config, num_classes)
        self.projection = ProjectionHead(self.features, config.projection_dim)
        classifier_input = self.features if config.preset == "paper" else config.projection_dim
        self.classifier = torch.nn.Linear(classifier_input, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        r1, r2 = self.backbone(batch["view1"]), self.backbone(batch["view2"])
        return {"r1": r1, "r2": r2, "z1": self.projection(r1), "z2": self.projection(r2)}

    def loss(self, outputs: dict[str, torch.Tensor],
             batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        r1, r2, z1, z2 = (outputs[name] for name in ("r1", "r2", "z1", "z2"))
        contrastive = nt_xent(z1, z2, self.config.temperature)
        terms = {"contrastive": contrastive}
        if self.config.supervised_weight:
            source = (r1, r2) if self.config.preset == "paper" else (z1, z2)
            ce = [labelled_cross_entropy(self.classifier(x), batch["label"]) for x in source]
            terms["supervised"] = self.supervised_total(*ce)
        terms["total"] = sum(terms.values())
        return terms
