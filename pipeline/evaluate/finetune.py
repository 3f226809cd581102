"""Downstream fine-tuning with k-fold cross-validation (``docs/methods.md`` §8).

One run = one (fold, seed): the pretrained backbone plus a new linear classifier, trained on
the frames of the other folds' videos and evaluated on the held-out fold after EVERY epoch.
All test-fold probabilities are kept, so the metrics stage can report the honest last-epoch
numbers and, labelled as optimistic, the papers' best-epoch-on-the-test-fold numbers from the
same runs. Folds come from the persisted grouped split: no video or patient is on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline import precision
from pipeline.backbones import build_backbone, load_backbone
from pipeline.card import Normalisation
from pipeline.config import FinetuneConfig
from pipeline.data.frames import frame_locations
from pipeline.data.manifest import Manifest
from pipeline.data.splits import video_groups
from pipeline.data.views import WHOLE_FRAME, AugmentSpec, crop_view, draw_view, normalised

LAST_BLOCK = {"resnet18": "layer4.1", "resnet34": "layer4.2", "resnet50": "layer4.2"}


def select_videos(videos: pd.DataFrame, split: pd.DataFrame,
                  config: FinetuneConfig) -> pd.DataFrame:
    """The labelled videos in the class set (probe and uncertainty filters applied), with
    their fold; an error naming what is missing when nothing is left."""
    table = videos.merge(split[["video_id", "fold"]], on="video_id", how="inner")
    keep = table["label"].isin(config.classes) & (table["status"] == "ok")
    if config.probes is not None:
        keep &= table["probe"].isin(config.probes)
    if config.drop_uncertain and "uncertain" in table:
        keep &= table["uncertain"].fillna(0).astype(int) == 0
    table = table[keep].sort_values("video_id").reset_index(drop=True)
    if table.empty:
        raise ValueError(f"no video left for classes {config.classes} and probes "
                         f"{config.probes}; check labels.csv and the finetune params")
    if table["fold"].isna().any() or (table["fold"] < 0).any():
        raise ValueError("the split has no k-fold assignment; set data.downstream.folds >= 2")
    spread = table.groupby("group")["fold"].nunique()
    if (spread > 1).any():  # a guard on the persisted split: groups never straddle folds
        raise ValueError(f"group(s) {', '.join(map(str, spread[spread > 1].index[:5]))} "
                         "span several folds")
    return table


class FrameDataset(Dataset):
    """Every kept frame of ``videos`` with its class index; a view per access.

    Training views: square resize + random resized crop (0.8-1, 0.8-1.25) + horizontal flip
    (§3.2), drawn from a generator seeded by (seed, epoch, index). Test views: the square
    resize only. Both normalised with the backbone's pretraining statistics.
    """

    def __init__(self, manifest: Manifest, videos: pd.DataFrame, classes: list[str],
                 size: int, mean: list[float], std: list[float], train: bool,
                 seed: int = 0) -> None:
        ids = videos["video_id"].tolist()
        locations = frame_locations(manifest, ids)
        self.items = [(video, position, location) for video, frames in zip(ids, locations,
                                                                           strict=True)
                      for position, location in enumerate(frames)]
        label_of = dict(zip(videos["video_id"], videos["label"], strict=True))
        self.labels = [classes.index(label_of[video]) for video, _, _ in self.items]
        self.spec = AugmentSpec(size=size, jitter=(0.0, 0.0, 0.0, 0.0))
        self.mean, self.std = mean, std
        self.train, self.seed, self.epoch = train, seed, 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        _, _, location = self.items[index]
        image = location.image(self.spec.size)
        params = draw_view(np.random.default_rng([self.seed, self.epoch, index]), self.spec) \
            if self.train else WHOLE_FRAME
        view = crop_view(image, params, self.spec.size)
        return normalised(view, self.mean, self.std), self.labels[index]


def build_classifier(backbone: str, weights: Path | None, classes: int,
                     mode: str) -> tuple[nn.Module, list[str]]:
    """Backbone (pretrained weights if given) + a new linear classifier, and the prefixes of
    the trainable parameters: ``last_block`` (the papers' "last 3 layers": the last residual
    block's two convolutions + the classifier, §8.2), ``linear`` or ``full``."""
    model, features = load_backbone(backbone, weights) if weights is not None \
        else build_backbone(backbone)
    model.fc = nn.Linear(features, classes)
    if mode == "full":
        return model, [""]
    if mode == "linear":
        return model, ["fc."]
    block = LAST_BLOCK.get(backbone, "conv5")  # ShuffleNetV2's last conv block
    return model, [f"{block}.", "fc."]


def _freeze(model: nn.Module, trainable: list[str]) -> list[nn.Parameter]:
    parameters = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(any(name.startswith(prefix) for prefix in trainable))
        if parameter.requires_grad:
            parameters.append(parameter)
    return parameters


def _set_mode(model: nn.Module, trainable: list[str], frozen_bn: str) -> None:
    """Train mode everywhere (frozen layers' BatchNorm statistics adapt to the new data, as
    in the released code) or, with ``frozen_bn: keep``, eval mode for frozen BatchNorm."""
    model.train()
    if frozen_bn == "keep":
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    f"{name}.".startswith(prefix) for prefix in trainable):
                module.eval()


@dataclass
class FoldResult:
    predictions: pd.DataFrame  # one row per (epoch, test frame): probabilities
    curves: pd.DataFrame       # one row per epoch: train loss/accuracy, test accuracy


def run_fold(manifest: Manifest, videos: pd.DataFrame, fold: int, seed: int,
             config: FinetuneConfig, backbone: str, weights: Path | None,
             normalisation: Normalisation, progress: bool = False) -> FoldResult:
    """Fine-tune on every fold but ``fold`` and evaluate on ``fold`` after every epoch."""
    classes = list(config.classes)
    torch.manual_seed(seed)
    train_videos, test_videos = videos[videos["fold"] != fold], videos[videos["fold"] == fold]
    if train_videos.empty or test_videos.empty:
        raise ValueError(f"fold {fold} leaves an empty train or test side")

    def frames(part: pd.DataFrame, train: bool) -> FrameDataset:
        return FrameDataset(manifest, part, classes, config.image_size, normalisation.mean,
                            normalisation.std, train, seed)

    train_data, test_data = frames(train_videos, True), frames(test_videos, False)
    model, trainable = build_classifier(backbone, weights, len(classes), config.mode)
    device = torch.device("cpu")  # fine-tuning is CPU-sized: a fold of frames, one block
    channels_last = precision.channels_last(None, config.amp, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    autocast = precision.autocast(config.amp, device)
    optimiser = torch.optim.Adam(_freeze(model, trainable), lr=config.lr,
                                 weight_decay=config.weight_decay)
    epochs, batch_size = config.schedule()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_data, batch_size=batch_size, shuffle=True,
                              generator=generator, num_workers=config.workers,
                              drop_last=len(train_data) % batch_size == 1)  # BN needs 2
    test_loader = DataLoader(test_data, batch_size=256, num_workers=config.workers)
    test_frames = pd.DataFrame([(video, position) for video, position, _ in test_data.items],
                               columns=["video_id", "kept_index"])
    test_frames["group"] = test_frames["video_id"].map(
        video_groups(videos).set_axis(videos["video_id"]))
    predictions, curves = [], []
    for epoch in tqdm(range(epochs), desc=f"fold {fold} seed {seed}", disable=not progress):
        train_data.epoch = epoch
        _set_mode(model, trainable, config.frozen_bn)
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in train_loader:
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = model(images).float()
            loss = nn.functional.cross_entropy(logits, labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss_sum += loss.item() * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        scheduler.step()
        with autocast:
            probabilities = _predict(model, test_loader)
        test_accuracy = float((probabilities.argmax(1) == np.array(test_data.labels)).mean())
        table = test_frames.assign(fold=fold, seed=seed, epoch=epoch, label=test_data.labels)
        for k, name in enumerate(classes):
            table[f"p_{name}"] = probabilities[:, k]
        predictions.append(table)
        curves.append({"fold": fold, "seed": seed, "epoch": epoch,
                       "train_loss": loss_sum / max(1, seen),
                       "train_accuracy": correct / max(1, seen),
                       "test_accuracy": test_accuracy})
    return FoldResult(pd.concat(predictions, ignore_index=True), pd.DataFrame(curves))


@torch.no_grad()
def _predict(model: nn.Module, loader: DataLoader) -> np.ndarray:
    model.eval()
    outputs = [torch.softmax(model(images).float(), dim=1) for images, _ in loader]
    return torch.cat(outputs).numpy()


def cross_validate(manifest: Manifest, split: pd.DataFrame, config: FinetuneConfig,
                   backbone: str, weights: Path | None, normalisation: Normalisation,
                   progress: bool = True) -> FoldResult:
    """Every fold x every seed of ``config``; the runs' predictions and curves together."""
    videos = select_videos(manifest.videos, split, config)
    folds = sorted(int(f) for f in videos["fold"].unique())
    runs = [run_fold(manifest, videos, fold, seed, config, backbone, weights, normalisation,
                     progress) for seed in config.seeds for fold in folds]
    return FoldResult(pd.concat([r.predictions for r in runs], ignore_index=True),
                      pd.concat([r.curves for r in runs], ignore_index=True))


def repeated_cross_validation(manifest: Manifest, assignments: list[pd.DataFrame],
                              config: FinetuneConfig, backbone: str, weights: Path | None,
                              normalisation: Normalisation, progress: bool = True
                              ) -> FoldResult:
    """:func:`cross_validate` once per fold assignment (``splits.fold_assignments``), each
    repeat's predictions and curves marked ``repeat`` = its index."""
    runs = [cross_validate(manifest, folds, config, backbone, weights, normalisation, progress)
            for folds in assignments]
    return FoldResult(
        pd.concat([r.predictions.assign(repeat=i) for i, r in enumerate(runs)],
                  ignore_index=True),
        pd.concat([r.curves.assign(repeat=i) for i, r in enumerate(runs)], ignore_index=True))
