"""Training-step throughput per method and image size (CPU here; any device it finds).

One step = the method's own :meth:`~pipeline.methods.base.Method.training_step` (forward,
backward, optimiser; for Meta-USCL also the virtual and meta steps on a meta batch of the
same size) on a batch of ``--batch`` pairs (2 x batch images) of random views, with the
optimiser the engine builds for the method, fp32 on CPU (bf16 autocast on a GPU). Reported:
images/s of the training batch from the median of ``--steps`` timed steps after one warm-up.

    python benchmarks/method_bench.py --sizes 64 112 224 --json docs/method_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from pipeline.config import TrainConfig
from pipeline.methods import MethodConfig, build_method


def step_seconds(name: str, size: int, batch_size: int, steps: int,
                 device: torch.device) -> list[float]:
    torch.manual_seed(0)
    method = build_method(name, MethodConfig(num_classes=2)).to(device)
    optimiser, _ = method.configure_optimiser(TrainConfig(method=name))
    views = torch.randn(4, batch_size, 3, size, size, device=device)
    batch = {"view1": views[0], "view2": views[1], "meta_view1": views[2],
             "meta_view2": views[3], "label": torch.randint(0, 2, (batch_size,), device=device)}
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
    times = []
    for _ in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        method.training_step(method, batch, optimiser, autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+",
                        default=["simclr", "uscl", "supervised", "hico", "meta_uscl"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112, 224])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name() if device.type == "cuda" else \
        f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    report = {"device": where, "torch": torch.__version__, "batch_pairs": args.batch,
              "results": []}
    for size in args.sizes:
        for name in args.methods:
            times = step_seconds(name, size, args.batch, args.steps, device)
            median = statistics.median(times)
            row = {"method": name, "size": size, "step_s": median,
                   "images_per_s": 2 * args.batch / median}
            report["results"].append(row)
            print(json.dumps(row), flush=True)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
