"""The decode stage: a folder of videos -> per-video shards + ``videos.parquet``/``frames.parquet``.

Each video is an independent task (:func:`decode_video`: one source file + params -> one shard +
its manifest rows, saved as a per-video receipt next to the shard), so the work maps onto a
process pool here and onto a cluster later. Receipts make the stage incremental and resumable:
a video is decoded again only if its content hash or the decode params changed, a killed run
keeps every video it finished, and shards of removed videos are deleted. A bad video gets a
status and an error message; it never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipeline.atomic import remove_stale_temporaries, write_json
from pipeline.config import DecodeConfig
from pipeline.manifest import (FRAME_SCHEMA, FRAMES_FILE, SHARDS_DIR, VIDEO_SCHEMA, VIDEOS_FILE,
                               write_table)
from pipeline.shards import write_video_shard
from pipeline.sources import LABEL_COLUMNS, SourceVideo, discover, file_sha256, video_id
from pipeline.video import DecodeError, VideoDecoder

FORMAT_VERSION = 1  # bump when shard or receipt contents change for the same params
RECEIPT_SUFFIX = ".receipt.json"
TRUNCATED_FRACTION = 0.9  # decoded span below this share of the declared duration = truncated


@dataclass(frozen=True)
class DecodeTask:
    """Everything :func:`decode_video` needs; picklable."""

    source: Path
    relative_path: str
    video_id: str
    content_sha256: str
    shard_dir: Path
    config: DecodeConfig

    @property
    def cache_key(self) -> str:
        return cache_key(self.content_sha256, self.config)


@dataclass
class VideoResult:
    """The manifest rows of one video (labels are joined when the manifest is written)."""

    video: dict[str, object]
    frames: list[dict[str, object]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.video["status"] == "ok"


def cache_key(content_sha256: str, config: DecodeConfig) -> str:
    payload = json.dumps({"sha256": content_sha256, "decode": config.cache_fields(),
                          "format": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _video_row(task: DecodeTask, **values: object) -> dict[str, object]:
    row: dict[str, object] = {name: None for name in VIDEO_SCHEMA.names if name not in LABEL_COLUMNS}
    row.update(video_id=task.video_id, source_path=task.relative_path,
               content_sha256=task.content_sha256, size_bytes=task.source.stat().st_size,
               decoded_frames=0, kept_frames=0, error=None)
    row.update(values)
    return row


def decode_video(task: DecodeTask) -> VideoResult:
    """Decode one video into ``<shard_dir>/<video_id>.tar`` and return its manifest rows.

    Never raises for a bad video: the status/error columns say what went wrong, and no shard is
    left for it. The receipt (rows + cache key) is written last, atomically.
    """
    shard = task.shard_dir / f"{task.video_id}.tar"
    config = task.config
    probe: dict[str, object] = {}
    try:
        with VideoDecoder(task.source) as decoder:
            info = decoder.info
            probe = dict(container=info.container, codec=info.codec, width=info.width,
                         height=info.height, fps=info.nominal_fps,
                         duration_s=info.stream_duration_s or info.container_duration_s)
            records = write_video_shard(
                shard, task.video_id,
                decoder.sample(config.rate, config.max_frames, config.short_side),
                config.jpeg_quality)
            probe.update(decoded_frames=decoder.decoded_frames, kept_frames=len(records))
            if not config.max_frames or len(records) < config.max_frames:  # decoded to the end
                probe["duration_s"] = _decoded_duration(decoder)
                _check_not_truncated(probe["duration_s"], info.stream_duration_s)
        if len(records) < config.min_frames:
            raise DecodeError("too_short", f"kept {len(records)} frame(s) at {config.rate:g} fps, "
                                           f"fewer than decode.min_frames={config.min_frames}")
        shard_name = f"{SHARDS_DIR}/{shard.name}"
        result = VideoResult(
            _video_row(task, **probe, status="ok", shard=shard_name),
            [dict(asdict(record), shard=shard_name) for record in records])
    except Exception as error:  # noqa: BLE001 - one bad video must never stop the others
        shard.unlink(missing_ok=True)
        status = error.status if isinstance(error, DecodeError) else "error"
        message = str(error) if isinstance(error, DecodeError) else f"{type(error).__name__}: {error}"
        probe.pop("decoded_frames", None)
        probe.pop("kept_frames", None)
        result = VideoResult(_video_row(task, **probe, status=status, error=message))
    write_json(task.shard_dir / f"{task.video_id}{RECEIPT_SUFFIX}",
               {"cache_key": task.cache_key, "video": result.video, "frames": result.frames})
    return result


def _decoded_duration(decoder: VideoDecoder) -> float | None:
    """Time of the last decoded frame plus one nominal frame interval."""
    if decoder.last_timestamp is None:
        return None
    fps = decoder.info.nominal_fps
    return float(decoder.last_timestamp + (Fraction(1) / Fraction(fps) if fps else 0))


def _check_not_truncated(decoded_s: float | None, declared_s: float | None) -> None:
    """A stream that ends well before the duration its header declares was cut short."""
    if decoded_s is not None and declared_s and decoded_s < TRUNCATED_FRACTION * declared_s:
        raise DecodeError("truncated", f"decoded {decoded_s:.2f} s of the {declared_s:.2f} s "
                                       "the stream header declares: file cut short?")


def _cached_result(task: DecodeTask) -> VideoResult | None:
    """The receipt's rows if it matches the task's cache key and its shard is intact."""
    receipt = task.shard_dir / f"{task.video_id}{RECEIPT_SUFFIX}"
    if not receipt.is_file():
        return None
    try:
        saved = json.loads(receipt.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if saved.get("cache_key") != task.cache_key:
        return None
    result = VideoResult(saved["video"], saved["frames"])
    if result.ok and not (task.shard_dir.parent / str(result.video["shard"])).is_file():
        return None
    return result


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
    removed = remove_stale_temporaries(shard_dir)
    for path in shard_dir.iterdir():
        stem = path.name.removesuffix(RECEIPT_SUFFIX).removesuffix(".tar")
        if stem not in keep_ids and (path.suffix == ".tar" or path.name.endswith(RECEIPT_SUFFIX)):
            path.unlink()
            removed += 1
    return removed


def _run_tasks(tasks: list[DecodeTask], workers: int, progress: bool) -> list[VideoResult]:
    bar = tqdm(total=len(tasks), desc="decode", unit="video", disable=not progress)
    results = []
    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            results.append(decode_video(task))
            bar.update()
    else:
        # spawn: the parent may hold threads (tqdm, torch); fork would copy their locks.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(decode_video, task): task for task in tasks}
            for future in as_completed(futures):
                task = futures[future]
                try:
                    results.append(future.result())
                except Exception as error:  # noqa: BLE001 - a crashed worker (e.g. a segfault)
                    results.append(VideoResult(_video_row(
                        task, status="crashed", error=f"worker crashed: {error!r}")))
                bar.update()
    bar.close()
    return results


def ingest(videos_dir: Path, labels_csv: Path | None, out_dir: Path, config: DecodeConfig,
           progress: bool = True) -> IngestSummary:
    """Decode every video under ``videos_dir`` into ``out_dir`` (shards + Parquet manifests).

    Rows of labels.csv that name no file get status ``missing``.
    """
    sources, missing = discover(Path(videos_dir), labels_csv)
    shard_dir = Path(out_dir) / SHARDS_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    removed = _remove_stale(shard_dir, {source.video_id for source in sources})
    tasks = [_task(source, shard_dir, config) for source in sources]
    cached = {task.video_id: _cached_result(task) for task in tasks}
    todo = [task for task in tasks if cached[task.video_id] is None]
    fresh = {result.video["video_id"]: result
             for result in _run_tasks(todo, config.workers, progress)}
    results = [cached[task.video_id] or fresh[task.video_id] for task in tasks]
    results += [VideoResult({"video_id": video_id(path), "source_path": path, "status": "missing",
                             "error": "listed in labels.csv but no such file"})
                for path in missing]
    labels = {source.video_id: source.labels for source in sources}
    labels.update({video_id(path): labels_of_missing for path, labels_of_missing in missing.items()})
    rows = [{**result.video, **_clean_labels(labels[result.video["video_id"]])}
            for result in results]
    write_table(rows, VIDEO_SCHEMA, Path(out_dir) / VIDEOS_FILE)
    write_table([frame for result in results for frame in result.frames], FRAME_SCHEMA,
                Path(out_dir) / FRAMES_FILE)
    return IngestSummary(results, decoded=len(todo), reused=len(tasks) - len(todo),
                         removed=removed)


def _clean_labels(labels: dict[str, object]) -> dict[str, object]:
    """labels.csv values as manifest columns: empty cells become nulls."""
    return {name: (None if value in ("", None) else str(value)) for name, value in labels.items()}


def _task(source: SourceVideo, shard_dir: Path, config: DecodeConfig) -> DecodeTask:
    return DecodeTask(source=source.path, relative_path=source.relative_path,
                      video_id=source.video_id, content_sha256=file_sha256(source.path),
                      shard_dir=shard_dir, config=config)
