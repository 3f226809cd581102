"""PPI pair plans and SPG batches: distributions, frame choice, fallbacks, no duplicates."""

from collections import Counter

import numpy as np
import pytest

from pipeline.pretrain.pairs import PairSpec, plan_pair, video_batches


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov D."""
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


@pytest.mark.parametrize("alpha,beta", [(0.5, 0.5), (3.0, 5.0)])
def test_anchor_weights_follow_the_configured_beta(alpha, beta):
    rng = np.random.default_rng(0)
    plans = [plan_pair(rng, 30, PairSpec(alpha=alpha, beta=beta)) for _ in range(8000)]
    w1, w2 = (np.array([p.weights[k] for p in plans]) for k in (0, 1))
    reference = np.random.default_rng(1).beta(alpha, beta, size=8000)
    # 1.63 * sqrt(2/n) is the two-sample KS critical value at the 1 % level.
    assert ks_statistic(w1, reference) < 1.63 * np.sqrt(2 / 8000)
    assert ks_statistic(w2, reference) < 1.63 * np.sqrt(2 / 8000)
    assert w1.mean() == pytest.approx(alpha / (alpha + beta), abs=0.01)
    assert abs(np.corrcoef(w1, w2)[0, 1]) < 0.05, "independent draws"


def test_shared_weight_uses_one_draw_for_both_views():
    rng = np.random.default_rng(0)
    plans = [plan_pair(rng, 10, PairSpec(shared_weight=True)) for _ in range(100)]
    assert all(p.weights[0] == p.weights[1] for p in plans)


def test_ppi_frames_are_distinct_in_range_and_chronological_when_asked():
    rng = np.random.default_rng(0)
    orders = Counter()
    for count in (3, 4, 17):
        for chronological in (True, False):
            for _ in range(300):
                first, anchor, last = plan_pair(
                    rng, count, PairSpec(chronological=chronological)).frames
                assert len({first, anchor, last}) == 3
                assert all(0 <= f < count for f in (first, anchor, last))
                if chronological:
                    assert first < anchor < last
                else:
                    orders[(first < anchor, anchor < last)] += 1
    assert len(orders) == 4, "the code preset draws frames in any order"


def test_max_distance_bounds_the_spread():
    rng = np.random.default_rng(0)
    for _ in range(500):
        first, anchor, last = plan_pair(rng, 100, PairSpec(max_distance=6)).frames
        assert first < anchor < last <= first + 6


def test_short_videos_fall_back():
    rng = np.random.default_rng(0)
    one = plan_pair(rng, 1, PairSpec())
    assert one.frames == (0, 0, 0)
    assert one.view(0) == ((0, 0.0), (0, 1.0)) and one.view(1) == ((0, 0.0), (0, 1.0))
    two = plan_pair(rng, 2, PairSpec())
    assert {two.view(0)[0][0], two.view(1)[1][0]} == {0, 1}, "the two views are the two frames"
    assert two.view(0)[0][1] == 1.0 and two.view(1)[1][1] == 1.0
    with pytest.raises(ValueError, match="at least one frame"):
        plan_pair(rng, 0, PairSpec())


def test_modes_s1_and_s2():
    rng = np.random.default_rng(0)
    for _ in range(100):
        same = plan_pair(rng, 20, PairSpec(mode="same_frame"))
        assert len(set(same.frames)) == 1
        two = plan_pair(rng, 20, PairSpec(mode="two_frames"))
        first, second = two.view(0)[0][0], two.view(1)[1][0]
        assert first < second
    assert {plan_pair(rng, n, PairSpec(mode="first_frame")).frames for n in (1, 2, 20)} \
        == {(0, 0, 0)}
    assert len({plan_pair(rng, 20, PairSpec(mode="same_frame")).frames for _ in range(50)}) > 5
    with pytest.raises(ValueError, match="pair mode"):
        PairSpec(mode="four")


def test_spg_batches_never_repeat_a_video_and_ranks_are_disjoint():
    epochs = []
    for world in (1, 2, 3):
        per_rank = [video_batches(101, 8, np.random.default_rng(5), rank, world)
                    for rank in range(world)]
        seen = [v for batches in per_rank for batch in batches for v in batch]
        assert len(seen) == len(set(seen)) == 101 - 101 % world
        assert len({len(batches) for batches in per_rank}) == 1, "equal batch counts per rank"
        for batches in per_rank:
            assert all(len(set(batch)) == len(batch) <= 8 for batch in batches)
        epochs.append(per_rank[0])
    assert video_batches(101, 8, np.random.default_rng(5)) == epochs[0]
    assert video_batches(101, 8, np.random.default_rng(6)) != epochs[0]
    assert all(len(b) == 8 for b in video_batches(101, 8, np.random.default_rng(5),
                                                  drop_last=True))
