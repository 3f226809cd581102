"""Pretraining methods: registry, finite losses, learning on a tiny set, preset wiring."""

import pytest
import torch

from pipeline import config
from pipeline.config import TrainConfig
from pipeline.data.manifest import load_manifest
from pipeline.data.views import AugmentSpec
from pipeline.pretrain.augment import make_views
from pipeline.pretrain.loader import PairDataset
from pipeline.pretrain.losses import UNLABELLED
from pipeline.pretrain.methods import METHODS, build_method, register
from pipeline.pretrain.methods.base import Method
from pipeline.pretrain.pairs import PairSpec

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
    assert set(METHODS) == set(config.METHODS)  # params are validated against these names
    with pytest.raises(ValueError, match="train.method: 'byol' is not one of uscl, hico"):
        TrainConfig(method="byol")
    with pytest.raises(ValueError, match="registered twice"):
        register("uscl")(Method)
    assert not build_method(TrainConfig(method="scratch")).trains
    simclr = build_method(TrainConfig(method="simclr"))
    assert simclr.frame_level and simclr.pair_mode == "same_frame"


@pytest.mark.parametrize("preset", ["code", "paper"])
@pytest.mark.parametrize("name", TRAINING)
def test_two_steps_give_finite_losses(name, preset, batch):
    torch.manual_seed(0)
    method = build_method(TrainConfig(method=name, preset=preset))
    optimiser = torch.optim.Adam(method.parameters(), lr=1e-3)
    for _ in range(2):
        terms = method.loss(method(batch), batch)
        assert all(torch.isfinite(value) for value in terms.values()), terms
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()


@pytest.mark.parametrize("name", TRAINING)
def test_loss_decreases_on_a_tiny_set(name, batch):
    torch.manual_seed(0)
    method = build_method(TrainConfig(method=name))
    optimiser = torch.optim.Adam(method.parameters(), lr=1e-3)
    losses = []
    for _ in range(25):
        total = method.loss(method(batch), batch)["total"]
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        losses.append(total.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_batches_without_labels_give_a_zero_supervised_term(batch):
    unlabelled = {**batch, "label": torch.full_like(batch["label"], UNLABELLED)}
    for name in ("uscl", "hico"):
        method = build_method(TrainConfig(method=name))
        terms = method.loss(method(unlabelled), unlabelled)
        assert terms["supervised"].item() == 0 and torch.isfinite(terms["total"])


def test_presets_wire_the_documented_variants():
    uscl_code = build_method(TrainConfig(method="uscl", preset="code"))
    uscl_paper = build_method(TrainConfig(method="uscl", preset="paper"))
    assert uscl_code.classifier.in_features == 256 and uscl_paper.classifier.in_features == 512
    hico_code = build_method(TrainConfig(method="hico", preset="code"))
    hico_paper = build_method(TrainConfig(method="hico", preset="paper"))
    assert hico_code.levels["medium"] == "P3" and hico_paper.levels["medium"] == "P4"
    has_bn = lambda m: any(isinstance(x, torch.nn.BatchNorm2d) for x in m.fpn.lateral.modules())  # noqa: E731
    assert not has_bn(hico_code) and has_bn(hico_paper)
    parameters = sum(p.numel() for p in hico_code.parameters())
    assert parameters < 20_000_000, "pooled heads, not the released 205M-parameter flattening"
