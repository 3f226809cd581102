"""Paired comparison of two evaluations on identical folds: the difference of accuracy, macro
F1 and macro AUC with a bootstrap confidence interval over patients (``docs/methods.md``
§8.7).

Both runs must hold predictions for the same test units (video, fold); each is reduced to one
prediction per frame (the class probabilities averaged over seeds) or per video (its frames
averaged). A bootstrap resample draws the groups (patients) with replacement and takes every
unit of each drawn group, for both runs at once, so the interval reflects which patients
happened to be in the study and the pairing removes what both runs share. Percentile interval.
A side may be several runs of one recipe (pretraining seeds): each resample then also draws
its runs with replacement, so the interval covers the seed-to-seed variation too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.evaluate.evaluation import selected, video_level
from pipeline.evaluate.metrics import confusion_matrix, macro_auc, summarise

METRICS = ("accuracy", "macro_f1", "macro_auc")


def load_predictions(folder: Path, protocol: str = "finetune") -> tuple[pd.DataFrame, list[str]]:
    """A run's headline test predictions and its classes: ``finetune`` from a fine-tuning
    output folder (``predictions.parquet`` + ``curves.csv``, the last epoch), ``linear`` or
    ``knn`` from a probe output folder (``predictions.parquet``)."""
    folder = Path(folder)
    path = folder / "predictions.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no predictions.parquet (a finetune or probe output)")
    table = pd.read_parquet(path)
    if protocol == "finetune":
        if not (folder / "curves.csv").is_file():
            raise FileNotFoundError(f"{folder}: no curves.csv, so not a fine-tuning output; "
                                    "pass --protocol linear or knn for a probe output")
        table = selected(table, pd.read_csv(folder / "curves.csv"), "last_epoch")
    else:
        if "protocol" not in table or protocol not in set(table["protocol"]):
            raise ValueError(f"{folder}: no {protocol!r} predictions")
        table = table[table["protocol"] == protocol]
    if "group" not in table:
        raise ValueError(f"{folder}: predictions without a group column (written by an older "
                         "uspipe); rerun the stage to compare over patients")
    return table, [column[2:] for column in table.columns if column.startswith("p_")]


def metric_values(true: np.ndarray, probabilities: np.ndarray,
                  metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
    """``metrics`` (some of :data:`METRICS`) of one set of predictions."""
    classes = probabilities.shape[1]
    names = [str(k) for k in range(classes)]
    summary = summarise(confusion_matrix(true, probabilities.argmax(1), classes), names, None)
    values = {"accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"]}
    if "macro_auc" in metrics:  # the costly one: a ranking per class
        values["macro_auc"] = macro_auc(true, probabilities)[0]
    return {metric: values[metric] for metric in metrics}


def units(table: pd.DataFrame, classes: list[str], level: str) -> pd.DataFrame:
    """One row per test unit (frame or video per fold), probabilities averaged over seeds."""
    columns = [f"p_{c}" for c in classes]
    keys = ["repeat"] * ("repeat" in table) + ["fold", "video_id", "group", "label"]
    if level == "frame":
        keys.append("kept_index")
    elif level != "video":
        raise ValueError(f"level must be frame or video, got {level!r}")
    table = table.groupby(keys, as_index=False, sort=True)[columns].mean()
    return video_level(table, classes) if level == "video" else table


@dataclass(frozen=True)
class Difference:
    metric: str
    a: float
    b: float
    difference: float  # a - b
    low: float
    high: float

    @property
    def supported(self) -> bool:
        """Whether the interval excludes zero."""
        return self.low > 0 or self.high < 0


def _runs(side: pd.DataFrame | list[pd.DataFrame]) -> list[pd.DataFrame]:
    """A side of a comparison as its list of runs (one table: one run)."""
    return side if isinstance(side, list) else [side]


def bootstrap_differences(a: pd.DataFrame | list[pd.DataFrame],
                          b: pd.DataFrame | list[pd.DataFrame], classes: list[str],
                          resamples: int = 2000, seed: int = 0,
                          metrics: tuple[str, ...] = METRICS) -> dict[str, np.ndarray]:
    """Per metric, ``resamples`` values of metric(a) - metric(b) on the same group resamples.
    ``a`` and ``b``: aligned unit tables (same rows in the same order), or lists of them, one
    per pretraining run of a recipe: each resample then also draws each side's runs with
    replacement (from a random stream of its own, so one run a side gives the same values as
    a single table) and takes the mean of the metric over the drawn runs."""
    sides = [_runs(a), _runs(b)]
    columns = [f"p_{c}" for c in classes]
    first = sides[0][0]
    names, inverse = np.unique(first["group"].astype(str).to_numpy(), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    true = first["label"].to_numpy()
    probabilities = [[run[columns].to_numpy() for run in side] for side in sides]
    rng, run_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    result = {metric: np.empty(resamples) for metric in metrics}
    for r in range(resamples):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(names), len(names))])
        means = []
        for side in probabilities:
            values = [metric_values(true[rows], run[rows], metrics) for run in side]
            drawn = run_rng.integers(0, len(side), len(side))
            means.append({metric: np.mean([values[k][metric] for k in drawn])
                          for metric in metrics})
        for metric in metrics:
            result[metric][r] = means[0][metric] - means[1][metric]
    return result


def compare(a: pd.DataFrame | list[pd.DataFrame], b: pd.DataFrame | list[pd.DataFrame],
            classes: list[str], level: str = "video", resamples: int = 2000, seed: int = 0,
            confidence: float = 0.95, metrics: tuple[str, ...] = METRICS) -> list[Difference]:
    """``a`` minus ``b`` per metric (``metrics``, in that order) with a paired percentile
    bootstrap CI over groups; an error when they were not evaluated on the same folds and
    units. ``a`` or ``b`` may be a list of runs of one recipe (pretraining seeds): its value
    is then the mean over its runs, and the interval resamples runs as well as groups
    (:func:`bootstrap_differences`), so it covers the seed-to-seed variation that an
    interval between two single runs does not."""
    sides = [_runs(a), _runs(b)]
    runs = [run for side in sides for run in side]
    if len({"repeat" in run for run in runs}) > 1:
        raise ValueError("one run was evaluated on repeated fold assignments (fold_seeds) and "
                         "the other on the persisted folds only; a paired comparison needs "
                         "the same folds")
    sides = [[units(run, classes, level) for run in side] for side in sides]
    reference = sides[0][0]
    key = ["repeat"] * ("repeat" in reference) + ["fold", "video_id"] + \
        (["kept_index"] if level == "frame" else [])
    if not all(run[key + ["label"]].equals(reference[key + ["label"]])
               for side in sides for run in side):
        raise ValueError("the runs were not evaluated on identical folds and test units; "
                         "a paired comparison needs the same split and selection")
    columns = [f"p_{c}" for c in classes]
    per_run = [[metric_values(run["label"].to_numpy(), run[columns].to_numpy(), metrics)
                for run in side] for side in sides]
    point = [{metric: float(np.mean([values[metric] for values in side])) for metric in metrics}
             for side in per_run]
    draws = bootstrap_differences(*sides, classes, resamples, seed, metrics)
    tail = (1 - confidence) / 2 * 100
    result = []
    for metric in metrics:
        values = draws[metric][~np.isnan(draws[metric])]
        low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan,) * 2
        result.append(Difference(metric, point[0][metric], point[1][metric],
                                 point[0][metric] - point[1][metric], float(low),
                                 float(high)))
    return result
