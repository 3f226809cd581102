"""Meta-USCL: the meta-gradient, the three-step update, and the meta set."""

import copy
import math
from contextlib import nullcontext
from dataclasses import replace

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import MetaConfig, TrainConfig
from pipeline.data.manifest import load_manifest
from pipeline.pretrain.engine import pretrain
from pipeline.pretrain.heads import ProjectionHead
from pipeline.pretrain.losses import nt_xent
from pipeline.pretrain.methods import build_method
from pipeline.pretrain.methods.meta_uscl import CMWNet, MetaUSCL


def tiny(preset: str, **meta) -> MetaUSCL:
    """A Meta-USCL with an 8-feature conv backbone (with BatchNorm), in float64."""
    torch.manual_seed(0)
    method = build_method(TrainConfig(method="meta_uscl", preset=preset,
                                      meta=MetaConfig(**meta)))
    method.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten())
    method.projection = ProjectionHead(8, 4)
    method.weight_net = CMWNet(8, 5)
    method.weight_optimiser = torch.optim.Adam(method.weight_net.parameters(),
                                               lr=method.config.meta.weight_net_lr)
    return method.double()


def pairs(seed: int, count: int = 6) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    views = torch.randn(4, count, 3, 8, 8, generator=generator, dtype=torch.float64)
    return {"view1": views[0], "view2": views[1], "meta_view1": views[2],
            "meta_view2": views[3], "label": torch.full((count,), -1)}


def main_optimiser(method: MetaUSCL) -> torch.optim.SGD:
    return method.configure_optimiser()[0]


def meta_loss_and_gradient(method: MetaUSCL, batch, optimiser):
    return method.meta_gradient(method(batch), batch, optimiser)


@pytest.mark.parametrize("preset", ["code", "paper"])
def test_meta_gradient_matches_finite_differences(preset):
    method = tiny(preset, virtual_lr=0.5)
    optimiser = main_optimiser(method)
    method.training_step(method, pairs(1), optimiser, nullcontext())  # momentum buffers exist
    batch = pairs(2)
    parameters = list(method.weight_net.parameters())
    _, analytic = meta_loss_and_gradient(method, batch, optimiser)
    epsilon, checked = 1e-6, 0
    for parameter, gradient in zip(parameters, analytic, strict=True):
        for index in range(0, parameter.numel(), max(1, parameter.numel() // 4)):
            flat = parameter.data.view(-1)
            original = flat[index].item()
            values = []
            for shift in (epsilon, -epsilon):
                flat[index] = original + shift
                values.append(meta_loss_and_gradient(method, batch, optimiser)[0].item())
            flat[index] = original
            numeric = (values[0] - values[1]) / (2 * epsilon)
            assert gradient.view(-1)[index].item() == pytest.approx(numeric, rel=1e-4, abs=1e-9)
            checked += 1
    assert checked >= 8 and any(g.abs().sum() > 0 for g in analytic), "a real, non-zero check"


@pytest.mark.parametrize("preset", ["code", "paper"])
def test_meta_gradient_equals_the_second_order_backward(preset):
    """The forward-mode meta-gradient against Eqs. 7-8 differentiated literally: the virtual
    gradient built with ``create_graph`` and the meta loss backpropagated through it."""
    method = tiny(preset, virtual_lr=0.5)
    optimiser = main_optimiser(method)
    method.training_step(method, pairs(1), optimiser, nullcontext())
    batch = pairs(5)
    meta_loss, gradients = meta_loss_and_gradient(method, batch, optimiser)

    buffers = {name: b.clone() for name, b in method.named_buffers()}
    theta = {name: p.detach().requires_grad_() for name, p in method.main_parameters().items()}
    state = {**theta, **buffers}
    h1, z1 = method.embed(batch["view1"], state)
    h2, z2 = method.embed(batch["view2"], state)
    weights = method.weight_net(h1, h2)
    loss = nt_xent(z1, z2, 0.5, weights, normalise_weights=preset == "code")
    virtual_gradient = torch.autograd.grad(loss, list(theta.values()), create_graph=True)
    group, live = optimiser.param_groups[0], method.main_parameters()
    stepped = {}
    for (name, value), gradient in zip(theta.items(), virtual_gradient, strict=True):
        if preset == "code":
            gradient = (gradient + group["weight_decay"] * value
                        + group["momentum"] * optimiser.state[live[name]]["momentum_buffer"])
        stepped[name] = value - 0.5 * gradient
    _, m1 = method.embed(batch["meta_view1"], {**stepped, **buffers})
    _, m2 = method.embed(batch["meta_view2"], {**stepped, **buffers})
    reference_loss = nt_xent(m1, m2, 0.5)
    reference = torch.autograd.grad(reference_loss, list(method.weight_net.parameters()))
    assert meta_loss.item() == pytest.approx(reference_loss.item(), rel=1e-12)
    for got, expected in zip(gradients, reference, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert any(g.abs().sum() > 0 for g in reference)


def test_frozen_constant_weight_net_gives_the_plain_weighted_step():
    """CMW-Net frozen at output c: one meta_uscl step = one SGD step on c * NT-Xent (Eq. 1
    unnormalised) of the same batch; the virtual step leaves no trace (BN stats included)."""
    constant = 0.3
    method = tiny("paper", weight_net_lr=0.0)
    nn.init.zeros_(method.weight_net[2].weight)
    nn.init.constant_(method.weight_net[2].bias, math.log(constant / (1 - constant)))
    reference = copy.deepcopy(method)
    batch = pairs(3)
    terms = method.training_step(method, batch, main_optimiser(method), nullcontext())
    assert terms["pair_weight"].item() == pytest.approx(constant)

    optimiser = main_optimiser(reference)
    z1 = reference.projection(reference.backbone(batch["view1"]))
    z2 = reference.projection(reference.backbone(batch["view2"]))
    loss = constant * nt_xent(z1, z2, 0.5)
    assert terms["total"].item() == pytest.approx(loss.item(), rel=1e-10)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    got, expected = method.state_dict(), reference.state_dict()
    for key in expected:
        if key != "_extra_state":
            torch.testing.assert_close(got[key], expected[key], rtol=1e-10, atol=1e-12)


def test_the_weight_net_learns_and_its_optimiser_travels_in_the_state_dict():
    method = tiny("code", weight_net_lr=1e-2)
    before = [p.detach().clone() for p in method.weight_net.parameters()]
    terms = method.training_step(method, pairs(4), main_optimiser(method), nullcontext())
    assert {"contrastive", "pair_weight", "meta", "total"} <= set(terms)
    assert any(not torch.equal(a, b) for a, b in
               zip(before, method.weight_net.parameters(), strict=True))
    restored = tiny("code", weight_net_lr=1e-2)
    restored.load_state_dict(method.state_dict())
    state = restored.weight_optimiser.state_dict()["state"]
    assert state and all(int(s["step"]) == 1 for s in state.values())


def test_presets_and_meta_sets():
    train, held_out = [f"t{i}" for i in range(40)], [f"h{i}" for i in range(10)]
    config = TrainConfig(method="meta_uscl", seed=3, image_size=64)
    paper = build_method(replace(config, preset="paper"))
    videos, spec = paper.meta_set(train, held_out)
    assert videos == sorted(held_out) and spec.mode == "ppi" and spec.chronological
    assert not paper.divide_by_weight_sum and not paper.virtual_momentum
    code = build_method(replace(config, preset="code"))
    videos, spec = code.meta_set(train, held_out)
    assert len(videos) == 10 and spec.mode == "first_frame" and set(videos) & set(train)
    assert code.divide_by_weight_sum and code.virtual_momentum
    assert code.meta_set(train, held_out)[0] == videos, "seeded"
    with pytest.raises(ValueError, match="needs held-out videos"):
        paper.meta_set(train, [])
    pair, mix_first = code.pair_spec()
    assert (pair.alpha, pair.beta, pair.chronological, mix_first) == (3.0, 5.0, True, True)
    views = code.augment_spec()
    assert (views.size, views.crop_scale, views.mean) == (64, (0.7, 1.0), (0.18,) * 3)
    assert views.jitter == pytest.approx((0.64, 0.64, 0.64, 0.16))
    simclr = build_method(TrainConfig(method="meta_simclr"))
    assert simclr.frame_level and simclr.pair_mode == "same_frame"


def test_paper_meta_set_never_holds_a_training_video(decoded_sample, tmp_path):
    manifest = load_manifest(decoded_sample)
    videos = manifest.videos.sort_values("video_id")
    train, held_out = videos.iloc[:6], videos["video_id"].iloc[6:].tolist()
    config = TrainConfig(method="meta_uscl", preset="paper", epochs=1, image_size=32,
                         batch_size=3, workers=0, meta=MetaConfig(batch_size=2))
    card, method = pretrain(manifest, train, config, tmp_path / "paper", progress=False,
                            held_out=held_out)
    assert card.meta_set == {"videos": 2, "pairs": "ppi", "training_videos_in_it": 0}
    assert all(math.isfinite(v) for v in card.final_losses.values())
    assert "meta" in card.final_losses
    code = replace(config, preset="code")
    card, _ = pretrain(manifest, train, code, tmp_path / "code", progress=False,
                       held_out=held_out)
    assert card.meta_set["pairs"] == "first_frame"  # labelled: it may hold train videos

    # the trained CMW-Net's weights, as Meta-USCL Figs. 5 and 6 show them
    out = tmp_path / "weights"
    result = CliRunner().invoke(app, ["pair-weights", "-o", str(out), "-d",
                                      str(decoded_sample), "--model", str(tmp_path / "paper"),
                                      "--pairs", "2"])
    assert result.exit_code == 0, result.output
    weights = pd.read_csv(out / "pair_weights.csv")
    assert len(weights) == 2 * len(videos) and weights["weight"].between(0, 1).all()
    clip = pd.read_csv(out / "clip_weights.csv")
    assert len(clip) == videos["kept_frames"].max() - 1 and clip["similarity"].le(1 + 1e-6).all()
    assert {p.name for p in out.glob("*.png")} == {"pair_weights_by_label.png",
                                                   "weight_vs_similarity.png"}
    uscl = CliRunner().invoke(app, ["pair-weights", "-o", str(out), "-d", str(decoded_sample),
                                    "--model", str(tmp_path / "none")])
    assert uscl.exit_code == 2 and "card.json" in uscl.output


def test_meta_batches_come_from_the_meta_videos_only(decoded_sample):
    from pipeline.data.views import AugmentSpec
    from pipeline.pretrain.loader import PairDataset
    from pipeline.pretrain.pairs import PairSpec

    manifest = load_manifest(decoded_sample)
    ids = manifest.videos["video_id"].sort_values().tolist()
    augment = AugmentSpec(size=16)
    meta = PairDataset(manifest, ids[6:], None, PairSpec(), augment, True, batch_size=2,
                       drop_last=False)
    data = PairDataset(manifest, ids[:6], None, PairSpec(), augment, True, batch_size=3,
                       meta=meta)
    seen = set()
    for epoch in range(3):
        data.set_epoch(epoch)
        for batch in data:
            assert batch["meta_frames"].shape == (2, 2, 3, 16, 16)
            seen |= {meta.video_ids[v] for v in batch["meta_video"].tolist()}
    assert seen == set(ids[6:])
    assert pd.Series(list(seen)).isin(ids[:6]).sum() == 0


def test_compiled_steps_match_eager_whatever_the_batch_size():
    """The engine compiles with static shapes: a dynamic graph's backward donates its buffers
    and cannot be differentiated twice, as the virtual and real steps do."""
    from pipeline.pretrain.engine import compiled

    eager = tiny("paper")
    graph = copy.deepcopy(eager)
    step = compiled(graph, backend="aot_eager")
    optimisers = main_optimiser(eager), main_optimiser(graph)
    for seed, count in ((6, 6), (7, 4)):  # a last batch of another size
        batch = pairs(seed, count)
        expected = eager.training_step(eager, batch, optimisers[0], nullcontext())
        got = graph.training_step(step, batch, optimisers[1], nullcontext())
        assert got["total"].item() == pytest.approx(expected["total"].item(), rel=1e-9)
    for a, b in zip(eager.parameters(), graph.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    assert all(p.grad is None for p in graph.weight_net.parameters())
