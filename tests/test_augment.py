"""Augmentation: draws, crops and the batched colour jitter against torchvision itself."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.views import AugmentSpec, ViewParams, crop_view, draw_view
from pipeline.pretrain.augment import colour_jitter, make_views
from pipeline.tv_compat import transforms_v2 as v2

F = v2.functional
TORCHVISION_OPS = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]


def test_batched_jitter_equals_torchvision_per_image_with_its_own_order():
    rng = np.random.default_rng(0)
    spec = AugmentSpec()
    images = torch.rand(12, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    images[0] = 0.5  # grey: hue undefined
    images[1, :, 0, 0] = torch.tensor([1.0, 1.0, 0.2])  # ties between channel maxima
    draws = [draw_view(rng, spec) for _ in images]
    factors = torch.tensor([d.factors for d in draws])
    order = torch.tensor([d.order for d in draws])
    assert len({d.order for d in draws}) > 3, "orders differ between images"
    got = colour_jitter(images, factors, order)
    for image, draw, result in zip(images, draws, got, strict=True):
        expected = image
        for operation in draw.order:
            expected = TORCHVISION_OPS[operation](expected, draw.factors[operation])
        torch.testing.assert_close(result, expected, atol=2e-5, rtol=0)


def test_draws_stay_in_their_ranges():
    rng = np.random.default_rng(1)
    spec = AugmentSpec()
    draws = [draw_view(rng, spec) for _ in range(2000)]
    boxes = np.array([d.box for d in draws])
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes >= 0).all() and (boxes <= 1 + 1e-12).all()
    assert np.all((width * height >= 0.8 - 1e-9) & (width * height <= 1 + 1e-9))
    assert np.all((width / height >= 0.8 - 1e-9) & (width / height <= 1.25 + 1e-9))
    factors = np.array([d.factors for d in draws])
    assert factors[:, :3].min() >= 0.2 and factors[:, :3].max() <= 1.8
    assert np.abs(factors[:, 3]).max() <= 0.2
    assert 0.45 < np.mean([d.flip for d in draws]) < 0.55
    assert all(sorted(d.order) == [0, 1, 2, 3] for d in draws)


def test_jitter_applies_with_its_probability_and_p_1_draws_as_before():
    spec, sometimes = AugmentSpec(), AugmentSpec(jitter_p=0.8)
    always = [draw_view(np.random.default_rng(i), spec) for i in range(400)]
    assert all(draw.factors != (1.0, 1.0, 1.0, 0.0) for draw in always)
    drawn = [draw_view(np.random.default_rng(i), sometimes) for i in range(400)]
    plain = sum(draw.factors == (1.0, 1.0, 1.0, 0.0) for draw in drawn) / len(drawn)
    assert 0.14 < plain < 0.26  # 1 - p = 0.2
    # the geometry and the jitter factors, when applied, are the same draws
    assert [d.box for d in drawn] == [d.box for d in always]
    assert all(d.factors in (a.factors, (1.0, 1.0, 1.0, 0.0))
               for d, a in zip(drawn, always, strict=True))


def test_impossible_crop_scales_fall_back_to_the_central_crop():
    draw = draw_view(np.random.default_rng(0), AugmentSpec(crop_scale=(2.0, 3.0)))
    assert draw.box == (0.0, 0.0, 1.0, 1.0)
    narrow = draw_view(np.random.default_rng(0), AugmentSpec(crop_scale=(2.0, 3.0),
                                                             crop_ratio=(0.5, 0.8)))
    assert narrow.box == pytest.approx((0.1, 0.0, 0.9, 1.0))


def test_crop_view_resamples_the_box_and_flips():
    pixels = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    identity = (1.0, 1.0, 1.0, 0.0)
    whole = crop_view(image, ViewParams((0, 0, 1, 1), False, identity, (0, 1, 2, 3)), 16)
    expected = np.asarray(image.resize((16, 16), Image.BILINEAR)).transpose(2, 0, 1)
    assert whole.dtype == torch.uint8 and np.array_equal(whole.numpy(), expected)
    flipped = crop_view(image, ViewParams((0, 0, 1, 1), True, identity, (0, 1, 2, 3)), 16)
    assert torch.equal(flipped, whole.flip(-1))
    half = crop_view(image, ViewParams((0.5, 0.0, 1.0, 1.0), False, identity, (0, 1, 2, 3)), 16)
    right = np.asarray(image.crop((30, 0, 60, 40)).resize((16, 16), Image.BILINEAR))
    difference = np.abs(half.numpy().astype(int) - right.transpose(2, 0, 1))
    # the box's edge column also filters source pixels just outside the box (PIL's support)
    assert difference[:, :, 1:].max() <= 1


@pytest.mark.parametrize("slots", [2, 3])
def test_make_views_mixes_after_jitter_and_normalises(slots):
    spec = AugmentSpec(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    frames = torch.randint(0, 256, (4, slots, 3, 5, 5), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    weights = torch.tensor([[0.3, 0.9], [1.0, 0.0], [0.0, 0.0], [0.5, 0.5]])
    batch = {"frames": frames, "weights": weights,
             "factors": torch.tensor([1.0, 1.0, 1.0, 0.0]).repeat(4, slots, 1),
             "order": torch.arange(4).repeat(4, slots, 1)}
    view1, view2 = make_views(batch, spec)
    x = frames.numpy().astype(np.float64) / 255
    if slots == 3:  # view k = w_k * anchor + (1 - w_k) * perturbation_k
        w = weights.numpy()[:, :, None, None, None]
        views = w * x[:, 1:2] + (1 - w) * x[:, [0, 2]]
    else:
        views = x
    mean, std = np.array(spec.mean)[:, None, None], np.array(spec.std)[:, None, None]
    np.testing.assert_allclose(view1.numpy(), (views[:, 0] - mean) / std, atol=1e-5)
    np.testing.assert_allclose(view2.numpy(), (views[:, 1] - mean) / std, atol=1e-5)


def test_a_grey_frame_gives_the_same_views_on_one_channel_as_on_three():
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:40, 0:56]
    grey = Image.fromarray(((xx * 3 + yy * 2) % 256).astype(np.uint8))
    spec = AugmentSpec()
    for _ in range(30):
        draw = draw_view(rng, spec)
        for jitter in (False, True):
            on_one = crop_view(grey, draw, 24, jitter)
            assert on_one.shape == (3, 24, 24)
            assert torch.equal(on_one, crop_view(grey.convert("RGB"), draw, 24, jitter)), draw


def test_jitter_on_pil_in_the_workers_matches_the_batched_device_jitter():
    """Same draws, two places: they differ only by PIL's uint8 rounding between operations."""
    rng = np.random.default_rng(3)
    spec = AugmentSpec()
    yy, xx = np.mgrid[0:48, 0:48]
    pixels = np.stack([xx * 5, yy * 5, (xx + yy) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    misses = []
    for _ in range(20):
        draw = draw_view(rng, spec)
        on_pil = crop_view(image, draw, 32, jitter=True).float() / 255
        plain = crop_view(image, draw, 32).float()[None] / 255
        on_device = colour_jitter(plain, torch.tensor([draw.factors]),
                                  torch.tensor([draw.order]))[0]
        difference = (on_pil - on_device).abs()
        assert difference.mean() < 0.015 and difference.quantile(0.99) < 0.1, draw
        other = draw_view(rng, spec)  # control: another draw's jitter is far off
        unrelated = colour_jitter(plain, torch.tensor([other.factors]),
                                  torch.tensor([other.order]))[0]
        misses.append(float((on_pil - unrelated).abs().mean()))
    assert np.median(misses) > 0.05
