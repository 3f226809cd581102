"""One video -> one shard + its manifest rows: the decode stage's unit of work.

:func:`decode_video` is a pure function of one source file and the decode params (plus the
output folder), so it runs in a process pool here and could run on a cluster node elsewhere.
Its result is also saved as a receipt next to the shard: the cache that makes the stage
incremental and resumable. To keep a worker's start-up cheap (a Ray worker imports this
module before its first video), it imports neither pandas nor pyarrow, and pydicom and scipy
only when a DICOM or a scan area needs them.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import PIL

from pipeline.atomic import write_json
from pipeline.config import DecodeConfig
from pipeline.data.images import FrameFolderReader, StillImageReader, is_image
from pipeline.data.shards import write_video_shard
from pipeline.data.video import DecodeError, VideoDecoder, is_dicom
from pipeline.storage import is_remote, staged

if TYPE_CHECKING:
    from pipeline.data.dicom import DicomDecoder
    from pipeline.data.scan_area import ScanArea
    from pipeline.storage import Location

    Reader = VideoDecoder | DicomDecoder | StillImageReader | FrameFolderReader  # one interface

# The code that shapes a shard. pydicom (in dicom) and scipy (in scan_area) are imported only
# where a DICOM or a scan area needs them: a worker starts 0.5 s sooner without them.
DECODER_MODULES = ("pipeline.data.dicom", "pipeline.data.images", "pipeline.data.sampling",
                   "pipeline.data.scan_area", "pipeline.data.shards", __name__,
                   "pipeline.data.video")
SHARDS_DIR = "shards"
RECEIPT_SUFFIX = ".receipt.json"
TRUNCATED_FRACTION = 0.9  # decoded span below this share of the declared duration = truncated


@dataclass(frozen=True)
class DecodeTask:
    """Everything :func:`decode_video` needs; picklable."""

    source: Location  # a file or frame folder, on disk or on object storage
    relative_path: str
    video_id: str
    content_sha256: str
    size_bytes: int
    shard_dir: Path
    config: DecodeConfig
    fps: float | None = None  # a frame folder's rate from labels.csv (else decode.folder_fps)

    @property
    def cache_key(self) -> str:
        return cache_key(self.content_sha256, self.config, self.fps)


@dataclass
class VideoResult:
    """The manifest rows of one video (labels are joined when the manifest is written)."""

    video: dict[str, object]
    frames: list[dict[str, object]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.video["status"] == "ok"

    def without_frames(self) -> VideoResult:
        """The video row alone; the frame rows stay in the receipt."""
        return VideoResult(self.video)


def behaviour_digest(source: str) -> str:
    """Digest of a module's code as Python sees it: its syntax tree without docstrings and
    import statements, so a comment, a docstring or a module moving to another package does
    not invalidate a cache, while any change to what the code does (including which names it
    imports) does."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            node.body = [statement for statement in body
                         if not isinstance(statement, (ast.Import, ast.ImportFrom))
                         and not (isinstance(statement, ast.Expr)
                                  and isinstance(statement.value, ast.Constant)
                                  and isinstance(statement.value.value, str))]
    imported = sorted(alias.asname or alias.name for node in ast.walk(ast.parse(source))
                      if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names)
    return hashlib.sha256((ast.dump(tree) + repr(imported)).encode()).hexdigest()


def _decoder_fingerprint() -> str:
    """Digest of the code and libraries that shape a shard: the decode path's code
    (:func:`behaviour_digest`) and the PyAV/FFmpeg and Pillow versions. Any change to them
    invalidates every receipt."""
    digest = hashlib.sha256(f"av {av.__version__} pillow {PIL.__version__}".encode())
    for module in DECODER_MODULES:  # read, not imported
        source = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
        digest.update(behaviour_digest(source).encode())
    return digest.hexdigest()


DECODER_FINGERPRINT = _decoder_fingerprint()


def cache_key(content_sha256: str, config: DecodeConfig, fps: float | None = None) -> str:
    """What a receipt must match to be reused: source content, params (and a frame folder's
    labelled rate), decoder code."""
    payload = json.dumps({"sha256": content_sha256, "decode": config.cache_fields(), "fps": fps,
                          "decoder": DECODER_FINGERPRINT}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def video_row(task: DecodeTask, **values: object) -> dict[str, object]:
    """The task's ``videos.parquet`` row (labels excluded), updated with ``values``."""
    row: dict[str, object] = dict(
        video_id=task.video_id, source_path=task.relative_path,
        content_sha256=task.content_sha256, size_bytes=task.size_bytes, error=None)
    row.update(values)
    return row


def decode_video(task: DecodeTask) -> VideoResult:
    """Decode one video into ``<shard_dir>/<video_id>.tar`` and return its manifest rows.

    Never raises for a bad video: the status/error columns say what went wrong, and no shard is
    left for it. The receipt (rows + cache key) is written last, atomically. A source on object
    storage is decoded from a local copy (:func:`decode_staged`).
    """
    if is_remote(task.source):
        return decode_staged(task)
    shard = task.shard_dir / f"{task.video_id}.tar"
    config = task.config
    stream_info: dict[str, object] = {}
    try:
        area = find_scan_area(task) if config.scan_area != "off" else None
        mask = None if area is None else area.png()
        with open_reader(task) as decoder:
            info = decoder.info
            stream_info = dict(
                container=info.container, codec=info.codec, width=info.width,
                height=info.height, fps=info.nominal_fps,
                duration_s=info.stream_duration_s or info.container_duration_s,
                source_tags=getattr(decoder, "tags", None))
            frames = decoder.sample(config.rate, config.max_frames, config.short_side,
                                    config.skip_nonref)
            if area is not None:
                frames = (replace(frame, image=area.apply(frame.image, config.scan_area))
                          for frame in frames)
                stream_info.update(scan_rule=area.rule, scan_box=list(area.box),
                                   scan_fraction=round(area.fraction, 6),
                                   scan_mask_sha256=hashlib.sha256(mask).hexdigest())
            records = write_video_shard(shard, task.video_id, frames, config.jpeg_quality, mask)
            stream_info.update(frames=decoder.frames, decoded_frames=decoder.decoded_frames,
                               kept_frames=len(records), rotation=decoder.rotation)
            if not config.max_frames or len(records) < config.max_frames:  # decoded to the end
                stream_info["duration_s"] = _decoded_duration(decoder)
                _check_not_truncated(stream_info["duration_s"], info.stream_duration_s)
        if len(records) < config.min_frames and not decoder.still:
            raise DecodeError("too_short", f"kept {len(records)} frame(s) at {config.rate:g} fps, "
                                           f"fewer than decode.min_frames={config.min_frames}")
        shard_name = f"{SHARDS_DIR}/{shard.name}"
        result = VideoResult(
            video_row(task, **stream_info, status="ok", shard=shard_name),
            [dict(asdict(record), shard=shard_name) for record in records])
    except Exception as error:  # noqa: BLE001 - one bad video must never stop the others
        shard.unlink(missing_ok=True)
        expected = isinstance(error, DecodeError)
        status = error.status if expected else "error"
        message = f"{task.relative_path}: " + (str(error) if expected
                                                else f"{type(error).__name__}: {error}")
        for count in ("frames", "decoded_frames", "kept_frames"):
            stream_info.pop(count, None)
        result = VideoResult(video_row(task, **stream_info, status=status, error=message))
    if result.video["status"] != "error":  # an unexpected error (e.g. disk full): retry next run
        write_json(task.shard_dir / f"{task.video_id}{RECEIPT_SUFFIX}",
                   {"cache_key": task.cache_key, "video": result.video, "frames": result.frames})
    return result


def decode_staged(task: DecodeTask) -> VideoResult:
    """:func:`decode_video` of a temporary local copy of a remote source, whose content must
    still be what the listing hashed; a failed fetch or a changed object is status ``error``
    (not cached: the next run lists, hashes and fetches it again)."""
    try:
        with staged(task.source) as local:
            if local.is_file():
                with open(local, "rb") as handle:
                    if hashlib.file_digest(handle, "sha256").hexdigest() != task.content_sha256:
                        raise OSError("changed since the inventory listed it")
            return decode_video(replace(task, source=local))
    except OSError as error:
        return VideoResult(video_row(task, status="error", error=(
            f"{task.relative_path}: cannot fetch {task.source}: {error}")))


def find_scan_area(task: DecodeTask) -> ScanArea:
    """A first pass over the frames the task keeps (at their stored size): the clip's scan
    area (:mod:`pipeline.data.scan_area`)."""
    from pipeline.data.scan_area import VariationStats, estimate  # noqa: PLC0415 - scipy

    stats = VariationStats()
    config = task.config
    with open_reader(task) as decoder:
        for frame in decoder.sample(config.rate, config.max_frames, config.short_side,
                                    config.skip_nonref):
            stats.add(frame.image)
    if stats.count == 0:
        raise DecodeError("too_short", "no frame kept to find the scan area in")
    return estimate(stats)


def open_reader(task: DecodeTask) -> Reader:
    """The reader for the task's source, chosen by what it is, not by its extension only: a
    folder of frames, a DICOM file (by its magic), an image, else a video for FFmpeg to
    probe."""
    source, config = task.source, task.config
    if source.is_dir():
        return FrameFolderReader(source, task.fps or config.folder_fps)
    if source.stat().st_size and is_dicom(source):
        from pipeline.data.dicom import DicomDecoder  # noqa: PLC0415 - pydicom

        return DicomDecoder(source, config.assume_fps)
    if is_image(source):
        return StillImageReader(source)
    return VideoDecoder(source)


def _decoded_duration(decoder: Reader) -> float | None:
    """Time of the last decoded frame plus one nominal frame interval."""
    if decoder.last_timestamp is None or decoder.still:
        return None
    fps = decoder.info.nominal_fps
    return float(decoder.last_timestamp + (Fraction(1) / Fraction(fps) if fps else 0))


def _check_not_truncated(decoded_s: float | None, declared_s: float | None) -> None:
    """A stream that ends, without an error, well before its declared duration was cut short."""
    if decoded_s is not None and declared_s and decoded_s < TRUNCATED_FRACTION * declared_s:
        raise DecodeError("truncated", f"decoded {decoded_s:.2f} s of the {declared_s:.2f} s "
                                       "the stream header declares: file cut short?")


def load_receipt(task: DecodeTask) -> VideoResult | None:
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


