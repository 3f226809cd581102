"""Source files of a dataset: a safe listing, unique stable ids, content hashes, labels.

A dataset is a folder of videos (any depth) plus an optional ``labels.csv`` in the POCUS schema
(``path,label,probe,group,...``, ``path`` relative to the folder). Videos without a row are
unlabelled; that is normal for self-supervised pretraining.

The listing never opens anything but regular files inside the root, and never stops for one
entry: every problem becomes that entry's ``status`` with an ``error`` naming the cause
(docs/reliability.md). The policy:

- hidden entries (``.name``) and obvious non-video files (``.csv``, ``.txt``, ...) are skipped;
- a symbolic link (to a file or a folder) is followed only when it resolves inside the root;
  otherwise the entry gets ``outside_root`` and is never opened. A dangling link gets
  ``broken_link``, a link cycle ``link_loop``; a folder reached a second time through a link is
  listed once;
- named pipes, sockets and devices get ``special_file`` and are never opened (opening a pipe
  blocks forever);
- a file or folder that cannot be read gets ``unreadable``;
- names are matched to ``labels.csv`` rows after Unicode NFC normalisation (a macOS NFD name
  matches its NFC row); a name that is not valid UTF-8 is shown with ``\\xNN`` escapes and
  decoded like any other file;
- ids are unique by construction (:func:`video_id`); should two entries still share one, both
  get ``id_collision`` naming the other;
- a folder that holds only images is one clip (a frame folder) when labels.csv has a row for it
  or the dataset sets ``frame_folders``; otherwise its images are still images, one item each
  (an image dataset such as BUSI keeps its images apart).

The root may also be an fsspec URL (``s3://bucket/clips``, :mod:`pipeline.storage`):
object storage has no links, special files or per-entry permissions, so every object under
the prefix is a file entry, and a content hash is reused while the object's size and fsspec
key (its ETag on S3) are unchanged.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import stat
import unicodedata
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pipeline.atomic import write_json
from pipeline.storage import dataset_path, filesystem, is_remote

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.storage import Location

LABEL_COLUMNS = frozenset({"label", "probe", "group", "uncertain"})
NOT_VIDEO_SUFFIXES = {".csv", ".txt", ".md", ".json", ".yaml", ".yml", ".parquet", ".pdf"}
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
HASH_CACHE = ".hash-cache.json"  # content hashes kept between listings (HashCache)
ULTRABENCH = "ultrabench"  # data.<name>.labels: UltraBench's prepared JSON splits in the root
ULTRABENCH_SPLITS = ("train.json", "validation.json", "train_val.json", "test.json")
HASH_THREADS = 8  # files hashed at once: reading (disk, network) overlaps; hashlib frees the GIL
ID_DIGITS = 16  # hex digits of the path digest in an id: 64 bits, no collision by chance
_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")
_MAX_STEM = 60
_SPECIAL_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def display_name(name: str) -> str:
    """A file name as text: NFC-normalised, bytes that are not UTF-8 shown as ``\\xNN``."""
    return unicodedata.normalize("NFC", os.fsencode(name).decode("utf-8", "backslashreplace"))


def video_id(relative_path: str) -> str:
    """Stable, filesystem- and WebDataset-safe id of a path relative to the root.

    Path components are reduced to ``[A-Za-z0-9-]`` runs joined by ``_`` (components by ``__``),
    then 16 hex digits of the SHA-1 of the NFC-normalised path are appended, so names that
    sanitise alike stay distinct and an id never changes when other videos are added. No dots:
    WebDataset splits keys at the first dot.
    ``convex/Cov-Atlas+(44).gif`` -> ``convex__Cov-Atlas_44_gif-<16 hex>``.
    """
    relative_path = unicodedata.normalize("NFC", relative_path)
    parts = [_UNSAFE.sub("_", part).strip("_") for part in PurePosixPath(relative_path).parts]
    stem = "__".join(part for part in parts if part)[:_MAX_STEM].strip("_") or "video"
    digest = hashlib.sha1(relative_path.encode("utf-8", "backslashreplace")).hexdigest()
    return f"{stem}-{digest[:ID_DIGITS]}"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a regular file's bytes. Opened without blocking and checked after opening,
    so a file swapped for a pipe since it was listed raises instead of hanging."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with open(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        digest = hashlib.sha256()
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def content_sha256(path: Location, chunk: int = 1 << 23) -> str:
    """SHA-256 of a file on disk (:func:`file_sha256`) or of an object, streamed."""
    if not is_remote(path):
        return file_sha256(path)
    digest = hashlib.sha256()
    with path.open("rb", block_size=chunk) as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class SourceFile:
    """One entry of a dataset: a file to decode (``status == "ok"``) or why it is not one.

    ``relative_path`` is the display form (:func:`display_name` per component, ``/``-joined),
    the key for labels.csv; ``path`` is where the file is opened.
    """

    root: Location
    relative_path: str
    path: Location
    status: str = "ok"
    error: str | None = None
    labels: dict[str, object] = field(default_factory=dict)
    content_sha256: str | None = None
    size_bytes: int | None = None

    @property
    def video_id(self) -> str:
        return video_id(self.relative_path)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _special_kind(mode: int) -> str | None:
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), None)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _frame_folder(folder: Path) -> bool:
    """Only (non-hidden) images in it, at least one, and nothing else."""
    try:
        children = [child for child in os.scandir(folder) if not child.name.startswith(".")]
    except OSError:
        return False
    return bool(children) and all(
        child.is_file() and Path(child.name).suffix.lower() in IMAGE_SUFFIXES
        for child in children)


def list_sources(root: Location, clip_folders: frozenset[str] = frozenset(),
                 frame_folders: bool = False) -> list[SourceFile]:
    """Every candidate entry under ``root`` (see the module's policy), sorted by path.

    A folder of images is one entry when its relative path is in ``clip_folders`` (labels.csv
    rows) or ``frame_folders`` is set. Only a missing root is an error; anything below it
    becomes an entry's status.
    """
    root = dataset_path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder not found: {root}")
    if is_remote(root):
        return _list_objects(root, clip_folders, frame_folders)
    real_root = os.path.realpath(root)
    visited = {real_root}

    def entry(parts: list[str], path: Path, status: str = "ok", error: str | None = None
              ) -> SourceFile:
        relative = "/".join(display_name(part) for part in parts)
        return SourceFile(root, relative, path, status,
                          None if error is None else f"{relative}: {error}")

    def walk(folder: Path, parts: list[str]) -> Iterator[SourceFile]:
        try:
            with os.scandir(folder) as scan:
                children = sorted(scan, key=lambda child: child.name)
        except OSError as error:
            yield entry(parts, folder, "unreadable", f"cannot list this folder: {error.strerror}")
            return
        for child in children:
            if child.name.startswith("."):
                continue
            path, names = Path(child.path), [*parts, child.name]
            try:
                mode = child.stat(follow_symlinks=False).st_mode
                if stat.S_ISLNK(mode):
                    target_mode = os.stat(path).st_mode  # a dangling link or a loop raises
                    if not _inside(os.path.realpath(path), real_root):
                        yield entry(names, path, "outside_root", "a link to a place outside the "
                                    "dataset folder; not followed (never opened)")
                        continue
                    mode = target_mode  # inside the root: take the target's type
            except OSError as error:
                status, cause = (("link_loop", "a cycle of symbolic links")
                                 if error.errno == errno.ELOOP else
                                 ("broken_link", "a symbolic link to nothing (dangling)")
                                 if error.errno == errno.ENOENT else
                                 ("unreadable", f"cannot stat: {error.strerror}"))
                yield entry(names, path, status, cause)
                continue
            if stat.S_ISDIR(mode) and (frame_folders or "/".join(
                    display_name(part) for part in names) in clip_folders) and \
                    _frame_folder(path):
                yield entry(names, path)
            elif stat.S_ISDIR(mode):
                real = os.path.realpath(path)
                if real not in visited:  # a folder linked twice (or a link to an ancestor)
                    visited.add(real)
                    yield from walk(path, names)
            elif path.suffix.lower() in NOT_VIDEO_SUFFIXES:
                continue
            elif stat.S_ISREG(mode):
                yield entry(names, path)
            else:
                yield entry(names, path, "special_file", f"is {_special_kind(mode)}, not a "
                            "regular file; skipped (never opened)")

    return sorted(walk(root, []), key=lambda source: source.relative_path)


def _list_objects(root: Location, clip_folders: frozenset[str], frame_folders: bool
                  ) -> list[SourceFile]:
    """:func:`list_sources` for a URL: every object under the prefix, sorted; hidden names
    and non-video suffixes skipped; a prefix holding only images is one frame-folder entry
    under the same rule as on disk."""
    prefix = root.path.rstrip("/") + "/"
    names = sorted(name[len(prefix):] for name in filesystem(root).find(root.path)
                   if name.startswith(prefix))
    kept = [name for name in names if not any(part.startswith(".") for part in name.split("/"))
            and PurePosixPath(name).suffix.lower() not in NOT_VIDEO_SUFFIXES]
    children: dict[str, list[str]] = {}
    for name in kept:
        parts = name.split("/")
        for depth in range(1, len(parts)):  # every folder above the object
            children.setdefault("/".join(parts[:depth]), []).append("/".join(parts[depth:]))
    clips = {folder for folder, below in children.items()
             if (frame_folders or unicodedata.normalize("NFC", folder) in clip_folders)
             and all("/" not in child and PurePosixPath(child).suffix.lower() in IMAGE_SUFFIXES
                     for child in below)}
    entries = sorted(clips) + [name for name in kept
                               if not any(name.startswith(f"{clip}/") for clip in clips)]
    return sorted((SourceFile(root, unicodedata.normalize("NFC", name), root / name)
                   for name in entries), key=lambda source: source.relative_path)


def read_labels(csv_path: Location, reserved: frozenset[str] = frozenset()) -> pd.DataFrame:
    """Read a labels.csv; ``path`` is required and unique, all other columns are kept as text.

    Paths are normalised (``./a.mp4`` and ``a.mp4`` name the same file; Unicode NFC). Columns
    in ``reserved`` (names the pipeline computes itself) are an error rather than silently
    overwritten. Every error names the file.
    """
    if csv_path.name == ULTRABENCH:
        table = read_ultrabench(csv_path.parent)
    elif not csv_path.is_file():
        raise FileNotFoundError(f"labels file not found: {csv_path} (for unlabelled videos set "
                                "the dataset's labels param to null)")
    else:
        table = _read_csv(csv_path)
    if "path" not in table.columns:
        raise ValueError(f"{csv_path}: no 'path' column (columns: {', '.join(table.columns)})")
    clashing = sorted(set(table.columns) & reserved)
    if clashing:
        raise ValueError(f"{csv_path}: column(s) {', '.join(clashing)} clash with columns the "
                         "pipeline computes; rename them")
    table["path"] = [unicodedata.normalize("NFC", PurePosixPath(
        path.strip().replace("\\", "/")).as_posix()) for path in table["path"]]
    duplicated = table["path"][table["path"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{csv_path}: paths listed twice: {', '.join(duplicated[:5])}")
    return table


def _read_csv(csv_path: Location) -> pd.DataFrame:
    import pandas as pd  # noqa: PLC0415 - decode workers import this module, never read labels

    try:
        return pd.read_csv(io.BytesIO(csv_path.read_bytes()), dtype=str,
                           keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{csv_path}: not UTF-8 text ({error.reason} at byte {error.start}); "
                         "save it as UTF-8") from error
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"{csv_path}: empty file (expected a header with a 'path' column)"
                         ) from error
    except pd.errors.ParserError as error:
        raise ValueError(f"{csv_path}: not a valid CSV file ({error})") from error


def read_ultrabench(root: Location) -> pd.DataFrame:
    """UltraBench's prepared splits (``train.json``, ``validation.json``, ``train_val.json``,
    ``test.json``: arrays of objects with ``image``, ``label``, a mask, ``scan_mask``, often
    ``patient``), as labels.csv rows: ``path`` (relative to ``root``), ``label`` (the
    ``pathology`` name where given, else the integer label), ``group`` (``patient``),
    ``mask`` (``mask``, or the one ``*_mask`` key other than ``scan_mask``), ``scan_mask``,
    ``ultrabench_split``. Every error names the file."""
    rows = []
    files = [root / name for name in ULTRABENCH_SPLITS if (root / name).is_file()]
    if not files:
        raise FileNotFoundError(f"{root}: no UltraBench split file "
                                f"({', '.join(ULTRABENCH_SPLITS)})")
    for path in files:
        try:
            examples = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(examples, list) or not all(isinstance(e, dict) and "image" in e
                                                     for e in examples):
            raise ValueError(f"{path}: expected a JSON array of objects with an 'image' key")
        for example in examples:
            masks = [key for key in example if key == "mask" or (
                key.endswith("_mask") and key != "scan_mask")]
            label = example.get("pathology", example.get("label"))
            rows.append({"path": str(example["image"]),
                         "label": "" if label is None else str(label),
                         "group": str(example.get("patient") or ""),
                         "mask": str(example[masks[0]]) if len(masks) == 1 else "",
                         "scan_mask": str(example.get("scan_mask") or ""),
                         "ultrabench_split": path.stem})
    import pandas as pd  # noqa: PLC0415 - decode workers import this module, never read labels

    return pd.DataFrame(rows, dtype=str)


def _unlisted(root: Location, relative: str) -> tuple[str, str]:
    """Status and message for a labels.csv row that names no listed file (never opened)."""
    if PurePosixPath(relative).is_absolute() or ".." in PurePosixPath(relative).parts:
        return "outside_root", f"{relative}: path leaves the dataset folder; not read"
    path = root / relative
    try:
        folder = path.is_dir() if is_remote(path) else stat.S_ISDIR(path.lstat().st_mode)
        if is_remote(path) and not folder and not path.exists():
            raise FileNotFoundError(relative)
    except OSError:
        return "missing", f"{relative}: listed in labels.csv but no such file"
    if folder:
        return "missing", f"{relative}: listed in labels.csv but is a folder, not a video file"
    if any(part.startswith(".") for part in PurePosixPath(relative).parts):
        return "missing", f"{relative}: listed in labels.csv but hidden files are skipped"
    if path.suffix.lower() in NOT_VIDEO_SUFFIXES:
        return "missing", (f"{relative}: listed in labels.csv but {path.suffix} files are "
                           "not videos")
    return "missing", f"{relative}: listed in labels.csv but not a listable file"


def _mark_collisions(sources: list[SourceFile]) -> list[SourceFile]:
    counts = Counter(source.video_id for source in sources)
    clashing = {identifier for identifier, count in counts.items() if count > 1}
    if not clashing:
        return sources
    paths: dict[str, list[str]] = {}
    for source in sources:
        paths.setdefault(source.video_id, []).append(source.relative_path)
    return [source if source.video_id not in clashing else replace(
        source, status="id_collision", error=(
            f"{source.relative_path}: same id {source.video_id} as "
            + ", ".join(p for p in paths[source.video_id] if p != source.relative_path)
            + " (names that differ only in Unicode normalisation?); rename one"))
        for source in sources]


class HashCache:
    """Content hashes of files, reused while a file's size, mtime and inode (an object's size
    and fsspec key) are unchanged, as DVC's state database does, so re-listing a large root
    reads only changed files."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, list] = {}
        if path is not None and path.is_file():
            try:
                self.entries = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.entries = {}
        self.used: dict[str, list] = {}

    def sha256(self, relative: str, path: Location) -> tuple[str, int]:
        """(SHA-256, size) of a file; of a frame folder, the SHA-256 of its files' names and
        digests and their total size."""
        if path.is_dir():
            parts = [(child.name, *self.sha256(f"{relative}/{child.name}", child))
                     for child in sorted(path.iterdir()) if not child.name.startswith(".")]
            listing = "".join(f"{name}\0{digest}\n" for name, digest, _ in parts)
            return (hashlib.sha256(listing.encode("utf-8", "backslashreplace")).hexdigest(),
                    sum(size for _, _, size in parts))
        key = _identity(path)
        cached = self.entries.get(relative)
        digest = cached[-1] if cached and cached[:-1] == key else content_sha256(path)
        self.used[relative] = [*key, digest]
        return digest, key[0]

    def save(self) -> None:
        if self.path is not None:
            write_json(self.path, self.used)


def _identity(path: Location) -> list:
    """What must be unchanged for a cached hash to hold: size first, then (size, mtime,
    inode) on disk, (size, fsspec key) for an object."""
    if is_remote(path):
        fs = filesystem(path)
        return [fs.size(path.path), fs.ukey(path.path)]
    info = path.stat()
    return [info.st_size, info.st_mtime_ns, info.st_ino]


def hashed(source: SourceFile, cache: HashCache) -> SourceFile:
    """``source`` with its content hash and size, or status ``unreadable`` naming the cause."""
    if not source.ok:
        return source
    try:
        digest, size = cache.sha256(source.relative_path, source.path)
    except OSError as error:
        return replace(source, status="unreadable",
                       error=f"{source.relative_path}: cannot read: {error.strerror or error}")
    return replace(source, content_sha256=digest, size_bytes=size)


def _hash_masks(rows: dict[str, dict[str, object]], root: Location, cache: HashCache) -> None:
    """A ``mask_sha256`` label for each row's ``mask`` (a segmentation mask, relative to the
    labels.csv folder), so a changed mask changes the manifest and reruns what uses it; hashes
    kept in ``cache`` like the entries'. A mask that leaves the folder or is not a readable
    regular file gets none (never opened): the task that reads it reports why."""
    for row in rows.values():
        relative = str(row.get("mask") or "").strip()
        digest = ""
        parts = PurePosixPath(relative)
        if relative and not parts.is_absolute() and ".." not in parts.parts:
            try:
                digest = cache.sha256(f"mask:{parts.as_posix()}", root / parts.as_posix())[0]
            except OSError:
                digest = ""
        row["mask_sha256"] = digest


def discover(root: Location, labels_csv: Location | None, reserved: frozenset[str] = frozenset(),
             hash_cache: Path | None = None, frame_folders: bool = False) -> list[SourceFile]:
    """The dataset's entries with their hashes and labels, and one ``missing`` (or
    ``outside_root``) entry per labels.csv row that names no listed file.

    ``reserved``: column names labels.csv may not use (see :func:`read_labels`).
    ``hash_cache``: a JSON file that keeps content hashes between runs (:class:`HashCache`).
    ``frame_folders``: every folder of images is a clip (else only those labels.csv names).
    Raises only for the dataset as a whole: no root, no entry at all, an unreadable
    labels.csv or one whose paths match nothing.
    """
    root = dataset_path(root)
    rows: dict[str, dict[str, object]] = {}
    if labels_csv is not None:
        table = read_labels(labels_csv, reserved)
        rows = {row.pop("path"): row for row in table.to_dict("records")}
    listed = list_sources(root, frozenset(rows), frame_folders)
    if not listed:
        raise FileNotFoundError(f"no video files found under {root}")
    if rows:
        paths = {source.relative_path for source in listed}
        if not set(rows) & paths:
            raise ValueError(f"{labels_csv}: no path matches a file under {root} (paths must be "
                             f"relative to that folder; first row: {next(iter(rows))!r}, first "
                             f"file: {listed[0].relative_path!r})")
    cache = HashCache(hash_cache)
    if labels_csv is not None and any(row.get("mask") for row in rows.values()):
        folder = dataset_path(labels_csv).parent
        _hash_masks(rows, folder, cache)
        masks = {str(folder / str(row[column]).strip()) for row in rows.values()
                 for column in ("mask", "scan_mask") if row.get(column)}
        listed = [source for source in listed  # masks beside their images (BUSI) are no items
                  if str(root / source.relative_path) not in masks]
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        sources = [replace(source, labels=rows.get(source.relative_path, {}))
                   for source in pool.map(lambda source: hashed(source, cache), listed)]
    cache.save()
    listed_paths = {source.relative_path for source in sources}
    for relative in sorted(set(rows) - listed_paths):
        status, error = _unlisted(root, relative)
        sources.append(SourceFile(root, relative, root / relative, status, error,
                                  labels=rows[relative]))
    return _mark_collisions(sources)
