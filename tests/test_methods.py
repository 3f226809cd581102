"""Pretraining methods: registry, finite losses, learning on a tiny set, preset wiring."""

import pytest
import torch

from pipeline.augment import AugmentSpec, make_views
from pipeline.loader import PairDataset
from pipeline.losses import UNLABELLED
from pipeline.manifest import load_manifest
from pipeline.methods import METHODS, MethodConfig, build_method, register
from pipeline.methods.base import Method
from pipeline.pairs import PairSpec

TRAINING = ["uscl", "simclr", "supervised", "hico", "meta_uscl", "meta_simclr"]


@pytest.fixture(scope="module")
def batch(decoded_sample):
    manifest = load_manifest(decoded_sample)
    videos = manifest.videos["video_id"].tolist()[:6]
    labels = [0, 1, 0, 1, UNLABELLED, 1]
    augment = AugmentSpec(size=32)
    data = PairDataset(manifest, videos, labels, PairSpec(), augment, mix_first=True,
                       batch_size=6, seed=0)
    loaded = next(iter(data))
    view1, view2 = make_views(loaded, augment)
    return {"view1": view1, "view2": view2, "label": loaded["label"]}


def test_registry():
    assert set(METHODS) == {"uscl", "simclr", "supervised", "hico", "scratch", "meta_uscl",
                            "meta_simclr"}
    with pytest.raises(ValueError, match="unknown method 'byol'"):
        build_method("byol", MethodConfig())
    with pytest.raises(ValueError, match="registered twice"):
        register("uscl")(Method)
    assert not build_method("scratch", MethodConfig()).trains
    simclr = build_method("simclr", MethodConfig())
    assert simclr.frame_level and simclr.pair_mode == "same_frame"


@pytest.mark.parametrize("preset", ["code", "paper"])
@pytest.mark.parametrize("name", TRAINING)
def test_two_steps_give_finite_losses(name, preset, batch):
    torch.manual_seed(0)
    method = build_method(name, MethodConfig(preset=preset))
    optimiser = torch.optim.Adam(method.parameters(), lr=1e-3)
    for _ in range(2):
        terms = method.loss(batch)
        assert all(torch.isfinite(value) for value in terms.values()), terms
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()


@pytest.mark.parametrize("name", TRAINING)
def test_loss_decreases_on_a_tiny_set(name, batch):
    torch.manual_seed(0)
    method = build_method(name, MethodConfig())
    optimiser = torch.optim.Adam(method.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        total = method.loss(batch)["total"]
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        losses.append(total.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_batches_without_labels_give_a_zero_supervised_term(batch):
    unlabelled = {**batch, "label": torch.full_like(batch["label"], UNLABELLED)}
    for name in ("uscl", "hico"):
        terms = build_method(name, MethodConfig()).loss(unlabelled)
        assert terms["supervised"].item() == 0 and torch.isfinite(terms["total"])


def test_presets_wire_the_documented_variants():
    uscl_code = build_method("uscl", MethodConfig(preset="code"))
    uscl_paper = build_method("uscl", MethodConfig(preset="paper"))
    assert uscl_code.classifier.in_features == 256 and uscl_paper.classifier.in_features == 512
    hico_code = build_method("hico", MethodConfig(preset="code"))
    hico_paper = build_method("hico", MethodConfig(preset="paper"))
    assert hico_code.levels["medium"] == "P3" and hico_paper.levels["medium"] == "P4"
    has_bn = lambda m: any(isinstance(x, torch.nn.BatchNorm2d) for x in m.fpn.lateral.modules())  # noqa: E731
    assert not has_bn(hico_code) and has_bn(hico_paper)
    parameters = sum(p.numel() for p in hico_code.parameters())
    assert parameters < 20_000_000, "pooled heads, not the released 205M-parameter flattening"
