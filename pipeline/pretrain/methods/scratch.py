"""No pretraining: the stage exports the (seeded) random initialisation, so that downstream
comparisons treat every baseline the same way."""

from __future__ import annotations

from pipeline.pretrain.methods.base import Method, register


@register("scratch")
class Scratch(Method):
    trains = False
