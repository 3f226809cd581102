"""Export a pretrained backbone for the ecosystem: ``model.safetensors`` + ``config.json`` +
a model card (``README.md``).

The weights keep torchvision's names with the classifier dropped, so
``torchvision.models.resnet18()`` loads them with only ``fc`` missing, and timm's ``resnet18``
(same names) loads them strictly with ``num_classes=0``. ``config.json`` says how: the
architecture, the loaders, the representation size and the input normalisation the backbone
was trained with (``(x / 255 - mean) / std``). The card records the method, preset, training
data fingerprint, the full ``train`` params and the downstream metrics of every results folder
given. Nothing is downloaded, at export or at load time.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.backbones import BACKBONES
from pipeline.card import RunCard

WEIGHTS_FILE, CONFIG_FILE, CARD_FILE = "model.safetensors", "config.json", "README.md"
TIMM_NAMES = {name: name for name in ("resnet18", "resnet34", "resnet50")}  # same keys


def export_config(card: RunCard) -> dict[str, object]:
    """What a loader needs to know, without reading the card."""
    return {
        "architecture": card.backbone,
        "num_features": BACKBONES[card.backbone],
        "torchvision": {"constructor": f"torchvision.models.{card.backbone}",
                        "load": "load_state_dict(weights, strict=False)  # only fc.* missing"},
        "timm": ({"model_name": TIMM_NAMES[card.backbone], "num_classes": 0,
                  "load": "load_state_dict(weights, strict=True)"}
                 if card.backbone in TIMM_NAMES else None),
        "input": {"channels": "RGB", "scale": "x / 255",
                  "mean": list(card.normalisation.mean), "std": list(card.normalisation.std)},
        "pretraining": {"method": card.method, "preset": card.preset, "epochs": card.epochs,
                        "data_fingerprint": card.data},
    }


def _metric_lines(folder: Path) -> list[str]:
    """A results folder's headline numbers (evaluate: ``metrics.json`` last epoch; probe:
    each protocol at video level)."""
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    lines = []
    for protocol, values in metrics.items():
        pooled = (values.get("pooled") if protocol == "last_epoch" else
                  values.get("video", {}).get("pooled") if isinstance(values, dict) else None)
        if isinstance(pooled, dict) and "accuracy" in pooled:
            name = "fine-tuning, last epoch" if protocol == "last_epoch" else \
                f"{protocol} probe, video level"
            lines.append(f"| {folder} | {name} | {pooled['accuracy']:.3f} | "
                         f"{pooled.get('macro_f1', float('nan')):.3f} | "
                         f"{pooled.get('macro_auc', float('nan')):.3f} |")
    return lines


def model_card(card: RunCard, results: list[Path]) -> str:
    """``README.md``: what was trained, on what, how to load it, and how it did."""
    lines = [f"# {card.backbone} pretrained with uspipe: {card.title}", "",
             f"- method: `{card.method}`, preset `{card.preset}`, {card.epochs} epochs on "
             f"{card.train_videos} videos ({card.labelled_videos} labelled)",
             f"- training data fingerprint: `{card.data}`",
             f"- input: RGB, `(x / 255 - mean) / std` with mean {list(card.normalisation.mean)}"
             f" and std {list(card.normalisation.std)}", "",
             "## Load", "", "```python",
             "from safetensors.torch import load_file",
             "weights = load_file('model.safetensors')",
             f"import torchvision; model = torchvision.models.{card.backbone}()",
             "model.load_state_dict(weights, strict=False)  # only fc.* missing"]
    if card.backbone in TIMM_NAMES:
        lines += [f"import timm; model = timm.create_model('{TIMM_NAMES[card.backbone]}', "
                  "pretrained=False, num_classes=0)",
                  "model.load_state_dict(weights)  # strict"]
    lines += ["```", ""]
    rows = [line for folder in results for line in _metric_lines(folder)]
    if rows:
        lines += ["## Downstream results", "",
                  "| results | protocol | accuracy | macro F1 | macro AUC |",
                  "|---|---|---|---|---|", *rows, ""]
    lines += ["## Training params", "", "```json",
              json.dumps(card.params, indent=2, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)


def export_backbone(run: Path, out: Path, results: list[Path] = ()) -> list[Path]:
    """Write ``out/model.safetensors``, ``config.json`` and ``README.md`` for the pretraining
    run in ``run`` (``card.json`` + ``backbone.pt``); returns the files written."""
    run, out = Path(run), Path(out)
    card = RunCard.load(run / "card.json")
    state = torch.load(run / "backbone.pt", map_location="cpu", weights_only=True)
    tensors = {key: value.contiguous() for key, value in state.items()}
    metadata = {"format": "pt", "architecture": card.backbone, "method": card.method,
                "preset": card.preset, "data_fingerprint": card.data}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS_FILE) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    write_json(out / CONFIG_FILE, export_config(card))
    write_text(out / CARD_FILE, model_card(card, [Path(folder) for folder in results]))
    return [out / WEIGHTS_FILE, out / CONFIG_FILE, out / CARD_FILE]
