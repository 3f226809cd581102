"""Seeded, grouped, stratified video-level splits: the 8:2 train/val split and k-fold assignment.

Units of assignment are groups (the ``group`` column: patient or source; a video without a group
is its own group), so no video and no group is ever on both sides. Groups that hold copies of one
file (the same ``content_sha256``) are merged into one unit first: a copy on each side would
leak the test video into training. Groups are placed one at a
time, largest first (ties in a seeded random order), each into the part whose per-label video
counts fall furthest short of that part's target share: a greedy form of stratified group
k-fold. The same table and seed always give the same assignment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

NO_LABEL_STRATUM = "<none>"  # the stratum of videos without a label


def video_groups(videos: pd.DataFrame) -> pd.Series:
    """Each video's group (patient or source); a video without one is its own group; groups
    sharing a file's content are one group, named by their names joined with ``+``."""
    group = videos["group"] if "group" in videos.columns else pd.Series(None, index=videos.index)
    group = group.where(group.notna() & (group.astype(str) != ""), "video:" + videos["video_id"])
    if "content_sha256" not in videos.columns:
        return group
    return merge_copies(group.astype(str), videos["content_sha256"])


def merge_copies(group: pd.Series, content: pd.Series) -> pd.Series:
    """Union of the groups that share a content hash (null hashes share nothing)."""
    parent = {name: name for name in group.unique()}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name] = parent[parent[name]]
        return name

    for _, names in group[content.notna()].groupby(content[content.notna()]):
        first, *others = (root(name) for name in names.unique())
        for other in others:
            parent[other] = first
    members: dict[str, list[str]] = {}
    for name in parent:
        members.setdefault(root(name), []).append(name)
    merged = {name: "+".join(sorted(members[root(name)])) for name in parent}
    return group.map(merged)


def copies_across_groups(videos: pd.DataFrame) -> list[dict[str, object]]:
    """Files present more than once under different groups: each content hash with its videos
    and groups (these groups are merged by :func:`video_groups`)."""
    if "content_sha256" not in videos.columns:
        return []
    own = videos.assign(_group=video_groups(videos.drop(columns="content_sha256")))
    copies = []
    for digest, rows in own[own["content_sha256"].notna()].groupby("content_sha256"):
        if rows["_group"].nunique() > 1:
            copies.append({"content_sha256": digest,
                           "videos": sorted(rows["source_path"].astype(str)),
                           "groups": sorted(rows["_group"].unique())})
    return copies


def _labels(videos: pd.DataFrame) -> pd.Series:
    label = videos["label"] if "label" in videos.columns else pd.Series(None, index=videos.index)
    return label.astype(object).fillna(NO_LABEL_STRATUM).astype(str)


def assign_parts(videos: pd.DataFrame, shares: Sequence[float], seed: int) -> pd.Series:
    """Part index (0..len(shares)-1) per video, grouped by ``group``, stratified by ``label``.

    ``shares`` are the target fractions of videos per part (they are normalised).
    """
    if videos["video_id"].duplicated().any():
        raise ValueError("video ids must be unique to split")
    targets = np.asarray(shares, dtype=float) / np.sum(shares)
    groups, labels = video_groups(videos), _labels(videos)
    label_names = sorted(labels.unique())
    counts = pd.crosstab(groups, labels).reindex(columns=label_names, fill_value=0)
    if len(counts) < len(targets):
        raise ValueError(f"cannot split {len(counts)} group(s) into {len(targets)} parts: "
                         "every part needs at least one group")
    rng = np.random.default_rng(seed)
    order = counts.index[rng.permutation(len(counts))]
    sizes = counts.loc[order].sum(axis=1).to_numpy()
    order = order[np.argsort(-sizes, kind="stable")]

    label_totals = counts.sum(axis=0).to_numpy(dtype=float)
    assigned = np.zeros((len(targets), len(label_names)))
    part_of_group = {}
    for group in order:
        vector = counts.loc[group].to_numpy(dtype=float)
        # Shortfall of each part w.r.t. its target share, on this group's labels and overall.
        deficit = (targets[:, None] * label_totals - assigned) / label_totals
        overall = targets - assigned.sum(axis=1) / label_totals.sum()
        score = deficit @ (vector / vector.sum()) + overall
        part = int(np.argmax(score))
        assigned[part] += vector
        part_of_group[group] = part
    parts = groups.map(part_of_group).astype(int)
    empty = sorted(set(range(len(targets))) - set(parts))
    if empty:
        raise ValueError(f"part(s) {empty} of the split got no video: {len(counts)} groups are "
                         "too few or too uneven for these shares")
    return parts


def train_val_split(videos: pd.DataFrame, val_fraction: float, seed: int) -> pd.Series:
    """``"train"``/``"val"`` per video: the seeded 8:2 (by default) grouped, stratified split."""
    parts = assign_parts(videos, [1 - val_fraction, val_fraction], seed)
    return parts.map({0: "train", 1: "val"})


def k_folds(videos: pd.DataFrame, k: int, seed: int) -> pd.Series:
    """Fold 0..k-1 per video for grouped, stratified k-fold cross-validation."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    return assign_parts(videos, [1.0] * k, seed)


def split_table(videos: pd.DataFrame, val_fraction: float, seed: int, folds: int = 0
                ) -> pd.DataFrame:
    """The persisted split: one row per decoded video with its group, label, split (and fold)."""
    usable = videos[videos["status"] == "ok"].sort_values("video_id").reset_index(drop=True)
    if usable.empty:
        raise ValueError("no decoded videos (status ok) to split")
    table = pd.DataFrame({
        "video_id": usable["video_id"],
        "group": video_groups(usable),
        "label": usable["label"] if "label" in usable.columns else None,
        "split": train_val_split(usable, val_fraction, seed),
    })
    if folds:
        table["fold"] = k_folds(usable, folds, seed)
    return table


def fold_assignments(videos: pd.DataFrame, split: pd.DataFrame, seeds: list[int] | None,
                     val_fraction: float) -> list[pd.DataFrame]:
    """Repeated cross-validation: the persisted split's folds (``seeds`` null or empty), else
    one grouped k-fold assignment per seed, with as many folds, by :func:`split_table`."""
    if not seeds:
        return [split]
    folds = int(split["fold"].max()) + 1
    return [split_table(videos, val_fraction, seed, folds) for seed in seeds]
