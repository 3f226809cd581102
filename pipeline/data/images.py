"""Image inputs: a still image is a one-frame item; a folder of frames is one clip.

Both expose the :class:`~pipeline.data.video.VideoDecoder` interface, so image datasets (BUSI,
UDIAT-B, thyroid sets) and research sets stored as frame folders go through the same decode
stage, manifests and split as videos. Frames of a folder are taken in natural sort order
(``frame2`` before ``frame10``) at the clip's rate (a ``fps`` column in labels.csv, else
``decode.folder_fps``); the 3 fps rule applies by time, and only kept frames are read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.data.sampling import kept_indices
from pipeline.data.sources import IMAGE_SUFFIXES
from pipeline.data.video import DecodeError, SampledFrame, StreamInfo, resized

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list[object]:
    """Sort key reading digit runs as numbers: ``frame2.png`` < ``frame10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name)]


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def load_rgb(path: Path) -> tuple[Image.Image, str]:
    """An image file as 8-bit RGB, upright (EXIF orientation applied), 16-bit grey scaled;
    and its format (``png``, ``jpeg``, ...)."""
    try:
        with Image.open(path) as opened:
            image_format = (opened.format or "image").lower()
            image = ImageOps.exif_transpose(opened)
            image.load()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DecodeError("unreadable", f"not a readable image: {error}") from error
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(np.rint(array * 255 / top), 0, 255).astype(np.uint8))
    return image.convert("RGB"), image_format


class _ImageReader:
    """What the decode task reads from every reader: counts, times, rotation, context."""

    still = False

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rotation = 0
        self.frames = self.decoded_frames = 0
        self.last_timestamp: Fraction | None = None

    def __enter__(self) -> _ImageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between frames."""


class StillImageReader(_ImageReader):
    """One image file: one frame at t = 0."""

    still = True

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        if self.path.stat().st_size == 0:
            raise DecodeError("empty", "empty file (0 bytes)")
        self.image, image_format = load_rgb(self.path)
        self.info = StreamInfo(container="image", codec=image_format,
                               width=self.image.width, height=self.image.height,
                               nominal_fps=None, stream_duration_s=None,
                               container_duration_s=None)

    def sample(self, rate: float, max_frames: int | None = None, short_side: int | None = None,
               skip_nonref: bool = True) -> Iterator[SampledFrame]:
        self.frames = self.decoded_frames = 1
        self.last_timestamp = Fraction(0)
        yield SampledFrame(0, Fraction(0), None, resized(self.image, short_side))


class FrameFolderReader(_ImageReader):
    """A folder of images, one clip, ``fps`` frames a second in natural name order."""

    def __init__(self, path: Path, fps: float | None) -> None:
        super().__init__(path)
        self.files = sorted((child for child in self.path.iterdir()
                             if child.is_file() and is_image(child)
                             and not child.name.startswith(".")),
                            key=lambda child: natural_key(child.name))
        if not self.files:
            raise DecodeError("empty", "a frame folder without images")
        if not fps or fps <= 0:
            raise DecodeError("no_timing", "a frame folder without a rate: give it a fps column "
                                           "in labels.csv or set decode.folder_fps")
        self.interval = 1 / Fraction(fps).limit_denominator(1_000_000)
        first, _ = load_rgb(self.files[0])
        self.info = StreamInfo(container="frames", codec="images", width=first.width,
                               height=first.height, nominal_fps=float(fps),
                               stream_duration_s=float(len(self.files) * self.interval),
                               container_duration_s=None)

    def sample(self, rate: float, max_frames: int | None = None, short_side: int | None = None,
               skip_nonref: bool = True) -> Iterator[SampledFrame]:
        times = [index * self.interval for index in range(len(self.files))]
        kept = kept_indices(times, rate, self.interval)[:max_frames or None]
        cut = bool(max_frames) and len(kept) == max_frames
        self.frames = kept[-1] + 1 if cut else len(self.files)
        self.last_timestamp = times[self.frames - 1]
        for index in kept:
            try:
                image, _ = load_rgb(self.files[index])
            except DecodeError as error:
                raise DecodeError("decode_error", f"frame {self.files[index].name} (after "
                                                  f"{self.decoded_frames} frames): "
                                                  f"{error}") from error
            self.decoded_frames += 1
            yield SampledFrame(index, times[index], None, resized(image, short_side))
