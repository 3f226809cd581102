"""Matplotlib without a display, and PNGs written atomically."""

from __future__ import annotations

from pathlib import Path

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
