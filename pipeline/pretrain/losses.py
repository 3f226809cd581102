"""Contrastive and supervised losses of USCL, HiCo and Meta-USCL (``docs/methods.md`` §5).

Plain functions on tensors, checked in ``tests/test_losses.py`` against NumPy references:

* :func:`nt_xent`: NT-Xent / InfoNCE (USCL Eqs. 3-5, HiCo Eqs. 1-4, Meta-USCL Eqs. 1-3), with
  optional per-pair weights (Meta-USCL Eq. 1);
* :func:`labelled_cross_entropy`: the supervised term on the labelled part of a batch (USCL
  Eq. 6), zero rather than NaN when a batch has no labelled sample;
* :func:`softened_cross_entropy`: HiCo's softened CE (HiCo Eq. 7), literal or standard;
* :func:`hico_contrastive`: HiCo's peer-level and cross-level terms (HiCo Eqs. 5-6).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F

UNLABELLED = -1


def nt_xent_per_anchor(z_a: torch.Tensor, z_b: torch.Tensor,
                       temperature: float = 0.5) -> torch.Tensor:
    """Per-anchor NT-Xent losses, shape (2N,): anchors ``z_a`` (rows 0..N-1) then ``z_b``.

    Each of the 2N L2-normalised embeddings is an anchor whose positive is its partner in the
    other view; the other 2N-2 embeddings are its negatives, itself excluded (the diagonal
    mask). ``loss_i = -log(exp(s_ip / t) / sum_{k != i} exp(s_ik / t))`` with cosine
    similarities ``s``.
    """
    if z_a.shape != z_b.shape or z_a.dim() != 2:
        raise ValueError(f"expected two (N, d) tensors of one shape, got {tuple(z_a.shape)} "
                         f"and {tuple(z_b.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    count = z_a.shape[0]
    embeddings = torch.cat([z_a, z_b])  # at least fp32: bf16/fp16 logits lose the positives
    embeddings = F.normalize(embeddings.to(torch.promote_types(embeddings.dtype, torch.float32)),
                             dim=1)
    logits = embeddings @ embeddings.T / temperature
    logits = logits.masked_fill(torch.eye(2 * count, dtype=torch.bool, device=logits.device),
                                float("-inf"))
    partners = torch.arange(2 * count, device=logits.device).roll(count)
    return F.cross_entropy(logits, partners, reduction="none")


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.5,
            pair_weights: torch.Tensor | None = None, normalise_weights: bool = True
            ) -> torch.Tensor:
    """Mean NT-Xent over the 2N anchors, or its pair-weighted form (Meta-USCL Eq. 1).

    With ``pair_weights`` (N,), pair i's two anchor losses are weighted by ``w_i``:
    ``sum_i w_i (l_i + l_i') / (2N)`` as in the paper, or divided by ``2 sum_i w_i`` instead
    of 2N with ``normalise_weights`` (the released code).
    """
    losses = nt_xent_per_anchor(z_a, z_b, temperature)
    if pair_weights is None:
        return losses.mean()
    weights = pair_weights.reshape(-1).to(losses.dtype).repeat(2)
    if weights.numel() != losses.numel():
        raise ValueError(f"{pair_weights.numel()} pair weights for {z_a.shape[0]} pairs")
    total = (weights * losses).sum()
    return total / weights.sum() if normalise_weights else total / losses.numel()


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the samples whose label is not :data:`UNLABELLED`.

    A batch with no labelled sample gives 0 (with a gradient path), not NaN: at 1 % labels most
    batches of 32 videos have none (docs/methods.md §5.2).
    """
    labelled = labels != UNLABELLED
    if not labelled.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled].float(), labels[labelled])


SofteningMode = Literal["code", "paper", "standard"]


def softened_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.2,
                           mode: SofteningMode = "code") -> torch.Tensor:
    """HiCo's softened cross-entropy over the labelled samples (HiCo Eq. 7).

    The target of a labelled sample is ``(1 - alpha) * onehot(y) + alpha / (K - 1)`` on every
    class, where K is the number of labelled samples in the batch (``"code"``, the released
    implementation) or the batch size (``"paper"``, Eq. 7's N); these targets do not sum to 1.
    ``"standard"`` is ordinary label smoothing (``alpha / C``). When K <= 1 the off-target
    term is undefined and dropped (plain CE). Averaged over labelled samples; 0 if none.
    """
    if mode not in ("code", "paper", "standard"):
        raise ValueError(f"unknown softening mode {mode!r}")
    labelled = labels != UNLABELLED
    count = int(labelled.sum())
    if count == 0:
        return logits.sum() * 0.0
    log_probs = F.log_softmax(logits[labelled].float(), dim=1)
    classes = log_probs.shape[1]
    onehot = F.one_hot(labels[labelled], classes).to(log_probs.dtype)
    if mode == "standard":
        spread = alpha / classes
    else:
        k = count if mode == "code" else labels.numel()
        spread = alpha / (k - 1) if k > 1 else 0.0
    targets = (1 - alpha) * onehot + spread
    return -(targets * log_probs).sum(dim=1).mean()


HICO_LEVELS = ("local", "medium", "global")
CrossLevel = Literal["same_view", "cross_view"]


def hico_contrastive(view_1: Mapping[str, torch.Tensor], view_2: Mapping[str, torch.Tensor],
                     peer_weight: float = 0.5, temperature: float = 0.5,
                     cross_level: CrossLevel = "same_view") -> dict[str, torch.Tensor]:
    """HiCo's contrastive loss (HiCo Eq. 6) and its terms, from per-level embeddings.

    Peer-level: ``L_ll, L_mm, L_gg = NT(r1, r2), NT(k1, k2), NT(z1, z2)``. Cross-level,
    ``"same_view"`` (released code): ``L_gm = NT(z1, k1) + NT(z2, k2)`` and ``L_gl = NT(z1, r1) +
    NT(z2, r2)``; ``"cross_view"`` (paper Eq. 5): ``NT(z1, k2) + NT(z2, k1)`` and
    ``NT(z1, r2) + NT(z2, r1)``. ``total = lambda (L_ll + L_mm + L_gg) + (1 - lambda)
    (L_gm + L_gl)`` with ``lambda = peer_weight``.
    """
    def nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return nt_xent(a, b, temperature)

    r1, k1, z1 = (view_1[level] for level in HICO_LEVELS)
    r2, k2, z2 = (view_2[level] for level in HICO_LEVELS)
    terms = {"local": nt(r1, r2), "medium": nt(k1, k2), "global": nt(z1, z2)}
    if cross_level == "same_view":
        terms["global_medium"] = nt(z1, k1) + nt(z2, k2)
        terms["global_local"] = nt(z1, r1) + nt(z2, r2)
    elif cross_level == "cross_view":
        terms["global_medium"] = nt(z1, k2) + nt(z2, k1)
        terms["global_local"] = nt(z1, r2) + nt(z2, r1)
    else:
        raise ValueError(f"unknown cross-level mode {cross_level!r}")
    peer = terms["local"] + terms["medium"] + terms["global"]
    cross = terms["global_medium"] + terms["global_local"]
    terms["total"] = peer_weight * peer + (1 - peer_weight) * cross
    return terms
