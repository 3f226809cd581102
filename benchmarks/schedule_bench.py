"""Wall time of the papers' pretraining schedule through the real engine (any device).

Writes a synthetic corpus of ``--videos`` clips (the papers' US-4 has ~1,400), decodes it
with the decode stage's code, and pretrains ``--method`` with the paper schedule (batch 32
videos, 224 px, 300 epochs) through :func:`pipeline.pretrain.engine.pretrain`, as the ``pretrain``
stage runs it on one device: the real loader, checkpoints every epoch, no dvclive logs.
Reports the wall time of the epochs and their steady rate (every epoch but the first, which
pays worker start-up and compilation). With ``--epochs`` below 300 the 300-epoch time is
extrapolated from the steady epochs, and labelled so.

    python benchmarks/schedule_bench.py --epochs 300 --compile --channels-last \\
        --json docs/schedule_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from pipeline.config import DecodeConfig, TrainConfig
from pipeline.data.ingest import ingest
from pipeline.data.manifest import load_manifest
from pipeline.data.synthetic import write_dataset
from pipeline.pretrain.engine import checkpoint_history, pretrain

PAPER_EPOCHS = 300


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1400)
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS)
    parser.add_argument("--method", default="uscl")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--views-on", default="auto", choices=["auto", "workers", "device"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = TrainConfig(method=args.method, epochs=args.epochs, image_size=args.size,
                         batch_size=args.batch, workers=args.workers, amp=args.amp,
                         channels_last=args.channels_last, compile=args.compile,
                         views_on=args.views_on)
    with tempfile.TemporaryDirectory(prefix="schedule-bench-") as scratch:
        report = measure(Path(scratch), args.videos, config)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def measure(scratch: Path, videos: int, config: TrainConfig) -> dict:
    start = time.perf_counter()
    write_dataset(scratch / "corpus", videos, seed=0, group_prefix="bench",
                  workers=config.workers)
    ingest(scratch / "corpus" / "videos", scratch / "corpus" / "labels.csv",
           scratch / "shards", DecodeConfig(workers=max(1, config.workers)), progress=False)
    manifest = load_manifest(scratch / "shards")
    corpus_s = time.perf_counter() - start
    start = time.perf_counter()
    card, _ = pretrain(manifest, manifest.videos.sort_values("video_id"), config,
                       scratch / "model", progress=False, log_metrics=False)
    train_s = time.perf_counter() - start
    history = checkpoint_history(scratch / "model" / "checkpoint.pt")
    epochs = len(history)
    steady = history[1:] or history  # the first epoch pays start-up and compilation
    steady_epoch_s = statistics.mean(record["epoch_s"] for record in steady)
    paper_s = history[0]["epoch_s"] + steady_epoch_s * (PAPER_EPOCHS - 1)
    return {"device": torch.cuda.get_device_name() if torch.cuda.is_available()
            else f"CPU, {os.cpu_count()} cores",
            "torch": torch.__version__, "videos": len(manifest.videos),
            "frames": len(manifest.frames), "corpus_s": corpus_s,
            "config": {key: value for key, value in asdict(config).items() if key != "meta"},
            "epochs_run": epochs, "train_s": train_s,
            "first_epoch_s": history[0]["epoch_s"], "steady_epoch_s": steady_epoch_s,
            "steady_images_per_s": statistics.mean(record["images_per_s"] for record in steady),
            f"{PAPER_EPOCHS}_epochs_s": train_s if epochs == PAPER_EPOCHS else paper_s,
            f"{PAPER_EPOCHS}_epochs_measured": epochs == PAPER_EPOCHS,
            "final_losses": card.final_losses}


if __name__ == "__main__":
    sys.exit(main())
