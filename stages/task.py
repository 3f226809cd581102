"""Stage task@<name>: an image task (``tasks.<name>``) with the pretrained backbone on its
dataset's persisted folds: classification (the papers' metrics, binary ones for two classes),
lesion segmentation (Dice, PPV, sensitivity) or detection with Mask R-CNN (COCO box and mask
AP) -> ``results/tasks/<name>/``."""

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.card import RunCard
from pipeline.config import TaskConfig, load_params
from pipeline.console import console, run_stage
from pipeline.data.manifest import Manifest, load_manifest, load_split
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
from pipeline.storage import dataset_path


def classify(task: TaskConfig, manifest: Manifest, split, card: RunCard, weights: Path,
             out: Path) -> dict[str, object]:
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


def masked_items(task: TaskConfig, manifest: Manifest, split, masks_root
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


def segment(task: TaskConfig, manifest: Manifest, split, masks_root, card: RunCard,
            weights: Path, out: Path) -> dict[str, object]:
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


def detect(task: TaskConfig, manifest: Manifest, split, masks_root, card: RunCard,
           weights: Path, out: Path) -> dict[str, object]:
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


def main(name: str, data: Path = Path("data"), backbone: Path = Path("models/pretrain"),
         out: Path = Path("results/tasks")) -> None:
    params = load_params()
    task = params.task(name)
    card = RunCard.load(backbone / "card.json")
    root = data / task.dataset
    manifest, split = load_manifest(root), load_split(root)
    folder = out / name
    weights = backbone / "backbone.pt"
    masks_root = dataset_path(params.dataset(task.dataset).root)  # labels.csv's folder
    if task.kind == "classification":
        metrics = classify(task, manifest, split, card, weights, folder)
        headline = metrics["last_epoch"]["pooled"]
        line = f"accuracy {headline['accuracy']:.3f}, macro F1 {headline['macro_f1']:.3f}"
    elif task.kind == "segmentation":
        metrics = segment(task, manifest, split, masks_root, card, weights, folder)
        pooled = metrics["last_epoch"]["pooled"]
        line = ", ".join(f"{key} {value:.3f}" for key, value in pooled.items())
    else:
        metrics = detect(task, manifest, split, masks_root, card, weights, folder)
        pooled = metrics["last_epoch"]["pooled"]
        line = ", ".join(f"{kind} AP {values['ap']:.3f} (AP50 {values['ap50']:.3f})"
                         for kind, values in pooled.items())
    metrics["protocol"] = {"task": name, "kind": task.kind, "dataset": task.dataset,
                           "pretraining": {"method": card.method, "preset": card.preset,
                                           "backbone": card.backbone, "epochs": card.epochs},
                           "mode": task.mode, "epochs": task.epochs,
                           "batch_size": task.batch_size, "lr": task.lr,
                           "image_size": task.image_size, "seeds": list(task.seeds),
                           "folds": int(split["fold"].max()) + 1}
    write_json(folder / "metrics.json", metrics)
    print(f"task@{name}: {task.kind} with {card.title}: {line}")


if __name__ == "__main__":
    run_stage(main)
