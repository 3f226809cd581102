"""Metrics against a hand-computed confusion matrix and brute-force references."""

import itertools

import numpy as np
import pytest

from pipeline.evaluate.metrics import (
    binary_auc,
    confusion_matrix,
    macro_auc,
    mean_std,
    roc_curve,
    summarise,
)

CLASSES = ["covid", "pneumonia", "regular"]


def test_confusion_matrix_and_the_papers_numbers_by_hand():
    true = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    predicted = [0, 0, 1, 2, 1, 1, 2, 2, 0, 2]
    matrix = confusion_matrix(np.array(true), np.array(predicted), 3)
    assert matrix.tolist() == [[2, 1, 1], [0, 2, 0], [1, 0, 3]]
    result = summarise(matrix, CLASSES)
    assert result["accuracy"] == pytest.approx(7 / 10)
    covid, pneumonia, regular = (result["per_class"][name] for name in CLASSES)
    assert covid["recall"] == pytest.approx(2 / 4) and covid["precision"] == pytest.approx(2 / 3)
    assert pneumonia["recall"] == 1.0 and pneumonia["precision"] == pytest.approx(2 / 3)
    assert regular["recall"] == regular["precision"] == pytest.approx(3 / 4)
    # one-vs-rest specificity of covid: of the 6 non-covid samples, 5 not called covid
    assert covid["specificity"] == pytest.approx(5 / 6)
    assert pneumonia["specificity"] == pytest.approx(7 / 8)
    f1 = [2 * p * r / (p + r) for p, r in ((2 / 3, 1 / 2), (2 / 3, 1.0), (3 / 4, 3 / 4))]
    assert result["macro_f1"] == pytest.approx(np.mean(f1))
    # normal (regular) vs abnormal: abnormal->abnormal 2+1+0+2 = 5, regular->regular 3
    assert result["normal_abnormal_accuracy"] == pytest.approx(8 / 10)


def test_a_class_never_predicted_gives_zero_not_nan():
    matrix = np.array([[3, 0], [2, 0]])
    result = summarise(matrix, ["a", "b"], normal=None)
    assert result["per_class"]["b"] == {"recall": 0.0, "precision": 0.0, "f1": 0.0,
                                        "sensitivity": 0.0, "specificity": 1.0}
    assert "normal_abnormal_accuracy" not in result


def test_auc_equals_the_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    positive = rng.random(60) < 0.4
    score = np.round(rng.random(60) + positive * 0.3, 1)  # rounding makes ties
    pairs = [(1.0 if s > t else 0.5 if s == t else 0.0)
             for (s, p), (t, q) in itertools.product(zip(score, positive, strict=True), repeat=2)
             if p and not q]
    assert binary_auc(positive, score) == pytest.approx(np.mean(pairs))
    assert np.isnan(binary_auc(np.ones(3, bool), np.arange(3.0)))


def test_macro_auc_and_roc_curve():
    true = np.array([0, 1, 2, 0, 1, 2])
    probabilities = np.eye(3)[true] * 0.8 + 0.1  # perfect ranking
    mean, per_class = macro_auc(true, probabilities)
    assert mean == 1.0 and per_class == [1.0, 1.0, 1.0]
    fpr, tpr = roc_curve(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.4, 0.1]))
    assert fpr.tolist() == [0, 0, 0.5, 0.5, 1.0] and tpr.tolist() == [0, 0.5, 0.5, 1.0, 1.0]
    area = np.trapezoid(tpr, fpr)
    assert area == pytest.approx(binary_auc(np.array([1, 0, 1, 0], bool),
                                            np.array([0.9, 0.8, 0.4, 0.1])))


def test_mean_std_uses_the_sample_deviation():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0}
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0}
