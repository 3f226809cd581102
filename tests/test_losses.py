"""Losses against independent NumPy references and hand-computed values."""

import math

import numpy as np
import pytest
import torch

from pipeline.pretrain.losses import (
    UNLABELLED,
    hico_contrastive,
    labelled_cross_entropy,
    nt_xent,
    nt_xent_per_anchor,
    softened_cross_entropy,
)


def numpy_nt_xent(a: np.ndarray, b: np.ndarray, temperature: float) -> np.ndarray:
    """Per-anchor NT-Xent written out loop by loop from the SimCLR / USCL definition."""
    z = np.concatenate([a, b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(a)
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        sims = {k: z[i] @ z[k] / temperature for k in range(2 * n) if k != i}
        denominator = sum(math.exp(s) for s in sims.values())
        losses.append(-math.log(math.exp(sims[positive]) / denominator))
    return np.array(losses)


@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
@pytest.mark.parametrize("n", [2, 5, 16])
def test_nt_xent_matches_numpy(n, temperature):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=(n, 8)), rng.normal(size=(n, 8))
    got = nt_xent_per_anchor(torch.tensor(a), torch.tensor(b), temperature)
    np.testing.assert_allclose(got.numpy(), numpy_nt_xent(a, b, temperature), rtol=1e-5)
    assert nt_xent(torch.tensor(a), torch.tensor(b), temperature).item() == pytest.approx(
        numpy_nt_xent(a, b, temperature).mean(), rel=1e-5)


def test_hand_computed_two_pairs():
    # Two orthogonal pairs of identical views: s = 1 for the positive, 0 for both negatives.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = -math.log(math.e ** 2 / (math.e ** 2 + 2))  # t = 0.5: exp(1/0.5) vs exp(0) x 2
    assert nt_xent(a, a.clone(), 0.5).item() == pytest.approx(expected)


def test_self_similarity_is_masked():
    # Without the diagonal mask every anchor would see exp(1/t) from itself as a negative.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    unmasked = -math.log(math.e ** 2 / (2 * math.e ** 2 + 2))
    assert nt_xent(a, a.clone(), 0.5).item() != pytest.approx(unmasked)


def test_weighted_forms():
    rng = np.random.default_rng(0)
    a, b = torch.tensor(rng.normal(size=(4, 3))), torch.tensor(rng.normal(size=(4, 3)))
    per_anchor = numpy_nt_xent(a.numpy(), b.numpy(), 0.5)
    weights = np.array([0.1, 0.9, 0.5, 0.0])
    pair_sums = per_anchor[:4] + per_anchor[4:]
    paper = (weights * pair_sums).sum() / 8
    code = (weights * pair_sums).sum() / (2 * weights.sum())
    w = torch.tensor(weights)
    assert nt_xent(a, b, pair_weights=w, normalise_weights=False).item() == pytest.approx(paper)
    assert nt_xent(a, b, pair_weights=w).item() == pytest.approx(code)
    assert nt_xent(a, b, pair_weights=torch.ones(4)).item() == pytest.approx(per_anchor.mean())


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.ones(2, 2), torch.ones(2, 2), 0)
    with pytest.raises(ValueError, match="one shape"):
        nt_xent(torch.ones(2, 2), torch.ones(3, 2))
    with pytest.raises(ValueError, match="pair weights"):
        nt_xent(torch.ones(2, 2), torch.ones(2, 2), pair_weights=torch.ones(3))


def test_labelled_cross_entropy_ignores_unlabelled_and_never_nans():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]], requires_grad=True)
    labels = torch.tensor([0, UNLABELLED, 1])
    expected = np.mean([-np.log(np.exp(2) / (np.exp(2) + 1)),
                        -np.log(np.exp(-5) / (np.exp(-5) + np.exp(5)))])
    assert labelled_cross_entropy(logits, labels).item() == pytest.approx(expected)
    none = labelled_cross_entropy(logits, torch.full((3,), UNLABELLED))
    assert none.item() == 0 and not torch.isnan(none)
    none.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def numpy_softened_ce(logits, labels, alpha, divisor):
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    targets = (1 - alpha) * np.eye(logits.shape[1])[labels] + divisor
    return -(targets * log_p).sum(1).mean()


def test_softened_cross_entropy_modes():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 12))
    labels = np.array([3, 0, UNLABELLED, 11, UNLABELLED, 3])
    kept = labels != UNLABELLED
    t_logits, t_labels = torch.tensor(logits), torch.tensor(labels)
    for mode, spread in (("code", 0.2 / (4 - 1)), ("paper", 0.2 / (6 - 1)),
                         ("standard", 0.2 / 12)):
        expected = numpy_softened_ce(logits[kept], labels[kept], 0.2, spread)
        got = softened_cross_entropy(t_logits, t_labels, 0.2, mode)
        assert got.item() == pytest.approx(expected), mode
    # The literal targets do not sum to 1 (12 classes, 4 labelled): 0.8 + 12 * 0.2 / 3 = 1.6.
    single = softened_cross_entropy(t_logits[:1], t_labels[:1], 0.2, "code")
    assert single.item() == pytest.approx(numpy_softened_ce(logits[:1], labels[:1], 0.2, 0.0))
    assert softened_cross_entropy(t_logits, torch.full((6,), UNLABELLED)).item() == 0
    with pytest.raises(ValueError, match="mode"):
        softened_cross_entropy(t_logits, t_labels, mode="other")


def test_hico_terms_compose_as_in_the_paper():
    rng = np.random.default_rng(2)
    views = [{level: rng.normal(size=(5, 4)) for level in ("local", "medium", "global")}
             for _ in range(2)]
    tensors = [{k: torch.tensor(v) for k, v in view.items()} for view in views]

    def nt(x, y):
        return numpy_nt_xent(x, y, 0.5).mean()

    (r1, k1, z1), (r2, k2, z2) = ((v["local"], v["medium"], v["global"]) for v in views)
    peer = nt(r1, r2) + nt(k1, k2) + nt(z1, z2)
    same = nt(z1, k1) + nt(z2, k2) + nt(z1, r1) + nt(z2, r2)
    cross = nt(z1, k2) + nt(z2, k1) + nt(z1, r2) + nt(z2, r1)
    code = hico_contrastive(*tensors, peer_weight=0.5, cross_level="same_view")
    paper = hico_contrastive(*tensors, peer_weight=0.3, cross_level="cross_view")
    assert code["total"].item() == pytest.approx(0.5 * peer + 0.5 * same, rel=1e-5)
    assert paper["total"].item() == pytest.approx(0.3 * peer + 0.7 * cross, rel=1e-5)
    assert code["local"].item() == pytest.approx(nt(r1, r2), rel=1e-5)


def test_low_precision_inputs_are_computed_in_fp32():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(8, 16)), rng.normal(size=(8, 16))
    got = nt_xent(torch.tensor(a, dtype=torch.bfloat16), torch.tensor(b, dtype=torch.bfloat16))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(numpy_nt_xent(a, b, 0.5).mean(), rel=2e-2)
