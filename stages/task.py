"""Stage task@<name>: an image task (``tasks.<name>``) with the pretrained backbone on its
dataset's persisted folds: classification (the papers' metrics, binary ones for two classes)
or lesion segmentation (Dice, PPV, sensitivity) -> ``results/tasks/<name>/``."""

from pathlib import Path

from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.card import RunCard
from pipeline.config import TaskConfig, load_params
from pipeline.console import console, run_stage
from pipeline.data.manifest import Manifest, load_manifest, load_split
from pipeline.data.masks import checked_masks
from pipeline.evaluate import segmentation
from pipeline.evaluate.evaluation import (
    binary_scores,
    draw_figures,
    evaluate,
    plot_tables,
    selected,
)
from pipeline.evaluate.finetune import cross_validate
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
    with atomic_path(out / "predictions.parquet") as temporary:
        selected(result.predictions, result.curves, "last_epoch").to_parquet(temporary,
                                                                            index=False)
    write_text(out / "curves.csv", result.curves.to_csv(index=False))
    draw_figures(plot_tables(result.predictions, result.curves, classes), classes,
                 out / "figures", card.title)
    return metrics


def segment(task: TaskConfig, manifest: Manifest, split, masks_root, card: RunCard,
            weights: Path, out: Path) -> dict[str, object]:
    """k-fold segmentation of the items whose mask passes the checks; the others are listed
    with their error."""
    items = manifest.videos.merge(split[["video_id", "fold"]], on="video_id")
    items = items[items["status"] == "ok"]
    if task.classes:
        items = items[items["label"].isin(task.classes)]
    if "mask" not in items.columns:
        raise ValueError(f"{manifest.root}: labels.csv has no mask column")
    masks, errors = checked_masks(items, masks_root)
    for error in errors.values():
        console.print(f"task: skipped {error}")
    items = items[~items["video_id"].isin(errors)].sort_values("video_id")
    result = segmentation.cross_validate(manifest, items, masks, task, card.backbone, weights,
                                         card.normalisation)
    scores = result.scores.merge(items[["video_id", "source_path", "label"]], on="video_id")
    with atomic_path(out / "scores.parquet") as temporary:
        scores.to_parquet(temporary, index=False)
    write_text(out / "curves.csv", result.curves.to_csv(index=False))
    metrics = {"last_epoch": segmentation.summary(scores), "excluded": errors}
    if task.classes:
        metrics["per_class"] = {label: segmentation.summary(part)["pooled"]
                                for label, part in scores.groupby("label")}
    return metrics


def main(name: str, data: Path = Path("data"), backbone: Path = Path("models/pretrain"),
         out: Path = Path("results/tasks")) -> None:
    params = load_params()
    task = params.task(name)
    card = RunCard.load(backbone / "card.json")
    root = data / task.dataset
    manifest, split = load_manifest(root), load_split(root)
    folder = out / name
    weights = backbone / "backbone.pt"
    if task.kind == "classification":
        metrics = classify(task, manifest, split, card, weights, folder)
        headline = metrics["last_epoch"]["pooled"]
        line = f"accuracy {headline['accuracy']:.3f}, macro F1 {headline['macro_f1']:.3f}"
    else:
        masks_root = dataset_path(params.dataset(task.dataset).root)  # labels.csv's folder
        metrics = segment(task, manifest, split, masks_root, card, weights, folder)
        pooled = metrics["last_epoch"]["pooled"]
        line = ", ".join(f"{key} {value:.3f}" for key, value in pooled.items())
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
