"""Lesion masks of a segmentation task: found from labels.csv, read, and checked against their
image, one clear error per bad mask (the item is left out, the others are used).

A mask is an image file named by the dataset's labels.csv ``mask`` column (relative to the
labels.csv folder, never leaving it), of its image's exact size, with exactly two values:
background 0 and one foreground value (1 or 255 in practice), and at least one foreground
pixel.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    from pipeline.storage import Location


class MaskError(ValueError):
    """A mask that cannot be used; the message starts with its path."""


def mask_location(masks_root: Location, relative: object) -> Location:
    """Where the ``mask`` column's value points under ``masks_root``, refused if it is empty
    or leaves the folder."""
    if not isinstance(relative, str) or not relative.strip():
        raise MaskError(f"{masks_root}: no mask named for this image (empty mask column)")
    parts = PurePosixPath(relative.strip().replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts:
        raise MaskError(f"{relative}: mask path leaves the mask folder {masks_root}; not read")
    return masks_root / parts.as_posix()


def read_mask(path: Location, size: tuple[int, int]) -> np.ndarray:
    """The mask as a boolean (height, width) array; ``size`` is its image's (width, height)."""
    if not path.is_file():
        raise MaskError(f"{path}: no such mask file")
    try:
        with path.open("rb") as handle, Image.open(handle) as image:
            if image.size != tuple(size):
                raise MaskError(f"{path}: mask is {image.size[0]}x{image.size[1]} px, its "
                                f"image {size[0]}x{size[1]}")
            values = np.asarray(image.convert("L") if image.mode not in ("L", "1", "I", "I;16")
                                else image)
    except (UnidentifiedImageError, OSError) as error:
        raise MaskError(f"{path}: not a readable image ({error})") from error
    levels = np.unique(values)
    if levels.size > 2 or levels[0] != 0:
        shown = ", ".join(str(level) for level in levels[:6]) + (", ..." if levels.size > 6
                                                                  else "")
        raise MaskError(f"{path}: not a binary mask (values {shown}; expected background 0 "
                        "and one foreground value)")
    if levels.size == 1:
        raise MaskError(f"{path}: empty mask (no foreground pixel)")
    return values > 0


def checked_masks(items: pd.DataFrame, masks_root: Location
                  ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """For each item (``video_id``, ``mask``, ``width``, ``height``): its mask, or its error."""
    masks, errors = {}, {}
    for row in items.itertuples():
        try:
            masks[row.video_id] = read_mask(mask_location(masks_root, row.mask),
                                            (int(row.width), int(row.height)))
        except MaskError as error:
            errors[row.video_id] = f"{row.source_path}: {error}"
    return masks, errors
