"""Paired comparison of two evaluations on identical folds: the difference of accuracy, macro
F1 and macro AUC with a bootstrap confidence interval over patients (``docs/methods.md``
§8.7).

Both runs must hold predictions for the same test units (video, fold); each is reduced to one
prediction per frame (the class probabilities averaged over seeds) or per video (its frames
averaged). A bootstrap resample draws the groups (patients) with replacement and takes every
unit of each drawn group, for both runs at once, so the interval reflects which patients
happened to be in the study and the pairing removes what both runs share. Percentile interval.
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


def bootstrap_differences(a: pd.DataFrame, b: pd.DataFrame, classes: list[str],
                          resamples: int = 2000, seed: int = 0,
                          metrics: tuple[str, ...] = METRICS) -> dict[str, np.ndarray]:
    """Per metric, ``resamples`` values of metric(a) - metric(b) on the same group resamples.
    ``a`` and ``b``: aligned unit tables (same rows in the same order)."""
    columns = [f"p_{c}" for c in classes]
    groups = a["group"].astype(str).to_numpy()
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    true = a["label"].to_numpy()
    probabilities = a[columns].to_numpy(), b[columns].to_numpy()
    rng = np.random.default_rng(seed)
    result = {metric: np.empty(resamples) for metric in metrics}
    for r in range(resamples):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(names), len(names))])
        first = metric_values(true[rows], probabilities[0][rows], metrics)
        second = metric_values(true[rows], probabilities[1][rows], metrics)
        for metric in metrics:
            result[metric][r] = first[metric] - second[metric]
    return result


def compare(a: pd.DataFrame, b: pd.DataFrame, classes: list[str], level: str = "video",
            resamples: int = 2000, seed: int = 0, confidence: float = 0.95,
            metrics: tuple[str, ...] = METRICS) -> list[Difference]:
    """``a`` minus ``b`` per metric (``metrics``, in that order) with a paired percentile
    bootstrap CI over groups; an error when the two were not evaluated on the same folds and
    units."""
    if ("repeat" in a) != ("repeat" in b):
        raise ValueError("one run was evaluated on repeated fold assignments (fold_seeds) and "
                         "the other on the persisted folds only; a paired comparison needs "
                         "the same folds")
    a, b = units(a, classes, level), units(b, classes, level)
    key = ["repeat"] * ("repeat" in a) + ["fold", "video_id"] + \
        (["kept_index"] if level == "frame" else [])
    if not a[key + ["label"]].equals(b[key + ["label"]]):
        raise ValueError("the two runs were not evaluated on identical folds and test units; "
                         "a paired comparison needs the same split and selection")
    columns = [f"p_{c}" for c in classes]
    point = {name: metric_values(t["label"].to_numpy(), t[columns].to_numpy(), metrics)
             for name, t in (("a", a), ("b", b))}
    draws = bootstrap_differences(a, b, classes, resamples, seed, metrics)
    tail = (1 - confidence) / 2 * 100
    result = []
    for metric in metrics:
        values = draws[metric][~np.isnan(draws[metric])]
        low, high = np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan,) * 2
        result.append(Difference(metric, point["a"][metric], point["b"][metric],
                                 point["a"][metric] - point["b"][metric], float(low),
                                 float(high)))
    return result
