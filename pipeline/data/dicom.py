"""DICOM ultrasound (cine loops and single frames) -> timed RGB frames, nothing identifying kept.

Pixel data is decoded by pydicom one kept frame at a time (``iter_pixels`` with the kept
indices: memory flat in clip length, frames that cannot be kept never decoded): native, RLE
(pydicom), JPEG Baseline/Extended and JPEG 2000 (Pillow), JPEG-LS (pyjpegls). Encapsulated
video (MPEG-2, H.264, HEVC transfer syntaxes) is streamed fragment by fragment from the file
to PyAV and decoded like any video (pydicom issue #1390's route).

Frame times: Frame Time Vector (0018,1065), else Frame Time (0018,1063),
else Recommended Display Frame Rate (0008,2144) or Cine Rate (0018,0040), else
``decode.assume_fps``; none of them is status ``no_timing``. The 3 fps rule then applies by time,
as for videos. Colour: YBR to RGB (pydicom), MONOCHROME1 inverted, PALETTE COLOR resolved,
more than 8 bits scaled to 8.

Privacy: only the allow-listed technical tags of :data:`TECHNICAL_TAGS` leave the file (into
``videos.parquet``'s ``source_tags``); names, ids, dates and UIDs are never read into any output.
:func:`patient_group` turns Patient ID into a salted hash for the default split group.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pydicom
import pydicom.encaps
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, get_decoder, iter_pixels
from pydicom.uid import MPEGTransferSyntaxes

from pipeline.data.sampling import kept_indices
from pipeline.data.sources import SourceFile
from pipeline.data.video import (
    DecodeError,
    SampledFrame,
    StreamInfo,
    VideoDecoder,
    is_dicom,
    resized,
)

# What may be copied out of a DICOM: technical facts only (never names, ids, dates or UIDs
# other than the SOP class and transfer syntax, which name a standard, not a patient).
TECHNICAL_TAGS = ("SOPClassUID", "Modality", "Manufacturer", "ManufacturerModelName", "Rows",
                  "Columns", "NumberOfFrames", "PhotometricInterpretation", "BitsStored",
                  "FrameTime", "RecommendedDisplayFrameRate", "CineRate")


def _header(path: Path) -> pydicom.Dataset:
    """The file's data set, large values (the pixel data) left unread until used."""
    try:
        return pydicom.dcmread(path, defer_size=1024)
    except (InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise DecodeError("unreadable", f"not a readable DICOM file: {error}") from error


def patient_group(path: Path, salt: str) -> str | None:
    """``patient-<16 hex>``: a salted SHA-256 of the file's Patient ID (None without one), the
    default split group of a DICOM, so one patient's clips stay on one side while the id
    itself never appears anywhere."""
    try:
        with path.open("rb") as handle:  # on disk or on object storage
            patient = pydicom.dcmread(handle, stop_before_pixels=True,
                                      specific_tags=["PatientID"]).get("PatientID")
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None
    if not patient:
        return None
    digest = hashlib.sha256(f"{salt}\0{patient}".encode("utf-8", "backslashreplace"))
    return f"patient-{digest.hexdigest()[:16]}"


def with_patient_groups(sources: list[SourceFile], salt: str) -> list[SourceFile]:
    """DICOM entries that labels.csv gives no group get :func:`patient_group`'s."""
    grouped = []
    for source in sources:
        group = None
        if source.ok and not source.labels.get("group") and source.path.is_file() \
                and is_dicom(source.path):
            group = patient_group(source.path, salt)
        grouped.append(source if group is None
                       else replace(source, labels={**source.labels, "group": group}))
    return grouped


def technical_tags(header: pydicom.Dataset) -> str:
    """The allow-listed tags as JSON (the transfer syntax included)."""
    values: dict[str, object] = {"TransferSyntaxUID": str(header.file_meta.TransferSyntaxUID)}
    for keyword in TECHNICAL_TAGS:
        value = header.get(keyword)
        if value is not None and value != "":
            values[keyword] = value if isinstance(value, (int, float)) else str(value)
    return json.dumps(values, sort_keys=True)


def frame_times(header: pydicom.Dataset, frames: int, assume_fps: float | None
                ) -> list[Fraction]:
    """Each frame's time in seconds from the first (see the module docstring for the order)."""
    if frames == 1:
        return [Fraction(0)]
    vector = header.get("FrameTimeVector")
    if vector is not None and len(vector) >= frames:
        increments = [Fraction(str(value)) for value in list(vector)[:frames]]
        times, total = [], Fraction(0)
        for index, increment in enumerate(increments):
            total += increment if index else 0  # the first increment is 0 by definition
            times.append(total / 1000)
        return times
    interval_ms = None
    if header.get("FrameTime"):
        interval_ms = Fraction(str(header.FrameTime))
    else:
        for keyword in ("RecommendedDisplayFrameRate", "CineRate"):
            if header.get(keyword):
                interval_ms = Fraction(1000) / Fraction(str(header.get(keyword)))
                break
    if interval_ms is None and assume_fps:
        interval_ms = Fraction(1000) / Fraction(assume_fps).limit_denominator(1_000_000)
    if not interval_ms or interval_ms <= 0:
        raise DecodeError("no_timing", "a multi-frame DICOM without Frame Time Vector, Frame "
                                       "Time, Recommended Display Frame Rate or Cine Rate; set "
                                       "decode.assume_fps to give it a rate")
    return [interval_ms * index / 1000 for index in range(frames)]


def to_rgb(array: np.ndarray, header: pydicom.Dataset) -> Image.Image:
    """One decoded frame as an 8-bit RGB image (YBR was converted to RGB by pydicom)."""
    photometric = str(header.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        array = apply_color_lut(array, header)
    bits = int(header.get("BitsStored", 8) or 8)
    if array.dtype != np.uint8:
        top = float(2 ** bits - 1) if bits > 8 else 255.0
        if array.dtype.kind == "i":
            array = array.astype(np.float64) - array.min()
        array = np.clip(np.rint(array.astype(np.float64) * 255.0 / top), 0, 255).astype(np.uint8)
    if photometric == "MONOCHROME1":
        array = 255 - array
    if array.ndim == 2:
        return Image.fromarray(array, "L").convert("RGB")
    return Image.fromarray(array[..., :3], "RGB")


class FragmentStream(io.RawIOBase):
    """The bitstream of encapsulated video pixel data, read fragment by fragment from the file
    (the Basic Offset Table skipped): PyAV decodes it without the whole clip in memory."""

    def __init__(self, path: Path, value_offset: int) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed with the stream
        self._file.seek(value_offset)
        pydicom.encaps.parse_basic_offsets(self._file)
        self._fragments = pydicom.encaps.generate_fragments(self._file)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:
        while not self._pending:
            self._pending = next(self._fragments, None)
            if self._pending is None:
                self._pending = b""
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


class DicomDecoder:
    """The :class:`~pipeline.data.video.VideoDecoder` interface over a DICOM file."""

    def __init__(self, path: Path, assume_fps: float | None = None) -> None:
        self.path = Path(path)
        self.rotation = 0
        self.frames = self.decoded_frames = 0
        self.last_timestamp: Fraction | None = None
        self._video: VideoDecoder | None = None
        header = self.header = _header(self.path)
        syntax = header.file_meta.get("TransferSyntaxUID")
        if syntax is None:
            raise DecodeError("unreadable", "not a readable DICOM file: no transfer syntax in "
                                            "its meta information")
        self.tags = technical_tags(header)
        if "PixelData" not in header:
            raise DecodeError("no_pixel_data", "a DICOM file without pixel data (a report or "
                                               "a structured document?)")
        if syntax in MPEGTransferSyntaxes:
            offset = header.get_item("PixelData", keep_deferred=True).value_tell
            self._stream = FragmentStream(self.path, offset)
            try:
                self._video = VideoDecoder(self.path, data=self._stream)
            except BaseException:
                self._stream.close()
                raise
            self.info = self._video.info
            return
        decoder = get_decoder(syntax) if syntax.is_compressed else None
        if decoder is not None and not decoder.is_available:
            options = "; ".join(decoder.missing_dependencies) or "a pydicom decoder plugin"
            raise DecodeError("unsupported", f"transfer syntax {syntax.name} ({syntax}) has no "
                                             f"decoder installed; one of: {options} (mind the "
                                             "licence: pylibjpeg-libjpeg is GPLv3)")
        self.count = int(header.get("NumberOfFrames", 1) or 1)
        self._check_length(syntax)
        self.times = frame_times(header, self.count, assume_fps)
        interval = (self.times[-1] / (self.count - 1)) if self.count > 1 else None
        self.info = StreamInfo(
            container="dicom", codec=syntax.name, width=int(header.get("Columns", 0)),
            height=int(header.get("Rows", 0)),
            nominal_fps=float(1 / interval) if interval else None,
            stream_duration_s=float(self.times[-1] + interval) if interval else None,
            container_duration_s=None)
        self._interval = interval

    @property
    def still(self) -> bool:
        """A single-frame DICOM is a still image."""
        return self._video is None and self.count == 1

    def _check_length(self, syntax: pydicom.uid.UID) -> None:
        """Native pixel data must hold NumberOfFrames frames (encapsulated data is checked
        frame by frame while decoding)."""
        if syntax.is_compressed:
            return
        header = self.header
        samples = int(header.get("SamplesPerPixel", 1))
        bits = int(header.get("BitsAllocated", 8))
        frame_bytes = int(header.Rows) * int(header.Columns) * samples * bits // 8
        length = header.get_item("PixelData", keep_deferred=True).length  # not read
        held = length // frame_bytes if frame_bytes else 0
        if held < self.count:
            raise DecodeError("truncated", f"pixel data holds {held} of the {self.count} frames "
                                           "NumberOfFrames declares (cut short?)")
        if held > self.count:
            raise DecodeError("inconsistent", f"NumberOfFrames says {self.count} but the pixel "
                                              f"data holds {held} frames")

    def __enter__(self) -> DicomDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
            self._stream.close()

    def sample(self, rate: float, max_frames: int | None = None, short_side: int | None = None,
               skip_nonref: bool = True) -> Iterator[SampledFrame]:
        """The frames kept by the slot rule; only those are decoded."""
        if self._video is not None:
            yield from self._sample_video(rate, max_frames, short_side, skip_nonref)
            return
        kept = [(index, self.times[index])  # times start at 0: a frame's time is its stamp
                for index in kept_indices(self.times, rate, self._interval)][:max_frames or None]
        self.frames = kept[-1][0] + 1 if max_frames and len(kept) == max_frames else self.count
        self.last_timestamp = self.times[self.frames - 1]
        try:
            arrays = iter_pixels(self.path, indices=[index for index, _ in kept])
            for (index, stamp), array in zip(kept, arrays, strict=True):
                image = resized(to_rgb(array, self.header), short_side)
                self.decoded_frames += 1
                yield SampledFrame(index, stamp, None, image)
        except DecodeError:
            raise
        except Exception as error:  # noqa: BLE001 - pydicom and its plugins raise many kinds
            raise DecodeError("decode_error", f"pixel data failed after {self.decoded_frames} "
                                              f"of {len(kept)} kept frames: {error}") from error

    def _sample_video(self, rate: float, max_frames: int | None, short_side: int | None,
                      skip_nonref: bool) -> Iterator[SampledFrame]:
        video = self._video
        yield from video.sample(rate, max_frames, short_side, skip_nonref)
        self.frames, self.decoded_frames = video.frames, video.decoded_frames
        self.last_timestamp, self.rotation = video.last_timestamp, video.rotation
