"""Decode-stage benchmark on the real POCUS videos (``../shared/data/pocus``).

In one run, ``--rounds`` times interleaved, each variant a fresh process tree timed end to end:

* ``stage``: the decode stage (``pipeline.data.ingest.ingest``, 2 workers): hash, decode, sample at
  3 fps, RGB-convert and JPEG-encode kept frames, write shards and manifests;
* ``floor``: PyAV decode-only of every frame, same 2-process pool and threading, no output;
* ``ffmpeg``: the loop ``ffmpeg -i X -vf fps=3 -q:v 2 out/%05d.jpg`` over the files, one at a
  time (what a user would script), and ``ffmpeg_p2``: the same loop two files at a time.

Reports median wall time, decoded and kept frames/s, peak memory of the whole process tree
(sampled every 20 ms), the ratios the issue sets targets for, the per-file kept-count agreement
between the stage, real ffmpeg and :func:`pipeline.data.sampling.ffmpeg_fps_frame_count`, the
no-op ``dvc repro`` time of this repository, and the stage's peak memory on synthetic clips of
5 s to 160 s (memory must not grow with clip length). Needs Debian's ffmpeg
(``apt-get install ffmpeg``).

    python benchmarks/decode_bench.py --rounds 3 --json docs/decode_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import av
import psutil

REPO = Path(__file__).resolve().parents[1]
POCUS = Path(os.environ.get("USPIPE_SHARED_DATA", REPO.parent / "shared" / "data")) / "pocus"


def decode_only(path: str) -> int:
    """Decode every frame of one video with the stage's threading; return the frame count."""
    with av.open(path) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


def video_files() -> list[str]:
    """The POCUS files, largest first (the stage's order)."""
    from pipeline.data.sources import list_video_files

    files = [POCUS / "videos" / name for name in list_video_files(POCUS / "videos")]
    return [str(path) for path in sorted(files, key=lambda p: p.stat().st_size, reverse=True)]


def run_floor(workers: int) -> None:
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:  # as the stage
        total = sum(pool.map(decode_only, video_files()))
    print(json.dumps({"decoded": total}))


def run_stage(out: str, workers: int) -> None:
    from pipeline.config import DecodeConfig
    from pipeline.data.ingest import ingest

    ingest(POCUS / "videos", POCUS / "labels.csv", Path(out), DecodeConfig(workers=workers),
           progress=False)


def ffmpeg_one(path: str, out: str) -> None:
    target = Path(out) / Path(path).name
    target.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", path, "-vf", "fps=3",
                    "-q:v", "2", str(target / "%05d.jpg")], check=True)


def run_ffmpeg(out: str, workers: int) -> None:
    files = video_files()
    if workers == 1:
        for path in files:
            ffmpeg_one(path, out)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(ffmpeg_one, files, [out] * len(files)))


def measure(command: list[str]) -> dict[str, float]:
    """Wall time, CPU time (user + sys of the whole process tree) and peak RSS (sum over the
    tree, sampled every 20 ms) of a command. CPU time is far less sensitive than wall time to
    other load on a shared machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = psutil.Popen(command, cwd=REPO, stdout=subprocess.PIPE)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                tree = [process, *process.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = process.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"{command} failed with exit code {process.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak / 2**20, "stdout": stdout.decode()}


def kept_count_agreement(stage_out: Path, ffmpeg_out: Path) -> dict[str, object]:
    """Per file: stage kept count vs real ffmpeg output vs the documented ffmpeg formula."""
    import pandas as pd

    from pipeline.data.manifest import load_manifest
    from pipeline.data.sampling import ffmpeg_fps_frame_count

    videos = load_manifest(stage_out).videos
    rows = []
    for video in videos.itertuples():
        path = POCUS / "videos" / video.source_path
        real = len(list((ffmpeg_out / path.name).glob("*.jpg")))
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            times, duration = [], None
            for frame in container.decode(stream):
                times.append(frame.pts * frame.time_base)
                duration = frame.duration * frame.time_base if frame.duration else duration
        rows.append({"stage": video.kept_frames, "ffmpeg": real,
                     "formula": ffmpeg_fps_frame_count(times, duration)})
    table = pd.DataFrame(rows)
    return {
        "files": len(table),
        "stage_total": int(table["stage"].sum()),
        "ffmpeg_total": int(table["ffmpeg"].sum()),
        "stage_minus_ffmpeg": table.eval("stage - ffmpeg").value_counts().sort_index().to_dict(),
        "formula_equals_ffmpeg": int((table["formula"] == table["ffmpeg"]).sum()),
    }


def memory_vs_clip_length(seconds: tuple[float, ...] = (5, 40, 160)) -> dict[str, float]:
    """Peak RSS of the decode stage (1 worker) on one synthetic clip of each length."""
    from dataclasses import replace

    from pipeline.data.synthetic import clip_specs, write_clip

    peaks = {}
    with tempfile.TemporaryDirectory(prefix="decode-memory-") as scratch:
        spec = replace(clip_specs(1, seed=0)[0], fps=30, size=(208, 208))
        for length in seconds:
            folder = Path(scratch) / f"clip{length:g}"
            write_clip(replace(spec, seconds=length), folder / "videos" / "clip.mp4")
            command = [sys.executable, str(Path(__file__).resolve()), "--variant", "stage-one",
                       "--out", str(folder / "out"), "--workers", "1"]
            peaks[f"{length:g}s ({int(length * 30)} frames)"] = measure(command)["peak_rss_mb"]
    return peaks


def run_stage_on(folder: str) -> None:
    from pipeline.config import DecodeConfig
    from pipeline.data.ingest import ingest

    root = Path(folder).parent
    ingest(root / "videos", None, Path(folder), DecodeConfig(workers=1), progress=False)


def noop_repro_seconds(repeats: int = 5) -> float:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc", "repro"]
    subprocess.run(dvc, cwd=REPO, env=env, check=True, capture_output=True)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(dvc, cwd=REPO, env=env, check=True, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        assert "Running stage" not in done.stdout, "dvc repro was not a no-op"
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant == "floor":
        return run_floor(args.workers)
    if args.variant == "stage":
        return run_stage(args.out, args.workers)
    if args.variant == "ffmpeg":
        return run_ffmpeg(args.out, args.workers)
    if args.variant == "stage-one":
        return run_stage_on(args.out)
    if not (POCUS / "videos").is_dir():
        raise SystemExit(f"POCUS videos not found at {POCUS}")
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg CLI not found: apt-get install -y ffmpeg")

    me = [sys.executable, str(Path(__file__).resolve())]
    variants = {
        "stage": lambda out: me + ["--variant", "stage", "--out", out, "--workers",
                                   str(args.workers)],
        "floor": lambda out: me + ["--variant", "floor", "--workers", str(args.workers)],
        "ffmpeg": lambda out: me + ["--variant", "ffmpeg", "--out", out, "--workers", "1"],
        "ffmpeg_p2": lambda out: me + ["--variant", "ffmpeg", "--out", out, "--workers",
                                       str(args.workers)],
    }
    results: dict[str, list[dict]] = {name: [] for name in variants}
    scratch = Path(tempfile.mkdtemp(prefix="decode-bench-"))
    for round_index in range(args.rounds):
        for name, command in variants.items():
            out = scratch / f"{name}-{round_index}"
            results[name].append(measure(command(str(out))))
            print(f"round {round_index} {name}: {results[name][-1]['wall_s']:.2f} s", flush=True)
    decoded = json.loads(results["floor"][0]["stdout"])["decoded"]
    agreement = kept_count_agreement(scratch / "stage-0", scratch / "ffmpeg-0")
    summary = {name: {"wall_s_median": statistics.median(r["wall_s"] for r in runs),
                      "wall_s_all": [round(r["wall_s"], 2) for r in runs],
                      "cpu_s_median": statistics.median(r["cpu_s"] for r in runs),
                      "peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs)}
               for name, runs in results.items()}

    def paired(name: str, baseline: str, key: str = "wall_s") -> dict[str, float]:
        """Ratios within each round (same machine state), then their median and range."""
        ratios = [a[key] / b[key] for a, b in zip(results[name], results[baseline], strict=True)]
        return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}

    stage = summary["stage"]["wall_s_median"]
    report = {
        "machine": (f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, "
                    f"PyAV {av.__version__}"),
        "files": agreement["files"], "decoded_frames": decoded, "rounds": args.rounds,
        "variants": summary,
        "stage_decoded_fps": decoded / stage,
        "stage_kept_fps": agreement["stage_total"] / stage,
        "wall_ratio_stage_to_ffmpeg_loop": paired("stage", "ffmpeg"),
        "wall_ratio_stage_to_ffmpeg_p2": paired("stage", "ffmpeg_p2"),
        "wall_ratio_stage_to_floor": paired("stage", "floor"),
        "cpu_ratio_stage_to_floor": paired("stage", "floor", "cpu_s"),
        "kept_counts": agreement,
        "noop_dvc_repro_s": noop_repro_seconds(),
        "peak_rss_mb_by_clip_length": memory_vs_clip_length(),
    }
    shutil.rmtree(scratch)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
