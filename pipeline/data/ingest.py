"""The decode stage: a folder of videos -> per-video shards + ``videos.parquet``/``frames.parquet``.

Each video is an independent task (:func:`pipeline.data.decode.decode_video`: one source file +
params -> one shard + its manifest rows, saved as a receipt next to the shard), so the work
maps onto a process pool here and onto a cluster later. Receipts make the stage incremental and
resumable: a video is decoded again only if its content hash or the decode params changed, a
killed run keeps every video it finished, and shards of removed videos are deleted. A bad video
gets a status and an error message; it never stops the others.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from tqdm import tqdm

from pipeline.atomic import remove_stale_temporaries
from pipeline.config import DecodeConfig
from pipeline.data.decode import (
    RECEIPT_SUFFIX,
    SHARDS_DIR,
    DecodeTask,
    VideoResult,
    decode_video,
    load_receipt,
    video_row,
)
from pipeline.data.dicom import with_patient_groups
from pipeline.data.manifest import RESERVED_COLUMNS, write_manifests
from pipeline.data.sources import HASH_CACHE, SourceFile, discover

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pipeline.storage import Location


@dataclass
class IngestSummary:
    """What one run of the decode stage did."""

    results: list[VideoResult]
    decoded: int
    reused: int
    removed: int

    @property
    def counts(self) -> Counter:
        return Counter(str(result.video["status"]) for result in self.results)

    @property
    def failures(self) -> list[VideoResult]:
        return [result for result in self.results if not result.ok]

    def as_frame(self) -> pd.DataFrame:
        return pd.DataFrame([result.video for result in self.results])


def _remove_stale(shard_dir: Path, keep_ids: set[str]) -> int:
    """Delete temporaries of killed runs and the shards/receipts of videos no longer present."""
    removed = remove_stale_temporaries(shard_dir)
    for path in shard_dir.iterdir():
        stem = path.name.removesuffix(RECEIPT_SUFFIX).removesuffix(".tar")
        if stem not in keep_ids and (path.suffix == ".tar" or path.name.endswith(RECEIPT_SUFFIX)):
            path.unlink()
            removed += 1
    return removed


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Pool initializer: the worker dies with the stage's process, even when that is killed by
    SIGKILL (it would otherwise finish its video, then block forever on a queue nobody reads).
    Linux: the kernel's parent-death signal; elsewhere a thread that watches the parent."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork"),
                               initializer=die_with_parent, initargs=(os.getpid(),))


def _run_ray(tasks: list[DecodeTask], config: DecodeConfig, progress: bool
             ) -> Iterator[VideoResult]:
    """The same unit of work as Ray tasks, on the cluster at ``decode.ray_address`` (or a local
    Ray started for this run with ``decode.workers`` CPUs); results as they finish. Shards
    are written by the tasks into the output folder, so it must be on a filesystem every
    node sees. A task whose worker dies fails only its video (status ``crashed``)."""
    import ray  # noqa: PLC0415 - optional engine, a heavy import

    started_here = not ray.is_initialized()
    if started_here and config.ray_address:
        ray.init(address=config.ray_address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    elif started_here:
        start_local_ray(config.workers)
    pending: dict = {}
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(decode_video)
        # A window of twice the cluster's CPUs in flight: the tasks then start in the order
        # given (largest first, so no worker idles at the end; Ray does not keep the order of
        # a whole queue) and each wait scans a short list.
        window = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue = iter(tasks)
        with tqdm(total=len(tasks), desc="decode (ray)", unit="video",
                  disable=not progress) as bar:
            for _ in tasks:  # each round collects one finished task
                pending.update({remote.remote(task): task
                                for task in islice(queue, window - len(pending))})
                done, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(done[0])
                try:
                    result = ray.get(done[0])
                except ray.exceptions.RayError as error:
                    result = VideoResult(video_row(task, status="crashed", error=(
                        f"{task.relative_path}: the Ray task died on this video: "
                        f"{type(error).__name__}")))
                bar.update()
                yield result
    finally:
        for reference in pending:  # stopped early: no task keeps running on the cluster
            ray.cancel(reference, force=True)
        if started_here:
            ray.shutdown()


def start_local_ray(cpus: int) -> None:
    """A Ray on this machine with ``cpus`` CPUs. Its workers run at this process's priority, as
    the local pool's do: Ray's default (15 added to the niceness they inherit) puts them below
    every other process here, so anything else running (a training job) would take the cores
    from the decode."""
    import ray  # noqa: PLC0415 - optional engine, a heavy import

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _system_config={"worker_niceness": 0})


def _run_tasks(tasks: list[DecodeTask], workers: int, progress: bool
               ) -> Iterator[VideoResult]:
    """Run the tasks in a pool of ``workers`` processes (in-process for one worker); results
    as they finish.

    Workers are forked: they start instantly with everything already imported (spawn or a
    forkserver would re-import the calling script in every worker: +0.7 s here), and callers
    need no ``__main__`` guard. They are forked on the first submit, before the progress bar
    starts its monitor thread, so no lock is inherited mid-use. If a worker dies (a crash
    inside FFmpeg on a corrupt file), the pool is lost: the unfinished tasks are then rerun one
    process each, so only the video that crashes fails.
    """
    if workers == 1 or len(tasks) <= 1:
        with tqdm(total=len(tasks), desc="decode", unit="video", disable=not progress) as bar:
            for task in tasks:
                yield decode_video(task)
                bar.update()
        return
    unfinished = []
    with _pool(workers) as pool:
        futures = {pool.submit(decode_video, task): task for task in tasks}
        try:
            with tqdm(total=len(tasks), desc="decode", unit="video",
                      disable=not progress) as bar:
                for future in as_completed(futures):
                    task = futures.pop(future)  # the result is not held here once yielded
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        unfinished.append(task)
                        continue
                    bar.update()
                    yield result
        except BaseException:  # stopped early: only the videos already started finish
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    # Forked only now that the pool's and the bar's threads are gone.
    for task in unfinished:
        yield _run_isolated(task)


def _run_isolated(task: DecodeTask) -> VideoResult:
    """One task in a process of its own: a crash there fails this video only."""
    with _pool(1) as pool:
        try:
            return pool.submit(decode_video, task).result()
        except BrokenProcessPool:
            return VideoResult(video_row(task, status="crashed", error=(
                "the decoding process died on this video (a crash inside FFmpeg?)")))


def inventory(videos_dir: Location, labels_csv: Location | None, out_dir: Path,
              frame_folders: bool = False, group_salt: str = "uspipe",
              class_folders: bool = False) -> list[SourceFile]:
    """The dataset's entries (:func:`~pipeline.data.sources.discover`, hashes cached in
    ``out_dir``), DICOM files without a labelled group grouped by salted patient hash;
    with ``class_folders``, an entry labels.csv gives no label is labelled by its first
    folder (``benign/img_1.png`` -> ``benign``)."""
    sources = discover(videos_dir, labels_csv, reserved=RESERVED_COLUMNS,
                       hash_cache=Path(out_dir) / HASH_CACHE, frame_folders=frame_folders)
    if class_folders:
        sources = [replace(source, labels={**source.labels, "label": folder})
                   if source.ok and not source.labels.get("label")
                   and (folder := source.relative_path.partition("/")[0]) != source.relative_path
                   else source for source in sources]
    return with_patient_groups(sources, group_salt)


def ingest(videos_dir: Location, labels_csv: Location | None, out_dir: Path,
           config: DecodeConfig, progress: bool = True, frame_folders: bool = False
           ) -> IngestSummary:
    """List, hash and decode every video under ``videos_dir`` into ``out_dir`` (shards +
    Parquet manifests): :func:`inventory`, then :func:`decode_sources`."""
    sources = inventory(videos_dir, labels_csv, out_dir, frame_folders)
    return decode_sources(sources, out_dir, config, progress)


def decode_sources(sources: list[SourceFile], out_dir: Path, config: DecodeConfig,
                   progress: bool = True) -> IngestSummary:
    """Decode the ``ok`` entries of ``sources`` into ``out_dir``; every other entry (and every
    video that fails) becomes a manifest row with its status and error."""
    shard_dir = Path(out_dir) / SHARDS_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(Path(out_dir))
    sources = [_check_fps(source) for source in sources]
    removed = _remove_stale(shard_dir, {source.video_id for source in sources if source.ok})
    tasks = {source.video_id: _task(source, shard_dir, config)
             for source in sources if source.ok}
    cached = {identifier: receipt and receipt.without_frames()
              for identifier, task in tasks.items() for receipt in [load_receipt(task)]}
    # Largest files first: the pool's last tasks are short, so no worker idles at the end.
    todo = sorted((task for identifier, task in tasks.items() if cached[identifier] is None),
                  key=lambda task: task.size_bytes, reverse=True)
    run = (_run_ray(todo, config, progress) if config.engine == "ray" and todo
           else _run_tasks(todo, config.workers, progress))
    fresh = {result.video["video_id"]: result.without_frames() for result in run}
    # Every task of this run is done, so a temporary left now is a dead writer's: a worker of
    # an earlier, killed run that was still decoding when this one started.
    removed += remove_stale_temporaries(shard_dir)
    results = [(cached.get(source.video_id) or fresh[source.video_id]) if source.ok
               else VideoResult(_skipped_row(source)) for source in sources]
    rows = [{**result.video, **_clean_labels(source.labels)}
            for source, result in zip(sources, results, strict=True)]
    write_manifests(Path(out_dir), rows, _frame_rows(results, tasks))
    return IngestSummary(results, decoded=len(todo), reused=len(tasks) - len(todo),
                         removed=removed)


def _frame_rows(results: list[VideoResult], tasks: dict[str, DecodeTask]
                ) -> Iterator[dict[str, object]]:
    """The ``ok`` videos' frame rows in manifest order, read back from their receipts: the
    stage never holds every frame row at once (``manifest.write_frame_table``)."""
    for result in results:
        if result.ok:
            task = tasks[str(result.video["video_id"])]
            receipt = load_receipt(task)
            if receipt is None:
                raise RuntimeError(f"{task.shard_dir / task.video_id}{RECEIPT_SUFFIX}: the "
                                   "receipt vanished or changed while the manifests were "
                                   "written; run the stage again")
            yield from receipt.frames


def _skipped_row(source: SourceFile) -> dict[str, object]:
    return {"video_id": source.video_id, "source_path": source.relative_path,
            "content_sha256": source.content_sha256, "size_bytes": source.size_bytes,
            "status": source.status, "error": source.error}


def _clean_labels(labels: dict[str, object]) -> dict[str, object]:
    """labels.csv values as manifest columns: empty cells become nulls; ``fps`` is an input
    (:func:`_labelled_fps`), not a column."""
    return {name: (None if value in ("", None) else str(value)) for name, value in labels.items()
            if name != "fps"}


def _labelled_fps(source: SourceFile) -> float | None:
    value = source.labels.get("fps")
    return None if value in (None, "") else float(str(value))


def _check_fps(source: SourceFile) -> SourceFile:
    """A labels.csv ``fps`` that is not a positive number is the entry's error."""
    try:
        fps = _labelled_fps(source)
    except ValueError:
        fps = -1.0
    if fps is not None and not fps > 0 and source.ok:
        return replace(source, status="bad_label", error=(
            f"{source.relative_path}: fps {source.labels['fps']!r} in labels.csv is not a "
            "positive number"))
    return source


def _task(source: SourceFile, shard_dir: Path, config: DecodeConfig) -> DecodeTask:
    return DecodeTask(source=source.path, relative_path=source.relative_path,
                      video_id=source.video_id, content_sha256=source.content_sha256,
                      size_bytes=source.size_bytes, shard_dir=shard_dir, config=config,
                      fps=_labelled_fps(source))
