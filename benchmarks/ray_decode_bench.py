"""Decode a dataset with the local process pool and with Ray tasks on the same cores (issue 15):

    python benchmarks/ray_decode_bench.py [--workers 2] [--dataset pocus | covid-blues]
                                          [--rounds 3] [--json FILE]

Each engine decodes all videos (POCUS: 102; COVID-BLUES: 362 shorter ones) from scratch into
its own folder under ``--work`` (outside
the repository): the local pool; Ray cold (a local Ray started and stopped inside the timed
run); Ray warm (the cluster already running, as in use: each stage run is a new Ray job,
whose workers start and import the decoder); Ray warm, second run (the same job decoding again:
its workers have imported everything, so the difference to the first is Ray's fixed cost per
run and the rest its cost per video). Each round runs all four; prints the wall times, the
medians and their ratios, and checks the outputs are byte-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from pipeline.config import DecodeConfig
from pipeline.data.ingest import ingest, start_local_ray

SHARED = Path(os.environ.get("USPIPE_SHARED_DATA", Path(__file__).resolve().parents[2] /
                             "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/uspipe-ray-bench"))
    parser.add_argument("--dataset", default="pocus", choices=("pocus", "covid-blues"))
    parser.add_argument("--rounds", type=int, default=3, help="the median round is reported")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    arguments = parser.parse_args()
    dataset = SHARED / arguments.dataset
    wall: dict[str, list[float]] = {"local": [], "ray cold": [], "ray warm": [],
                                    "ray warm, second run": []}
    identical = True
    for _ in range(arguments.rounds):
        outputs = {}
        for run in wall:
            if run == "ray warm":
                start_local_ray(arguments.workers)
            out = arguments.work / run.replace(" ", "-").replace(",", "")
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            ingest(dataset / "videos", dataset / "labels.csv", out,
                   DecodeConfig(workers=arguments.workers, engine=run.partition(" ")[0]),
                   progress=False)
            wall[run].append(time.perf_counter() - started)
            if run == "ray warm, second run":
                import ray  # noqa: PLC0415 - the optional engine
                ray.shutdown()
            outputs[run] = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*")
                            if p.is_file() and p.name != ".hash-cache.json"}
        identical &= all(outputs[run] == outputs["local"] for run in outputs)
    median = {run: statistics.median(seconds) for run, seconds in wall.items()}
    report = {"dataset": arguments.dataset, "workers": arguments.workers,
              "rounds": arguments.rounds, "wall_s": wall, "median_s": median,
              "median_vs_local": {run: median[run] / median["local"] for run in wall},
              "byte_identical": identical}
    print(json.dumps(report, indent=2))
    if arguments.json:
        arguments.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
