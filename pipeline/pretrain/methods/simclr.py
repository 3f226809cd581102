"""SimCLR baseline: two augmentations of one frame, frames sampled as images (Chen et al.
2020), so two frames of one video can be negatives of each other (the "similarity conflict")."""

from __future__ import annotations

from dataclasses import replace

from pipeline.config import TrainConfig
from pipeline.pretrain.methods.base import register
from pipeline.pretrain.methods.uscl import USCL


@register("simclr")
class SimCLR(USCL):
    """USCL's model and NT-Xent without the supervised branch, on frame-level batches."""

    frame_level = True
    pair_mode = "same_frame"

    def __init__(self, config: TrainConfig, num_classes: int = 2) -> None:
        super().__init__(replace(config, supervised_weight=0.0), num_classes)
