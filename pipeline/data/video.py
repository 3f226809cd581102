"""Video decoding with PyAV: open any container FFmpeg reads, stream the frames kept at ``n`` fps.

Only kept frames are converted to RGB (converting every frame costs +63 %), frames are streamed
(memory does not grow with clip length), and the container is probed, never trusted by extension:
``.avi`` files that are really MP4, ``stream.frames == 0``, streams starting at 0.54 s and
variable frame rates are all normal input here. Frames are stored as they are displayed: a
rotation in the stream's display matrix (phone recordings) is applied.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
from av.video.reformatter import VideoReformatter
from PIL import Image

from pipeline.data.sampling import SlotSampler

# Decoders whose skip_frame=NONREF skips only frames no other frame references, and whose
# skipping was checked to leave every kept frame bit-identical (synthetic clips, POCUS).
NONREF_SKIPPING_CODECS = frozenset({"h264", "mpeg2video", "mpeg4"})
# Display-matrix rotations (degrees counter-clockwise, as PyAV reports them) -> PIL transposes.
ROTATIONS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
             270: Image.Transpose.ROTATE_270}
DICOM_MAGIC = (128, b"DICM")  # offset and bytes of the DICOM Part 10 preamble's magic


def is_dicom(path: Path) -> bool:
    """Whether the file carries the DICOM Part 10 magic (``DICM`` at byte 128)."""
    offset, magic = DICOM_MAGIC
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read(len(magic)) == magic


class DecodeError(Exception):
    """A video that cannot be decoded; ``status`` is a short machine-readable category."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StreamInfo:
    """What the container says about its first video stream (header values, may be wrong)."""

    container: str
    codec: str
    width: int
    height: int
    nominal_fps: float | None
    stream_duration_s: float | None     # declared by the stream header (mp4/mov: exact)
    container_duration_s: float | None  # FFmpeg's container-level figure (may be an estimate)


@dataclass(frozen=True)
class SampledFrame:
    """One kept frame: its index in the stream, its time relative to the first frame, the RGB
    image."""

    frame_index: int
    timestamp: Fraction
    pts: int | None
    image: Image.Image


def _rational(value: object) -> Fraction | None:
    """PyAV < 19 returns None for unknown rationals, >= 19 a falsy AVRational(0, 1)."""
    if not value:
        return None
    return Fraction(value.numerator, value.denominator)  # type: ignore[attr-defined]


def scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Size with the shorter side set to ``short_side`` (aspect kept; None or larger = native)."""
    if not short_side or min(width, height) <= short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resized(image: Image.Image, short_side: int | None) -> Image.Image:
    """``image`` with its shorter side at ``short_side`` (box filter: area averaging)."""
    size = scaled_size(image.width, image.height, short_side)
    return image if size == image.size else image.resize(size, Image.Resampling.BOX)


class VideoDecoder:
    """An open video file; use as a context manager.

    Raises :class:`DecodeError` on open for files FFmpeg cannot read or that have no video stream.
    FFmpeg's default (slice) threading is used, not frame threading: with one decode process
    per core, frame threading was slower (POCUS, 2 processes on 2 cores: 5.0 s vs 4.4 s), and
    it hides some decode errors (a cut-short stream then ends silently instead of failing),
    which would make a video's status depend on the number of workers.
    """

    still = False  # a one-frame item (an image) rather than a clip

    def __init__(self, path: str | Path, data: BinaryIO | None = None) -> None:
        """Open ``path``, or the bytes of ``data`` (e.g. a bitstream taken out of a DICOM file)
        if given; ``path`` then only names the source."""
        self.path = Path(path)
        self.frames = 0  # frames of the stream passed so far, decoded or skipped
        self.skipped_frames = 0  # of those, skipped undecoded (non-reference, not keepable)
        self._sampler: SlotSampler | None = None
        self._reformatter = VideoReformatter()
        self.rotation = 0  # of the display matrix, known once a frame is decoded
        if data is None and self.path.stat().st_size == 0:
            raise DecodeError("empty", "empty file (0 bytes)")
        try:
            self._container = av.open(data if data is not None else str(self.path),
                                      metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError) as error:
            raise DecodeError("unreadable", "not a readable video container (not a video, or cut "
                                            f"short before its index): {error}") from error
        if not self._container.streams.video:
            self._container.close()
            raise DecodeError("no_video_stream", "container has no video stream")
        self._stream = self._container.streams.video[0]
        context = self._stream.codec_context
        rate = _rational(self._stream.guessed_rate) or _rational(self._stream.average_rate)
        time_base = self._time_base = _rational(self._stream.time_base)
        duration = (float(self._stream.duration * time_base)
                    if self._stream.duration and time_base else None)
        self.info = StreamInfo(
            container=self._container.format.name,
            codec=context.name,
            width=context.width,
            height=context.height,
            nominal_fps=float(rate) if rate else None,
            stream_duration_s=duration,
            container_duration_s=(self._container.duration / av.time_base
                                  if self._container.duration else None),
        )
        self._fallback_interval = 1 / rate if rate else None

    @property
    def decoded_frames(self) -> int:
        """Frames actually decoded so far."""
        return self.frames - self.skipped_frames

    @property
    def last_timestamp(self) -> Fraction | None:
        """Time of the last decoded frame, relative to the first (after :meth:`sample`)."""
        return None if self._sampler is None else self._sampler.last_time

    def _rgb(self, frame: av.VideoFrame, short_side: int | None) -> Image.Image:
        """The frame as an RGB image, converted by one scaler context reused for the video
        (``frame.to_image()`` builds a new one per call: 3x slower on POCUS frames)."""
        width, height = scaled_size(frame.width, frame.height, short_side)
        image = self._reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                           interpolation="AREA", threads=1).to_image()
        self.rotation = round(frame.rotation) % 360
        if self.rotation in ROTATIONS:
            return image.transpose(ROTATIONS[self.rotation])
        if self.rotation:
            raise DecodeError("unsupported", f"display rotation of {self.rotation} degrees "
                                             "(only multiples of 90 are supported)")
        return image

    def __enter__(self) -> VideoDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def sample(self, rate: float, max_frames: int | None = None, short_side: int | None = None,
               skip_nonref: bool = True) -> Iterator[SampledFrame]:
        """Yield the frames kept by the slot rule (:mod:`pipeline.data.sampling`), as RGB images.

        Stops decoding once ``max_frames`` frames are kept. With ``skip_nonref`` (codecs in
        :data:`NONREF_SKIPPING_CODECS`), a packet whose frame cannot be kept is sent with
        ``skip_frame=NONREF``: the decoder skips it if no other frame references it (typically
        B-frames), otherwise decodes it as usual; kept frames, their indices and ``frames`` are
        the same as without skipping (-9 % decode time on POCUS, 21 % of frames skipped).
        Raises :class:`DecodeError` when the stream breaks (message says how far it got).
        """
        sampler = self._sampler = SlotSampler(
            rate, self._time_base or Fraction(1), self._fallback_interval)
        context = self._stream.codec_context
        skipping = skip_nonref and context.name in NONREF_SKIPPING_CODECS
        skipped: list[int] = []  # pts of skipped packets whose frame has not (yet) come out
        kept = decoded = 0
        try:
            for packet in self._container.demux(self._stream):
                pts = packet.pts if packet.size and not packet.is_discard else None
                if skipping and pts is not None:
                    skip = sampler.will_drop(pts)
                    sampler.announce(pts)
                    context.skip_frame = "NONREF" if skip else "DEFAULT"
                    if skip:
                        bisect.insort(skipped, pts)
                for frame in context.decode(packet):
                    if skipped and frame.pts is not None:
                        position = bisect.bisect_left(skipped, frame.pts)
                        if position < len(skipped) and skipped[position] == frame.pts:
                            del skipped[position]  # a reference frame: decoded after all
                        self.skipped_frames = position  # skipped frames before this one
                    index = decoded + self.skipped_frames  # the frame's place in the stream
                    decoded += 1
                    self.frames = index + 1
                    timestamp = sampler.offer(frame.pts)
                    if timestamp is None:
                        continue
                    yield SampledFrame(index, timestamp, frame.pts, self._rgb(frame, short_side))
                    kept += 1
                    if max_frames and kept >= max_frames:
                        return
            self.skipped_frames = len(skipped)
            self.frames = decoded + len(skipped)
        except av.error.FFmpegError as error:
            where = "at the first frame"
            if self.frames:
                declared = self.info.stream_duration_s
                where = (f"after {self.frames} frames ({float(sampler.last_time):.2f} s"
                         + (f" of {declared:.2f} s declared" if declared else "")
                         + "; corrupt or cut short)")
            raise DecodeError("decode_error", f"decoding failed {where}: {error}") from error
