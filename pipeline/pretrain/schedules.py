"""Per-epoch learning-rate factors (multipliers of the base lr for ``LambdaLR``), spec §7."""

from __future__ import annotations

import math


def _cosine(epoch: int, start: int, epochs: int) -> float:
    span = max(1, epochs - start)
    return 0.5 * (1 + math.cos(math.pi * (epoch - start) / span))


def constant_then_cosine(epoch: int, epochs: int, constant_epochs: int) -> float:
    """USCL/HiCo: constant for ``constant_epochs`` epochs, then cosine annealing to 0."""
    return 1.0 if epoch < constant_epochs else _cosine(epoch, constant_epochs, epochs)


def warmup_then_cosine(epoch: int, epochs: int, warmup_epochs: int) -> float:
    """Meta-USCL: ``0.1 + 0.9 exp(-5 (1 - e / W)^2)`` up to epoch W (from ~0.106 to 1), then
    cosine to 0 at ``epochs`` (the released code's schedule; the paper gives none)."""
    if epoch <= warmup_epochs and warmup_epochs > 0:
        return 0.1 + 0.9 * math.exp(-5 * (1 - epoch / warmup_epochs) ** 2)
    return _cosine(epoch, warmup_epochs, epochs)
