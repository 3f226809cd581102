"""One comparison table across experiments (the papers' Table 3 layout), Markdown and HTML.

A run is a folder holding an evaluate stage's output: ``metrics.json``, ``card.json`` (the
pretraining card), ``figures/*.png`` and, when image tasks ran, ``tasks/<name>/metrics.json``
(e.g. ``results/`` copied per experiment): one more table per task. The table
gives the honest last-epoch numbers, per-run mean ± std, and the papers' best-test-epoch
accuracy in a column labelled optimistic. Paired differences to the scratch and SimCLR runs
follow, and, where some recipe was run with several pretraining seeds, the same differences
between recipes over their seeds. The HTML embeds the figures.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from pipeline.card import RunCard
from pipeline.evaluate.compare import Difference, compare


@dataclass(frozen=True)
class Run:
    name: str
    folder: Path
    metrics: dict
    card: RunCard
    predictions: pd.DataFrame | None  # the headline's test predictions, when written
    tasks: dict[str, dict]  # image task name -> its metrics.json (``tasks/<name>/``)

    @classmethod
    def load(cls, folder: Path) -> Run:
        folder = Path(folder)
        for required in ("metrics.json", "card.json"):
            if not (folder / required).is_file():
                raise FileNotFoundError(f"{folder}: no {required} (not an evaluate output)")
        metrics = json.loads((folder / "metrics.json").read_text())
        card = RunCard.load(folder / "card.json")
        path = folder / "predictions.parquet"
        predictions = pd.read_parquet(path) if path.is_file() else None
        tasks = {task.parent.name: json.loads(task.read_text())
                 for task in sorted(folder.glob("tasks/*/metrics.json"))}
        return cls(folder.name, folder, metrics, card, predictions, tasks)

    def number(self, *keys: str, task: str | None = None) -> float:
        """``metrics.json``'s value at ``keys`` (an image task's with ``task``); a clear error
        naming the file and the field if it is absent or not a number."""
        value: object = self.metrics if task is None else self.tasks[task]
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            path = "metrics.json" if task is None else f"tasks/{task}/metrics.json"
            raise ValueError(f"{self.folder / path}: {'.'.join(keys)} is {value!r}, "
                             "not a number")
        return float(value)

    @property
    def figures(self) -> list[Path]:
        return [*sorted((self.folder / "figures").glob("*.png")),
                *sorted((self.folder / "representation").glob("*.png"))]


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|#!])")


def markdown_text(text: object) -> str:
    """User text (run names, titles) safe inside Markdown and its tables: specials escaped,
    line breaks flattened."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.1f}"


def _row(run: Run, classes: list[str]) -> list[str]:
    headline = ("last_epoch", "pooled")
    recalls = [_percent(run.number(*headline, "per_class", name, "recall")) for name in classes]
    per_run = [_percent(run.number("last_epoch", "per_run", "accuracy", statistic))
               for statistic in ("mean", "std")]
    return [run.name, run.card.title, str(run.card.epochs), *recalls,
            _percent(run.number(*headline, "accuracy")), " ± ".join(per_run),
            _percent(run.number(*headline, "macro_f1")),
            f"{run.number(*headline, 'macro_auc'):.3f}",
            _percent(run.number("best_epoch_optimistic", "pooled", "accuracy"))]


def table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """Header and rows; the class columns come from the first run."""
    if not runs:
        raise ValueError("no runs to report")
    classes = list(runs[0].metrics["last_epoch"]["pooled"]["per_class"])
    header = ["run", "method (preset)", "pretrain epochs", *[f"{name} recall" for name in classes],
              "accuracy", "accuracy per fold (mean ± std)", "macro F1", "macro AUC",
              "accuracy, best test epoch (optimistic)"]
    return header, [_row(run, classes) for run in runs]


def task_tables(runs: list[Run]) -> list[tuple[str, list[str], list[list[str]]]]:
    """One (task, header, rows) per image task any run has, a row per run that has it:
    classification as Meta-USCL Table IV (the positive class's precision, recall, F1, AUC
    and the accuracy; the optimistic accuracy labelled), segmentation as Table VI (Dice, PPV,
    sensitivity: mean over test images, and per fold mean ± std), detection as USCL Table 3
    (COCO box and mask AP)."""
    tables = []
    for task in sorted({name for run in runs for name in run.tasks}):
        having = [run for run in runs if task in run.tasks]
        kind = having[0].tasks[task].get("protocol", {}).get("kind")
        if kind == "detection":
            header = ["run", "method (preset)", *[f"{label} {name}" for label in ("box", "mask")
                                                   for name in ("AP", "AP50", "AP75")],
                      "box AP per fold (mean ± std)", "images", "left out"]
            rows = [[run.name, run.card.title, *[
                _percent(run.number("last_epoch", "pooled", kind_, name, task=task))
                for kind_ in ("bbox", "segm") for name in ("ap", "ap50", "ap75")],
                " ± ".join(_percent(run.number("last_epoch", "per_fold", "bbox", "ap", statistic,
                                               task=task)) for statistic in ("mean", "std")),
                str(int(run.number("last_epoch", "images", task=task))),
                str(len(run.tasks[task].get("excluded", {})))] for run in having]
        elif kind == "segmentation":
            names = ("dice", "ppv", "sensitivity")
            header = ["run", "method (preset)", *[f"{name} (per fold)" for name in names],
                      "images", "left out"]
            rows = [[run.name, run.card.title, *[
                f"{_percent(run.number('last_epoch', 'pooled', name, task=task))} ("
                + " ± ".join(_percent(run.number('last_epoch', 'per_run', name, statistic,
                                                 task=task)) for statistic in ("mean", "std"))
                + ")" for name in names],
                str(int(run.number("last_epoch", "images", task=task))),
                str(len(run.tasks[task].get("excluded", {})))] for run in having]
        else:
            binary = "binary" in having[0].tasks[task]
            names = ("precision", "recall", "f1", "auc") if binary else ()
            positive = having[0].tasks[task]["binary"]["last_epoch"]["positive"] if binary \
                else ""
            header = ["run", "method (preset)", *[f"{positive} {name}" for name in names],
                      "accuracy", "accuracy per fold (mean ± std)", "macro F1",
                      "accuracy, best test epoch (optimistic)"]
            rows = [[run.name, run.card.title,
                     *[_percent(run.number("binary", "last_epoch", name, task=task))
                       for name in names],
                     _percent(run.number("last_epoch", "pooled", "accuracy", task=task)),
                     " ± ".join(_percent(run.number("last_epoch", "per_run", "accuracy",
                                                    statistic, task=task))
                                for statistic in ("mean", "std")),
                     _percent(run.number("last_epoch", "pooled", "macro_f1", task=task)),
                     _percent(run.number("best_epoch_optimistic", "pooled", "accuracy",
                                         task=task))] for run in having]
        tables.append((task, header, rows))
    return tables


def _protocol(runs: list[Run]) -> str:
    protocol = runs[0].metrics.get("protocol", {}).get("finetune", {})
    described = ", ".join(f"{key} {value}" for key, value in protocol.items())
    return ("Frame-level metrics from the confusion matrix pooled over all folds (per-class "
            "columns are recall, the papers' per-class \"accuracy\"); model after the last "
            "fine-tuning epoch. The last column selects, per fold, the epoch with the best "
            "test-fold accuracy, as the papers do: it uses test information and is "
            f"optimistic. Fine-tuning: {described}.")


REFERENCES = ("scratch", "simclr")  # every run is compared with these methods' runs
Comparison = tuple[str, str, list[str], list[list[str]]]  # title, note, header, rows


def recipes(runs: list[Run]) -> list[list[Run]]:
    """The runs grouped by recipe, in the order first seen: runs whose cards agree on
    everything (method, preset, training data, the whole ``train`` config) but the
    pretraining seed."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        params = {key: value for key, value in run.card.params.items() if key != "seed"}
        key = json.dumps([run.card.method, run.card.preset, run.card.data, params],
                         sort_keys=True, default=str)
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def differences(runs: list[Run], resamples: int = 2000, by_recipe: bool = False
                ) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each run against each reference run (method scratch or simclr):
    accuracy, macro F1 and macro AUC differences at video level with paired 95 % CIs over
    patients (``docs/methods.md`` §8.7); bold where the CI excludes 0. ``by_recipe``: each
    recipe (:func:`recipes`) against each reference recipe instead, a recipe's value the mean
    over its runs and its interval resampling runs as well as patients."""
    sides = recipes(runs) if by_recipe else [[run] for run in runs]
    header = ["recipe (its runs)" if by_recipe else "run", "against", "Δ accuracy [95 % CI]",
              "Δ macro F1 [95 % CI]", "Δ macro AUC [95 % CI]"]
    rows = []
    classes = list(runs[0].metrics["last_epoch"]["pooled"]["per_class"])
    for reference in [side for side in sides if side[0].card.method in REFERENCES]:
        for side in sides:
            if side is reference or any(run.predictions is None for run in side + reference):
                continue
            names = [" + ".join(run.name for run in group) for group in (side, reference)]
            try:
                found = compare([run.predictions for run in side],
                                [run.predictions for run in reference], classes, "video",
                                resamples)
            except ValueError:
                rows.append([*names, "different folds: not paired", "", ""])
                continue
            rows.append([*names, *[_with_interval(d) for d in found]])
    return header, rows


def _with_interval(difference: Difference) -> str:
    text = (f"{100 * difference.difference:+.1f} [{100 * difference.low:+.1f}, "
            f"{100 * difference.high:+.1f}]")
    return f"**{text}**" if difference.supported else text


def comparison_tables(runs: list[Run]) -> list[Comparison]:
    """(title, note, header, rows) of each paired-difference table that has rows: every run
    against the reference runs, and, where some recipe has several pretraining seeds, every
    recipe against the reference recipes. Computed once per report (each row is a
    bootstrap), for both pages."""
    found = [("Paired differences (video level, points)",
              "Each run minus a scratch or SimCLR run on the same folds; 95 % paired bootstrap "
              "interval over patients; **bold** where it excludes 0.", *differences(runs))]
    if any(len(recipe) > 1 for recipe in recipes(runs)):
        found.append(("Recipes over pretraining seeds (video level, points)",
                      "Runs whose cards differ only in the seed are one recipe. A recipe's "
                      "value is the mean over its runs, and the 95 % bootstrap interval "
                      "resamples its runs as well as the patients, so it covers seed-to-seed "
                      "variation that an interval between two single runs does not (with two "
                      "or three runs, roughly); **bold** where it excludes 0.",
                      *differences(runs, by_recipe=True)))
    return [entry for entry in found if entry[3]]


def markdown(runs: list[Run], title: str = "Method comparison", base: Path = Path("."),
             comparisons: list[Comparison] | None = None) -> str:
    """The report as Markdown; figure links are relative to ``base`` (the report's folder).
    ``comparisons``: :func:`comparison_tables` of ``runs``, when already computed."""
    header, rows = table(runs)
    lines = [f"# {markdown_text(title)}", "", _protocol(runs), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [_markdown_row(row) for row in rows]
    for heading, note, header, rows in (comparison_tables(runs) if comparisons is None
                                        else comparisons):
        lines += ["", f"## {heading}", "", note, "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        lines += [_markdown_row(row, escaped=2) for row in rows]
    for task, header, rows in task_tables(runs):
        lines += ["", f"## Task {markdown_text(task)} (last epoch, %)", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += [_markdown_row(row, escaped=2) for row in rows]
    for run in runs:
        if run.figures:
            lines += ["", f"## {markdown_text(run.name)}", ""]
            lines += [f"![{markdown_text(figure.stem)}]"
                      f"({quote(Path(os.path.relpath(figure, base)).as_posix())})"
                      for figure in run.figures]
    return "\n".join(lines) + "\n"


def _markdown_row(row: list[str], escaped: int = 3) -> str:
    """A table row whose first ``escaped`` cells are user text (names, titles)."""
    cells = [markdown_text(cell) for cell in row[:escaped]] + row[escaped:]
    return "| " + " | ".join(cells) + " |"


def html_page(runs: list[Run], title: str = "Method comparison",
              comparisons: list[Comparison] | None = None) -> str:
    """The report as one self-contained HTML page (figures embedded as data URIs);
    ``comparisons`` as for :func:`markdown`."""
    header, rows = table(runs)
    cells = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
                   + "</tr>" for row in rows)
    figures = []
    for run in runs:
        images = "".join(
            f'<img alt="{html.escape(figure.stem)}" src="data:image/png;base64,'
            f'{base64.b64encode(figure.read_bytes()).decode()}">' for figure in run.figures)
        if images:
            figures.append(f"<h2>{html.escape(run.name)}</h2><div>{images}</div>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:"
            "collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
            "img{height:300px;margin:4px}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(_protocol(runs))}</p>"
            f"<table><tr>{cells}</tr>{body}</table>"
            f"{_html_differences(comparison_tables(runs) if comparisons is None else comparisons)}"
            f"{_html_tasks(runs)}{''.join(figures)}</body></html>\n")


def _html_tasks(runs: list[Run]) -> str:
    parts = []
    for task, header, rows in task_tables(runs):
        cells = "".join(f"<th>{html.escape(name)}</th>" for name in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row)
                       + "</tr>" for row in rows)
        parts.append(f"<h2>Task {html.escape(task)} (last epoch, %)</h2>"
                     f"<table><tr>{cells}</tr>{body}</table>")
    return "".join(parts)


def _html_differences(comparisons: list[Comparison]) -> str:
    parts = []
    for title, note, header, rows in comparisons:
        cells = "".join(f"<th>{html.escape(name)}</th>" for name in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell.strip('*'))}</td>"
                                        for cell in row) + "</tr>" for row in rows)
        parts.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(note.replace('**', ''))}"
                     f"</p><table><tr>{cells}</tr>{body}</table>")
    return "".join(parts)
