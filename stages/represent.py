"""Stage represent: t-SNE of downstream frame embeddings and Grad-CAM maps of the backbone."""

from pathlib import Path

from pipeline.backbones import load_backbone
from pipeline.card import RunCard
from pipeline.config import load_params
from pipeline.console import run_stage
from pipeline.data.manifest import load_manifest, load_split
from pipeline.evaluate.finetune import select_videos
from pipeline.evaluate.representation import (
    embed,
    frames_of,
    grad_cam_figure,
    tsne_figure,
)
from pipeline.storage import dataset_path


def main(dataset: str = "downstream", data: str = "data", shard_cache: Path | None = None,
         backbone: Path = Path("models/pretrain"), out: Path = Path("results/representation"),
         videos_per_class: int = 20, frames_per_video: int = 8) -> None:
    config = load_params().finetune
    card = RunCard.load(backbone / "card.json")
    root = dataset_path(data) / dataset  # a folder, or a URL such as s3://bucket/data
    manifest = load_manifest(root, shard_cache)  # a local cache of remote shards
    videos = select_videos(manifest.videos, load_split(root), config)
    videos = videos.groupby("label", group_keys=False).head(videos_per_class)
    model = load_backbone(card.backbone, backbone / "backbone.pt")[0].eval()
    images, ids, labels = frames_of(manifest, videos, frames_per_video, config.image_size,
                                    card.normalisation)
    title = card.title
    tsne_figure(embed(model, images), ids, labels, out / "tsne.png", title)
    firsts = [ids.index(video) for video in videos.groupby("label")["video_id"].first()]
    grad_cam_figure(model, images[firsts], [labels[i] for i in firsts], card.normalisation,
                    out / "gradcam.png", title)
    print(f"represent: {len(images)} frames of {len(videos)} videos -> {out}")


if __name__ == "__main__":
    run_stage(main)
