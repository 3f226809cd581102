"""Looking into a decoded dataset: summaries, one video's details, shard verification, sheets.

Plain functions over a :class:`~pipeline.data.manifest.Manifest` returning JSON-ready data (or an
image); the ``uspipe`` CLI only renders them.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from scipy import ndimage

from pipeline.atomic import atomic_path
from pipeline.data.manifest import FRAMES_FILE, VIDEOS_FILE, Manifest
from pipeline.data.shards import scan_mask_member
from pipeline.data.splits import copies_across_groups
from pipeline.storage import read_range


def _distribution(values: pd.Series) -> dict[str, float | None]:
    values = values.dropna()
    if values.empty:
        return {"min": None, "median": None, "max": None, "mean": None}
    return {"min": float(values.min()), "median": float(values.median()),
            "max": float(values.max()), "mean": float(values.mean())}


def _counts(videos: pd.DataFrame, column: str) -> dict[str, int]:
    if column not in videos.columns:
        return {}
    return {str(k): int(v) for k, v in videos[column].fillna("(none)").value_counts().items()}


def dataset_summary(manifest: Manifest) -> dict[str, object]:
    """Counts by label/probe/status/container, frame totals, fps and duration distributions."""
    videos = manifest.videos
    ok = videos[videos["status"] == "ok"]
    return {
        "dataset": str(manifest.root),
        "videos": len(videos),
        "ok": len(ok),
        "failed": int((videos["status"] != "ok").sum()),
        "frames": len(manifest.frames),
        "by_status": _counts(videos, "status"),
        "by_label": _counts(ok, "label"),
        "by_probe": _counts(ok, "probe"),
        "by_container": _counts(ok, "container"),
        "groups": int(ok["group"].nunique()) if "group" in ok else 0,
        "fps": _distribution(ok["fps"]),
        "duration_s": _distribution(ok["duration_s"]),
        "kept_frames_per_video": _distribution(ok["kept_frames"]),
        "copies_across_groups": copies_across_groups(ok),
    }


def video_details(manifest: Manifest, video_id: str) -> dict[str, object]:
    """The video's manifest row plus the timestamps and indices of its kept frames."""
    row = manifest.video(video_id)
    frames = manifest.frames_of(video_id)
    details = {key: (None if isinstance(value, float) and math.isnan(value) else value)
               for key, value in row.to_dict().items()}
    details["kept_timestamps_s"] = [round(float(t), 6) for t in frames["timestamp_s"]]
    details["kept_frame_indices"] = [int(i) for i in frames["frame_index"]]
    return details


@dataclass(frozen=True)
class Mismatch:
    video_id: str
    member: str
    problem: str


def manifest_problems(manifest: Manifest) -> list[Mismatch]:
    """The manifests' own consistency: unique ids; every ok video has its shard and as many
    frame rows as ``kept_frames``; per video, kept indices are 0..n-1 and frame indices and
    timestamps strictly increase; frames belong to ok videos and name their video's shard."""
    videos, frames = manifest.videos, manifest.frames
    problems = [Mismatch(identifier, VIDEOS_FILE, "video id listed twice")
                for identifier in videos["video_id"][videos["video_id"].duplicated()]]
    ok = videos[videos["status"] == "ok"].drop_duplicates("video_id").set_index("video_id")
    for identifier in sorted(set(frames["video_id"]) - set(ok.index)):
        problems.append(Mismatch(identifier, FRAMES_FILE, "frame rows for a video that is not ok"))
    by_video = dict(tuple(frames.groupby("video_id", sort=False)))
    for identifier, video in ok.iterrows():
        rows = by_video.get(identifier, frames.iloc[:0]).sort_values("kept_index")
        shard = video["shard"]
        if not isinstance(shard, str) or not manifest.shard_path(shard).is_file():
            problems.append(Mismatch(identifier, str(shard), "shard file missing"))
        checks = (
            (len(rows) == video["kept_frames"],
             f"{len(rows)} frame rows, kept_frames says {video['kept_frames']}"),
            (rows["kept_index"].tolist() == list(range(len(rows))),
             "kept_index is not 0..n-1"),
            (rows["timestamp_s"].is_monotonic_increasing and rows["timestamp_s"].is_unique,
             "timestamp_s does not strictly increase"),
            (rows["frame_index"].is_monotonic_increasing and rows["frame_index"].is_unique,
             "frame_index does not strictly increase"),
            ((rows["shard"] == shard).all(), "frame rows name another shard"),
        )
        problems += [Mismatch(identifier, FRAMES_FILE, problem) for fine, problem in checks
                     if not fine]
    return problems


def frame_metadata(row: object) -> bytes:
    """The exact bytes of a frame's ``.json`` member, rebuilt from its manifest row
    (as :func:`pipeline.data.shards.write_video_shard` writes them)."""
    pts = row.pts
    metadata = {"video_id": row.video_id, "kept_index": int(row.kept_index),
                "frame_index": int(row.frame_index), "timestamp_s": float(row.timestamp_s),
                "pts": None if pd.isna(pts) else int(pts)}
    return json.dumps(metadata, sort_keys=True).encode()


def shard_problems(path: Path, frames: pd.DataFrame, others: dict[str, str] | None = None
                   ) -> list[tuple[str, str]]:
    """Every byte of one shard checked against its manifest rows: each member's header parses
    (tar header checksums) at the recorded place, the ``.jpg`` bytes match their SHA-256, the
    ``.json`` bytes are exactly what the row says, nothing else is in the tar, and all padding
    is zeros. ``others``: further members (the scan-area mask) and their SHA-256. Returns
    (member, problem) pairs; member ``""`` for the tar as a whole."""
    try:
        data = path.read_bytes()
        with tarfile.open(path, "r:") as archive:
            members = {info.name: info for info in archive.getmembers()}
    except (OSError, tarfile.TarError) as error:
        return [("", f"not a readable tar: {error}")]
    expected: dict[str, tuple[int | None, bytes | str]] = {
        name: (None, digest) for name, digest in (others or {}).items()}
    for row in frames.itertuples():
        expected[row.member] = (row.offset, row.sha256)
        expected[row.member.removesuffix(".jpg") + ".json"] = (None, frame_metadata(row))
    problems = []
    absent = [name for name in expected if name not in members]
    if absent:
        problems.append((absent[0], f"missing: {len(members)} of {len(expected)} members "
                                    "parse (a damaged member header ends the tar early)"))
    problems += [(name, "unexpected member") for name in members if name not in expected]
    for name, (offset, content) in expected.items():
        info = members.get(name)
        if info is None:
            continue
        payload = data[info.offset_data:info.offset_data + info.size]
        if offset is not None and info.offset_data != offset:
            problems.append((name, f"at byte {info.offset_data}, the manifest says {offset}"))
        elif isinstance(content, str) and hashlib.sha256(payload).hexdigest() != content:
            problems.append((name, "sha256 differs"))
        elif isinstance(content, bytes) and payload != content:
            problems.append((name, "content differs from the manifest row"))
    used = sorted((info.offset, info.offset_data + info.size) for info in members.values())
    gaps = zip([end for _, end in [(0, 0), *used]], [start for start, _ in used] + [len(data)],
               strict=True)
    if any(data[start:end].strip(b"\0") for start, end in gaps):
        problems.append(("", "non-zero bytes outside the members (padding or end blocks "
                             "damaged)"))
    return problems


def verify(manifest: Manifest) -> tuple[int, list[Mismatch]]:
    """Check a decoded dataset end to end: the manifests' consistency
    (:func:`manifest_problems`) and every byte of every shard (:func:`shard_problems`).
    (That the manifests are what was written is checked by ``load_manifest`` against
    ``checksums.json``.) Returns (frames checked, problems)."""
    problems = manifest_problems(manifest)
    checked = 0
    ok = manifest.videos[manifest.videos["status"] == "ok"]
    frames = dict(tuple(manifest.frames.groupby("video_id", sort=False)))
    for row in ok.itertuples():
        path = manifest.shard_path(str(row.shard))
        rows = frames.get(row.video_id, manifest.frames.iloc[:0])
        if not path.is_file():
            continue
        checked += len(rows)
        mask = getattr(row, "scan_mask_sha256", None)
        others = {scan_mask_member(row.video_id): mask} if isinstance(mask, str) else {}
        problems += [Mismatch(row.video_id, member or str(row.shard), problem)
                     for member, problem in shard_problems(path, rows, others)]
    return checked, problems


def scan_mask(manifest: Manifest, video_id: str) -> np.ndarray | None:
    """The clip's scan-area mask at the stored frames' geometry (cropped to its box when the
    frames were cropped), or None when the dataset was decoded without one."""
    row = manifest.video(video_id)
    if not isinstance(row.get("scan_mask_sha256"), str):
        return None
    with tarfile.open(manifest.shard_path(row["shard"])) as archive:
        mask = np.asarray(Image.open(archive.extractfile(scan_mask_member(video_id)))) > 0
    first = manifest.frames_of(video_id).iloc[0]
    if (first["width"], first["height"]) != (mask.shape[1], mask.shape[0]):
        x0, y0, x1, y1 = (int(value) for value in row["scan_box"])
        mask = mask[y0:y1, x0:x1]
    return mask


def outlined(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """``image`` with the edge of ``mask`` drawn in green."""
    mask_image = Image.fromarray(mask.astype(np.uint8) * 255).resize(image.size,
                                                                     Image.Resampling.NEAREST)
    inside = np.asarray(mask_image) > 0
    edge = inside & ~ndimage.binary_erosion(inside, iterations=2)
    pixels = np.asarray(image).copy()
    pixels[edge] = (0, 255, 0)
    return Image.fromarray(pixels)


def contact_sheet(manifest: Manifest, video_id: str, columns: int = 6,
                  thumb_width: int = 200) -> Image.Image:
    """A grid of the video's kept frames (read by offset), each captioned with its time, the
    scan-area mask outlined where the dataset has one."""
    frames = manifest.frames_of(video_id)
    if frames.empty:
        raise ValueError(f"video {video_id!r} has no kept frames "
                         f"(status: {manifest.video(video_id)['status']})")
    mask = scan_mask(manifest, video_id)
    thumbs = []
    for frame in frames.itertuples():
        data = read_range(manifest.shard_path(frame.shard), frame.offset, frame.size)
        image = Image.open(io.BytesIO(data)).convert("RGB")
        if mask is not None:
            image = outlined(image, mask)
        height = max(1, round(image.height * thumb_width / image.width))
        thumbs.append((image.resize((thumb_width, height)), frame))
    cell_height = max(thumb.height for thumb, _ in thumbs) + 16
    columns = min(columns, len(thumbs))
    rows = math.ceil(len(thumbs) / columns)
    sheet = Image.new("RGB", (columns * thumb_width, rows * cell_height), "black")
    draw = ImageDraw.Draw(sheet)
    for position, (thumb, frame) in enumerate(thumbs):
        x, y = (position % columns) * thumb_width, (position // columns) * cell_height
        sheet.paste(thumb, (x, y + 16))
        draw.text((x + 4, y + 2), f"#{frame.kept_index} t={frame.timestamp_s:.2f}s "
                                  f"(frame {frame.frame_index})", fill="white")
    return sheet


def save_image(image: Image.Image, path: Path) -> None:
    """Write ``image`` as PNG, atomically."""
    with atomic_path(Path(path)) as temporary:
        image.save(temporary, format="PNG")
