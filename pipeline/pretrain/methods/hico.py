"""HiCo (ACCV 2022): hierarchical contrast on a ResNet-FPN plus a softened CE (HiCo Eqs. 5-9).

Local, medium and global embeddings come from pooled pyramid levels (P2, P3 in the released
code or P4 in the paper, and P5), so any input size works; the released code's flattening
heads (~273 M parameters, 224 px only) are deliberately not reproduced.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config import TrainConfig
from pipeline.pretrain.heads import PooledLevelHead, ProjectionHead, ResNetFPN
from pipeline.pretrain.losses import hico_contrastive, softened_cross_entropy
from pipeline.pretrain.methods.base import Method, register


@register("hico")
class HiCo(Method):
    """Presets (docs/methods.md §4.2, §5.3):

    * ``code``: FPN without BatchNorm, medium = P3, same-view cross-level terms, softened CE
      with alpha / (M - 1) over the M labelled samples, classifier on pooled C5
      (Linear 512 -> 256 -> classes), supervised weight per view;
    * ``paper``: FPN with BatchNorm + ReLU, medium = P4, cross-view cross-level terms,
      alpha / (N - 1) over the batch, linear classifier on the global embedding, views averaged.
    """

    has_unused_parameters = True  # the smoothing conv of the pyramid level not embedded

    def __init__(self, config: TrainConfig, num_classes: int = 2) -> None:
        super().__init__(config, num_classes)
        paper = config.preset == "paper"
        batch_norm = paper if config.hico.fpn_batch_norm is None else config.hico.fpn_batch_norm
        self.fpn = ResNetFPN(self.backbone, batch_norm=batch_norm)
        self.levels = {"local": "P2", "medium": "P4" if paper else "P3", "global": "P5"}
        self.heads = nn.ModuleDict({name: PooledLevelHead(out_features=config.projection_dim)
                                    for name in self.levels})
        self.classifier = (nn.Linear(config.projection_dim, num_classes) if paper
                           else ProjectionHead(self.features, num_classes, 256))

    def embed(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        maps = self.fpn(images)
        embeddings = {name: self.heads[name](maps[level]) for name, level in self.levels.items()}
        logits = self.classifier(embeddings["global"] if self.config.preset == "paper"
                                 else maps["C5_pooled"])
        return embeddings, logits

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Both views' level embeddings and class logits."""
        outputs = {}
        for k in (1, 2):
            outputs[f"embeddings{k}"], outputs[f"logits{k}"] = self.embed(batch[f"view{k}"])
        return outputs

    def loss(self, outputs: dict, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        config = self.config
        e1, e2 = outputs["embeddings1"], outputs["embeddings2"]
        logits1, logits2 = outputs["logits1"], outputs["logits2"]
        terms = hico_contrastive(
            e1, e2, config.hico.peer_weight, config.temperature,
            "cross_view" if config.preset == "paper" else "same_view")
        contrastive = terms.pop("total")
        result = {f"contrastive_{name}": value for name, value in terms.items()}
        result["contrastive"] = contrastive
        if config.supervised_weight:
            ce = [softened_cross_entropy(logits, batch["label"], config.hico.alpha, config.preset)
                  for logits in (logits1, logits2)]
            result["supervised"] = self.supervised_total(*ce)
        result["total"] = contrastive + result.get("supervised", 0.0)
        return result
