"""Classification metrics as the papers compute them (``docs/methods.md`` §8.4), and more.

Everything comes from confusion matrices (rows = true class, columns = predicted): per-class
recall (the papers' per-class "accuracy"), precision, F1, one-vs-rest sensitivity and
specificity, macro F1, total accuracy and normal/abnormal accuracy; plus one-vs-rest ROC
curves and AUC from predicted probabilities (Mann-Whitney, ties counted half).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts ``[t, p]`` of samples of true class t predicted as p."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, dtype=int), np.asarray(predicted, dtype=int)), 1)
    return matrix


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator),
                     where=denominator > 0)


def summarise(matrix: np.ndarray, class_names: list[str],
              normal: str | None = "regular") -> dict[str, object]:
    """The papers' numbers from one (pooled) confusion matrix.

    ``normal``: the class that is "normal" for the normal/abnormal accuracy (POCUS: regular,
    against covid and pneumonia together); None skips it.
    """
    matrix = np.asarray(matrix, dtype=float)
    total = matrix.sum()
    true_positive = np.diag(matrix)
    recall = _ratio(true_positive, matrix.sum(axis=1))
    precision = _ratio(true_positive, matrix.sum(axis=0))
    f1 = _ratio(2 * precision * recall, precision + recall)
    false_positive = matrix.sum(axis=0) - true_positive
    true_negative = total - matrix.sum(axis=1) - false_positive
    specificity = _ratio(true_negative, true_negative + false_positive)
    result: dict[str, object] = {
        "accuracy": float(_ratio(true_positive.sum(), total)),
        "macro_f1": float(f1.mean()),
        "samples": int(total),
        "per_class": {name: {"recall": float(recall[i]), "precision": float(precision[i]),
                             "f1": float(f1[i]), "sensitivity": float(recall[i]),
                             "specificity": float(specificity[i])}
                      for i, name in enumerate(class_names)},
    }
    if normal is not None and normal in class_names:
        index = class_names.index(normal)
        abnormal = [i for i in range(len(class_names)) if i != index]
        correct = matrix[index, index] + matrix[np.ix_(abnormal, abnormal)].sum()
        result["normal_abnormal_accuracy"] = float(_ratio(correct, total))
    return result


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties half;
    NaN when one of the two groups is empty."""
    positive = np.asarray(positive, dtype=bool)
    score = np.asarray(score, dtype=float)
    count_pos, count_neg = positive.sum(), (~positive).sum()
    if count_pos == 0 or count_neg == 0:
        return float("nan")
    ranks = rankdata(score, method="average")  # 1-based, ties share their mean rank
    return float((ranks[positive].sum() - count_pos * (count_pos + 1) / 2)
                 / (count_pos * count_neg))


def macro_auc(true: np.ndarray, probabilities: np.ndarray) -> tuple[float, list[float]]:
    """One-vs-rest AUC per class and their mean over the classes present."""
    true = np.asarray(true, dtype=int)
    per_class = [binary_auc(true == k, probabilities[:, k]) for k in range(probabilities.shape[1])]
    defined = [auc for auc in per_class if not np.isnan(auc)]
    return (float(np.mean(defined)) if defined else float("nan")), per_class


def roc_curve(positive: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-np.asarray(score, dtype=float), kind="mergesort")
    sorted_scores, hits = np.asarray(score)[order], positive[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(hits) - 1]
    tp, fp = np.cumsum(hits)[last_of_each], np.cumsum(~hits)[last_of_each]
    tpr = np.r_[0.0, tp / max(1, positive.sum())]
    fpr = np.r_[0.0, fp / max(1, (~positive).sum())]
    return fpr, tpr


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) over folds/seeds."""
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()),
            "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0}
