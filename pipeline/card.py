"""The run card (``card.json``): what a pretraining run hands to every later stage.

It names the method, preset and backbone, the training data (a fingerprint of its frames),
the full ``train`` config, and the input normalisation the backbone was trained with (which
fine-tuning and the figures must reuse). It is versioned; older cards still load.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline.atomic import write_json
from pipeline.config import TrainConfig

CARD_VERSION = 2  # 1: before versioning ("normalise" for "normalisation")


@dataclass(frozen=True)
class Normalisation:
    """Per-channel input standardisation: ``(x / 255 - mean) / std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class RunCard:
    method: str
    preset: str
    backbone: str
    classes: list[str]
    train_videos: int
    labelled_videos: int
    epochs: int
    params: dict[str, Any]
    data: str
    normalisation: Normalisation
    final_losses: dict[str, float] = field(default_factory=dict)
    meta_set: dict[str, Any] | None = None  # methods with a meta set: whether it saw train videos
    version: int = CARD_VERSION

    @property
    def title(self) -> str:
        return f"{self.method} ({self.preset})"

    def train_config(self) -> TrainConfig:
        """The run's ``train`` config, read with today's names."""
        return TrainConfig.from_card(self.params)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["normalisation"] = {key: list(value)
                                   for key, value in values["normalisation"].items()}
        return values

    def save(self, path: Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "card") -> RunCard:
        values = dict(values)
        version = values.pop("version", 1)
        if version > CARD_VERSION:
            raise ValueError(f"{where}: card version {version} is newer than this uspipe "
                             f"reads ({CARD_VERSION}); upgrade uspipe")
        if "normalise" in values:  # version 1
            values["normalisation"] = values.pop("normalise")
        known = {item.name for item in fields(cls)}
        missing = sorted(known - set(values) - {"final_losses", "meta_set", "version"})
        if missing:
            raise ValueError(f"{where}: not a run card (missing {', '.join(missing)})")
        norm = values["normalisation"]
        values["normalisation"] = Normalisation(tuple(norm["mean"]), tuple(norm["std"]))
        return cls(**{key: value for key, value in values.items() if key in known})

    @classmethod
    def load(cls, path: Path) -> RunCard:
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: cannot read the run card ({error})") from error
        return cls.from_dict(values, str(path))
