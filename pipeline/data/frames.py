"""Frame access: where a video's kept frames lie in its shard, read one by byte offset,
decode it at the size a view needs, and mix two frames (USCL's PPI).

Pretraining, fine-tuning, the figures and the pair-weight plots all read frames this way.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from pipeline.data.manifest import Manifest
from pipeline.storage import read_range

if TYPE_CHECKING:
    from pipeline.storage import Location


@dataclass(frozen=True)
class FrameLocation:
    shard: Location  # a tar on disk or on object storage
    offset: int
    size: int
    cached: Path | None = None  # the remote tar's local copy (Manifest.cached_shard)

    def frame(self, size: int) -> Image.Image:
        """The frame, read by offset and decoded for a view of ``size`` px, in its stored
        mode (grey ``L`` or RGB, :func:`load_frame`)."""
        return load_frame(read_range(self.shard, self.offset, self.size, self.cached), size)

    def image(self, size: int) -> Image.Image:
        """:meth:`frame` as RGB."""
        return self.frame(size).convert("RGB")


def frame_locations(manifest: Manifest, video_ids: list[str]) -> list[list[FrameLocation]]:
    """Per video (in ``video_ids`` order), where its kept frames are, in time order."""
    frames = manifest.frames[manifest.frames["video_id"].isin(video_ids)]
    grouped = {video: rows.sort_values("kept_index")
               for video, rows in frames.groupby("video_id", sort=False)}
    missing = [video for video in video_ids if video not in grouped]
    if missing:
        raise ValueError(f"no frames in {manifest.root} for video(s) {', '.join(missing[:5])}")
    return [[FrameLocation(manifest.shard_path(row.shard), int(row.offset), int(row.size),
                           manifest.cached_shard(row.shard))
             for row in grouped[video].itertuples()] for video in video_ids]


def load_frame(data: bytes, size: int) -> Image.Image:
    """Decode a stored frame for a view of ``size`` px, in its own mode: ``L`` for the grey
    frames the decode stage stores with one channel (:func:`pipeline.data.shards.encode_jpeg`),
    RGB otherwise. With PIL's draft mode the decoder itself scales by 1/2, 1/4 or 1/8 while
    the image stays at least ``size`` on each side."""
    image = Image.open(io.BytesIO(data))
    grey = image.mode == "L"
    image.draft("L" if grey else "RGB", (size, size))
    return image.convert("L" if grey else "RGB")


def mix_images(anchor: Image.Image, other: Image.Image, weight: float) -> Image.Image:
    """``weight * anchor + (1 - weight) * other`` on raw frames (USCL Eq. 2), as uint8."""
    if weight == 0:
        return other
    if other.mode != anchor.mode:  # a grey frame and a colour one
        anchor, other = anchor.convert("RGB"), other.convert("RGB")
    if other.size != anchor.size:  # a clip that changes resolution mid-way
        other = other.resize(anchor.size, Image.BILINEAR)
    return Image.blend(other, anchor, weight)
