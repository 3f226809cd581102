"""Training-step throughput per method, image size and precision variant (any device).

One step = the method's own :meth:`~pipeline.pretrain.methods.base.Method.training_step` (forward,
backward, optimiser; for Meta-USCL also the virtual and meta steps on a meta batch of the
same size) on a batch of ``--batch`` pairs (2 x batch images) of random views, with the
optimiser the engine builds for the method. Reported: images/s of the training batch from
the median of ``--steps`` timed steps after warm-up (two steps with ``torch.compile``).

Variants, as the engine's ``train.amp`` / ``channels_last`` / ``compile`` run them:

* ``fp32``: the authors' recipe (fp32, contiguous, eager);
* ``bf16``: bf16 autocast; ``bf16-cl``: and channels_last; ``bf16-cl-compile``: and
  ``torch.compile``.

Each variant's speed-up is against ``fp32`` of the same method and size in the same run.

    python benchmarks/method_bench.py --sizes 64 112 224 --json docs/method_bench.json
    python benchmarks/method_bench.py --sizes 224 --variants fp32 bf16 bf16-cl bf16-cl-compile
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
from pipeline.pretrain.engine import compiled
from pipeline.pretrain.methods import build_method

VARIANTS = ("fp32", "bf16", "bf16-cl", "bf16-cl-compile")


def step_seconds(name: str, size: int, batch_size: int, steps: int, device: torch.device,
                 variant: str = "fp32") -> list[float]:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    torch.manual_seed(0)
    channels_last = "-cl" in variant
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    method = build_method(TrainConfig(method=name)).to(device)
    method = method.to(memory_format=memory_format)
    optimiser, _ = method.configure_optimiser()
    views = [torch.randn(batch_size, 3, size, size, device=device).contiguous(
        memory_format=memory_format) for _ in range(4)]
    batch = {"view1": views[0], "view2": views[1], "meta_view1": views[2],
             "meta_view2": views[3], "label": torch.randint(0, 2, (batch_size,), device=device)}
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=variant != "fp32")
    forward = compiled(method) if variant.endswith("compile") else method
    warm_up = 2 if variant.endswith("compile") else 1
    times = []
    for _ in range(steps + warm_up):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        method.training_step(forward, batch, optimiser, autocast)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[warm_up:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+",
                        default=["simclr", "uscl", "supervised", "hico", "meta_uscl"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112, 224])
    parser.add_argument("--variants", nargs="+", default=["fp32"], choices=VARIANTS)
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
            baseline = None
            for variant in args.variants:
                median = statistics.median(step_seconds(name, size, args.batch, args.steps,
                                                        device, variant))
                baseline = median if variant == "fp32" else baseline
                row = {"method": name, "size": size, "variant": variant, "step_s": median,
                       "images_per_s": 2 * args.batch / median,
                       "speedup_vs_fp32": None if baseline is None else baseline / median}
                report["results"].append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
