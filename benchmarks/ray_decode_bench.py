"""Decode POCUS with the local process pool and with Ray tasks on the same cores (issue 15):

    python benchmarks/ray_decode_bench.py [--workers 2]

Each engine decodes all 102 videos from scratch into its own folder under ``--work`` (outside
the repository); Ray's wall time includes starting and stopping the local Ray. Prints both
wall times and their ratio, and checks that the two outputs are byte-identical.
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
    arguments = parser.parse_args()
    pocus = SHARED / "pocus"
    wall, outputs = {}, {}
    for engine in ("local", "ray"):
        out = arguments.work / engine
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        ingest(pocus / "videos", pocus / "labels.csv", out,
               DecodeConfig(workers=arguments.workers, engine=engine), progress=False)
        wall[engine] = time.perf_counter() - started
        outputs[engine] = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*")
                           if p.is_file() and p.name != ".hash-cache.json"}
    identical = outputs["local"] == outputs["ray"]
    print(f"POCUS, {arguments.workers} workers: local {wall['local']:.1f} s, ray "
          f"{wall['ray']:.1f} s, ray/local {wall['ray'] / wall['local']:.2f}; outputs "
          f"{'byte-identical' if identical else 'DIFFER'}")


if __name__ == "__main__":
    main()
