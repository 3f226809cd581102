"""Looking into a decoded dataset: summaries, one video's details, shard verification, sheets.

Plain functions over a :class:`~pipeline.data.manifest.Manifest` returning JSON-ready data (or an
image); the ``uspipe`` CLI only renders them.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from pipeline.atomic import atomic_path
from pipeline.data.manifest import Manifest
from pipeline.data.shards import read_member


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


def verify(manifest: Manifest) -> tuple[int, list[Mismatch]]:
    """Re-read every frame by its byte offset and compare its SHA-256 with the manifest.

    Also checks that every ok video has its shard and as many frame rows as ``kept_frames``.
    Returns (frames checked, mismatches).
    """
    problems: list[Mismatch] = []
    ok = manifest.videos[manifest.videos["status"] == "ok"]
    per_video = manifest.frames.groupby("video_id").size()
    for row in ok.itertuples():
        if not manifest.shard_path(row.shard).is_file():
            problems.append(Mismatch(row.video_id, row.shard, "shard file missing"))
        elif per_video.get(row.video_id, 0) != row.kept_frames:
            problems.append(Mismatch(row.video_id, row.shard,
                                     f"{per_video.get(row.video_id, 0)} frame rows, "
                                     f"kept_frames says {row.kept_frames}"))
    checked = 0
    for frame in manifest.frames.itertuples():
        path = manifest.shard_path(frame.shard)
        if not path.is_file():
            continue
        checked += 1
        try:
            data = read_member(path, frame.offset, frame.size)
        except OSError as error:
            problems.append(Mismatch(frame.video_id, frame.member, str(error)))
            continue
        if hashlib.sha256(data).hexdigest() != frame.sha256:
            problems.append(Mismatch(frame.video_id, frame.member, "sha256 differs"))
    return checked, problems


def contact_sheet(manifest: Manifest, video_id: str, columns: int = 6,
                  thumb_width: int = 200) -> Image.Image:
    """A grid of the video's kept frames (read by offset), each captioned with its time."""
    frames = manifest.frames_of(video_id)
    if frames.empty:
        raise ValueError(f"video {video_id!r} has no kept frames "
                         f"(status: {manifest.video(video_id)['status']})")
    thumbs = []
    for frame in frames.itertuples():
        data = read_member(manifest.shard_path(frame.shard), frame.offset, frame.size)
        image = Image.open(io.BytesIO(data)).convert("RGB")
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
