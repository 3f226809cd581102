"""Training throughput by precision: a bare ResNet-18 step against the pretraining engine.

The bare step is the ceiling: forward, backward and Adam on 64 images of 112 px already in
memory, in fp32 NCHW, channels_last, bf16 autocast, and both. The engine's figure is USCL
(``proto`` preset, 32 pairs = 64 images per step, 112 px) through the real loader and
engine on a synthetic corpus decoded on the spot, with ``train.amp`` on and off; its steady
epochs' images/s are divided by the best bare step's, measured in the same run.

    python benchmarks/precision_bench.py [--steps 20] [--epochs 4] [--clips 96]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from pipeline import precision
from pipeline.backbones import build_backbone
from pipeline.config import DecodeConfig, TrainConfig
from pipeline.data.ingest import ingest
from pipeline.data.manifest import load_manifest
from pipeline.data.synthetic import write_dataset
from pipeline.pretrain.engine import checkpoint_history, pretrain

VARIANTS = {"fp32": (False, False), "channels_last": (False, True), "bf16": (True, False),
            "bf16+channels_last": (True, True)}


def bare_step_rate(amp: bool, channels_last: bool, steps: int, size: int = 112,
                   batch: int = 64) -> float:
    """Median images/s of a bare training step."""
    torch.manual_seed(0)
    backbone, features = build_backbone("resnet18")
    model = torch.nn.Sequential(backbone, torch.nn.Linear(features, 10))
    images = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, 10, (batch,))
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), \
            images.contiguous(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(model.parameters(), 3e-4)
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=amp)
    times = []
    for step in range(steps + 3):
        started = time.perf_counter()
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step >= 3:  # warm-up steps excluded
            times.append(time.perf_counter() - started)
    return batch / statistics.median(times)


def engine_rate(amp: bool, epochs: int, clips: int, scratch: Path) -> float:
    """Mean images/s of the engine's epochs after the first (USCL proto, 112 px, batch 32)."""
    corpus = scratch / "corpus"
    if not (corpus / "decoded" / "videos.parquet").is_file():
        write_dataset(corpus / "videos", clips, seed=3, group_prefix="bench")
        ingest(corpus / "videos" / "videos", corpus / "videos" / "labels.csv",
               corpus / "decoded", DecodeConfig(short_side=112), progress=False)
    manifest = load_manifest(corpus / "decoded")
    config = replace(TrainConfig(preset="proto", image_size=112, batch_size=32, epochs=epochs,
                                 workers=2), amp=amp)
    out = scratch / f"run-{amp}"
    pretrain(manifest, manifest.videos, config, out, progress=False, log_metrics=False)
    history = checkpoint_history(out / "checkpoint.pt")
    return statistics.mean(record["images_per_s"] for record in history[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--clips", type=int, default=96)
    arguments = parser.parse_args()
    result = {"cpu_native_bf16": precision.cpu_has_native_bf16(),
              "threads": torch.get_num_threads(), "bare_step_images_per_s": {}}
    for name, (amp, channels_last) in VARIANTS.items():
        result["bare_step_images_per_s"][name] = round(
            bare_step_rate(amp, channels_last, arguments.steps), 1)
    best = max(result["bare_step_images_per_s"].values())
    with tempfile.TemporaryDirectory() as scratch:
        for amp in (False, True):
            rate = engine_rate(amp, arguments.epochs, arguments.clips, Path(scratch))
            result[f"engine_images_per_s_amp_{str(amp).lower()}"] = round(rate, 1)
            result[f"engine_over_best_bare_step_amp_{str(amp).lower()}"] = round(rate / best, 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
