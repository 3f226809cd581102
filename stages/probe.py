"""Stage probe: frozen-feature protocols (linear probe, k-NN) on the downstream folds,
frame and video level."""

from pathlib import Path

from pipeline.atomic import atomic_path, write_json
from pipeline.card import RunCard
from pipeline.config import load_params
from pipeline.console import run_stage
from pipeline.data.manifest import load_manifest, load_split
from pipeline.data.splits import fold_assignments
from pipeline.evaluate.evaluation import level_scores
from pipeline.evaluate.finetune import select_videos
from pipeline.evaluate.probe import frame_features, probe_functions, repeated_probes
from pipeline.storage import dataset_path


def main(dataset: str = "downstream", data: str = "data", shard_cache: Path | None = None,
         backbone: Path = Path("models/pretrain"), out: Path = Path("results/probe")) -> None:
    params = load_params()
    selection, config = params.finetune, params.probe
    card = RunCard.load(backbone / "card.json")
    root = dataset_path(data) / dataset  # a folder, or a URL such as s3://bucket/data
    manifest = load_manifest(root, shard_cache)  # a local cache of remote shards
    split = load_split(root)
    videos = select_videos(manifest.videos, split, selection)
    features, frames = frame_features(manifest, videos["video_id"].tolist(), card.backbone,
                                      backbone / "backbone.pt", card.normalisation,
                                      selection.image_size, workers=selection.workers)
    assignments = fold_assignments(manifest.videos, split, config.fold_seeds,
                                   params.split.val_fraction)
    predictions = repeated_probes(features, frames, manifest.videos, assignments, selection,
                                  probe_functions(config))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "predictions.parquet") as temporary:
        predictions.to_parquet(temporary, index=False)
    metrics: dict[str, object] = {"protocol": {
        "pretraining": {"method": card.method, "preset": card.preset, "epochs": card.epochs},
        "probe": {"c": config.c, "k": config.k, "knn_temperature": config.knn_temperature,
                  "fold_seeds": config.fold_seeds,
                  "image_size": selection.image_size, "features": int(features.shape[1])}}}
    for protocol, table in predictions.groupby("protocol"):
        metrics[protocol] = level_scores(table, list(selection.classes), selection.normal_class)
        line = {level: metrics[protocol][level]["pooled"]["accuracy"]
                for level in ("frame", "video")}
        print(f"probe: {card.title} {protocol}: accuracy frame {line['frame']:.3f}, "
              f"video {line['video']:.3f}")
    write_json(out / "metrics.json", metrics)


if __name__ == "__main__":
    run_stage(main)
