"""Frozen-feature protocols against scikit-learn, video-level metrics, and the paired
bootstrap against a hand-computed case."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from pipeline.config import ProbeConfig
from pipeline.evaluate.compare import bootstrap_differences, compare, units
from pipeline.evaluate.evaluation import video_level
from pipeline.evaluate.probe import (
    cross_validate_probes,
    knn_probabilities,
    logistic_regression,
    probe_functions,
    softmax_probabilities,
    standardised,
)


def blobs(seed: int = 0, count: int = 90, features: int = 6):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    centres = rng.normal(0, 1.5, (3, features))
    return centres[labels] + rng.normal(0, 1, (count, features)) * [1, 2, 3, 1, 5, 0.5], labels


@pytest.mark.parametrize("c", [0.05, 1.0, 20.0])
def test_linear_probe_equals_scikit_learn(c):
    x, y = blobs()
    train, test = standardised(x[:60], x[60:])
    weights, bias = logistic_regression(train, y[:60], 3, c, tolerance=1e-10)
    reference = LogisticRegression(C=c, tol=1e-12, max_iter=10000).fit(train, y[:60])
    np.testing.assert_allclose(weights, reference.coef_, atol=1e-5)
    np.testing.assert_allclose(bias, reference.intercept_, atol=1e-5)
    np.testing.assert_allclose(softmax_probabilities(test, weights, bias),
                               reference.predict_proba(test), atol=1e-6)
    default = softmax_probabilities(test, *logistic_regression(train, y[:60], 3, c))
    np.testing.assert_allclose(default, reference.predict_proba(test), atol=1e-3)


def test_standardised_uses_training_statistics_only():
    train, test = standardised(np.array([[0.0, 5.0], [2.0, 5.0]]), np.array([[4.0, 7.0]]))
    np.testing.assert_allclose(train, [[-1, 0], [1, 0]])
    np.testing.assert_allclose(test, [[3, 2]])  # constant feature: std taken as 1


def test_uniform_knn_equals_scikit_learn_and_weighted_votes_favour_near_rows():
    x, y = blobs(1)
    ours = knn_probabilities(x[:60], y[:60], x[60:], 3, k=7, temperature=None)
    reference = KNeighborsClassifier(7, metric="cosine").fit(x[:60], y[:60])
    np.testing.assert_allclose(ours, reference.predict_proba(x[60:]))
    # two neighbours: the nearer one dominates as the temperature falls
    train = np.array([[1.0, 0.0], [1.0, 0.5]])
    weighted = knn_probabilities(train, np.array([0, 1]), np.array([[1.0, 0.05]]), 2, k=2,
                                 temperature=0.01)
    assert weighted[0, 0] > 0.99


def test_probe_folds_never_train_on_the_test_fold():
    x, y = blobs(2, count=40)
    videos = pd.DataFrame({"video_id": [f"v{i}" for i in range(8)], "fold": [0, 0, 1, 1] * 2,
                           "label": ["a", "b", "c", "a", "b", "c", "a", "b"],
                           "group": ["g0", "g0", "g1", "g2", "g3", "g3", None, "g5"]})
    frames = pd.DataFrame({"video_id": [f"v{i % 8}" for i in range(40)],
                           "kept_index": [i // 8 for i in range(40)]})
    x[frames["video_id"].isin(["v2", "v3", "v6", "v7"]).to_numpy()] += 1000  # fold 1 far away
    table = cross_validate_probes(x, frames, videos, ["a", "b", "c"],
                                  probe_functions(ProbeConfig(protocols=["linear", "knn"], k=3)))
    assert len(table) == 2 * 40 and set(table["protocol"]) == {"linear", "knn"}
    assert table.loc[table["video_id"] == "v6", "group"].iloc[0] == "video:v6"
    assert np.allclose(table[["p_a", "p_b", "p_c"]].sum(axis=1), 1)
    by_video = video_level(table, ["a", "b", "c"])
    assert len(by_video) == 2 * 8
    knn_v0 = (by_video["protocol"] == "knn") & (by_video["video_id"] == "v0")
    frames_v0 = (table["protocol"] == "knn") & (table["video_id"] == "v0")
    assert by_video.loc[knn_v0, "p_a"].item() == pytest.approx(table.loc[frames_v0, "p_a"].mean())


def _run(correct: list[bool]) -> pd.DataFrame:
    """One video per group, one frame each, label 0; correct = probability 0.9 on class 0."""
    rows = [{"fold": 0, "seed": 0, "video_id": f"v{i}", "kept_index": 0, "group": f"g{i}",
             "label": 0, "p_x": 0.9 if ok else 0.1, "p_y": 0.1 if ok else 0.9}
            for i, ok in enumerate(correct)]
    return pd.DataFrame(rows)


def test_bootstrap_matches_the_hand_computed_distribution():
    """Groups g0, g1: A right on both, B right on g0 only. Resampling two groups with
    replacement gives (g0, g0) p = 1/4 -> difference 0, (g1, g1) 1/4 -> 1, mixed 1/2 -> 0.5."""
    a, b = _run([True, True]), _run([True, False])
    draws = bootstrap_differences(units(a, ["x", "y"], "frame"), units(b, ["x", "y"], "frame"),
                                  ["x", "y"], resamples=4000, seed=1)["accuracy"]
    values, counts = np.unique(draws, return_counts=True)
    assert values.tolist() == [0.0, 0.5, 1.0]
    np.testing.assert_allclose(counts / 4000, [0.25, 0.5, 0.25], atol=0.03)
    accuracy = compare(a, b, ["x", "y"], level="frame", resamples=4000)[0]
    assert (accuracy.a, accuracy.b, accuracy.difference) == (1.0, 0.5, 0.5)
    assert (accuracy.low, accuracy.high) == (0.0, 1.0) and not accuracy.supported


def test_recipes_of_several_runs_resample_the_runs_as_well():
    """Recipe A = one run right on every group and one wrong on every group, recipe B = two
    runs right everywhere: group resamples change nothing, and A's two runs drawn with
    replacement give mean accuracy 1 (p = 1/4), 0.5 (1/2) or 0 (1/4), so A - B is 0, -0.5 or
    -1 with those probabilities: interval [-1, 0], point -0.5."""
    right, wrong = _run([True] * 4), _run([False] * 4)
    draws = bootstrap_differences([units(t, ["x", "y"], "frame") for t in (right, wrong)],
                                  [units(right, ["x", "y"], "frame")] * 2, ["x", "y"],
                                  resamples=4000, seed=2)["accuracy"]
    values, counts = np.unique(draws, return_counts=True)
    assert values.tolist() == [-1.0, -0.5, 0.0]
    np.testing.assert_allclose(counts / 4000, [0.25, 0.5, 0.25], atol=0.03)
    accuracy = compare([right, wrong], [right, right], ["x", "y"], "frame", resamples=4000)[0]
    assert (accuracy.a, accuracy.b, accuracy.difference) == (0.5, 1.0, -0.5)
    assert (accuracy.low, accuracy.high) == (-1.0, 0.0) and not accuracy.supported
    # one run a side: the two-run machinery gives exactly the single-run comparison
    a, b = _run([True, True, False, True]), _run([True, False, False, True])
    both = {"resamples": 300, "metrics": ("accuracy", "macro_f1")}  # AUC: one class, nan
    assert compare([a], [b], ["x", "y"], **both) == compare(a, b, ["x", "y"], **both)
    with pytest.raises(ValueError, match="identical folds"):
        compare([a, a.assign(fold=1)], [b], ["x", "y"])


def test_a_consistent_difference_is_supported_and_unpaired_runs_are_refused():
    a, b = _run([True] * 30), _run([True] * 10 + [False] * 20)
    accuracy = compare(a, b, ["x", "y"], level="video", resamples=500)[0]
    assert accuracy.low > 0 and accuracy.supported
    with pytest.raises(ValueError, match="identical folds"):
        compare(a, b.assign(fold=1), ["x", "y"])
    with pytest.raises(ValueError, match="repeated fold assignments"):  # fold_seeds vs not
        compare(a.assign(repeat=0), b, ["x", "y"])
    repeated = compare(a.assign(repeat=0), b.assign(repeat=0), ["x", "y"], resamples=500)[0]
    assert repeated.difference == accuracy.difference


def test_compare_command_reads_two_probe_outputs_and_names_a_wrong_folder(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    for name, correct in (("a", [True] * 12), ("b", [True] * 4 + [False] * 8),
                          ("a2", [False] * 12)):
        (tmp_path / name).mkdir()
        _run(correct).assign(protocol="linear").to_parquet(tmp_path / name / "predictions.parquet")
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "--protocol", "linear", "--json", "--resamples", "300"])
    assert result.exit_code == 0, result.output
    accuracy = next(row for row in json.loads(result.output) if row["metric"] == "accuracy")
    assert accuracy["difference"] == pytest.approx(8 / 12) and accuracy["supported"]
    two_runs = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                        "--also-a", str(tmp_path / "a2"), "--protocol",
                                        "linear", "--json", "--resamples", "300"])
    assert two_runs.exit_code == 0, two_runs.output
    accuracy = next(row for row in json.loads(two_runs.output) if row["metric"] == "accuracy")
    assert accuracy["a"] == pytest.approx(0.5) and accuracy["difference"] == pytest.approx(1 / 6)
    missing = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert missing.exit_code == 2 and "no curves.csv" in " ".join(missing.output.split())
    (tmp_path / "other").mkdir()  # a run of another task: classes x and z
    _run([True] * 12).rename(columns={"p_y": "p_z"}).assign(protocol="linear").to_parquet(
        tmp_path / "other" / "predictions.parquet")
    mixed = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                     "--also-b", str(tmp_path / "other"), "--protocol",
                                     "linear"])
    assert mixed.exit_code == 2
    assert "other: classes ['x', 'z'], not ['x', 'y']" in " ".join(mixed.output.split())


def test_repeated_cross_validations_are_kept_apart():
    """The same video tested in two fold assignments is two units, and per-run statistics
    count each (repeat, fold) once."""
    one = _run([True, False, True])
    both = pd.concat([one.assign(repeat=0), one.assign(repeat=1, fold=1)], ignore_index=True)
    assert len(units(both, ["x", "y"], "video")) == 6
    from pipeline.evaluate.evaluation import scores

    assert scores(both, ["x", "y"], None)["per_run"]["accuracy"]["mean"] == pytest.approx(2 / 3)
    assert compare(both, both, ["x", "y"], resamples=50)[0].difference == 0
