"""Deterministic synthetic lung-ultrasound clips: the embedded sample data of the pipeline.

Each clip is drawn in the (depth, lateral) coordinates of a convex probe and scan-converted into
a sector image: speckle (Rayleigh, laterally elongated), chest-wall layers, a bright pleural line
whose texture slides laterally with breathing, optional rib shadows, and one class pattern:

* ``regular``: A-lines, horizontal reverberations of the pleura at multiples of its depth;
* ``covid``: B-lines, bright vertical comet tails from the pleura that move with the sliding,
  an irregular pleura and weak or no A-lines;
* ``pneumonia``: a subpleural consolidation, tissue-like (hepatised) speckle with bright
  punctate air bronchograms and a ragged deep border.

Strengths, counts, depths, gain, noise and rib shadows vary per clip, so a classifier has a real
but non-trivial signal. Clips are written as real video files with PyAV in several containers
(mp4/h264, avi/MJPEG, animated gif, mpeg-PS/mpeg2), at the pretraining sub-datasets' frame rates
(17, 19, 23, 28, 30 fps) and several sizes, with a ``labels.csv`` in the POCUS schema.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.atomic import atomic_path

CLASSES = ("covid", "pneumonia", "regular")
PREFIX = {"covid": "Cov", "pneumonia": "Pneu", "regular": "Reg"}
FRAME_RATES = (17, 19, 23, 28, 30)
SIZES = ((160, 160), (192, 176), (144, 160), (208, 208))
LICENSE = "CC0-1.0 (synthetic)"


@dataclass(frozen=True)
class VideoFormat:
    extension: str
    container: str
    codec: str
    pix_fmt: str
    options: tuple[tuple[str, str], ...] = ()
    frame_rates: tuple[int, ...] = FRAME_RATES


FORMATS = (
    # Constant QP: x264's CRF rate control (mb-tree/AQ, SIMD) gave different bytes run to run.
    VideoFormat(".mp4", "mp4", "libx264", "yuv420p",
                (("qp", "20"), ("preset", "veryfast"), ("threads", "1"))),
    VideoFormat(".avi", "avi", "mjpeg", "yuvj420p", (("q:v", "3"),)),
    VideoFormat(".gif", "gif", "gif", "gray"),
    # MPEG-2 allows only the broadcast rates.
    VideoFormat(".mpeg", "mpeg", "mpeg2video", "yuv420p", (("q:v", "3"), ("bf", "2")),
                (24, 25, 30)),
)


@dataclass(frozen=True)
class ClipSpec:
    """Everything that defines one clip; drawn from a seeded generator by :func:`clip_specs`."""

    label: str
    patient: int
    clip: int
    fps: int
    seconds: float
    size: tuple[int, int]  # height, width
    video_format: VideoFormat
    seed: int

    @property
    def name(self) -> str:
        return (f"{PREFIX[self.label]}_patient{self.patient:02d} "
                f"clip+({self.clip}){self.video_format.extension}")


class _Sector:
    """Convex-probe geometry: per-pixel depth ``d`` and lateral ``u`` in [0,1] x [-1,1]."""

    def __init__(self, height: int, width: int, rng: np.random.Generator) -> None:
        half_angle = rng.uniform(0.45, 0.62)  # radians
        apex_above = rng.uniform(0.15, 0.35) * height
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        dx, dy = x - (width - 1) / 2, y + apex_above
        radius, angle = np.hypot(dx, dy), np.arctan2(dx, dy)
        r_min, r_max = apex_above * 1.05, apex_above + height * 0.97
        self.depth = (radius - r_min) / (r_max - r_min)
        self.lateral = angle / half_angle
        self.mask = (self.depth >= 0) & (self.depth <= 1) & (np.abs(self.lateral) <= 1)


def _speckle(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Rayleigh speckle, laterally correlated (ultrasound speckle is elongated sideways)."""
    field = rng.rayleigh(1.0, size=(rows, cols + 4)).astype(np.float32)
    field = (field[:, :-4] + field[:, 1:-3] + field[:, 2:-2] + field[:, 3:-1]) / 4
    return field / field.mean()


def _band(depth: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((depth - center) / width) ** 2)


class _ClipRenderer:
    """Draws the frames of one clip (uint8 grayscale) from its spec.

    Everything below the chest wall (pleura and lung artefacts) is drawn once into a texture in
    (depth, lateral) coordinates; breathing slides it sideways, frame by frame, by lookup.
    """

    ROWS, COLS = 256, 512  # texture grid; lateral [-1, 1] spans half of it, the rest wraps

    def __init__(self, spec: ClipSpec) -> None:
        rng = np.random.default_rng(spec.seed)
        self.spec, self.rng = spec, rng
        self.sector = _Sector(*spec.size, rng)
        self.pleura_depth = rng.uniform(0.18, 0.32)
        self.gain = rng.uniform(0.75, 1.15)
        self.noise = rng.uniform(0.04, 0.12)
        self.slide_amplitude = rng.uniform(0.02, 0.07)  # lateral units
        self.breath_period = rng.uniform(2.5, 4.5)
        self.phase = rng.uniform(0, 2 * np.pi)
        d, u = self.sector.depth, self.sector.lateral
        self.rows = np.clip((d * (self.ROWS - 1)).astype(np.int32), 0, self.ROWS - 1)
        self.wall = self._chest_wall() * self.sector.mask
        self.texture = self._lung_texture(spec.label)
        self.below_wall = (d >= self.pleura_depth - 0.04) & self.sector.mask
        ribs = rng.uniform(-0.9, 0.9, size=rng.integers(0, 3))
        self.shadow = np.ones_like(d)
        for rib in ribs:  # rib: bright cap at the pleura level, acoustic shadow below
            across = np.abs(u - rib) < 0.12
            self.shadow[across & (d > self.pleura_depth - 0.02)] = 0.12
            self.wall += 0.9 * across * _band(d, self.pleura_depth - 0.03, 0.01)
        self.tgc = self.gain * (1 + 0.4 * d)  # time-gain compensation

    def _chest_wall(self) -> np.ndarray:
        d, rng = self.sector.depth, self.rng
        layers = sum(rng.uniform(0.3, 0.8) * _band(d, c, rng.uniform(0.01, 0.03))
                     for c in rng.uniform(0.03, self.pleura_depth - 0.03, size=3))
        tissue = _speckle(rng, self.ROWS, self.COLS)
        cols = ((self.sector.lateral + 1) / 4 * (self.COLS - 1)).astype(np.int32) % self.COLS
        return (0.35 + layers) * (d < self.pleura_depth) * tissue[self.rows, cols]

    def _lung_texture(self, label: str) -> np.ndarray:
        rng = self.rng
        d = np.linspace(0, 1, self.ROWS, dtype=np.float32)[:, None]
        u = (np.arange(self.COLS, dtype=np.float32) * 4 / (self.COLS - 1) - 1)[None, :]
        speckle = _speckle(rng, self.ROWS, self.COLS)
        pleura = self.pleura_depth
        irregularity = rng.uniform(0.4, 0.9) if label == "covid" else rng.uniform(0, 0.3)
        ragged = (1 - irregularity * (speckle[5:6, :] - 1).clip(-1, 1)).clip(0.1, 2)
        texture = 1.6 * _band(d, pleura, 0.012) * ragged * speckle
        lung = 0.12 * speckle
        a_lines = {"regular": rng.uniform(0.35, 0.8), "covid": rng.uniform(0, 0.2),
                   "pneumonia": rng.uniform(0, 0.35)}[label]
        for k in (2, 3, 4):
            lung = lung + a_lines / (k - 1) * _band(d, k * pleura, 0.01)
        count = int(rng.integers(1, 6)) if label == "covid" else int(rng.random() < 0.25)
        for _ in range(count):  # B-lines: a few in covid, a faint one sometimes elsewhere
            centre, width = rng.uniform(-0.85, 0.85), rng.uniform(0.03, 0.07)
            strength = rng.uniform(0.4, 1.0) * (1.0 if label == "covid" else 0.35)
            ray = np.exp(-0.5 * ((u - centre) / width) ** 2)
            lung = np.maximum(lung, strength * ray * (0.8 + 0.2 * speckle))
        if label == "pneumonia":
            lung = self._consolidation(lung, d, u, speckle)
        return texture + lung * (d >= pleura)

    def _consolidation(self, lung, d, u, speckle):
        rng, pleura = self.rng, self.pleura_depth
        centre, half_width = rng.uniform(-0.5, 0.5), rng.uniform(0.25, 0.7)
        extent = rng.uniform(0.15, 0.45)
        lateral = np.abs(u - centre) / half_width
        border = pleura + extent * (1 - lateral ** 2).clip(0) * (0.85 + 0.15 * speckle[::-1])
        inside = (lateral < 1) & (d < border)
        lung = np.where(inside, 0.45 * speckle, lung)
        for _ in range(12):  # air bronchograms: bright punctate echoes inside
            spot_u = centre + rng.uniform(-1, 1) * half_width
            spot_d = pleura + rng.uniform(0, 1) * extent
            spot = np.exp(-(((u - spot_u) / 0.02) ** 2 + ((d - spot_d) / 0.012) ** 2))
            lung = lung + 0.9 * spot * inside
        return lung

    def frame(self, t: float) -> np.ndarray:
        slide = self.slide_amplitude * np.sin(2 * np.pi * t / self.breath_period + self.phase)
        cols = ((self.sector.lateral + slide + 1) / 4 * (self.COLS - 1)).astype(np.int32)
        image = self.wall + self.texture[self.rows, cols % self.COLS] * self.below_wall
        noise = self.noise * self.rng.standard_normal(image.shape, np.float32)
        pixels = (image * self.shadow * self.tgc + noise) / 1.6 * 255
        return (np.clip(pixels, 0, 255) * self.sector.mask).astype(np.uint8)


def render_frames(spec: ClipSpec, times: Iterable[float] | None = None) -> Iterator[np.ndarray]:
    """The clip's frames (uint8 grayscale, height x width) at ``times`` (default: every frame)."""
    renderer = _ClipRenderer(spec)
    if times is None:
        times = (index / spec.fps for index in range(max(2, round(spec.seconds * spec.fps))))
    for t in times:
        yield renderer.frame(t)


def write_clip(spec: ClipSpec, path: Path) -> None:
    """Render ``spec`` and write it with PyAV (atomically) in its container and codec."""
    fmt = spec.video_format
    with atomic_path(path) as temporary:
        with av.open(str(temporary), "w", format=fmt.container) as output:
            stream = output.add_stream(fmt.codec, rate=Fraction(spec.fps))
            stream.height, stream.width = spec.size
            stream.pix_fmt = fmt.pix_fmt
            stream.options = dict(fmt.options)
            for pixels in render_frames(spec):
                frame = av.VideoFrame.from_ndarray(pixels, format="gray")
                output.mux(stream.encode(frame))
            output.mux(stream.encode(None))


def clip_specs(count: int, seed: int) -> list[ClipSpec]:
    """``count`` clips of patients with 1-3 clips each; each new patient takes the class with the
    fewest clips so far (classes stay balanced); containers, frame rates, durations and sizes
    vary clip by clip."""
    rng = np.random.default_rng(seed)
    specs: list[ClipSpec] = []
    patient = 0
    while len(specs) < count:
        label = min(CLASSES, key=lambda c: sum(spec.label == c for spec in specs))
        patient += 1
        for clip in range(1, min(int(rng.integers(1, 4)), count - len(specs)) + 1):
            video_format = FORMATS[len(specs) % len(FORMATS)]
            specs.append(ClipSpec(
                label=label, patient=patient, clip=clip,
                fps=int(rng.choice(video_format.frame_rates)),
                seconds=float(rng.uniform(1.5, 4.0)),
                size=SIZES[int(rng.integers(len(SIZES)))],
                video_format=video_format,
                seed=int(rng.integers(2**31))))
    return specs


def write_dataset(folder: Path, count: int, seed: int, group_prefix: str,
                  workers: int = 1) -> list[ClipSpec]:
    """Write ``count`` clips into ``folder/videos`` (``workers`` processes; every clip is
    fixed by its spec, so the bytes do not depend on them) and ``folder/labels.csv``."""
    specs = clip_specs(count, seed)
    videos = Path(folder) / "videos"
    paths = [videos / spec.name for spec in specs]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(write_clip, specs, paths, chunksize=8))
    else:
        for spec, path in zip(specs, paths, strict=True):
            write_clip(spec, path)
    with atomic_path(Path(folder) / "labels.csv") as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "probe", "group", "license", "uncertain"])
            for spec in specs:
                writer.writerow([spec.name, spec.label, "convex",
                                 f"{group_prefix}/{spec.patient}", LICENSE, 0])
    return specs
