"""Stage finetune: k-fold fine-tuning of the pretrained backbone on the downstream dataset.

Writes every run's test-fold probabilities after every epoch, and its training curves.
"""

from pathlib import Path

from pipeline.atomic import atomic_path, write_text
from pipeline.card import RunCard
from pipeline.config import load_params
from pipeline.console import run_stage
from pipeline.data.manifest import load_manifest, load_split
from pipeline.data.splits import fold_assignments
from pipeline.evaluate.finetune import cross_validate, repeated_cross_validation
from pipeline.storage import dataset_path


def main(dataset: str = "downstream", data: str = "data", shard_cache: Path | None = None,
         backbone: Path = Path("models/pretrain"),
         out: Path = Path("models/finetune")) -> None:
    params = load_params()
    card = RunCard.load(backbone / "card.json")
    root = dataset_path(data) / dataset  # a folder, or a URL such as s3://bucket/data
    manifest = load_manifest(root, shard_cache)  # a local cache of remote shards
    split = load_split(root)
    config = params.finetune
    if config.fold_seeds:  # repeated cross-validation: rows marked with their repeat
        result = repeated_cross_validation(
            manifest, fold_assignments(manifest.videos, split, config.fold_seeds,
                                       params.split.val_fraction),
            config, card.backbone, backbone / "backbone.pt", card.normalisation)
    else:
        result = cross_validate(manifest, split, config, card.backbone,
                                backbone / "backbone.pt", card.normalisation)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "predictions.parquet") as temporary:
        result.predictions.to_parquet(temporary, index=False)
    write_text(out / "curves.csv", result.curves.to_csv(index=False))
    last = result.curves[result.curves["epoch"] == result.curves["epoch"].max()]
    print(f"finetune: {len(last)} runs, last-epoch test accuracy "
          f"{last['test_accuracy'].mean():.3f} ± {last['test_accuracy'].std(ddof=1):.3f}")


if __name__ == "__main__":
    run_stage(main)
