"""Training input from object storage against local disk, in one run (issue 15):
COVID-BLUES decoded at 3 fps (short side 112, at most 30 frames a clip: the transfer study's
corpus), uploaded as it is to a local S3 server (moto's server mode on 127.0.0.1,
:mod:`tests.s3_server`), then read both ways with the same code:

* ``loader``: the pretraining pair loader alone (USCL, code preset, 112 px views made in 2
  worker processes, batch 32, persistent workers), two epochs, worker start-up included;
  ``s3``: every frame is one ranged GET; ``s3+cache``: each shard is fetched whole on first
  use into a local shard cache (emptied before each round), later reads are local;
* ``train``: two pretraining epochs of USCL through the engine (ResNet-18, 112 px, bf16
  autocast where this CPU runs it fast), the second epoch's pairs/s as the engine logs it
  (with the cache: reads from local copies by then).

Rounds alternate disk and S3; medians and the per-round ratio S3/disk are reported. A local
server has no network latency: a remote bucket adds its round-trip time to every frame read,
which the loader's workers overlap with training only as far as their count allows.

    python benchmarks/s3_input_bench.py --rounds 2 --json docs/s3_input_bench.json
    python benchmarks/s3_input_bench.py --decoded ../uspipe-study/covid-blues  # reuse a decode
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import DecodeConfig, TrainConfig  # noqa: E402
from pipeline.data.ingest import ingest  # noqa: E402
from pipeline.data.manifest import Manifest, load_manifest  # noqa: E402
from pipeline.pretrain.engine import pretrain  # noqa: E402
from pipeline.pretrain.loader import PairDataset  # noqa: E402
from pipeline.pretrain.methods import build_method  # noqa: E402
from tests.s3_server import local_s3_server  # noqa: E402

BLUES = Path(os.environ.get("USPIPE_SHARED_DATA", REPO.parent / "shared" / "data")) / "covid-blues"
BUCKET = "uspipe-bench"
CONFIG = TrainConfig(image_size=112, epochs=2, batch_size=32, workers=2)


def loader_pairs_per_second(manifest: Manifest, epochs: int = 2) -> float:
    method = build_method(CONFIG)
    pairs, mix_first = method.pair_spec()
    data = PairDataset(manifest, manifest.videos["video_id"].tolist(), None, pairs,
                       method.augment_spec(), mix_first, CONFIG.batch_size, seed=0,
                       views_in_workers=True)
    loader = DataLoader(data, batch_size=None, num_workers=CONFIG.workers,
                        persistent_workers=True)
    count, start = 0, time.perf_counter()
    for epoch in range(epochs):
        data.set_epoch(epoch)
        for batch in loader:
            count += len(batch["label"])
    return count / (time.perf_counter() - start)


def train_pairs_per_second(manifest: Manifest, out: Path) -> float:
    card, _ = pretrain(manifest, manifest.videos, CONFIG, out, progress=False,
                       log_metrics=False)
    return card.final_losses["images_per_s"] / 2


def measure(decoded: Path, rounds: int, scratch: Path) -> dict:
    url = f"s3://{BUCKET}/covid-blues"
    with local_s3_server(BUCKET):
        started = time.perf_counter()
        fsspec.filesystem("s3").put(f"{decoded}/", url, recursive=True)
        upload_s = time.perf_counter() - started
        sources = ("disk", "s3", "s3+cache")
        results: dict[str, dict[str, list[float]]] = {
            part: {name: [] for name in sources} for part in ("loader", "train")}
        for index in range(rounds):
            for name in sources:
                for part, measured in (("loader", loader_pairs_per_second),
                                       ("train", train_pairs_per_second)):
                    cache = scratch / f"cache-{index}-{part}"  # empty: the first epoch fetches
                    manifest = load_manifest(decoded if name == "disk" else url,
                                             shard_cache=cache if name == "s3+cache" else None)
                    arguments = (manifest,) if part == "loader" else (
                        manifest, scratch / f"{name}-{index}")
                    results[part][name].append(measured(*arguments))
                print(name, {part: values[name][-1] for part, values in results.items()},
                      flush=True)
    manifest = load_manifest(decoded)
    report = {"machine": f"{os.cpu_count()} cores, torch {torch.__version__}",
              "videos": len(manifest.videos), "frames": len(manifest.frames),
              "megabytes": round(sum(path.stat().st_size for path in decoded.rglob("*")
                                     if path.is_file()) / 1e6, 1),
              "upload_s": round(upload_s, 1), "rounds": rounds}
    for part, values in results.items():
        report[part] = {f"{name}_pairs_per_s": statistics.median(values[name])
                        for name in values}
        for name in ("s3", "s3+cache"):
            report[part][f"{name}_over_disk"] = statistics.median(
                remote / disk for remote, disk in zip(values[name], values["disk"], strict=True))
        report[part]["runs"] = values
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--decoded", type=Path, help="a decoded COVID-BLUES folder to reuse")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s3-input-bench-") as scratch:
        decoded = args.decoded
        if decoded is None:
            if not (BLUES / "videos").is_dir():
                raise SystemExit(f"COVID-BLUES not found at {BLUES}")
            decoded = Path(scratch) / "covid-blues"
            ingest(BLUES / "videos", BLUES / "labels.csv", decoded,
                   DecodeConfig(max_frames=30, short_side=CONFIG.image_size), progress=False)
        report = measure(decoded, args.rounds, Path(scratch))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
