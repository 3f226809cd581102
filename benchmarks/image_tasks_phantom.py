"""Every image task kind end to end on the embedded breast-lesion phantom (issue 14), with wall
times: classification and segmentation as ``params.yaml`` sets them for the sample's
``dvc repro``, and detection (Mask R-CNN, not in the sample's repro: ~1 s per training image
on this CPU) with the sample's settings otherwise.

Run after ``dvc repro`` (it reads ``data/lesions`` and ``models/pretrain`` of this checkout):

    python benchmarks/image_tasks_phantom.py --json docs/image_tasks_phantom.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.card import RunCard  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.data.manifest import load_manifest, load_split  # noqa: E402
from pipeline.evaluate.tasks import classify, detect, segment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--detection-epochs", type=int, default=3)
    args = parser.parse_args()
    os.chdir(REPO)
    params = load_params()
    card = RunCard.load(Path("models/pretrain/card.json"))
    weights = Path("models/pretrain/backbone.pt")
    classification = params.task("lesion_classification")
    segmentation = params.task("lesion_segmentation")
    detection = replace(segmentation, kind="detection", mode="frozen_stem", lr=0.005,
                        batch_size=2, image_size=64, epochs=args.detection_epochs)
    manifest = load_manifest(Path("data") / classification.dataset)
    split = load_split(Path("data") / classification.dataset)
    masks_root = Path(params.dataset(classification.dataset).root)
    report = {"machine": f"{os.cpu_count()} cores", "backbone": card.title,
              "images": int((manifest.videos["status"] == "ok").sum()),
              "folds": int(split["fold"].max()) + 1}
    with tempfile.TemporaryDirectory(prefix="image-tasks-") as scratch:
        for name, run in (
                ("classification", lambda out: classify(classification, manifest, split, card,
                                                        weights, out)),
                ("segmentation", lambda out: segment(segmentation, manifest, split,
                                                     masks_root, card, weights, out)),
                ("detection", lambda out: detect(detection, manifest, split, masks_root,
                                                 card, weights, out))):
            started = time.perf_counter()
            metrics = run(Path(scratch) / name)
            task = {"classification": classification, "segmentation": segmentation,
                    "detection": detection}[name]
            report[name] = {"wall_s": round(time.perf_counter() - started, 1),
                            "epochs": task.epochs, "image_size": task.image_size,
                            "mode": task.mode,
                            "headline": metrics.get("binary", {}).get("last_epoch")
                            or metrics["last_epoch"]["pooled"]}
            print(name, report[name], flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
