"""Scan-area masks: where the ultrasound image lives in a clip's frames.

Burned-in text (dates, names, settings), depth rulers, logos and vendor UI sit outside the scan
sector and do not change from frame to frame. They can identify the source, and they hand
contrastive learning a shortcut (two frames of one clip share them). Per clip:

* **clips** (at least :data:`MIN_CLIP_FRAMES` kept frames): pixels whose grey value varies over
  the kept frames are the image; the mask is the convex hull of the largest connected region
  that varies, with any other varying region at least a tenth of its size (scan sectors and
  rectangles are convex; a dark band can split one), after an opening that drops isolated
  noisy pixels;
* **stills and very short clips**: an intensity and shape rule on the first frame: the largest
  region whose local mean (5 px window) is brighter than the dark background, after an erosion
  by the window (so the mean's spread cannot join the image to nearby text), and its convex
  hull.

``decode.scan_area``: ``off`` (default), ``mask`` (store the mask only), ``crop`` (crop frames to
the mask's box), ``crop_and_mask`` (crop and zero every pixel outside the mask).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

MIN_CLIP_FRAMES = 3
MIN_VARIATION = 1.5  # grey levels (std over frames) below which a pixel counts as static
SECOND_REGION = 0.1  # a varying region this share of the largest one's size is image too
BACKGROUND = 12      # local mean grey level below which a still's pixel is background
STILL_WINDOW = 5     # px: the local mean's window (wider than speckle, text strokes, ticks)


class VariationStats:
    """Running per-pixel mean and variance of grey values over a clip's frames (flat memory:
    two float64 planes), and the first frame for the still rule."""

    def __init__(self) -> None:
        self.count = 0
        self.first: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._squares: np.ndarray | None = None

    def add(self, image: Image.Image) -> None:
        grey = np.asarray(image.convert("L"), dtype=np.float64)
        if self._sum is None:
            self.first = grey.astype(np.uint8)
            self._sum, self._squares = np.zeros_like(grey), np.zeros_like(grey)
        if grey.shape != self._sum.shape:  # a size change mid-clip: keep the first size only
            return
        self.count += 1
        self._sum += grey
        self._squares += grey * grey

    @property
    def std(self) -> np.ndarray:
        mean = self._sum / self.count
        return np.sqrt(np.maximum(self._squares / self.count - mean * mean, 0))


@dataclass(frozen=True)
class ScanArea:
    """A clip's mask (True = image), its box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) and the
    share of the frame it covers; ``rule`` says how it was found."""

    mask: np.ndarray
    rule: str

    @property
    def box(self) -> tuple[int, int, int, int]:
        rows, cols = np.nonzero(self.mask)
        if rows.size == 0:
            return 0, 0, self.mask.shape[1], self.mask.shape[0]
        return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1

    @property
    def fraction(self) -> float:
        return float(self.mask.mean())

    def png(self) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(self.mask.astype(np.uint8) * 255).save(buffer, format="PNG")
        return buffer.getvalue()

    def apply(self, image: Image.Image, mode: str) -> Image.Image:
        """``image`` cropped to the box (``crop``), and with everything outside the mask zeroed
        (``crop_and_mask``); unchanged for ``mask``. The mask is scaled to the image's size
        if the frames were stored smaller than they were analysed."""
        if mode == "mask":
            return image
        mask = Image.fromarray(self.mask.astype(np.uint8) * 255)
        if mask.size != image.size:
            mask = mask.resize(image.size, Image.Resampling.NEAREST)
        box = mask.getbbox() or (0, 0, *image.size)
        if mode == "crop_and_mask":
            image = Image.composite(image, Image.new(image.mode, image.size), mask)
        return image.crop(box)


def _largest_region(binary: np.ndarray, share: float = 1.0) -> np.ndarray:
    """The largest connected region, with every other region at least ``share`` of its
    size (an image split in two by a dark band, or a dual view, keeps both parts)."""
    labels, count = ndimage.label(binary)
    if count == 0:
        return binary
    sizes = ndimage.sum_labels(binary, labels, index=range(1, count + 1))
    return np.isin(labels, 1 + np.flatnonzero(sizes >= share * sizes.max()))


def _convex_hull(region: np.ndarray) -> np.ndarray:
    """The filled convex hull of a region's pixels (pixel squares, so edges are kept)."""
    rows, cols = np.nonzero(region)
    if rows.size < 3:
        return region
    corners = np.concatenate([np.stack([cols + dx, rows + dy], 1)
                              for dx in (0, 1) for dy in (0, 1)])
    try:
        hull = ConvexHull(corners)
    except QhullError:  # a line of pixels
        return region
    canvas = Image.new("L", (region.shape[1], region.shape[0]))
    ImageDraw.Draw(canvas).polygon([tuple(point) for point in corners[hull.vertices]], fill=255)
    return (np.asarray(canvas) > 0) | region


def estimate(stats: VariationStats) -> ScanArea:
    """The clip's scan area (the rule of the module docstring that fits its length)."""
    if stats.count >= MIN_CLIP_FRAMES:
        std = stats.std
        varying = ndimage.binary_opening(std > MIN_VARIATION, np.ones((3, 3), bool))
        if varying.any():
            return ScanArea(_convex_hull(_largest_region(varying, SECOND_REGION)), "temporal")
    # speckle is dark in places: judge brightness on a local mean; erode before choosing the
    # largest region, so the mean's spread never bridges the gap to nearby text
    square = np.ones((STILL_WINDOW, STILL_WINDOW), bool)
    local = ndimage.uniform_filter(stats.first.astype(np.float64), STILL_WINDOW)
    bright = _largest_region(ndimage.binary_erosion(local > BACKGROUND, square))
    if not bright.any():
        return ScanArea(np.ones_like(stats.first, dtype=bool), "whole_frame")
    return ScanArea(_convex_hull(_largest_region(bright)), "intensity")
