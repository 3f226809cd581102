"""Fine-tuning: fold discipline, trainable layers, BatchNorm switch, determinism, evaluation."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

import pipeline.evaluate.finetune as finetune_module
from pipeline.backbones import build_backbone, torchvision_state_dict
from pipeline.card import Normalisation
from pipeline.config import FinetuneConfig
from pipeline.data.manifest import load_manifest
from pipeline.data.splits import fold_assignments, split_table
from pipeline.evaluate.evaluation import evaluate, selected
from pipeline.evaluate.finetune import (
    build_classifier,
    cross_validate,
    repeated_cross_validation,
    run_fold,
    select_videos,
)

TINY = FinetuneConfig(epochs=2, batch_size=8, image_size=32, workers=0, probes=None)
NORMALISE = Normalisation((0.5,) * 3, (0.25,) * 3)


@pytest.fixture(scope="module")
def downstream(decoded_sample):
    manifest = load_manifest(decoded_sample)
    return manifest, split_table(manifest.videos, 0.2, 0, 2)


def test_selection_filters_and_groups_stay_in_one_fold(downstream):
    manifest, split = downstream
    videos = select_videos(manifest.videos, split, TINY)
    assert len(videos) == 8 and videos.groupby("group")["fold"].nunique().max() == 1
    only = select_videos(manifest.videos, split, replace(TINY, classes=["covid", "regular"]))
    assert set(only["label"]) == {"covid", "regular"}
    with pytest.raises(ValueError, match="no video left"):
        select_videos(manifest.videos, split, replace(TINY, probes=["linear-only"]))
    broken = split.assign(fold=np.where(split["group"] == "test/1", 0, 1))
    broken.loc[0, "fold"] = 1  # one clip of patient 1 on the other side
    with pytest.raises(ValueError, match="span several folds"):
        select_videos(manifest.videos, broken, TINY)


def test_a_fold_never_tests_on_training_groups_and_is_deterministic(downstream, tmp_path):
    manifest, split = downstream
    videos = select_videos(manifest.videos, split, TINY)
    first = run_fold(manifest, videos, 0, 0, TINY, "resnet18", None, NORMALISE)
    tested = set(first.predictions["video_id"])
    trained_groups = set(videos.loc[videos["fold"] != 0, "group"])
    assert tested == set(videos.loc[videos["fold"] == 0, "video_id"])
    assert not set(videos.loc[videos["video_id"].isin(tested), "group"]) & trained_groups
    assert sorted(first.predictions["epoch"].unique()) == [0, 1]
    again = run_fold(manifest, videos, 0, 0, replace(TINY, workers=2), "resnet18", None,
                     NORMALISE)
    pd.testing.assert_frame_equal(first.predictions, again.predictions)
    other = run_fold(manifest, videos, 0, 1, TINY, "resnet18", None, NORMALISE)
    assert not np.allclose(first.predictions["p_covid"], other.predictions["p_covid"])


@pytest.mark.parametrize(("mode", "trainable"), [
    ("last_block", {"layer4.1", "fc"}), ("linear", {"fc"}), ("full", None)])
def test_trainable_layers(mode, trainable, tmp_path):
    backbone, _ = build_backbone("resnet18")
    torch.save(torchvision_state_dict(backbone), tmp_path / "backbone.pt")
    model, prefixes = build_classifier("resnet18", tmp_path / "backbone.pt", 3, mode)
    assert torch.equal(model.conv1.weight, backbone.conv1.weight), "pretrained weights loaded"
    names = [name for name, _ in model.named_parameters()
             if any(name.startswith(prefix) for prefix in prefixes)]
    if trainable is None:
        assert len(names) == len(list(model.parameters()))
    else:
        assert {name.rsplit(".", 2)[0] if name.startswith("layer4") else name.split(".")[0]
                for name in names} == trainable
        if mode == "last_block":  # conv1, bn1, conv2, bn2 of the last block + the classifier
            assert len(names) == 6 + 2


def test_a_foreign_weights_file_is_a_clear_error(tmp_path):
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a resnet18 backbone"):
        build_classifier("resnet18", tmp_path / "bad.pt", 3, "last_block")


@pytest.mark.parametrize("frozen_bn", ["update", "keep"])
def test_frozen_batchnorm_statistics_switch(downstream, frozen_bn, tmp_path, monkeypatch):
    manifest, split = downstream
    backbone, _ = build_backbone("resnet18")
    torch.save(torchvision_state_dict(backbone), tmp_path / "backbone.pt")
    config = replace(TINY, epochs=1, frozen_bn=frozen_bn)
    videos = select_videos(manifest.videos, split, config)
    captured = {}
    original = build_classifier

    def capture(*args):
        model, prefixes = original(*args)
        captured["model"] = model
        return model, prefixes

    monkeypatch.setattr(finetune_module, "build_classifier", capture)
    run_fold(manifest, videos, 0, 0, config, "resnet18", tmp_path / "backbone.pt", NORMALISE)
    model = captured["model"]
    frozen_changed = not torch.equal(model.bn1.running_mean, backbone.bn1.running_mean)
    trained_changed = not torch.equal(model.layer4[1].bn1.running_mean,
                                      backbone.layer4[1].bn1.running_mean)
    assert trained_changed
    assert frozen_changed == (frozen_bn == "update")
    assert torch.equal(model.conv1.weight, backbone.conv1.weight), "frozen weights stay"


def test_evaluation_picks_last_and_best_epochs():
    curves = pd.DataFrame({"fold": [0, 0, 1, 1], "seed": 0, "epoch": [0, 1, 0, 1],
                           "train_loss": 1.0, "train_accuracy": 0.5,
                           "test_accuracy": [0.9, 0.5, 0.2, 0.6]})
    rows = []
    for fold, epoch, labels, guesses in [(0, 0, [0, 1], [0, 1]), (0, 1, [0, 1], [1, 1]),
                                         (1, 0, [1, 0], [0, 0]), (1, 1, [1, 0], [1, 0])]:
        for label, guess in zip(labels, guesses, strict=True):
            rows.append({"fold": fold, "seed": 0, "epoch": epoch, "label": label,
                         "p_a": 0.8 if guess == 0 else 0.2, "p_b": 0.2 if guess == 0 else 0.8})
    predictions = pd.DataFrame(rows)
    assert selected(predictions, curves, "last_epoch")["epoch"].tolist() == [1, 1, 1, 1]
    best = selected(predictions, curves, "best_epoch_optimistic")
    assert sorted(zip(best["fold"], best["epoch"], strict=True)) == [(0, 0), (0, 0), (1, 1),
                                                                     (1, 1)]
    metrics = evaluate(predictions, curves, ["a", "b"], None)
    assert metrics["headline"] == "last_epoch" and metrics["runs"] == 2
    assert metrics["last_epoch"]["pooled"]["accuracy"] == pytest.approx(3 / 4)
    assert metrics["best_epoch_optimistic"]["pooled"]["accuracy"] == 1.0
    assert metrics["last_epoch"]["per_run"]["accuracy"] == {"mean": 0.75,
                                                            "std": pytest.approx(0.3535534)}


def test_cross_validation_covers_every_fold_and_seed(downstream):
    manifest, split = downstream
    result = cross_validate(manifest, split, replace(TINY, epochs=1, seeds=[0, 1]),
                            "resnet18", None, NORMALISE, progress=False)
    assert sorted(map(tuple, result.curves[["fold", "seed"]].to_numpy().tolist())) == \
        [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len(result.predictions) == 2 * len(manifest.frames)  # every frame tested per seed


def test_repeated_cross_validation_marks_and_evaluates_each_fold_assignment(downstream):
    """finetune.fold_seeds: one cross-validation per fold assignment; every selected frame is
    tested once per assignment, runs are told apart by repeat, and the last epoch is picked
    per run."""
    manifest, split = downstream
    assignments = fold_assignments(manifest.videos, split, [0, 3], 0.2)
    result = repeated_cross_validation(manifest, assignments, replace(TINY, epochs=2),
                                       "resnet18", None, NORMALISE, progress=False)
    assert sorted(result.curves.groupby(["repeat", "fold", "seed"]).groups) == \
        [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)]
    last = selected(result.predictions, result.curves, "last_epoch")
    assert (last["epoch"] == 1).all()
    assert last.groupby("repeat").size().tolist() == [len(manifest.frames)] * 2
    for repeat, folds in enumerate(assignments):  # each repeat tested on its own folds
        tested = last[last["repeat"] == repeat].drop_duplicates("video_id")
        assert tested.set_index("video_id")["fold"].equals(
            folds.set_index("video_id").loc[tested["video_id"], "fold"].rename("fold")
            .astype(tested["fold"].dtype))
    assert evaluate(result.predictions, result.curves, ["covid", "pneumonia", "regular"],
                    None)["runs"] == 4
