"""Terminal rendering shared by the stages and the ``uspipe`` CLI (rich tables)."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

console = Console(stderr=False)


def failures_table(videos: pd.DataFrame, title: str = "videos that failed") -> Table:
    """One row per video whose status is not ok: id, source, status and the error."""
    table = Table(title=title, show_lines=False)
    for column in ("video", "source", "status", "error"):
        table.add_column(column, overflow="fold")
    for row in videos[videos["status"] != "ok"].itertuples():
        table.add_row(row.video_id, row.source_path, row.status, str(row.error))
    return table


def counts_table(name: str, counts: dict[str, int]) -> Table:
    """Videos per value of ``name`` (e.g. per label)."""
    table = Table(title=name)
    table.add_column(name)
    table.add_column("videos", justify="right")
    for key, value in counts.items():
        table.add_row(str(key), str(value))
    return table
