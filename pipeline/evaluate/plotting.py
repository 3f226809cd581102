"""Matplotlib without a display, and PNGs written atomically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.atomic import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure, path: Path) -> Path:
    """Write ``figure`` to ``path`` (temp name, then rename) and close it."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=120, bbox_inches="tight")
    pyplot().close(figure)
    return path


def loss_figure(curves: pd.DataFrame, path: Path, title: str) -> Path:
    """Training loss per epoch, one line per (fold, seed) run."""
    figure, axis = pyplot().subplots(figsize=(5, 3.5))
    for (fold, seed), run in curves.groupby(["fold", "seed"]):
        axis.plot(run["epoch"] + 1, run["train_loss"], marker="o",
                  label=f"fold {fold}, seed {seed}")
    axis.set(xlabel="epoch", ylabel="training loss", title=title)
    axis.legend(fontsize=7)
    return save_png(figure, path)
