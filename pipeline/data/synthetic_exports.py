"""Synthetic clips as a hospital or a research set exports them: DICOM cine loops, a frame
folder and still images, each with burned-in overlay text, so ``dvc repro`` on the embedded
sample exercises every input path of the decode stage.

The DICOM files carry a patient name and id (``DOE^JANE``, ``12345678``) and study dates, so a
test can check that none of them reaches any output. Every file is deterministic (UIDs derived
from the clip, fixed dates), written atomically.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from pipeline.atomic import atomic_path
from pipeline.data.synthetic import FORMATS, ClipSpec, clip_specs, render_frames

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
PATIENT_NAME, PATIENT_ID = "DOE^JANE", "12345678"  # must never reach an output
OVERLAY = "GAIN 52  DEPTH 12 cm  C5-1"  # burned-in settings text, as scanners print


MARGIN = (12, 20)  # left/right and top margins of the exported frame around the sector


def _draw_overlay(image: Image.Image) -> None:
    """Settings text in the top margin, a depth ruler in the right one, a logo bottom-left."""
    draw = ImageDraw.Draw(image)
    draw.text((2, 2), OVERLAY, fill=(255, 255, 255))
    for tick in range(MARGIN[1], image.height - 4, 12):
        draw.line([(image.width - 8, tick), (image.width - 3, tick)], fill=(200, 200, 200))
    draw.rectangle([2, image.height - 10, 9, image.height - 3], fill=(0, 160, 220))


def overlay_pixels(size: tuple[int, int]) -> np.ndarray:
    """Where :func:`export_frames` draws its overlay on a frame of ``size`` (width, height)."""
    canvas = Image.new("RGB", size)
    _draw_overlay(canvas)
    return np.asarray(canvas).any(axis=2)


def export_frames(spec: ClipSpec) -> list[Image.Image]:
    """The clip as a scanner exports it: the sector inside black margins, electronic noise
    that changes every frame, and the static overlay of :func:`_draw_overlay`."""
    frames = []
    for index, pixels in enumerate(render_frames(spec)):
        rng = np.random.default_rng([spec.seed, index])
        noisy = 0.9 * pixels + rng.normal(0, 4, pixels.shape) * (pixels > 0)  # unsaturated
        height, width = pixels.shape
        image = Image.new("RGB", (width + 2 * MARGIN[0], height + MARGIN[1]))
        image.paste(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).convert("RGB"),
                    (MARGIN[0], MARGIN[1]))
        _draw_overlay(image)
        frames.append(image)
    return frames


def write_dicom_cine(spec: ClipSpec, path: Path, compressed: bool, timing: str) -> None:
    """A US Multi-frame DICOM of ``spec``: JPEG Baseline in YBR_FULL_422 (``compressed``) or
    native MONOCHROME2, timed by Frame Time or by a Frame Time Vector (``timing``)."""
    frames = export_frames(spec)
    uid = lambda part: generate_uid(entropy_srcs=[path.name, part])  # noqa: E731
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME
    meta.MediaStorageSOPInstanceUID = uid("instance")
    meta.TransferSyntaxUID = JPEGBaseline8Bit if compressed else ExplicitVRLittleEndian
    meta.ImplementationClassUID = uid("implementation")
    data = FileDataset(path.name, {}, file_meta=meta, preamble=b"\0" * 128)
    data.SOPClassUID, data.SOPInstanceUID = US_MULTIFRAME, meta.MediaStorageSOPInstanceUID
    data.StudyInstanceUID, data.SeriesInstanceUID = uid("study"), uid("series")
    data.PatientName, data.PatientID, data.PatientBirthDate = PATIENT_NAME, PATIENT_ID, "19800101"
    data.StudyDate = data.ContentDate = "20260101"
    data.Modality, data.Manufacturer = "US", "uspipe synthetic"
    data.Rows, data.Columns = frames[0].height, frames[0].width
    data.NumberOfFrames = len(frames)
    data.BitsAllocated, data.BitsStored, data.HighBit, data.PixelRepresentation = 8, 8, 7, 0
    interval_ms = 1000 / spec.fps
    if timing == "frame_time":
        data.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
        data.FrameTime = f"{interval_ms:.4f}"
    else:
        data.FrameIncrementPointer = pydicom.tag.Tag("FrameTimeVector")
        data.FrameTimeVector = [0] + [f"{interval_ms:.4f}"] * (len(frames) - 1)
    if compressed:
        data.SamplesPerPixel, data.PhotometricInterpretation = 3, "YBR_FULL_422"
        data.PlanarConfiguration = 0
        encoded = []
        for frame in frames:
            buffer = io.BytesIO()
            frame.save(buffer, format="JPEG", quality=90, subsampling=1)  # 4:2:2
            encoded.append(buffer.getvalue())
        data.PixelData = encapsulate(encoded)
        data["PixelData"].VR = "OB"
        data.LossyImageCompression = "01"
    else:
        data.SamplesPerPixel, data.PhotometricInterpretation = 1, "MONOCHROME2"
        data.PixelData = np.stack([np.asarray(frame.convert("L")) for frame in frames]).tobytes()
    with atomic_path(path) as temporary:
        data.save_as(temporary, enforce_file_format=True)


def write_frame_folder(spec: ClipSpec, folder: Path) -> None:
    """The clip as PNG frames ``frame_1.png``, ``frame_2.png``, ... (natural order matters:
    ``frame_10`` sorts after ``frame_9``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(export_frames(spec), start=1):
        with atomic_path(folder / f"frame_{index}.png") as temporary:
            frame.save(temporary, format="PNG")


def write_still(spec: ClipSpec, path: Path) -> None:
    """The clip's first frame as one image (PNG or JPEG by the suffix)."""
    frame = export_frames(replace(spec, seconds=0.1))[0]
    with atomic_path(path) as temporary:
        frame.save(temporary, format="PNG" if path.suffix == ".png" else "JPEG", quality=92)


def write_exports(folder: Path, seed: int, group_prefix: str) -> list[str]:
    """Add two DICOM cines (JPEG Baseline + Frame Time; native + Frame Time Vector), a frame
    folder and two still images to ``folder/videos`` and rows for them to its labels.csv
    (DICOM rows without a group: their group comes from the hashed Patient ID). Returns the
    new paths."""
    specs = [replace(spec, video_format=FORMATS[0], fps=15, seconds=2.0)
             for spec in clip_specs(5, seed + 1000)]
    videos = Path(folder) / "videos"
    exports = [("hospital/cine_jpeg.dcm", specs[0]), ("hospital/cine_native.dcm", specs[1]),
               ("frames/clip_frames", specs[2]), ("stills/still.png", specs[3]),
               ("stills/still.jpg", specs[4])]
    write_dicom_cine(specs[0], videos / exports[0][0], compressed=True, timing="frame_time")
    write_dicom_cine(specs[1], videos / exports[1][0], compressed=False, timing="vector")
    write_frame_folder(specs[2], videos / exports[2][0])
    for path, spec in exports[3:]:
        (videos / path).parent.mkdir(parents=True, exist_ok=True)
        write_still(spec, videos / path)
    labels = Path(folder) / "labels.csv"
    with open(labels, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for path, spec in exports:
        dicom = path.endswith(".dcm")
        rows.append({"path": path, "label": spec.label, "probe": "convex",
                     "group": "" if dicom else f"{group_prefix}/export-{spec.patient}",
                     "license": "CC0-1.0 (synthetic)", "uncertain": 0,
                     "fps": spec.fps if path.startswith("frames/") else ""})
    columns = list(dict.fromkeys([*rows[0].keys(), "fps"]))
    with atomic_path(labels) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    return [path for path, _ in exports]
