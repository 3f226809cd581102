"""Per-video WebDataset shards: one tar per video, one sample per kept frame.

Sample key: ``<video_id>/<kept:06d>`` (no dots, so WebDataset's key split is safe); members
``<key>.jpg`` (the frame) and ``<key>.json`` (video id, frame index, timestamp, pts). Tars are
written under a temporary name and renamed, with fixed member mtimes, so a shard is either
complete or absent and the same input gives the same bytes. They are written with the standard
library's ``tarfile`` in the layout ``webdataset.TarWriter`` produces (plain USTAR members,
extensions of a sample in sorted order; owner, mode and mtime fixed), without importing
webdataset, which imports torch (1.4 s per decode worker). The byte offset and size of every
member are recorded so a loader can read one frame with one ``seek`` + ``read``.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import ImageChops

from pipeline.atomic import atomic_path

if TYPE_CHECKING:  # a type only: readers of shards need not import PyAV
    from pipeline.data.video import SampledFrame


@dataclass(frozen=True)
class FrameRecord:
    """Where one kept frame lives; one row of ``frames.parquet``."""

    video_id: str
    kept_index: int
    frame_index: int
    timestamp_s: float
    pts: int | None
    member: str
    offset: int
    size: int
    width: int
    height: int
    sha256: str


def frame_key(video_id: str, kept_index: int) -> str:
    return f"{video_id}/{kept_index:06d}"


def encode_jpeg(frame: SampledFrame, quality: int) -> bytes:
    """The frame as a JPEG; an exactly grey frame (most B-mode ultrasound) as a one-channel
    JPEG: the same pixels (its luma plane is what an RGB JPEG would store), no chroma to store
    or decode, and a loader that knows the frame is grey (:func:`pipeline.data.views.crop_view`)."""
    image = frame.image
    red, green, blue = image.split()
    if not (ImageChops.difference(red, green).getbbox()
            or ImageChops.difference(green, blue).getbbox()):
        image = red
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def scan_mask_member(video_id: str) -> str:
    """The tar member of a clip's scan-area mask (its own sample, ``<video_id>/scan_area``)."""
    return f"{video_id}/scan_area.png"


def write_video_shard(path: Path, video_id: str, frames: Iterable[SampledFrame],
                      jpeg_quality: int = 95, scan_mask: bytes | None = None
                      ) -> list[FrameRecord]:
    """Stream ``frames`` into the tar at ``path`` (atomically) and return one record per frame;
    ``scan_mask`` (a PNG) goes first, as :func:`scan_mask_member`.

    Nothing is written at ``path`` if iterating ``frames`` raises.
    """
    written = []  # (frame without its image, digest): images are released as they go
    with (atomic_path(path) as temporary,
          tarfile.open(temporary, "w", format=tarfile.USTAR_FORMAT) as tar):
        if scan_mask is not None:
            _add_member(tar, scan_mask_member(video_id), scan_mask)
        for kept_index, frame in enumerate(frames):
            jpeg = encode_jpeg(frame, jpeg_quality)
            key = frame_key(video_id, kept_index)
            metadata = {"video_id": video_id, "kept_index": kept_index,
                        "frame_index": frame.frame_index,
                        "timestamp_s": float(frame.timestamp), "pts": frame.pts}
            _add_member(tar, f"{key}.jpg", jpeg)
            _add_member(tar, f"{key}.json", json.dumps(metadata, sort_keys=True).encode())
            written.append((metadata, frame.image.size, hashlib.sha256(jpeg).hexdigest()))
    members = member_offsets(path)
    records = []
    for metadata, (width, height), digest in written:
        member = frame_key(video_id, metadata["kept_index"]) + ".jpg"
        offset, size = members[member]
        records.append(FrameRecord(
            video_id=video_id, kept_index=metadata["kept_index"],
            frame_index=metadata["frame_index"], timestamp_s=metadata["timestamp_s"],
            pts=metadata["pts"], member=member, offset=offset, size=size, width=width,
            height=height, sha256=digest))
    return records


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    info.uname = info.gname = "uspipe"
    tar.addfile(info, io.BytesIO(data))


def member_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """``{member name: (data offset, size)}`` read from the tar headers (data is not read)."""
    with tarfile.open(path, "r:") as archive:
        return {info.name: (info.offset_data, info.size) for info in archive.getmembers()}
