"""Frozen-feature protocols: a linear probe and k-NN on a backbone's pooled features, on the
same grouped folds as fine-tuning (``docs/methods.md`` §8.6).

Both train nothing in the backbone, take seconds on a CPU and vary far less than fine-tuning,
so they can rank backbones that fine-tuning cannot separate:

* ``linear``: multinomial logistic regression on features standardised with the training
  folds' mean and std, L2 penalty as scikit-learn's ``C`` (the intercept is not penalised),
  solved full-batch in float64 by L-BFGS on the exact gradient: deterministic;
* ``knn``: the ``k`` training frames nearest in cosine similarity vote, each with weight
  ``exp(similarity / temperature)`` (uniform votes when ``temperature`` is None).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.optimize
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline import precision
from pipeline.backbones import build_backbone, load_backbone
from pipeline.card import Normalisation
from pipeline.config import FinetuneConfig, ProbeConfig
from pipeline.data.frames import FrameLocation, frame_locations
from pipeline.data.manifest import Manifest
from pipeline.data.splits import video_groups
from pipeline.data.views import plain_view
from pipeline.evaluate.finetune import select_videos


class PlainFrames(Dataset):
    """Every kept frame of some videos as its un-augmented, normalised view."""

    def __init__(self, locations: list[FrameLocation], size: int,
                 normalisation: Normalisation) -> None:
        self.locations, self.size, self.normalisation = locations, size, normalisation

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, index: int) -> torch.Tensor:
        return plain_view(self.locations[index].image(self.size), self.size,
                          self.normalisation.mean, self.normalisation.std)


@torch.no_grad()
def frame_features(manifest: Manifest, video_ids: list[str], backbone: str, weights: Path | None,
                   normalisation: Normalisation, size: int, amp: bool = True,
                   workers: int = 2, batch_size: int = 128) -> tuple[np.ndarray, pd.DataFrame]:
    """Pooled features (float32, one row per kept frame) and the frames they belong to
    (``video_id``, ``kept_index``), in ``video_ids`` order. ``weights`` None: random init."""
    model = (load_backbone(backbone, weights) if weights else build_backbone(backbone))[0].eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    channels_last = precision.channels_last(None, amp, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    located = frame_locations(manifest, video_ids)
    frames = pd.DataFrame([(video, index) for video, locations in zip(video_ids, located,
                                                                      strict=True)
                           for index in range(len(locations))],
                          columns=["video_id", "kept_index"])
    loader = DataLoader(PlainFrames([loc for locations in located for loc in locations], size,
                                    normalisation), batch_size=batch_size, num_workers=workers)
    outputs = []
    with precision.autocast(amp, device):
        for images in loader:
            images = images.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            outputs.append(model(images).float().cpu())
    return torch.cat(outputs).numpy(), frames


def standardised(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both standardised with the training set's per-feature mean and std."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def logistic_regression(features: np.ndarray, labels: np.ndarray, classes: int,
                        c: float = 1.0, max_iter: int = 5000,
                        tolerance: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression minimising ``C * sum_i CE_i + ||W||^2 / 2`` (scikit-
    learn's objective, intercept unpenalised): full-batch L-BFGS (SciPy) on the exact
    gradient in float64, until the scaled gradient's largest entry is below ``tolerance``.
    Returns (weights (K, D), bias (K,))."""
    x = np.asarray(features, dtype=np.float64)
    targets = np.eye(classes)[np.asarray(labels)]
    count, dimensions = x.shape
    scale = 1.0 / (c * count)  # the objective divided by C * n: same minimiser

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights = theta[:classes * dimensions].reshape(classes, dimensions)
        logits = x @ weights.T + theta[classes * dimensions:]
        logits -= logits.max(1, keepdims=True)
        log_probabilities = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        residual = np.exp(log_probabilities) - targets
        loss = c * -(targets * log_probabilities).sum() + 0.5 * (weights ** 2).sum()
        gradient = np.concatenate([(c * residual.T @ x + weights).ravel(),
                                   c * residual.sum(0)])
        return loss * scale, gradient * scale

    solution = scipy.optimize.minimize(
        objective, np.zeros(classes * (dimensions + 1)), jac=True, method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tolerance, "ftol": 1e-15})
    theta = solution.x
    return theta[:classes * dimensions].reshape(classes, dimensions), theta[classes * dimensions:]


def softmax_probabilities(features: np.ndarray, weights: np.ndarray,
                          bias: np.ndarray) -> np.ndarray:
    logits = torch.as_tensor(features, dtype=torch.float64) @ torch.as_tensor(weights).T
    return torch.softmax(logits + torch.as_tensor(bias), dim=1).numpy()


def knn_probabilities(train: np.ndarray, labels: np.ndarray, test: np.ndarray, classes: int,
                      k: int = 20, temperature: float | None = 0.07) -> np.ndarray:
    """Class probabilities from the ``k`` nearest training rows in cosine similarity."""
    a = torch.nn.functional.normalize(torch.as_tensor(train, dtype=torch.float64), dim=1)
    b = torch.nn.functional.normalize(torch.as_tensor(test, dtype=torch.float64), dim=1)
    similarity, nearest = (b @ a.T).topk(min(k, len(a)), dim=1)
    votes = torch.ones_like(similarity) if temperature is None \
        else torch.exp(similarity / temperature)
    scores = torch.zeros(len(b), classes, dtype=torch.float64)
    scores.scatter_add_(1, torch.as_tensor(labels, dtype=torch.long)[nearest], votes)
    return (scores / scores.sum(1, keepdim=True)).numpy()


ProbeFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
"""(training features, training labels, test features, classes) -> test probabilities."""


def probe_functions(config: ProbeConfig) -> dict[str, ProbeFunction]:
    """The configured protocols by name: ``linear`` on training-standardised features,
    ``knn`` on the raw ones."""
    def linear(train: np.ndarray, labels: np.ndarray, test: np.ndarray,
               classes: int) -> np.ndarray:
        x_train, x_test = standardised(train, test)
        return softmax_probabilities(x_test, *logistic_regression(x_train, labels, classes,
                                                                  config.c))

    def knn(train: np.ndarray, labels: np.ndarray, test: np.ndarray, classes: int) -> np.ndarray:
        return knn_probabilities(train, labels, test, classes, config.k, config.knn_temperature)

    available = {"linear": linear, "knn": knn}
    return {protocol: available[protocol] for protocol in config.protocols}


def cross_validate_probes(features: np.ndarray, frames: pd.DataFrame, videos: pd.DataFrame,
                          classes: list[str], probes: dict[str, ProbeFunction]) -> pd.DataFrame:
    """Every probe on every fold: test-fold predictions with columns ``protocol`` (the
    probe's name), ``fold``, ``video_id``, ``kept_index``, ``group``, ``label`` and
    ``p_<class>``.

    ``videos``: the selected downstream videos with ``fold``, ``label`` and ``group``;
    ``probes``: :func:`probe_functions`, or other functions of the same form."""
    info = videos.set_index("video_id")
    fold = frames["video_id"].map(info["fold"]).to_numpy()
    label = frames["video_id"].map(info["label"]).map(classes.index).to_numpy()
    group = frames["video_id"].map(video_groups(videos).set_axis(videos["video_id"])).to_numpy()
    tables = []
    for test_fold in sorted(set(fold.tolist())):
        train, test = fold != test_fold, fold == test_fold
        for protocol, probe in probes.items():
            probabilities = probe(features[train], label[train], features[test], len(classes))
            table = frames[test].assign(protocol=protocol, fold=test_fold, seed=0,
                                        group=group[test], label=label[test])
            for k, name in enumerate(classes):
                table[f"p_{name}"] = probabilities[:, k]
            tables.append(table)
    return pd.concat(tables, ignore_index=True)


def repeated_probes(features: np.ndarray, frames: pd.DataFrame, videos: pd.DataFrame,
                    assignments: list[pd.DataFrame], selection: FinetuneConfig,
                    probes: dict[str, ProbeFunction]) -> pd.DataFrame:
    """:func:`cross_validate_probes` once per fold assignment (repeated cross-validation: the
    features are extracted once), each repeat's rows marked with ``repeat`` = its index.

    ``videos``: the manifest's video table; ``assignments``: split tables with a ``fold``
    column (:func:`pipeline.data.splits.split_table`), one per fold seed."""
    return pd.concat([cross_validate_probes(features, frames,
                                            select_videos(videos, folds, selection),
                                            list(selection.classes), probes).assign(repeat=repeat)
                      for repeat, folds in enumerate(assignments)], ignore_index=True)
