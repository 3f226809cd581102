"""Stage task@<name>: an image task (``tasks.<name>``) with the pretrained backbone on its
dataset's persisted folds: classification (the papers' metrics, binary ones for two classes),
lesion segmentation (Dice, PPV, sensitivity) or detection with Mask R-CNN (COCO box and mask
AP) -> ``results/tasks/<name>/``."""

from pathlib import Path

from pipeline.atomic import write_json
from pipeline.card import RunCard
from pipeline.config import load_params
from pipeline.console import run_stage
from pipeline.data.manifest import load_manifest, load_split
from pipeline.evaluate.tasks import classify, detect, segment
from pipeline.storage import dataset_path


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
