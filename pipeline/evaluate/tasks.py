"""The image tasks of ``tasks:`` (docs/methods.md §8.5) on a decoded dataset and its folds,
with a pretrained backbone: classification (the papers' metrics, binary ones for two classes),
lesion segmentation (Dice, PPV, sensitivity), detection with Mask R-CNN (COCO AP). Each
writes its tables and figures under ``out`` and returns what goes into ``metrics.json``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.card import RunCard
from pipeline.config import TaskConfig
from pipeline.console import console
from pipeline.data.manifest import Manifest
from pipeline.data.masks import checked_masks
from pipeline.evaluate import detection, segmentation
from pipeline.evaluate.evaluation import (
    binary_scores,
    draw_figures,
    evaluate,
    plot_tables,
    selected,
)
from pipeline.evaluate.finetune import cross_validate
from pipeline.evaluate.plotting import loss_figure

if TYPE_CHECKING:
    from pipeline.storage import Location


def classify(task: TaskConfig, manifest: Manifest, split: pd.DataFrame, card: RunCard,
             weights: Path, out: Path) -> dict[str, object]:
    """k-fold fine-tuning; the papers' metrics (last epoch, and the optimistic best test
    epoch beside it), the positive class's binary metrics, figures."""
    classes = list(task.classes)
    result = cross_validate(manifest, split, task.finetune(), card.backbone, weights,
                            card.normalisation)
    metrics = evaluate(result.predictions, result.curves, classes, None)
    if len(classes) == 2:
        positive = task.positive or classes[1]
        metrics["binary"] = {selection: binary_scores(metrics[selection]["pooled"], positive)
                             for selection in ("last_epoch", "best_epoch_optimistic")}
    with atomic_path(out / "tables" / "predictions.parquet") as temporary:
        selected(result.predictions, result.curves, "last_epoch").to_parquet(temporary,
                                                                            index=False)
    write_text(out / "tables" / "curves.csv", result.curves.to_csv(index=False))
    draw_figures(plot_tables(result.predictions, result.curves, classes), classes,
                 out / "figures", card.title)
    return metrics


def masked_items(task: TaskConfig, manifest: Manifest, split: pd.DataFrame, masks_root: Location
                 ) -> tuple[pd.DataFrame, dict[str, np.ndarray], dict[str, str]]:
    """The task's decoded items with their fold whose mask passes the checks, their masks,
    and the others' errors (printed)."""
    items = manifest.videos.merge(split[["video_id", "fold"]], on="video_id")
    items = items[items["status"] == "ok"]
    if task.classes:
        items = items[items["label"].isin(task.classes)]
    if "mask" not in items.columns:
        raise ValueError(f"{manifest.root}: labels.csv has no mask column")
    masks, errors = checked_masks(items, masks_root)
    for error in errors.values():
        console.print(f"task: skipped {error}")
    return items[~items["video_id"].isin(errors)].sort_values("video_id"), masks, errors


def segment(task: TaskConfig, manifest: Manifest, split: pd.DataFrame, masks_root: Location,
            card: RunCard, weights: Path, out: Path) -> dict[str, object]:
    """k-fold segmentation of the items whose mask passes the checks; the others are listed
    with their error."""
    items, masks, errors = masked_items(task, manifest, split, masks_root)
    result = segmentation.cross_validate(manifest, items, masks, task, card.backbone, weights,
                                         card.normalisation)
    scores = result.scores.merge(items[["video_id", "source_path", "label"]], on="video_id")
    with atomic_path(out / "tables" / "scores.parquet") as temporary:
        scores.to_parquet(temporary, index=False)
    write_text(out / "tables" / "curves.csv", result.curves.to_csv(index=False))
    loss_figure(result.curves, out / "figures" / "loss.png", f"{task.dataset}: segmentation")
    metrics = {"last_epoch": segmentation.summary(scores), "excluded": errors}
    if task.classes:
        metrics["per_class"] = {label: segmentation.summary(part)["pooled"]
                                for label, part in scores.groupby("label")}
    return metrics


def detect(task: TaskConfig, manifest: Manifest, split: pd.DataFrame, masks_root: Location,
           card: RunCard, weights: Path, out: Path) -> dict[str, object]:
    """k-fold Mask R-CNN on the items whose mask passes the checks; COCO box and mask AP."""
    items, masks, errors = masked_items(task, manifest, split, masks_root)
    results = detection.cross_validate(manifest, items, masks, task, card.backbone, weights,
                                       card.normalisation)
    curves = pd.concat([result.curves for result in results.values()])
    write_json(out / "tables" / "coco.json", {seed: {"truth": result.truth,
                                                     "detections": result.detections}
                                              for seed, result in results.items()})
    write_text(out / "tables" / "curves.csv", curves.to_csv(index=False))
    loss_figure(curves, out / "figures" / "loss.png", f"{task.dataset}: Mask R-CNN")
    return {"last_epoch": detection.summary(results), "excluded": errors}
