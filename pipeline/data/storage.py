"""Where a decoded dataset lives: a local folder, or an fsspec URL (``s3://``, ``gs://``,
``az://``, ...) read in place, with one path type for both.

A URL becomes a ``UPath`` (universal-pathlib), which has the ``pathlib`` operations the
readers use (``/``, ``is_file``, ``read_bytes``); a folder stays a plain :class:`Path`.
Credentials and endpoints come from the storage's own configuration, never from params: for
S3, the AWS environment variables or profile (``AWS_ENDPOINT_URL`` for an S3-compatible
server such as MinIO or Ceph).

Frames are read by byte range, one request per frame (:func:`read_range`): the per-video
shards keep the offsets the manifests record, so nothing is repacked and a reader fetches
only the frames it uses. ``docs/benchmarks.md`` measures what this costs against local disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
from upath import UPath

Location = Path | UPath


def dataset_path(location: str | os.PathLike) -> Location:
    """``location`` as a path: a :class:`UPath` for a URL with a scheme, else a :class:`Path`
    (``file://`` URLs included: they are local folders)."""
    if isinstance(location, Path | UPath):
        return location
    text = os.fspath(location)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    return UPath(text) if "://" in text else Path(text)


def is_remote(path: Location) -> bool:
    return not isinstance(path, Path)


def read_range(path: Location, offset: int, size: int) -> bytes:
    """``size`` bytes of ``path`` from ``offset``: a seek on disk, one ranged GET remotely.
    A short read is an :class:`OSError` naming the file."""
    if is_remote(path):
        data = _filesystem(path).cat_file(path.path, start=offset, end=offset + size)
    else:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
    if len(data) != size:
        raise OSError(f"{path}: short read at offset {offset} ({len(data)} of {size} bytes)")
    return data


def _filesystem(path: UPath) -> fsspec.AbstractFileSystem:
    """The path's filesystem from fsspec's instance cache, which is per process: a path made
    before a DataLoader forked its workers must not reuse the parent's connections."""
    return fsspec.filesystem(path.protocol, **path.storage_options)
