"""What a trained CMW-Net does: pair weights per source group (Meta-USCL Fig. 6) and weight
against frame similarity within one clip (Meta-USCL Fig. 5).

Weights are computed in eval mode on un-augmented views: for Fig. 6, ``pairs`` PPI pairs per
video drawn (seeded) with the method's own pair rule; for Fig. 5, the clip's middle frame
paired with every other frame (no mixing), against the cosine similarity of their
representations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.card import RunCard
from pipeline.data.frames import frame_locations, mix_images
from pipeline.data.manifest import Manifest
from pipeline.data.views import plain_view
from pipeline.evaluate.plotting import pyplot, save_png
from pipeline.pretrain.methods import Method, load_trained
from pipeline.pretrain.pairs import plan_pair


def load_weighting(card: RunCard, checkpoint_path: Path) -> Method:
    """The trained method of a run whose method learns pair weights (a CMW-Net)."""
    method = load_trained(card, checkpoint_path)
    if not hasattr(method, "weight_net"):
        raise ValueError(f"{card.method} learns no pair weights (use meta_uscl or "
                         "meta_simclr)")
    return method


@torch.no_grad()
def video_pair_weights(method: Method, manifest: Manifest, videos: pd.DataFrame,
                       pairs: int = 4, seed: int = 0) -> pd.DataFrame:
    """``pairs`` weighted PPI pairs per video: columns video_id, pair, weight."""
    views_spec, (spec, _) = method.augment_spec(), method.pair_spec()
    rows = []
    locations_of = frame_locations(manifest, videos["video_id"].tolist())
    for index, (video, locations) in enumerate(zip(videos["video_id"], locations_of,
                                                   strict=True)):
        rng = np.random.default_rng([seed, index])
        views = []
        for _ in range(pairs):
            plan = plan_pair(rng, len(locations), spec)
            images = {i: locations[i].image(views_spec.size) for i in set(plan.frames)}
            for k in (0, 1):
                mixed = mix_images(images[plan.frames[1]], images[plan.frames[2 * k]],
                                   plan.weights[k])
                views.append(plain_view(mixed, views_spec.size, views_spec.mean,
                                        views_spec.std))
        h = method.backbone(torch.stack(views))
        weights = method.weight_net(h[0::2], h[1::2])
        rows += [{"video_id": video, "pair": i, "weight": float(w)}
                 for i, w in enumerate(weights)]
    return pd.DataFrame(rows)


@torch.no_grad()
def clip_weights(method: Method, manifest: Manifest, video_id: str) -> pd.DataFrame:
    """The clip's middle frame paired with each other frame: frame, similarity, weight."""
    views = method.augment_spec()
    locations = frame_locations(manifest, [video_id])[0]
    if len(locations) < 2:
        raise ValueError(f"{video_id} has {len(locations)} kept frame(s); need at least 2")
    h = method.backbone(torch.stack([plain_view(location.image(views.size), views.size,
                                                views.mean, views.std)
                                     for location in locations]))
    anchor = len(locations) // 2
    others = [i for i in range(len(locations)) if i != anchor]
    weights = method.weight_net(h[[anchor] * len(others)], h[others])
    similarity = torch.nn.functional.cosine_similarity(h[[anchor] * len(others)], h[others])
    return pd.DataFrame({"frame": others, "distance": [abs(i - anchor) for i in others],
                         "similarity": similarity.numpy(), "weight": weights.numpy()})


def weights_by_group_figure(weights: pd.DataFrame, groups: pd.Series, path: Path,
                            title: str) -> Path:
    """Meta-USCL Fig. 6: the distribution of pair weights per group (box plot)."""
    table = weights.assign(group=weights["video_id"].map(groups).fillna("(none)").astype(str))
    names = sorted(table["group"].unique())
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.6))
    axis.boxplot([table.loc[table["group"] == name, "weight"] for name in names])
    axis.set_xticks(range(1, len(names) + 1), names, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel("CMW-Net pair weight")
    axis.set_title(f"{title}: pair weights by {groups.name}", fontsize=9)
    return save_png(figure, path)


def weight_vs_similarity_figure(clip: pd.DataFrame, path: Path, title: str) -> Path:
    """Meta-USCL Fig. 5: weight against representation similarity within one clip."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4.4, 3.6))
    points = axis.scatter(clip["similarity"], clip["weight"], c=clip["distance"], cmap="viridis")
    figure.colorbar(points, label="frame distance to the anchor")
    axis.set_xlabel("cosine similarity to the anchor frame")
    axis.set_ylabel("CMW-Net pair weight")
    axis.set_title(title, fontsize=9)
    return save_png(figure, path)
