"""Parquet manifests of a decoded dataset: ``videos.parquet`` and ``frames.parquet``.

Both are written atomically with the fixed schemas below (documented in the README); paths in
them are relative to the manifest's folder, so a dataset folder can be moved as a whole.
``videos.parquet`` carries any further labels.csv columns after the fixed ones, as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path

VIDEOS_FILE = "videos.parquet"
FRAMES_FILE = "frames.parquet"

VIDEO_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("source_path", pa.string()),        # relative to the dataset's video folder, as given
    ("content_sha256", pa.string()),
    ("size_bytes", pa.int64()),
    ("container", pa.string()),          # probed FFmpeg demuxer name, not the extension
    ("codec", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("fps", pa.float64()),               # nominal (guessed) frame rate of the stream
    ("duration_s", pa.float64()),        # decoded span + one frame; header value if not decoded
    ("frames", pa.int32()),              # frames in the stream (up to max_frames' cut)
    ("decoded_frames", pa.int32()),      # of those, decoded (the rest: skipped non-reference)
    ("kept_frames", pa.int32()),
    ("label", pa.string()),
    ("probe", pa.string()),
    ("group", pa.string()),
    ("uncertain", pa.string()),
    ("status", pa.string()),             # ok | empty | unreadable | no_video_stream | ...
    ("error", pa.string()),
    ("shard", pa.string()),              # relative to the manifest folder; null unless ok
])

FRAME_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("kept_index", pa.int32()),          # 0.. within the video
    ("frame_index", pa.int32()),         # index in the source, presentation order
    ("timestamp_s", pa.float64()),       # relative to the video's first frame
    ("pts", pa.int64()),
    ("shard", pa.string()),
    ("member", pa.string()),             # tar member name of the JPEG
    ("offset", pa.int64()),              # byte offset of the JPEG data inside the tar
    ("size", pa.int64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("sha256", pa.string()),             # of the JPEG bytes
])


def write_table(rows: list[dict], schema: pa.Schema, path: Path) -> None:
    """Write ``rows`` as Parquet with ``schema`` (extra keys become text columns), atomically."""
    extra = sorted({key for row in rows for key in row} - set(schema.names))
    full = pa.schema(list(schema) + [pa.field(name, pa.string()) for name in extra])
    table = pa.Table.from_pylist(rows, schema=full)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


@dataclass(frozen=True)
class Manifest:
    """A decoded dataset on disk: its folder, video table and frame table."""

    root: Path
    videos: pd.DataFrame
    frames: pd.DataFrame

    def shard_path(self, relative: str) -> Path:
        return self.root / relative

    def video(self, video_id: str) -> pd.Series:
        match = self.videos[self.videos["video_id"] == video_id]
        if match.empty:
            raise KeyError(f"unknown video id {video_id!r} in {self.root / VIDEOS_FILE}")
        return match.iloc[0]

    def frames_of(self, video_id: str) -> pd.DataFrame:
        return self.frames[self.frames["video_id"] == video_id].sort_values("kept_index")


def load_manifest(root: Path) -> Manifest:
    """Read a dataset folder's manifests; a clear error if it has not been decoded yet."""
    root = Path(root)
    missing = [name for name in (VIDEOS_FILE, FRAMES_FILE) if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"no manifest in {root} (missing {', '.join(missing)}): run `dvc repro` "
            "(or the decode stage) first, or pass the folder that holds videos.parquet")
    return Manifest(root, pd.read_parquet(root / VIDEOS_FILE), pd.read_parquet(root / FRAMES_FILE))
