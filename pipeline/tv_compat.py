"""Import torchvision on CPU-only torch builds (pytorch/vision#9085); import it from here.

The PyPI torchvision wheel is built against CUDA torch. On the CPU torch wheel its C++ extension
(``_C.so``) fails to load, silently, so the operators ``torchvision::nms`` and ``torchvision::qnms``
never exist, and ``torchvision/_meta_registrations.py`` then aborts ``import torchvision`` by
registering fake kernels for them without the ``_has_ops()`` guard its other registrations have.
Defining the two operators (with torchvision's schemas) before the import lets it complete;
``nms`` also gets a plain CPU kernel so ``torch.ops.torchvision.nms`` and
``torchvision.ops.nms`` work (Mask R-CNN needs them; its RoIAlign has a pure-PyTorch fallback).
Where the extension loads (the GPU machines' CUDA builds) nothing is changed.

Usage, everywhere in this project: ``from pipeline.tv_compat import torchvision`` (and
``transforms_v2`` for ``torchvision.transforms.v2``).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util

import numpy as np
import torch

_LIBRARY: torch.library.Library | None = None  # kept alive: registrations die with the object


def _ops_defined() -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018 - the lookup itself is the check
    except (AttributeError, RuntimeError):
        return False
    return True


def _load_extension() -> bool:
    """Load torchvision's ``_C`` extension the way torchvision does; False if it cannot load."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    finder = importlib.machinery.FileFinder(
        spec.submodule_search_locations[0],
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES))
    extension = finder.find_spec("_C")
    if extension is None or extension.origin is None:
        return False
    try:
        torch.ops.load_library(extension.origin)
    except OSError:
        return False
    return _ops_defined()


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy non-maximum suppression, by decreasing score.

    ``boxes`` are (x1, y1, x2, y2); a box is dropped when its IoU with a kept box exceeds
    ``iou_threshold``. The IoU matrix is computed once (NumPy); the greedy pass walks it.
    """
    order = torch.argsort(scores, descending=True, stable=True).numpy()
    ordered = boxes.detach().double().numpy()[order]
    areas = np.clip(ordered[:, 2] - ordered[:, 0], 0, None) * np.clip(
        ordered[:, 3] - ordered[:, 1], 0, None)
    width = np.clip(np.minimum(ordered[:, None, 2], ordered[None, :, 2])
                    - np.maximum(ordered[:, None, 0], ordered[None, :, 0]), 0, None)
    height = np.clip(np.minimum(ordered[:, None, 3], ordered[None, :, 3])
                     - np.maximum(ordered[:, None, 1], ordered[None, :, 1]), 0, None)
    overlap = width * height
    union = areas[:, None] + areas[None, :] - overlap
    iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for rank in range(len(order)):
        if not suppressed[rank]:
            keep.append(order[rank])
            suppressed |= iou[rank] > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def ensure_torchvision_ops() -> bool:
    """Define the missing operators if the extension did not load; True if it had to."""
    global _LIBRARY
    if _LIBRARY is not None:
        return True
    if _ops_defined() or _load_extension():
        return False
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.impl("nms", greedy_nms, "CPU")
    _LIBRARY = library
    return True


_SHIMMED = ensure_torchvision_ops()

import torchvision  # noqa: E402 - must follow the operator definitions
from torchvision.transforms import v2 as transforms_v2  # noqa: E402

if _SHIMMED:
    # torchvision.ops.nms (and batched_nms, which Mask R-CNN calls) guards on the extension
    # having loaded; with the nms kernel above defined, let it through. roi_align already falls
    # back to its pure-PyTorch version when the extension is missing.
    torchvision.ops.boxes._assert_has_ops = lambda: None

__all__ = ["ensure_torchvision_ops", "greedy_nms", "torchvision", "transforms_v2"]
