"""Where a decoded dataset lives: a local folder, or an fsspec URL (``s3://``, ``gs://``,
``az://``, ...) read in place, with one path type for both.

A URL becomes a ``UPath`` (universal-pathlib), which has the ``pathlib`` operations the
readers use (``/``, ``is_file``, ``read_bytes``); a folder stays a plain :class:`Path`.
Credentials and endpoints come from the storage's own configuration, never from params: for
S3, the AWS environment variables or profile (``AWS_ENDPOINT_URL`` for an S3-compatible
server such as MinIO or Ceph).

Frames are read by byte range (:func:`read_range`): the per-video shards keep the offsets the
manifests record, so nothing is repacked. Remotely that is one request per frame, unless a
local shard cache is given: then a shard is fetched whole (one request) the first time any
of its frames is read, and every later read is a local seek. ``docs/benchmarks.md`` measures
both against local disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec

from pipeline.atomic import atomic_path

if TYPE_CHECKING:  # imported where a URL is given: the GPU image need not have it
    from upath import UPath

    Location = Path | UPath


def dataset_path(location: str | os.PathLike) -> Location:
    """``location`` as a path: a :class:`UPath` for a URL with a scheme, else a :class:`Path`
    (``file://`` URLs included: they are local folders)."""
    if isinstance(location, Path) or hasattr(location, "protocol"):  # a UPath already
        return location
    text = os.fspath(location)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if "://" not in text:
        return Path(text)
    from upath import UPath

    return UPath(text)


def is_remote(path: Location) -> bool:
    return not isinstance(path, Path)


def read_range(path: Location, offset: int, size: int, cached: Path | None = None) -> bytes:
    """``size`` bytes of ``path`` from ``offset``: a seek on disk, one ranged GET remotely, or
    a seek in ``cached``, the remote file's local copy (:func:`local_copy`). A short read is
    an :class:`OSError` naming the file."""
    if cached is not None:
        path = local_copy(path, cached)
    if is_remote(path):
        data = filesystem(path).cat_file(path.path, start=offset, end=offset + size)
    else:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
    if len(data) != size:
        raise OSError(f"{path}: short read at offset {offset} ({len(data)} of {size} bytes)")
    return data


def local_copy(remote: UPath, target: Path) -> Path:
    """``target``, holding all of ``remote``: fetched with one request the first time, written
    atomically (worker processes that race write the same bytes; none reads a partial copy)."""
    if not target.is_file():
        data = filesystem(remote).cat_file(remote.path)
        with atomic_path(target) as temporary:
            temporary.write_bytes(data)
    return target


@contextmanager
def staged(path: Location) -> Iterator[Path]:
    """A local path with ``path``'s content: ``path`` itself on disk; for an object (or a
    prefix of objects, a frame folder) a temporary copy, removed when the block ends. FFmpeg,
    pydicom and Pillow then read a local file whatever the source."""
    if not is_remote(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="uspipe-staged-") as folder:
        local = Path(folder) / path.name
        filesystem(path).get(path.path, str(local), recursive=path.is_dir())
        yield local


def filesystem(path: UPath) -> fsspec.AbstractFileSystem:
    """The path's filesystem from fsspec's instance cache, which is per process: a path made
    before a DataLoader forked its workers must not reuse the parent's connections."""
    return fsspec.filesystem(path.protocol, **path.storage_options)
