"""Deterministic synthetic breast-ultrasound images with lesion masks: the embedded sample of
the image tasks (classification and segmentation, issue 14).

Each image is a linear-probe B-mode frame: Rayleigh speckle (laterally elongated) over a
skin line, a subcutaneous fat band and a brighter fibroglandular layer, gain falling with
depth, and one hypoechoic lesion whose shape and acoustics follow the BI-RADS descriptors
the two classes differ in:

* ``benign``: a smooth oval, wider than tall, circumscribed margin, posterior acoustic
  enhancement (a brighter band below it);
* ``malignant``: an irregular outline with spicules, often taller than wide, posterior acoustic
  shadowing (a darker band below it).

Sizes, depths, positions, contrast, the strength of the posterior feature and noise vary per
image, and some lesions of each class carry the other's weaker posterior feature, so the
signal is real but not trivial. The lesion's binary mask (0 / 255 PNG) is exact. Written as
``images/<name>.png``, ``masks/<name>.png`` and a ``labels.csv`` (``path,label,group,mask``:
``path`` relative to ``images/``, ``mask`` relative to the folder; one patient per two images).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.atomic import atomic_path

CLASSES = ("benign", "malignant")
SIZE = (128, 96)  # width, height
LICENSE = "CC0-1.0 (synthetic)"


@dataclass(frozen=True)
class LesionSpec:
    name: str
    label: str
    patient: int
    seed: int


def lesion_specs(count: int, seed: int) -> list[LesionSpec]:
    """``count`` images, classes alternating, two images per patient."""
    return [LesionSpec(f"lesion_{index:03d}", CLASSES[index % 2], index // 2, seed * 1000 + index)
            for index in range(count)]


def lesion_mask(spec: LesionSpec, rng: np.random.Generator) -> np.ndarray:
    """The lesion as a boolean (height, width) array: a smooth oval (benign) or a spiculated
    irregular outline (malignant), as a radius that varies with the polar angle."""
    width, height = SIZE
    malignant = spec.label == "malignant"
    centre_x = rng.uniform(0.3, 0.7) * width
    centre_y = rng.uniform(0.38, 0.58) * height
    radius = rng.uniform(9, 15)
    aspect = rng.uniform(1.0, 1.5) if malignant else rng.uniform(0.55, 0.8)  # height / width
    angle = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    profile = np.ones_like(angle)
    if malignant:
        for _ in range(rng.integers(3, 6)):  # lobulation
            profile += rng.uniform(0.05, 0.15) * np.cos(rng.integers(2, 6) * angle
                                                         + rng.uniform(0, 2 * np.pi))
        spikes = rng.choice(360, size=rng.integers(6, 12), replace=False)
        for spike in spikes:  # spicules: narrow radial extensions
            distance = np.minimum(np.abs(np.arange(360) - spike), 360 - np.abs(np.arange(360)
                                                                                 - spike))
            profile += rng.uniform(0.35, 0.8) * np.exp(-(distance / rng.uniform(2, 4)) ** 2)
    else:
        profile += rng.uniform(0.0, 0.05) * np.cos(2 * angle + rng.uniform(0, 2 * np.pi))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    dx, dy = xs - centre_x, (ys - centre_y) / aspect
    theta = (np.arctan2(dy, dx) % (2 * np.pi)) / (2 * np.pi) * 360
    bound = radius * profile[theta.astype(int) % 360]
    return np.hypot(dx, dy) <= bound


def lesion_image(spec: LesionSpec) -> tuple[Image.Image, Image.Image]:
    """(grey B-mode image, 0/255 mask) of one spec, deterministic in its seed."""
    rng = np.random.default_rng(spec.seed)
    width, height = SIZE
    mask = lesion_mask(spec, rng)
    depth = np.linspace(0, 1, height)[:, None]
    tissue = np.where(depth < 0.06, 1.6, np.where(depth < rng.uniform(0.2, 0.3), 0.55, 1.0))
    tissue = tissue * np.ones((height, width))
    # posterior acoustic feature: a band below the lesion, as wide as it
    columns = mask.any(axis=0)
    bottom = np.where(columns, height - 1 - np.argmax(mask[::-1], axis=0), height)
    below = (np.arange(height)[:, None] > bottom[None, :]) & columns[None, :]
    fade = np.exp(-np.maximum(np.arange(height)[:, None] - bottom[None, :], 0) / (0.35 * height))
    strength = rng.uniform(0.4, 0.9)
    if rng.uniform() < 0.2:  # some lesions show the other class's (weaker) posterior feature
        strength = -0.4 * strength
    sign = -1.0 if spec.label == "malignant" else 1.0
    tissue = tissue * (1 + sign * strength * below * fade)
    tissue[mask] = rng.uniform(0.1, 0.3)  # hypoechoic
    speckle = rng.rayleigh(1.0, (height, width * 2)).reshape(height, width, 2).mean(axis=2)
    gain = rng.uniform(70, 100) * np.exp(-rng.uniform(0.3, 0.8) * depth)
    image = np.clip(gain * tissue * speckle + rng.normal(0, 4, (height, width)), 0, 255)
    return (Image.fromarray(image.astype(np.uint8), mode="L"),
            Image.fromarray((mask * 255).astype(np.uint8), mode="L"))


def write_phantom(folder: Path, count: int, seed: int, group_prefix: str = "phantom"
                  ) -> list[LesionSpec]:
    """Write ``count`` images with masks and ``labels.csv`` under ``folder``."""
    folder = Path(folder)
    specs = lesion_specs(count, seed)
    for spec in specs:
        image, mask = lesion_image(spec)
        for sub, picture in (("images", image), ("masks", mask)):
            path = folder / sub / f"{spec.name}.png"
            with atomic_path(path) as temporary:
                picture.save(temporary, format="PNG")
    with atomic_path(folder / "labels.csv") as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "group", "mask", "license"])
            writer.writerows([f"{spec.name}.png", spec.label,
                              f"{group_prefix}/patient-{spec.patient:03d}",
                              f"masks/{spec.name}.png", LICENSE] for spec in specs)
    return specs
