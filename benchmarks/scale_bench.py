"""Inputs of the scale-out cost model (issue 15), measured on this machine in one run:

* ``hashing``: the inventory's content hashing of COVID-BLUES (362 clips, 68 MB): one thread
  (the listing as it hashed before), ``HASH_THREADS`` threads, and a re-listing that finds
  every file unchanged (size, mtime, inode) in the hash cache. The files are in the page
  cache after the first pass (no root to drop it), so this is hashing, not disk, speed;
* ``decode``: the decode stage on COVID-BLUES (3 fps, short side 112, at most 30 frames),
  2 workers, from scratch: seconds of worker time per clip; then the same stage again with
  nothing changed (receipts read, manifests rewritten): milliseconds per clip;
* ``manifest``: writing ``videos.parquet`` + ``frames.parquet`` for 10^5 synthetic videos
  of 30 frames each (3 x 10^6 frame rows, streamed as the decode stage streams them from
  its receipts), in a fresh process: wall time and peak resident memory above the
  process's baseline.

The cost model (``docs/benchmarks.md``) extrapolates these to 10^5 clips on N workers.

    python benchmarks/scale_bench.py --json docs/scale_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import DecodeConfig  # noqa: E402
from pipeline.data import sources as sources_module  # noqa: E402
from pipeline.data.ingest import decode_sources, inventory  # noqa: E402

BLUES = Path(os.environ.get("USPIPE_SHARED_DATA", REPO.parent / "shared" / "data")) / "covid-blues"
VIDEOS, FRAMES_PER_VIDEO = 100_000, 30


def hashing(scratch: Path) -> dict[str, float]:
    """Seconds to list and hash COVID-BLUES: 1 thread, the default threads, cache hit."""
    results = {}
    for name, threads, cache in (("one_thread_s", 1, "a"), ("threads_s", None, "b"),
                                 ("unchanged_s", None, "b")):
        saved = sources_module.HASH_THREADS
        sources_module.HASH_THREADS = threads or saved
        try:
            started = time.perf_counter()
            inventory(BLUES / "videos", BLUES / "labels.csv", scratch / cache)
            results[name] = time.perf_counter() - started
        finally:
            sources_module.HASH_THREADS = saved
    results["threads"] = sources_module.HASH_THREADS
    results["megabytes"] = sum(path.stat().st_size for path in (BLUES / "videos").iterdir()) / 1e6
    return results


def decode(scratch: Path) -> dict[str, float]:
    sources = inventory(BLUES / "videos", BLUES / "labels.csv", scratch / "decoded")
    config = DecodeConfig(max_frames=30, short_side=112, workers=2)
    started = time.perf_counter()
    summary = decode_sources(sources, scratch / "decoded", config, progress=False)
    wall = time.perf_counter() - started
    started = time.perf_counter()
    decode_sources(sources, scratch / "decoded", config, progress=False)
    rerun = time.perf_counter() - started
    return {"clips": len(summary.results), "wall_s": wall, "workers": config.workers,
            "worker_s_per_clip": wall * config.workers / len(summary.results),
            "rerun_nothing_changed_s": rerun,
            "rerun_ms_per_clip": 1000 * rerun / len(summary.results)}


def manifest_child(folder: str) -> None:
    """Runs in a fresh process: the video rows as the decode stage holds them, the frame rows
    streamed as the stage reads them back from receipts (built here on the fly), the write."""
    from pipeline.data.manifest import write_manifests

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    videos = []
    for number in range(VIDEOS):
        video = _video_id(number)
        videos.append(dict(video_id=video, source_path=f"site/{video}.mp4",
                           content_sha256=f"{number:064x}", size_bytes=200_000,
                           container="mov,mp4,m4a,3gp,3g2,mj2", codec="h264", width=640,
                           height=480, rotation=0, fps=30.0, duration_s=10.0, frames=300,
                           decoded_frames=240, kept_frames=FRAMES_PER_VIDEO, label="covid",
                           probe="convex", group=f"patient-{number // 6}", uncertain="0",
                           status="ok", error=None, shard=f"shards/{video}.tar"))
    write_manifests(Path(folder), videos, _frame_rows())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"videos": VIDEOS, "frame_rows": VIDEOS * FRAMES_PER_VIDEO,
                      "total_s": time.perf_counter() - started,
                      "peak_mb_above_baseline": (peak - baseline) / 1024,
                      "frames_parquet_mb": (Path(folder) / "frames.parquet").stat().st_size / 1e6}))


def _video_id(number: int) -> str:
    return f"clip_{number:06d}_mp4-{number:016x}"


def _frame_rows() -> Iterator[dict[str, object]]:
    for number in range(VIDEOS):
        video = _video_id(number)
        shard = f"shards/{video}.tar"
        yield from (dict(video_id=video, kept_index=index, frame_index=10 * index,
                         timestamp_s=index / 3, pts=512 * index, shard=shard,
                         member=f"{video}/{index:06d}.jpg", offset=512 + 6144 * index,
                         size=5000, width=112, height=112, sha256=f"{index:064x}")
                    for index in range(FRAMES_PER_VIDEO))


def manifest(scratch: Path) -> dict[str, float]:
    folder = scratch / "manifest"
    folder.mkdir()
    done = subprocess.run([sys.executable, __file__, "--manifest-child", str(folder)],
                          capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--manifest-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.manifest_child:
        manifest_child(args.manifest_child)
        return
    if not (BLUES / "videos").is_dir():
        raise SystemExit(f"COVID-BLUES not found at {BLUES}")
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as scratch:
        report = {"machine": f"{os.cpu_count()} cores", "hashing": hashing(Path(scratch)),
                  "decode": decode(Path(scratch)), "manifest": manifest(Path(scratch))}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
