"""`uspipe export`: torchvision and timm load the exported backbone, and compute the same."""

import json

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from pipeline.backbones import build_backbone, torchvision_state_dict
from pipeline.card import Normalisation, RunCard
from pipeline.cli import app
from pipeline.tv_compat import torchvision


def pretrained_run(folder):
    torch.manual_seed(0)
    backbone, _ = build_backbone("resnet18")
    for module in backbone.modules():  # non-trivial BN statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    folder.mkdir()
    torch.save(torchvision_state_dict(backbone), folder / "backbone.pt")
    RunCard(method="uscl", preset="code", backbone="resnet18", classes=["a", "b"],
            train_videos=10, labelled_videos=4, epochs=3, params={"method": "uscl"},
            data="abc123", normalisation=Normalisation((0.5,) * 3, (0.25,) * 3)
            ).save(folder / "card.json")
    results = folder.parent / "results"
    results.mkdir()
    (results / "metrics.json").write_text(json.dumps(
        {"last_epoch": {"pooled": {"accuracy": 0.75, "macro_f1": 0.7, "macro_auc": 0.8}}}))
    return backbone.eval(), results


def test_torchvision_and_timm_load_the_export_and_agree(tmp_path):
    backbone, results = pretrained_run(tmp_path / "run")
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "-o", str(out),
                                      "--results", str(results)])
    assert result.exit_code == 0, result.output
    weights = load_file(out / "model.safetensors")
    vision = torchvision.models.resnet18()
    missing, unexpected = vision.load_state_dict(weights, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected
    vision.fc = torch.nn.Identity()
    import timm  # here, after pipeline.tv_compat made torchvision importable on a CPU
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    model.load_state_dict(weights, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = backbone(x)
        assert torch.allclose(vision.eval()(x), reference, atol=1e-5)
        assert torch.allclose(model.eval()(x), reference, atol=1e-5)
    config = json.loads((out / "config.json").read_text())
    assert config["num_features"] == 512 and config["input"]["std"] == [0.25] * 3
    card = (out / "README.md").read_text()
    assert "abc123" in card and "| 0.750 |" in card and "timm.create_model" in card


def test_export_of_a_missing_run_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["export", str(tmp_path / "nope"), "-o", str(tmp_path)])
    assert result.exit_code == 2 and "card.json" in result.output
