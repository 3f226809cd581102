"""Representation figures: Grad-CAM against a hand computation, the stage's PNGs."""

import numpy as np
import torch
from torch import nn

from pipeline.card import Normalisation
from pipeline.evaluate.representation import grad_cam, grad_cam_figure, tsne_figure


class Tiny(nn.Module):
    """layer4 = a fixed 1x1 convolution; representation h = spatial mean of its maps."""

    def __init__(self) -> None:
        super().__init__()
        self.layer4 = nn.Conv2d(3, 4, 1, bias=False)
        with torch.no_grad():
            self.layer4.weight.copy_(torch.tensor(
                [[1.0, 0, 0], [0, 1, 0], [0, 0, -1], [0.5, 0.5, 0]]).view(4, 3, 1, 1))

    def forward(self, x):
        return self.layer4(x).mean(dim=(2, 3))


def test_grad_cam_matches_the_hand_computation():
    images = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    cams = grad_cam(Tiny(), images).numpy()
    weight = Tiny().layer4.weight.detach().numpy()[:, :, 0, 0]
    for image, cam in zip(images.numpy(), cams, strict=True):
        maps = np.einsum("kc,chw->khw", weight, image)
        h = maps.mean(axis=(1, 2))
        alpha = 2 * h / (6 * 6)  # d||h||^2 / dA_k(i, j), averaged over the map
        expected = np.maximum((alpha[:, None, None] * maps).sum(0), 0)
        np.testing.assert_allclose(cam, expected / expected.max(), atol=1e-5)
    assert cams.shape == (2, 6, 6) and cams.max() == 1.0


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    features = np.r_[rng.normal(0, 1, (20, 8)), rng.normal(4, 1, (20, 8))]
    tsne_figure(features, ["a"] * 20 + ["b"] * 20, ["covid"] * 20 + ["regular"] * 20,
                tmp_path / "tsne.png", "test")
    images = torch.rand(2, 3, 6, 6)
    grad_cam_figure(Tiny(), images, ["covid", "regular"], Normalisation((0.5,) * 3, (0.25,) * 3),
                    tmp_path / "cam.png", "test")
    for name in ("tsne.png", "cam.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".tmp-*")), "no temporary left behind"
