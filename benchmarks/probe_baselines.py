"""Why random init is a strong linear-probe baseline in the transfer study and was a weak one
in issue 11's measurement: the same frozen features of the POCUS frames, probed several ways,
random init against pretrained backbones, with paired bootstrap CIs over patients.

    python benchmarks/probe_baselines.py proto --json docs/probe_baselines.json

Backbones: the study's ``scratch`` (its seeded random initialisation) and the named study runs,
from ``--work/runs/<run>`` (pretrained there first if missing). Probes, on the study's folds
(3 fold seeds x 5 grouped folds, trained on frames):

* ``linear``: the product's (features standardised on the training folds, C = 1, L-BFGS to
  convergence);
* ``linear-sklearn-default``: ``sklearn.linear_model.LogisticRegression()`` on the raw
  features, as a one-off script calls it (lbfgs, 100 iterations, C = 1);
* ``knn``: the product's (cosine, k = 20, temperature 0.07);
* ``linear C=<c>``, with ``--c-grid``: the product's linear probe at other L2 strengths (is
  its verdict an artefact of ``probe.c``?).

    python benchmarks/probe_baselines.py uscl-s1 scratch-s1 --c-grid 1e-4 1e-3 1e-2 0.1 \
        --json docs/probe_c_grid.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from transfer_study import CLASSES, FINETUNE, FOLD_SEEDS, SIZE, prepared, pretrained

from pipeline.config import ProbeConfig
from pipeline.data.manifest import load_manifest
from pipeline.data.splits import split_table
from pipeline.evaluate.compare import compare
from pipeline.evaluate.evaluation import level_scores
from pipeline.evaluate.finetune import select_videos
from pipeline.evaluate.probe import (
    frame_features,
    probe_functions,
    repeated_probes,
)


def linear_sklearn_default(train: np.ndarray, labels: np.ndarray, test: np.ndarray,
                           classes: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression().fit(train, labels)
    probabilities = np.zeros((len(test), classes))
    probabilities[:, model.classes_] = model.predict_proba(test)
    return probabilities


PROBES = {**probe_functions(ProbeConfig()),
          "linear-sklearn-default": linear_sklearn_default}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="pretrained study runs to set against scratch")
    parser.add_argument("--work", type=Path,
                        default=Path(__file__).resolve().parents[2] / "uspipe-study")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--c-grid", type=float, nargs="+", default=[], metavar="C",
                        help="also the linear probe at these inverse L2 strengths")
    arguments = parser.parse_args()
    probes = {**PROBES, **{f"linear C={c:g}": probe_functions(ProbeConfig(c=c))["linear"]
                           for c in arguments.c_grid}}
    downstream = load_manifest(prepared(arguments.work)[1])
    assignments = [split_table(downstream.videos, 0.2, seed, folds=5) for seed in FOLD_SEEDS]
    videos = select_videos(downstream.videos, assignments[0], FINETUNE)
    predictions, scale = {}, {}
    for name in ["scratch", *arguments.runs]:
        card, backbone, _ = pretrained(name, arguments.work)
        features, frames = frame_features(downstream, videos["video_id"].tolist(), card.backbone,
                                          backbone, card.normalisation, SIZE)
        scale[name] = {"feature_mean": float(features.mean()),
                       "feature_std_median": float(np.median(features.std(0))),
                       "feature_norm_median": float(np.median(np.linalg.norm(features, axis=1)))}
        predictions[name] = repeated_probes(features, frames, downstream.videos, assignments,
                                            FINETUNE, probes)
    rows = []
    for name, table in predictions.items():
        for probe, rows_of_probe in table.groupby("protocol", sort=False):
            scores = level_scores(rows_of_probe, CLASSES, "regular")
            row = {"backbone": name, "probe": probe, **{
                f"{level}_accuracy": scores[level]["pooled"]["accuracy"]
                for level in ("frame", "video")}}
            if name != "scratch":
                scratch = predictions["scratch"]
                scratch = scratch[scratch["protocol"] == probe]
                for level in ("frame", "video"):
                    (difference,) = compare(rows_of_probe, scratch, CLASSES, level,
                                            metrics=("accuracy",))
                    row[f"{level}_delta_vs_scratch"] = [difference.difference, difference.low,
                                                        difference.high]
            rows.append(row)
    print("| backbone | probe | frame acc. | video acc. | Δ frame vs scratch | "
          "Δ video vs scratch |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        deltas = [("{:+.3f} [{:+.3f}, {:+.3f}]".format(*row[f"{level}_delta_vs_scratch"])
                   if f"{level}_delta_vs_scratch" in row else "-") for level in ("frame", "video")]
        print(f"| {row['backbone']} | {row['probe']} | {row['frame_accuracy']:.3f} | "
              f"{row['video_accuracy']:.3f} | {deltas[0]} | {deltas[1]} |")
    print(json.dumps(scale, indent=1))
    if arguments.json:
        arguments.json.write_text(json.dumps({"rows": rows, "feature_scale": scale}, indent=1)
                                  + "\n")


if __name__ == "__main__":
    main()
