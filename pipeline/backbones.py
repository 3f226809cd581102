"""Backbones: the contract between pretraining and evaluation (``docs/methods.md`` §4).

A backbone is a torchvision model (through :mod:`pipeline.tv_compat`) with its classifier
replaced by an identity, so ``backbone(x)`` is the pooled representation. Pretraining exports
it with :func:`torchvision_state_dict` (loads straight into the torchvision constructor once
the classifier is dropped); fine-tuning and the figures load it with :func:`load_backbone`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.tv_compat import torchvision

BACKBONES = {  # torchvision constructor -> representation size
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "shufflenet_v2_x0_5": 1024,
    "shufflenet_v2_x1_0": 1024,
    "shufflenet_v2_x1_5": 1024,
    "shufflenet_v2_x2_0": 2048,
}


def build_backbone(name: str, imagenet: bool | str | Path = False) -> tuple[nn.Module, int]:
    """A torchvision backbone without classifier, and its representation size.

    ``imagenet``: False for random init; True to load ImageNet weights from the torch hub
    cache; or the path of a weights file (a torchvision ``state_dict``). Nothing is downloaded.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    model = torchvision.models.get_model(name, weights=None)
    if imagenet:
        path = imagenet_weights_path(name) if imagenet is True else Path(imagenet)
        model.load_state_dict(_load_weights(path, name))
    model.fc = nn.Identity()
    return model, BACKBONES[name]


def load_backbone(name: str, weights: Path) -> tuple[nn.Module, int]:
    """A backbone with the weights of an exported ``backbone.pt`` (:func:`torchvision_state_dict`);
    a clear error when the file holds another architecture."""
    model, features = build_backbone(name)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: not a {name} backbone (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return model, features


def imagenet_weights_path(name: str) -> Path:
    """Where torchvision caches ``name``'s ImageNet weights; a clear error if they are absent."""
    url = torchvision.models.get_model_weights(name).IMAGENET1K_V1.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet weights for {name} not found at {path}, and nothing is downloaded "
            f"here. Copy the file from {url} there (the torch hub cache follows TORCH_HOME), "
            "or pass the path of a weights file instead of `true`.")
    return path


def _load_weights(path: Path, name: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"weights file for {name} not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def torchvision_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's weights under torchvision's names, classifier dropped: loadable with
    ``torchvision.models.<name>().load_state_dict(state, strict=False)`` (only ``fc`` missing).
    """
    return {key: value.detach().cpu() for key, value in backbone.state_dict().items()
            if not key.startswith("fc.")}
