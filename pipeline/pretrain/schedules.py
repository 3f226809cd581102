"""Learning-rate factors (multipliers of the base lr), ``docs/methods.md`` §7.

Each is a function of the training progress in epochs, a float: the engine updates the lr
after every optimiser step with ``epoch = step / steps_per_epoch``. The released codes'
schedules change once per epoch (they take ``floor(epoch)``); the prototype's cosine is per
step."""

from __future__ import annotations

import math


def _cosine(epoch: float, start: int, epochs: int) -> float:
    span = max(1, epochs - start)
    return 0.5 * (1 + math.cos(math.pi * (epoch - start) / span))


def constant_then_cosine(epoch: float, epochs: int, constant_epochs: int) -> float:
    """USCL/HiCo: constant for ``constant_epochs`` epochs, then cosine annealing to 0, changed
    once per epoch."""
    epoch = math.floor(epoch)
    return 1.0 if epoch < constant_epochs else _cosine(epoch, constant_epochs, epochs)


def cosine_per_step(epoch: float, epochs: int) -> float:
    """Cosine from 1 at the first step to 0 after the last, updated every step."""
    return _cosine(epoch, 0, epochs)


def warmup_then_cosine(epoch: float, epochs: int, warmup_epochs: int) -> float:
    """Meta-USCL: ``0.1 + 0.9 exp(-5 (1 - e / W)^2)`` up to epoch W (from ~0.106 to 1), then
    cosine to 0 at ``epochs`` (the released code's schedule; the paper gives none), changed
    once per epoch."""
    epoch = math.floor(epoch)
    if epoch <= warmup_epochs and warmup_epochs > 0:
        return 0.1 + 0.9 * math.exp(-5 * (1 - epoch / warmup_epochs) ** 2)
    return _cosine(epoch, warmup_epochs, epochs)
