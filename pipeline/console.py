"""Terminal output shared by the stages and the ``uspipe`` CLI.

The console reads no markup: file names, labels and error messages are user data, and a
``[`` in one (``Patient [anon] 02.mp4``) must print as it is, not as a style tag or a
``MarkupError``. Colour comes from styles (:func:`error_line`), never from text.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(stderr=False, markup=False, highlight=False)
DEBUG_VARIABLE = "USPIPE_DEBUG"


def error_line(message: str, label: str = "error:") -> None:
    """``error: message`` in red, on one line however long (paths stay greppable)."""
    console.print(Text.assemble((label, "bold red"), " ", message), soft_wrap=True)


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


def run_stage(main: Callable[..., None]) -> None:
    """Run a stage script's ``main`` through typer; an error prints one line naming the stage
    (``decode@pretrain: error: ...``) and exits 1. ``--debug`` (or ``USPIPE_DEBUG=1``, e.g.
    under ``dvc repro``) prints the traceback as well."""
    debug = "--debug" in sys.argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    stage = Path(sys.argv[0]).stem + "".join(
        f"@{argument}" for argument in sys.argv[1:2] if not argument.startswith("-"))
    try:
        typer.run(main)
    except Exception as error:  # noqa: BLE001 - the stage's last word, on one line
        if debug:
            traceback.print_exc()
        message = str(error) or type(error).__name__
        print(f"{stage}: error: {message}" + ("" if debug else
              f" ({type(error).__name__}; rerun with --debug or {DEBUG_VARIABLE}=1 for the "
              "traceback)"), file=sys.stderr)
        sys.exit(1)
