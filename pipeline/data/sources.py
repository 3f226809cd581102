"""Source videos of a dataset: which files, their stable ids, their labels.

A dataset is a folder of videos (any depth) plus an optional ``labels.csv`` in the POCUS schema
(``path,label,probe,group,...``, ``path`` relative to the folder). Videos without a row are
unlabelled; that is normal for self-supervised pretraining.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

LABEL_COLUMNS = frozenset({"label", "probe", "group", "uncertain"})
NOT_VIDEO_SUFFIXES = {".csv", ".txt", ".md", ".json", ".yaml", ".yml", ".parquet", ".pdf"}
_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")
_MAX_STEM = 60


def video_id(relative_path: str) -> str:
    """Stable, filesystem- and WebDataset-safe id derived from the path relative to the root.

    Path components are reduced to ``[A-Za-z0-9-]`` runs joined by ``_`` (components by ``__``),
    then an 8-hex digest of the exact relative path is appended, so two names that sanitise
    alike stay distinct and an id never changes when other videos are added. No dots: WebDataset
    splits keys at the first dot. ``convex/Cov-Atlas+(44).gif`` -> ``convex__Cov-Atlas_44_gif-<h>``.
    """
    parts = [_UNSAFE.sub("_", part).strip("_") for part in PurePosixPath(relative_path).parts]
    stem = "__".join(part for part in parts if part)[:_MAX_STEM].strip("_") or "video"
    digest = hashlib.sha1(relative_path.encode("utf-8")).hexdigest()[:8]
    return f"{stem}-{digest}"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class SourceVideo:
    """One source file: where it is, its id, and its labels.csv row (empty if unlabelled)."""

    root: Path
    relative_path: str
    labels: dict[str, object] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.root / self.relative_path

    @property
    def video_id(self) -> str:
        return video_id(self.relative_path)


def list_video_files(root: Path) -> list[str]:
    """Relative POSIX paths of candidate video files under ``root``, sorted.

    Hidden files and obvious non-video files (csv, txt, ...) are skipped; everything else is
    tried, because the container is probed, not guessed from the extension.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"video folder not found: {root}")
    files = []
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix.lower() in NOT_VIDEO_SUFFIXES:
            continue
        files.append(relative.as_posix())
    return sorted(files)


def read_labels(csv_path: Path, reserved: frozenset[str] = frozenset()) -> pd.DataFrame:
    """Read a labels.csv; ``path`` is required and unique, all other columns are kept as text.

    Paths are normalised (``./a.mp4`` and ``a.mp4`` name the same file). Columns in ``reserved``
    (names the pipeline computes itself) are an error rather than silently overwritten.
    """
    if not csv_path.is_file():
        raise FileNotFoundError(f"labels file not found: {csv_path} (for unlabelled videos set "
                                "the dataset's labels param to null)")
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if "path" not in table.columns:
        raise ValueError(f"{csv_path}: no 'path' column (columns: {', '.join(table.columns)})")
    clashing = sorted(set(table.columns) & reserved)
    if clashing:
        raise ValueError(f"{csv_path}: column(s) {', '.join(clashing)} clash with columns the "
                         "pipeline computes; rename them")
    table["path"] = [PurePosixPath(path.strip().replace("\\", "/")).as_posix()
                     for path in table["path"]]
    duplicated = table["path"][table["path"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{csv_path}: paths listed twice: {', '.join(duplicated[:5])}")
    return table


def discover(root: Path, labels_csv: Path | None, reserved: frozenset[str] = frozenset()
             ) -> tuple[list[SourceVideo], dict[str, dict[str, object]]]:
    """The dataset's videos, and the labels.csv rows that name no file (by path; not raised).

    ``reserved``: column names labels.csv may not use (see :func:`read_labels`).
    """
    files = list_video_files(root)
    if not files:
        raise FileNotFoundError(f"no video files found under {root}")
    rows: dict[str, dict[str, object]] = {}
    if labels_csv is not None:
        table = read_labels(labels_csv, reserved)
        rows = {row.pop("path"): row for row in table.to_dict("records")}
        if rows and not set(rows) & set(files):
            raise ValueError(f"{labels_csv}: no path matches a file under {root} (paths must be "
                             f"relative to that folder; first row: {next(iter(rows))!r}, first "
                             f"file: {files[0]!r})")
    missing = {path: rows[path] for path in sorted(set(rows) - set(files))}
    sources = [SourceVideo(root, path, rows.get(path, {})) for path in files]
    ids = [source.video_id for source in sources]
    if len(set(ids)) != len(ids):  # pragma: no cover - an 8-hex digest collision
        raise ValueError(f"{root}: two videos map to the same id; rename one of them")
    return sources, missing
