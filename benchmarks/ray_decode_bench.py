"""Decode a dataset with the local process pool and with Ray tasks on the same cores (issue 15):

    python benchmarks/ray_decode_bench.py [--workers 2] [--dataset pocus | covid-blues]

Each engine decodes all videos (POCUS: 102; COVID-BLUES: 362 shorter ones) from scratch into
its own folder under ``--work`` (outside
the repository): the local pool; Ray cold (a local Ray started and stopped inside the timed
run); Ray warm (the cluster already running, as in use). Prints the wall times and ratios, and
checks that the outputs are byte-identical.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from pipeline.config import DecodeConfig
from pipeline.data.ingest import ingest

SHARED = Path(os.environ.get("USPIPE_SHARED_DATA", Path(__file__).resolve().parents[2] /
                             "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/uspipe-ray-bench"))
    parser.add_argument("--dataset", default="pocus", choices=("pocus", "covid-blues"))
    arguments = parser.parse_args()
    dataset = SHARED / arguments.dataset
    wall, outputs = {}, {}
    for run, engine in (("local", "local"), ("ray cold", "ray"), ("ray warm", "ray")):
        if run == "ray warm":
            import ray  # noqa: PLC0415 - the optional engine
            ray.init(num_cpus=arguments.workers, include_dashboard=False, log_to_driver=False)
        out = arguments.work / run.replace(" ", "-")
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        ingest(dataset / "videos", dataset / "labels.csv", out,
               DecodeConfig(workers=arguments.workers, engine=engine), progress=False)
        wall[run] = time.perf_counter() - started
        outputs[run] = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*")
                        if p.is_file() and p.name != ".hash-cache.json"}
    identical = all(outputs[run] == outputs["local"] for run in outputs)
    print(f"{arguments.dataset}, {arguments.workers} workers: "
          + ", ".join(f"{run} {seconds:.1f} s ({seconds / wall['local']:.2f}x)"
                      for run, seconds in wall.items())
          + f"; outputs {'byte-identical' if identical else 'DIFFER'}")

if __name__ == "__main__":
    main()
