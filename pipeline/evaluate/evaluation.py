"""From cross-validation predictions to the reported numbers, DVC plot tables and figures.

Two model-selection rules over the same runs (``docs/methods.md`` §8.4):

* ``last_epoch`` (the headline): the model after the last epoch; uses no test information.
* ``best_epoch_optimistic`` (the papers' protocol): per fold, the epoch with the highest
  test-fold accuracy. Selecting on the test fold inflates the numbers; always labelled so.

For each: the papers' metrics from the confusion matrix pooled over folds (and seeds), macro
AUC from the pooled probabilities, and per-run (fold x seed, per fold assignment) mean ± std;
at frame level (each frame a sample, as the papers) and at video level (a video's frame
probabilities averaged).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.evaluate.metrics import confusion_matrix, macro_auc, mean_std, roc_curve, summarise
from pipeline.evaluate.plotting import pyplot, save_png

SELECTIONS = {"last_epoch": "model after the last epoch (no test information): the headline",
              "best_epoch_optimistic": "per fold, the epoch with the best TEST-fold accuracy "
                                       "(the papers' protocol; optimistic)"}


def run_keys(table: pd.DataFrame) -> list[str]:
    """The columns that name a run: one fold of one cross-validation (``repeat``, when the
    folds were drawn several times) with one training seed."""
    return [key for key in ("repeat", "fold", "seed") if key in table]


def selected(predictions: pd.DataFrame, curves: pd.DataFrame, selection: str) -> pd.DataFrame:
    """The test predictions of each run's selected epoch."""
    keys = run_keys(curves)
    if selection == "last_epoch":
        picks = curves.groupby(keys)["epoch"].max().rename("pick").reset_index()
    elif selection == "best_epoch_optimistic":  # first epoch reaching the best accuracy
        best = curves.loc[curves.groupby(keys)["test_accuracy"].idxmax()]
        picks = best[[*keys, "epoch"]].rename(columns={"epoch": "pick"})
    else:
        raise ValueError(f"unknown selection {selection!r}")
    merged = predictions.merge(picks, on=keys)
    return merged[merged["epoch"] == merged["pick"]].drop(columns="pick")


def _scores(table: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    probabilities = table[[f"p_{name}" for name in classes]].to_numpy()
    return table["label"].to_numpy(), probabilities


def video_level(table: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per (run, video): the mean of its frames' class probabilities."""
    keys = [key for key in ("protocol", "repeat", "fold", "seed", "epoch", "video_id", "group",
                            "label") if key in table]
    return table.groupby(keys, as_index=False, sort=True)[[f"p_{c}" for c in classes]].mean()


def scores(table: pd.DataFrame, classes: list[str], normal: str | None) -> dict[str, object]:
    """The papers' numbers pooled over runs, and per run (fold x seed) mean ± std."""
    true, probabilities = _scores(table, classes)
    pooled = summarise(confusion_matrix(true, probabilities.argmax(1), len(classes)),
                       classes, normal)
    pooled["macro_auc"], per_class_auc = macro_auc(true, probabilities)
    for name, auc in zip(classes, per_class_auc, strict=True):
        pooled["per_class"][name]["auc"] = auc
    runs = []
    for _, run in table.groupby(run_keys(table)):
        run_true, run_probabilities = _scores(run, classes)
        summary = summarise(confusion_matrix(run_true, run_probabilities.argmax(1),
                                             len(classes)), classes, normal)
        runs.append({"accuracy": summary["accuracy"], "macro_f1": summary["macro_f1"],
                     "macro_auc": macro_auc(run_true, run_probabilities)[0]})
    per_run = {key: mean_std([run[key] for run in runs if not np.isnan(run[key])])
               for key in ("accuracy", "macro_f1", "macro_auc")}
    return {"pooled": pooled, "per_run": per_run}



def binary_scores(pooled: dict[str, object], positive: str) -> dict[str, float]:
    """A two-class task's numbers as Meta-USCL Table IV gives them: the positive class's
    precision, recall (sensitivity), F1 and AUC, and the accuracy, from :func:`scores`'
    pooled block."""
    per_class = pooled["per_class"][positive]
    return {"positive": positive, "accuracy": pooled["accuracy"],
            **{name: per_class[name] for name in ("precision", "recall", "f1", "auc")}}


def level_scores(table: pd.DataFrame, classes: list[str], normal: str | None
                 ) -> dict[str, object]:
    """:func:`scores` at frame level and at video level (:func:`video_level`)."""
    return {"frame": scores(table, classes, normal),
            "video": scores(video_level(table, classes), classes, normal)}

def evaluate(predictions: pd.DataFrame, curves: pd.DataFrame, classes: list[str],
             normal: str | None) -> dict[str, object]:
    """``metrics.json``: both selections, frame level (the papers') and video level."""
    result: dict[str, object] = {"headline": "last_epoch", "selections": SELECTIONS,
                                 "runs": int(len(curves.groupby(run_keys(curves))))}
    for selection in SELECTIONS:
        table = selected(predictions, curves, selection)
        result[selection] = {**scores(table, classes, normal),
                             "video": scores(video_level(table, classes), classes, normal)}
    return result


def plot_tables(predictions: pd.DataFrame, curves: pd.DataFrame,
                classes: list[str]) -> dict[str, pd.DataFrame]:
    """DVC plot data of the headline selection: confusion (actual, predicted per frame),
    one-vs-rest ROC curves, and training curves (mean over runs per epoch)."""
    table = selected(predictions, curves, "last_epoch")
    true, probabilities = _scores(table, classes)
    confusion = pd.DataFrame({"actual": [classes[i] for i in true],
                              "predicted": [classes[i] for i in probabilities.argmax(1)]})
    roc = []
    for k, name in enumerate(classes):
        fpr, tpr = roc_curve(true == k, probabilities[:, k])
        roc.append(pd.DataFrame({"class": name, "fpr": fpr, "tpr": tpr}))
    mean_curves = curves.groupby("epoch")[["train_loss", "train_accuracy", "test_accuracy"]] \
        .mean().reset_index()
    return {"confusion": confusion, "roc": pd.concat(roc, ignore_index=True),
            "curves": mean_curves}


def draw_figures(tables: dict[str, pd.DataFrame], classes: list[str], out: Path,
                 title: str) -> list[Path]:
    """confusion.png, roc.png and curves.png from :func:`plot_tables`' data."""
    plt = pyplot()
    paths = []
    matrix = pd.crosstab(tables["confusion"]["actual"], tables["confusion"]["predicted"]) \
        .reindex(index=classes, columns=classes, fill_value=0).to_numpy()
    figure, axis = plt.subplots(figsize=(4.2, 3.8))
    axis.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black")
    axis.set_xticks(range(len(classes)), classes)
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"{title}\npooled confusion, last epoch", fontsize=9)
    paths.append(save_png(figure, out / "confusion.png"))

    figure, axis = plt.subplots(figsize=(4.2, 3.8))
    for name, curve in tables["roc"].groupby("class", sort=False):
        axis.plot(curve["fpr"], curve["tpr"], label=name)
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axis.set_xlabel("false-positive rate")
    axis.set_ylabel("true-positive rate")
    axis.legend(fontsize=8)
    axis.set_title(f"{title}\none-vs-rest ROC, last epoch", fontsize=9)
    paths.append(save_png(figure, out / "roc.png"))

    figure, axis = plt.subplots(figsize=(5, 3.6))
    curves = tables["curves"]
    for column in ("train_accuracy", "test_accuracy"):
        axis.plot(curves["epoch"], curves[column], label=column.replace("_", " "))
    axis.plot(curves["epoch"], curves["train_loss"], label="train loss", linestyle="--")
    axis.set_xlabel("epoch")
    axis.legend(fontsize=8)
    axis.set_title(f"{title}\nfine-tuning, mean over folds", fontsize=9)
    paths.append(save_png(figure, out / "curves.png"))
    return paths
