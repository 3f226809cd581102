"""Grouped, stratified, seeded splits: no group on two sides, balanced, reproducible."""

import numpy as np
import pandas as pd
import pytest

from pipeline.data.splits import (
    assign_parts,
    fold_assignments,
    k_folds,
    split_table,
    train_val_split,
)


def table(seed: int = 0, videos: int = 120, groups: int = 40, labelled: bool = True):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, groups, size=videos)
    frame = pd.DataFrame({
        "video_id": [f"v{i:03d}" for i in range(videos)],
        "group": [f"g{g}" for g in group],
        "status": "ok",
    })
    if labelled:  # a patient's videos mostly share a label, as in POCUS
        patient_label = rng.choice(["covid", "pneumonia", "regular"], size=groups, p=[.3, .2, .5])
        frame["label"] = patient_label[group]
    return frame


def sides_per_group(frame: pd.DataFrame, column: str) -> int:
    return int(frame.groupby("group")[column].nunique().max())


@pytest.mark.parametrize("seed", range(5))
def test_train_val_never_splits_a_group_and_is_close_to_8_2(seed):
    videos = table(seed)
    videos["split"] = train_val_split(videos, 0.2, seed)
    assert sides_per_group(videos, "split") == 1
    share = (videos["split"] == "val").mean()
    assert 0.15 <= share <= 0.25
    for _, per_label in videos.groupby("label"):
        assert 0.1 <= (per_label["split"] == "val").mean() <= 0.32


def test_same_seed_same_split_other_seed_other_split():
    videos = table(3)
    first, again = train_val_split(videos, 0.2, 11), train_val_split(videos, 0.2, 11)
    assert first.equals(again)
    assert not first.equals(train_val_split(videos, 0.2, 12))


def test_row_order_does_not_matter():
    videos = table(4)
    shuffled = videos.sample(frac=1, random_state=0)
    a = train_val_split(videos, 0.2, 0)
    b = train_val_split(shuffled, 0.2, 0).reindex(videos.index)
    assert a.equals(b)


@pytest.mark.parametrize("k", [3, 5])
def test_k_folds_cover_every_video_once_and_keep_groups_whole(k):
    videos = table(1)
    videos["fold"] = k_folds(videos, k, seed=0)
    assert set(videos["fold"]) == set(range(k))
    assert sides_per_group(videos, "fold") == 1
    sizes = videos["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 0.2 * len(videos) / k + 3
    counts = pd.crosstab(videos["label"], videos["fold"])
    assert (counts > 0).all().all(), "every class appears in every fold"


def test_videos_without_group_are_their_own_group_and_unlabelled_data_works():
    videos = table(2, labelled=False)
    videos.loc[::3, "group"] = None
    parts = assign_parts(videos, [0.8, 0.2], seed=0)
    assert set(parts) == {0, 1}
    assert 0.15 <= parts.mean() <= 0.25


def test_too_few_groups_is_a_clear_error():
    videos = table(0, videos=10, groups=1)
    with pytest.raises(ValueError, match="cannot split 1 group"):
        train_val_split(videos, 0.2, 0)


def test_split_table_excludes_failed_videos_and_adds_folds():
    videos = table(5)
    videos.loc[:4, "status"] = "unreadable"
    result = split_table(videos, 0.2, 0, folds=5)
    assert len(result) == len(videos) - 5
    assert list(result.columns) == ["video_id", "group", "label", "split", "fold"]
    assert "fold" not in split_table(videos, 0.2, 0).columns


def test_a_part_left_empty_is_an_error_not_a_silent_split():
    videos = pd.DataFrame({"video_id": ["a", "b"], "group": ["g1", "g2"],
                           "label": ["covid", "regular"], "status": "ok"})
    with pytest.raises(ValueError, match="got no video"):
        train_val_split(videos, 0.2, 0)


def test_fold_assignments_repeat_the_folds_with_other_seeds():
    videos = table(6)
    persisted = split_table(videos, 0.2, 0, folds=5)
    assert fold_assignments(videos, persisted, None, 0.2) == [persisted]
    assert fold_assignments(videos, persisted, [], 0.2) == [persisted]
    repeats = fold_assignments(videos, persisted, [0, 7, 8], 0.2)
    assert repeats[0].equals(persisted)  # seed 0 draws the persisted split's folds again
    for folds in repeats:
        assert sorted(folds["fold"].unique()) == list(range(5))
        assert sides_per_group(folds, "fold") == 1  # a patient stays in one fold
        assert sorted(folds["video_id"]) == sorted(persisted["video_id"])
    assert not repeats[1]["fold"].equals(repeats[2]["fold"])
