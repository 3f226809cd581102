"""Scan-area masks of every POCUS video on one contact sheet (issue 13), for inspection:

    python benchmarks/scan_area_sheet.py            # writes docs/scan_area_pocus.jpg

Decodes POCUS (``../shared/data/pocus``) at short side 160, at most 30 kept frames a clip, with
``decode.scan_area: mask`` into ``--work`` (outside the repository: the licence forbids copying
the data), then draws each clip's first kept frame with its mask outlined, captioned with its
rule and covered share.
"""

from __future__ import annotations

import argparse
import io
import math
import os
from pathlib import Path

from PIL import Image, ImageDraw

from pipeline.config import DecodeConfig
from pipeline.data.ingest import ingest
from pipeline.data.manifest import load_manifest
from pipeline.inspection import outlined, scan_mask
from pipeline.storage import read_range

SHARED = Path(os.environ.get("USPIPE_SHARED_DATA", Path(__file__).resolve().parents[2] /
                             "shared" / "data"))
TILE = 150


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path,
                        default=Path(__file__).resolve().parents[2] / "uspipe-study" /
                        "pocus-scan-area")
    parser.add_argument("--out", type=Path, default=Path("docs/scan_area_pocus.jpg"))
    arguments = parser.parse_args()
    pocus = SHARED / "pocus"
    ingest(pocus / "videos", pocus / "labels.csv", arguments.work,
           DecodeConfig(short_side=160, max_frames=30, scan_area="mask"))
    manifest = load_manifest(arguments.work)
    videos = manifest.videos[manifest.videos["status"] == "ok"].sort_values("source_path")
    columns = 12
    sheet = Image.new("RGB", (columns * TILE, math.ceil(len(videos) / columns) * (TILE + 12)))
    draw = ImageDraw.Draw(sheet)
    for position, video in enumerate(videos.itertuples()):
        frame = manifest.frames_of(video.video_id).iloc[0]
        image = Image.open(io.BytesIO(read_range(manifest.shard_path(frame["shard"]),
                                                  frame["offset"], frame["size"])))
        image = outlined(image.convert("RGB"), scan_mask(manifest, video.video_id))
        image.thumbnail((TILE, TILE))
        x, y = (position % columns) * TILE, (position // columns) * (TILE + 12)
        sheet.paste(image, (x, y + 12))
        draw.text((x + 2, y), f"{position} {video.scan_rule[:4]} {video.scan_fraction:.2f}",
                  fill="white")
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(arguments.out, quality=85)
    print(f"wrote {arguments.out}: {len(videos)} clips; rules "
          f"{videos['scan_rule'].value_counts().to_dict()}; covered share "
          f"{videos['scan_fraction'].describe()[['min', '50%', 'max']].round(3).to_dict()}")


if __name__ == "__main__":
    main()
