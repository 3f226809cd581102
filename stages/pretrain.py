"""Stage pretrain: train.method on the pretraining set's train split -> backbone + card.

Runs single-process, or multi-GPU as ``torchrun --nproc-per-node N stages/pretrain.py``.
"""

from pathlib import Path

from pipeline.config import load_params
from pipeline.console import run_stage
from pipeline.data.manifest import load_manifest, load_split
from pipeline.pretrain.engine import pretrain
from pipeline.storage import dataset_path


def main(dataset: str = "pretrain", data: str = "data", shard_cache: Path | None = None,
         out: Path = Path("models/pretrain")) -> None:
    params = load_params()
    root = dataset_path(data) / dataset  # a folder, or a URL such as s3://bucket/data
    manifest = load_manifest(root, shard_cache)  # a local cache of remote shards
    split = load_split(root)
    train = manifest.videos.merge(split.loc[split["split"] == "train", ["video_id"]],
                                  on="video_id").sort_values("video_id")
    held_out = sorted(split.loc[split["split"] != "train", "video_id"])
    card, _ = pretrain(manifest, train, params.train, out, held_out=held_out)
    print(f"pretrain: {card.title} on {card.train_videos} videos, {card.epochs} epochs, "
          f"final losses {card.final_losses}")


if __name__ == "__main__":
    run_stage(main)
