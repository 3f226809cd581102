"""Pair-loader benchmark on COVID-BLUES (``../shared/data/covid-blues``), in one run:

* ``shards``: :class:`pipeline.pretrain.loader.PairDataset`, USCL code preset (three frames, augment
  then mix), frames read by byte offset from the per-video tars; the workers crop, flip,
  colour-jitter on PIL, mix and normalise (``train.views_on: workers``, the CPU setting) and
  deliver finished float views; persistent workers, as the training engine runs them;
* ``shards-for-gpu``: the same loader leaving the views to the device (the GPU setting):
  what the workers deliver, uint8 frames and their draws; the device's share (batched jitter,
  mix, normalisation) is NOT in this figure: it needs a GPU to be measured fairly;
* ``folders``: the authors' input path: one folder of JPEG files per video (the same JPEG
  bytes), ``os.listdir`` + ``random.sample`` of three files, PIL decode, the authors'
  torchvision transform per frame (resize, crop, flip, jitter, normalise), then the mix;
* ``train step``: what a USCL training step (ResNet18, batch 32 videos = 64 images, Adam)
  consumes on this machine, in pairs/s.

Both loaders: DataLoader with 2 workers, batch 32, two full epochs per round (worker start-up
included; the baseline's workers restart every epoch, as in the authors' code), rounds
interleaved; medians reported. The corpus is decoded into a temporary folder, removed after.

    python benchmarks/loader_bench.py --rounds 3 --json docs/loader_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from pipeline.config import DecodeConfig, TrainConfig
from pipeline.data.ingest import ingest
from pipeline.data.manifest import load_manifest
from pipeline.data.views import AugmentSpec
from pipeline.pretrain.loader import PairDataset
from pipeline.pretrain.methods import build_method
from pipeline.pretrain.pairs import PairSpec
from pipeline.storage import read_range
from pipeline.tv_compat import transforms_v2 as v2

REPO = Path(__file__).resolve().parents[1]
BLUES = Path(os.environ.get("USPIPE_SHARED_DATA", REPO.parent / "shared" / "data")) / "covid-blues"
BATCH = 32


def authors_transform(spec: AugmentSpec) -> v2.Compose:
    """The released USCL/HiCo transform of one frame, on PIL images (docs/methods.md §3.1)."""
    return v2.Compose([
        v2.Resize((spec.size, spec.size), antialias=True),
        v2.RandomResizedCrop(spec.size, scale=spec.crop_scale, ratio=spec.crop_ratio,
                             antialias=True),
        v2.RandomHorizontalFlip(spec.flip),
        v2.ColorJitter(*spec.jitter),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(spec.mean, spec.std),
    ])


class FolderPairs(Dataset):
    """USCL's released dataset, reduced to its input path (frames from per-video folders)."""

    def __init__(self, folders: list[Path], size: int) -> None:
        self.folders, self.transform = folders, authors_transform(AugmentSpec(size=size))

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int):
        folder = self.folders[index]
        names = os.listdir(folder)
        picks = random.sample(names, 3) if len(names) >= 3 else (names * 3)[:3]
        frames = [self.transform(Image.open(folder / name).convert("RGB")) for name in picks]
        weight = float(np.random.beta(0.5, 0.5))
        return (weight * frames[0] + (1 - weight) * frames[1],
                weight * frames[2] + (1 - weight) * frames[1])


def export_folders(manifest, root: Path) -> list[Path]:
    folders = []
    for video, frames in manifest.frames.groupby("video_id"):
        folder = root / video
        folder.mkdir(parents=True)
        for row in frames.itertuples():
            data = read_range(manifest.shard_path(row.shard), row.offset, row.size)
            (folder / f"{video}_frame{row.kept_index}.jpg").write_bytes(data)
        folders.append(folder)
    return folders


def pairs_per_second(loader, epochs: int = 2, dataset=None) -> float:
    """Pairs per second over ``epochs`` epochs, worker start-up included."""
    pairs, start = 0, time.perf_counter()
    for epoch in range(epochs):
        if dataset is not None:
            dataset.set_epoch(epoch)
        for batch in loader:
            pairs += len(batch["video"] if isinstance(batch, dict) else batch[0])
    return pairs / (time.perf_counter() - start)


def train_step_pairs_per_second(size: int, steps: int = 3) -> float:
    torch.manual_seed(0)
    method = build_method(TrainConfig(method="uscl"))
    optimiser = torch.optim.Adam(method.parameters(), lr=3e-4)
    views = [torch.randn(BATCH, 3, size, size) for _ in range(2)]
    batch = {"view1": views[0], "view2": views[1], "label": torch.randint(0, 2, (BATCH,))}
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        total = method.loss(method(batch), batch)["total"]
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    return BATCH / statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (BLUES / "videos").is_dir():
        raise SystemExit(f"COVID-BLUES not found at {BLUES}")
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as scratch:
        report = measure(Path(scratch), args.sizes, args.rounds)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


def measure(scratch: Path, sizes: list[int], rounds: int) -> dict:
    ingest(BLUES / "videos", BLUES / "labels.csv", scratch / "shards", DecodeConfig(),
           progress=False)
    manifest = load_manifest(scratch / "shards")
    folders = export_folders(manifest, scratch / "folders")
    videos = manifest.videos["video_id"].tolist()
    report = {"machine": f"{os.cpu_count()} cores, torch {torch.__version__}",
              "videos": len(videos), "frames": len(manifest.frames), "sizes": {}}
    for size in sizes:
        shards, for_gpu, baseline = [], [], []
        augment = AugmentSpec(size=size)
        for _ in range(rounds):
            for views_in_workers, results in ((True, shards), (False, for_gpu)):
                data = PairDataset(manifest, videos, None,
                                   PairSpec(chronological=False, shared_weight=True),
                                   augment, False, BATCH, seed=0,
                                   views_in_workers=views_in_workers)
                results.append(pairs_per_second(
                    DataLoader(data, batch_size=None, num_workers=2, persistent_workers=True),
                    dataset=data))
            folder_data = FolderPairs(folders, size)
            baseline.append(pairs_per_second(DataLoader(folder_data, batch_size=BATCH,
                                                        shuffle=True, num_workers=2,
                                                        drop_last=True)))
        step = train_step_pairs_per_second(size)
        ours, theirs = statistics.median(shards), statistics.median(baseline)
        paired = [a / b for a, b in zip(shards, baseline, strict=True)]
        paired_gpu = [a / b for a, b in zip(for_gpu, baseline, strict=True)]
        report["sizes"][size] = {"shards_pairs_per_s": ours, "folders_pairs_per_s": theirs,
                                 "shards_for_gpu_pairs_per_s": statistics.median(for_gpu),
                                 "train_step_pairs_per_s": step,
                                 "ratio_to_folders": statistics.median(paired),
                                 "ratio_to_folders_range": [min(paired), max(paired)],
                                 "for_gpu_ratio_to_folders": statistics.median(paired_gpu),
                                 "ratio_to_train_step": ours / step}
        print(size, json.dumps(report["sizes"][size]), flush=True)
    return report


if __name__ == "__main__":
    sys.exit(main())
