"""Backbones, the ResNet-FPN and its pooled heads, torchvision-compatible export, weights."""

import pytest
import torch

from pipeline.backbones import (
    BACKBONES,
    build_backbone,
    imagenet_weights_path,
    torchvision_state_dict,
)
from pipeline.pretrain.heads import PooledLevelHead, ProjectionHead, ResNetFPN
from pipeline.tv_compat import torchvision


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbones_give_their_representation_size(name):
    model, features = build_backbone(name)
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, features)


@pytest.mark.parametrize("size", [64, 128, 224])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_fpn_levels_and_pooled_heads_at_every_size(size, batch_norm):
    fpn = ResNetFPN(build_backbone("resnet18")[0], batch_norm=batch_norm).eval()
    with torch.no_grad():
        levels = fpn(torch.zeros(2, 3, size, size))
        for name, stride in (("P2", 4), ("P3", 8), ("P4", 16), ("P5", 32)):
            assert levels[name].shape == (2, 256, size // stride, size // stride), name
        assert levels["C5_pooled"].shape == (2, 512)
        assert PooledLevelHead()(levels["P2"]).shape == (2, 256)


def test_fpn_on_resnet50_uses_its_stage_widths():
    fpn = ResNetFPN(build_backbone("resnet50")[0]).eval()
    with torch.no_grad():
        assert fpn(torch.zeros(1, 3, 64, 64))["P3"].shape == (1, 256, 8, 8)


def test_export_loads_into_torchvision_and_computes_the_same_features():
    model, _ = build_backbone("resnet18")
    fresh = torchvision.models.resnet18()
    result = fresh.load_state_dict(torchvision_state_dict(model), strict=False)
    assert result.missing_keys == ["fc.weight", "fc.bias"] and not result.unexpected_keys
    fresh.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), fresh.eval()(x))


def test_imagenet_weights_from_a_file_and_a_clear_error_without_them(tmp_path, monkeypatch):
    source = torchvision.models.resnet18()
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    model, _ = build_backbone("resnet18", imagenet=tmp_path / "weights.pth")
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        build_backbone("resnet18", imagenet=True)
    hub = tmp_path / "empty-hub" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(source.state_dict(), hub / "resnet18-f37072fd.pth")
    assert imagenet_weights_path("resnet18") == hub / "resnet18-f37072fd.pth"
    model, _ = build_backbone("resnet18", imagenet=True)
    assert torch.equal(model.conv1.weight, source.conv1.weight)


def test_projection_head_and_unknown_names():
    assert ProjectionHead(512, 128)(torch.zeros(3, 512)).shape == (3, 128)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="ResNet backbone"):
        ResNetFPN(build_backbone("shufflenet_v2_x1_0")[0])
