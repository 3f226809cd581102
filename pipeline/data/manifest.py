"""Parquet manifests of a decoded dataset: ``videos.parquet`` and ``frames.parquet``, plus the
listing they were decoded from, ``sources.parquet``.

All are written atomically with the fixed schemas below (documented in the README); paths in
them are relative to the manifest's folder, so a dataset folder can be moved as a whole, to
object storage too (:mod:`pipeline.storage`: readers take a folder or a URL).
``videos.parquet`` carries any further labels.csv columns after the fixed ones, as text.
``checksums.json``, written last, records both manifests' SHA-256: :func:`load_manifest`
refuses a manifest that no longer matches it, or that does not parse.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path, write_json
from pipeline.data.sources import LABEL_COLUMNS, SourceFile
from pipeline.storage import dataset_path, filesystem, is_remote

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pipeline.storage import Location

VIDEOS_FILE = "videos.parquet"
FRAMES_FILE = "frames.parquet"
SOURCES_FILE = "sources.parquet"
CHECKSUMS_FILE = "checksums.json"
SPLIT_FILE = "split.csv"  # written by the split stage beside the manifests

VIDEO_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("source_path", pa.string()),        # relative to the dataset's video folder, as given
    ("content_sha256", pa.string()),
    ("size_bytes", pa.int64()),
    ("container", pa.string()),          # probed FFmpeg demuxer name, not the extension
    ("codec", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("rotation", pa.int32()),            # display rotation applied to the frames (degrees ccw)
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
    ("source_tags", pa.string()),        # DICOM: the allow-listed technical tags, as JSON
    ("scan_rule", pa.string()),          # how the scan area was found (decode.scan_area on)
    ("scan_box", pa.list_(pa.int32())),  # x0, y0, x1, y1 of the mask at the stored size
    ("scan_fraction", pa.float64()),     # share of the frame the mask covers
    ("scan_mask_sha256", pa.string()),   # of the mask PNG in the shard
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


# labels.csv may not use these; its ``fps`` (a frame folder's rate) is read, not carried over:
# the manifest's ``fps`` is the rate the reader found
RESERVED_COLUMNS = frozenset(VIDEO_SCHEMA.names) - LABEL_COLUMNS - {"fps"}

SOURCE_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("source_path", pa.string()),        # display form: NFC, non-UTF-8 bytes as \\xNN
    ("fs_path", pa.binary()),            # the name on disk, relative to the video folder
    ("status", pa.string()),             # ok | unreadable | special_file | outside_root | ...
    ("error", pa.string()),
    ("content_sha256", pa.string()),
    ("size_bytes", pa.int64()),
])


class ManifestError(ValueError):
    """A manifest that cannot be trusted: unparsable, or not what was written."""


def write_table(rows: list[dict], schema: pa.Schema, path: Path) -> None:
    """Write ``rows`` as Parquet with ``schema`` (extra keys become text columns), atomically."""
    extra = sorted({key for row in rows for key in row} - set(schema.names))
    full = pa.schema(list(schema) + [pa.field(name, pa.string()) for name in extra])
    table = pa.Table.from_pylist(rows, schema=full)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


# Parquet's default row-group size in rows (pyarrow's write_table): the streamed frame table
# is written a row group at a time, in chunks that divide it
ROW_GROUP_ROWS = 1024 * 1024
CHUNK_ROWS = 64 * 1024


def write_frame_table(rows: Iterable[dict], path: Path, row_group_rows: int = ROW_GROUP_ROWS
                      ) -> None:
    """``frames.parquet`` from rows streamed in order, atomically: rows become Arrow a chunk at
    a time and are written a row group at a time, so memory holds one row group in Arrow
    rather than every row as a dict (10^5 videos x 30 frames: 3.7 GB of dicts). The bytes
    are those of :func:`write_table` on the same rows."""
    chunk_rows = min(CHUNK_ROWS, row_group_rows)
    if row_group_rows % chunk_rows:
        raise ValueError(f"row_group_rows={row_group_rows} must be a multiple of {chunk_rows}")
    rows = iter(rows)
    with atomic_path(path) as temporary, pq.ParquetWriter(temporary, FRAME_SCHEMA) as writer:
        group: list[pa.Table] = []
        group_rows = groups = 0
        while chunk := list(islice(rows, chunk_rows)):
            group.append(pa.Table.from_pylist(chunk, schema=FRAME_SCHEMA))
            group_rows += len(chunk)
            if group_rows == row_group_rows:
                writer.write_table(pa.concat_tables(group).combine_chunks(),
                                   row_group_size=row_group_rows)
                group, group_rows, groups = [], 0, groups + 1
        if group or not groups:  # no rows at all: an empty table, as write_table writes it
            writer.write_table(pa.concat_tables(group).combine_chunks() if group
                               else FRAME_SCHEMA.empty_table(),
                               row_group_size=row_group_rows)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifests(folder: Path, videos: list[dict], frames: Iterable[dict]) -> None:
    """``frames.parquet`` (its rows streamed: :func:`write_frame_table`; first, as the one
    write that can fail part-way, leaving the previous manifests as they were), then
    ``videos.parquet``, then ``checksums.json`` recording both."""
    write_frame_table(frames, folder / FRAMES_FILE)
    write_table(videos, VIDEO_SCHEMA, folder / VIDEOS_FILE)
    write_json(folder / CHECKSUMS_FILE, {name: sha256_of(folder / name)
                                         for name in (VIDEOS_FILE, FRAMES_FILE)})


def write_sources(sources: list[SourceFile], path: Path) -> None:
    """The listing (one row per entry, labels as extra text columns), for the decode stage."""
    write_table([{"video_id": source.video_id, "source_path": source.relative_path,
                  "fs_path": os.fsencode(str(source.path.relative_to(source.root))),
                  "status": source.status, "error": source.error,
                  "content_sha256": source.content_sha256, "size_bytes": source.size_bytes,
                  **source.labels} for source in sources], SOURCE_SCHEMA, path)


def read_sources(path: Path, root: Location) -> list[SourceFile]:
    """The entries :func:`write_sources` wrote, with their files under ``root``."""
    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as error:
        raise ManifestError(f"{path}: not a readable Parquet listing: {error}") from error
    return [SourceFile(root, row.pop("source_path"), root / os.fsdecode(row.pop("fs_path")),
                       row.pop("status"), row.pop("error"),
                       content_sha256=row.pop("content_sha256"), size_bytes=row.pop("size_bytes"),
                       labels={name: value for name, value in row.items() if name != "video_id"})
            for row in rows]


def read_table(path: Location, content: bytes) -> pd.DataFrame:
    """A Parquet file's ``content`` as a DataFrame; content that does not parse is a
    :class:`ManifestError` naming the file."""
    try:
        return pd.read_parquet(pa.BufferReader(content))
    except (OSError, ValueError, pa.ArrowException) as error:
        raise ManifestError(f"{path}: not a readable Parquet manifest (corrupt or cut short?): "
                            f"{error}") from error


def check_checksums(root: Location, contents: dict[str, bytes]) -> list[str]:
    """Problems of the manifests' ``contents`` (file name -> bytes) against ``checksums.json``
    (none if it is absent: datasets decoded before it existed)."""
    sidecar = root / CHECKSUMS_FILE
    if not sidecar.is_file():
        return []
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return [f"{sidecar}: unreadable ({error})"]
    return [f"{root / name}: SHA-256 differs from {CHECKSUMS_FILE} (changed or corrupted "
            "since it was written)" for name, content in contents.items()
            if recorded.get(name) != hashlib.sha256(content).hexdigest()]


@dataclass(frozen=True)
class Manifest:
    """A decoded dataset: its folder (or URL), video table and frame table."""

    root: Location
    videos: pd.DataFrame
    frames: pd.DataFrame
    shard_cache: Path | None = None  # local copies of a remote dataset's shards

    def shard_path(self, relative: str) -> Location:
        return self.root / relative

    def cached_shard(self, relative: str) -> Path | None:
        """Where the local copy of a remote shard goes; None without a cache."""
        return None if self.shard_cache is None else self.shard_cache / relative

    def video(self, video_id: str) -> pd.Series:
        match = self.videos[self.videos["video_id"] == video_id]
        if match.empty:
            raise KeyError(f"unknown video id {video_id!r} in {self.root / VIDEOS_FILE}")
        return match.iloc[0]

    def frames_of(self, video_id: str) -> pd.DataFrame:
        return self.frames[self.frames["video_id"] == video_id].sort_values("kept_index")


def load_manifest(root: str | os.PathLike, shard_cache: Path | None = None) -> Manifest:
    """Read a dataset's manifests from its folder or URL (each file read once); a clear error
    if it has not been decoded yet, and a :class:`ManifestError` naming the file if one does
    not parse or match its checksum. ``shard_cache``: a local folder for whole copies of a
    remote dataset's shards, kept under the frame table's digest (a re-decoded dataset gets
    new copies, never stale ones); ignored for a dataset on disk."""
    root = dataset_path(root)
    missing = [name for name in (VIDEOS_FILE, FRAMES_FILE) if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"no manifest in {root} (missing {', '.join(missing)}): run `dvc repro` "
            "(or the decode stage) first, or pass the folder that holds videos.parquet")
    contents = {name: (root / name).read_bytes() for name in (VIDEOS_FILE, FRAMES_FILE)}
    problems = check_checksums(root, contents)
    if problems:
        raise ManifestError("; ".join(problems))
    cache = None
    if shard_cache is not None and is_remote(root):
        cache = Path(shard_cache) / hashlib.sha256(contents[FRAMES_FILE]).hexdigest()[:16]
    return Manifest(root, *(read_table(root / name, content)
                            for name, content in contents.items()), shard_cache=cache)


def load_split(root: str | os.PathLike) -> pd.DataFrame:
    """The split stage's table (``split.csv``: split and fold per video) of a dataset's folder
    or URL."""
    path = dataset_path(root) / SPLIT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {SPLIT_FILE} in {dataset_path(root)}: run the split stage "
                                "(`dvc repro split@<dataset>`) first")
    return pd.read_csv(io.BytesIO(path.read_bytes()))


def publish(folder: Path, url: str) -> list[str]:
    """Copy a decoded dataset folder as it is to object storage (any fsspec URL), so training
    elsewhere reads it by URL. A reader never sees manifests whose shards are not there yet:
    the shards and ``split.csv`` go first, the two manifests next, ``checksums.json`` last
    (one object PUT each is atomic). A shard the destination already holds with the same size
    and MD5 (the ETag of a single-part upload) is skipped; receipts and the hash cache are
    machine-local and stay. The folder must verify first. Returns what was uploaded, in order."""
    folder = Path(folder)
    load_manifest(folder)  # refuses manifests that do not parse or match their checksums
    target = dataset_path(url)
    fs = filesystem(target)
    last = [name for name in (VIDEOS_FILE, FRAMES_FILE, CHECKSUMS_FILE)
            if (folder / name).is_file()]
    first = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                   if path.is_file() and path.name not in (*last, SOURCES_FILE, ".gitignore")
                   and not path.name.startswith(".") and not path.name.endswith(".receipt.json"))
    uploaded = []
    for relative in [*first, *last]:
        remote = f"{target.path.rstrip('/')}/{relative}"
        if relative in first and _holds(fs, remote, folder / relative):
            continue
        fs.put_file(str(folder / relative), remote)
        uploaded.append(relative)
    return uploaded


def _holds(fs, remote: str, path: Path) -> bool:
    """Whether object ``remote`` already has ``path``'s size and MD5 (its ETag)."""
    try:
        info = fs.info(remote)
    except FileNotFoundError:
        return False
    etag = str(info.get("ETag", "")).strip('"')
    return info.get("size") == path.stat().st_size and etag == hashlib.md5(
        path.read_bytes(), usedforsecurity=False).hexdigest()
