"""Lesion segmentation with a pretrained backbone: k-fold by patient, a light FPN decoder on
the ResNet trunk, and the metrics Meta-USCL reports on UDIAT-B (Table VI): Dice, PPV and
sensitivity per image, averaged over test images (docs/methods.md §9).

The decoder (lateral 1x1 convolutions of the four stages to 64 channels, top-down nearest
upsampling and sums, a 3x3 convolution, one logit at stride 4, bilinear to the input) is the
CPU-scale head the issue asks for beside Mask R-CNN. Loss: binary cross-entropy + soft Dice.
Predictions are resized to each mask's own size and thresholded at 0.5 before scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.backbones import build_backbone, load_backbone
from pipeline.card import Normalisation
from pipeline.config import TaskConfig
from pipeline.data.frames import frame_locations
from pipeline.data.manifest import Manifest
from pipeline.data.views import WHOLE_FRAME, crop_view, normalised
from pipeline.evaluate.metrics import mean_std

DECODER_CHANNELS = 64


def segmentation_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice = 2TP / (2TP + FP + FN), PPV = TP / (TP + FP), sensitivity = TP / (TP + FN) of
    one image's boolean masks (Meta-USCL Eqs. 10-12); an empty prediction has PPV 0."""
    true_positive = float(np.logical_and(predicted, truth).sum())
    false_positive = float(np.logical_and(predicted, ~truth).sum())
    false_negative = float(np.logical_and(~predicted, truth).sum())

    def ratio(numerator: float, denominator: float) -> float:
        return numerator / denominator if denominator else 0.0

    return {"dice": ratio(2 * true_positive, 2 * true_positive + false_positive
                          + false_negative),
            "ppv": ratio(true_positive, true_positive + false_positive),
            "sensitivity": ratio(true_positive, true_positive + false_negative)}


class LesionSegmenter(nn.Module):
    """A torchvision ResNet's trunk (pretrained weights if given) + the light FPN decoder."""

    def __init__(self, backbone: str, weights: Path | None) -> None:
        super().__init__()
        if not backbone.startswith("resnet"):
            raise ValueError(f"segmentation needs a ResNet backbone, not {backbone}")
        model, _ = load_backbone(backbone, weights) if weights is not None \
            else build_backbone(backbone)
        self.stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        self.stages = nn.ModuleList([model.layer1, model.layer2, model.layer3, model.layer4])
        widths = [stage[-1].conv3.out_channels if hasattr(stage[-1], "conv3")
                  else stage[-1].conv2.out_channels for stage in self.stages]
        self.lateral = nn.ModuleList(nn.Conv2d(width, DECODER_CHANNELS, 1) for width in widths)
        self.smooth = nn.Sequential(
            nn.Conv2d(DECODER_CHANNELS, DECODER_CHANNELS, 3, padding=1),
            nn.BatchNorm2d(DECODER_CHANNELS), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(DECODER_CHANNELS, 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features, x = [], self.stem(images)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        top = self.lateral[-1](features[-1])
        for lateral, feature in zip(self.lateral[-2::-1], features[-2::-1], strict=True):
            top = lateral(feature) + nn.functional.interpolate(top, size=feature.shape[-2:],
                                                               mode="nearest")
        logits = self.head(self.smooth(top))
        return nn.functional.interpolate(logits, size=images.shape[-2:], mode="bilinear",
                                         align_corners=False)[:, 0]

    def trainable(self, mode: str) -> list[nn.Parameter]:
        """``full``: everything; ``last_block``: the last residual block + decoder;
        ``decoder``: the decoder only (a frozen backbone)."""
        frozen = {"full": [], "last_block": [self.stem, *self.stages[:3], self.stages[3][:-1]],
                  "decoder": [self.stem, self.stages]}[mode]
        for module in frozen:
            module.requires_grad_(False)
        return [parameter for parameter in self.parameters() if parameter.requires_grad]


class LesionImages(Dataset):
    """Items' stored images (square-resized, normalised) and their masks at the same size;
    training views flip both, drawn from a generator seeded by (seed, epoch, index)."""

    def __init__(self, manifest: Manifest, items: pd.DataFrame, masks: dict[str, np.ndarray],
                 size: int, normalisation: Normalisation, train: bool, seed: int = 0) -> None:
        self.ids = items["video_id"].tolist()
        self.locations = [frames[0] for frames in frame_locations(manifest, self.ids)]
        self.masks = [masks[identifier] for identifier in self.ids]
        self.size, self.normalisation = size, normalisation
        self.train, self.seed, self.epoch = train, seed, 0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = crop_view(self.locations[index].image(self.size), WHOLE_FRAME, self.size)
        mask = Image.fromarray(self.masks[index]).resize((self.size, self.size),
                                                         Image.NEAREST)
        target = torch.from_numpy(np.asarray(mask, dtype=np.float32))
        if self.train and np.random.default_rng([self.seed, self.epoch, index]).uniform() < 0.5:
            image, target = image.flip(-1), target.flip(-1)
        return normalised(image, self.normalisation.mean, self.normalisation.std), target


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probabilities = torch.sigmoid(logits)
    overlap = (probabilities * target).sum(dim=(1, 2))
    total = probabilities.sum(dim=(1, 2)) + target.sum(dim=(1, 2))
    return (1 - (2 * overlap + 1) / (total + 1)).mean()


@dataclass
class SegmentationResult:
    scores: pd.DataFrame  # one row per (seed, test image): fold, dice, ppv, sensitivity
    curves: pd.DataFrame  # one row per (fold, seed, epoch): training loss


def run_fold(manifest: Manifest, items: pd.DataFrame, masks: dict[str, np.ndarray], fold: int,
             seed: int, task: TaskConfig, backbone: str, weights: Path | None,
             normalisation: Normalisation, progress: bool = False) -> SegmentationResult:
    """Train on every fold but ``fold``; score ``fold``'s images after the last epoch."""
    torch.manual_seed(seed)
    train_items, test_items = items[items["fold"] != fold], items[items["fold"] == fold]
    if train_items.empty or test_items.empty:
        raise ValueError(f"fold {fold} leaves an empty train or test side")
    train_data = LesionImages(manifest, train_items, masks, task.image_size, normalisation,
                              train=True, seed=seed)
    test_data = LesionImages(manifest, test_items, masks, task.image_size, normalisation,
                             train=False)
    model = LesionSegmenter(backbone, weights)
    optimiser = torch.optim.Adam(model.trainable(task.mode), lr=task.lr,
                                 weight_decay=task.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=task.epochs)
    loader = DataLoader(train_data, batch_size=task.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed), num_workers=task.workers,
                        drop_last=len(train_data) % task.batch_size == 1)  # BN needs 2
    curves = []
    for epoch in tqdm(range(task.epochs), desc=f"fold {fold} seed {seed}",
                      disable=not progress):
        train_data.epoch = epoch
        model.train()
        total, seen = 0.0, 0
        for images, targets in loader:
            logits = model(images)
            loss = (nn.functional.binary_cross_entropy_with_logits(logits, targets)
                    + soft_dice_loss(logits, targets))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total, seen = total + loss.item() * len(images), seen + len(images)
        scheduler.step()
        curves.append({"fold": fold, "seed": seed, "epoch": epoch,
                       "train_loss": total / max(1, seen)})
    model.eval()
    rows = []
    with torch.no_grad():
        for index, identifier in enumerate(test_data.ids):
            image, _ = test_data[index]
            truth = masks[identifier]
            probability = torch.sigmoid(model(image[None]))[None]
            native = nn.functional.interpolate(probability, size=truth.shape, mode="bilinear",
                                               align_corners=False)[0, 0].numpy()
            rows.append({"video_id": identifier, "fold": fold, "seed": seed,
                         **segmentation_scores(native >= 0.5, truth)})
    return SegmentationResult(pd.DataFrame(rows), pd.DataFrame(curves))


def cross_validate(manifest: Manifest, items: pd.DataFrame, masks: dict[str, np.ndarray],
                   task: TaskConfig, backbone: str, weights: Path | None,
                   normalisation: Normalisation, progress: bool = True) -> SegmentationResult:
    """Every fold x every seed of the task."""
    folds = sorted(int(fold) for fold in items["fold"].unique())
    runs = [run_fold(manifest, items, masks, fold, seed, task, backbone, weights,
                     normalisation, progress) for seed in task.seeds for fold in folds]
    return SegmentationResult(pd.concat([run.scores for run in runs], ignore_index=True),
                              pd.concat([run.curves for run in runs], ignore_index=True))


def summary(scores: pd.DataFrame) -> dict[str, object]:
    """Mean per-image Dice, PPV and sensitivity over every test image, and per run (fold x
    seed) mean ± std."""
    names = ("dice", "ppv", "sensitivity")
    per_run = scores.groupby(["fold", "seed"])[list(names)].mean()
    return {"pooled": {name: float(scores[name].mean()) for name in names},
            "per_run": {name: mean_std(per_run[name].tolist()) for name in names},
            "images": int(len(scores))}
