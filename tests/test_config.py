"""params.yaml -> typed configs: the repository's params parse, mistakes are named."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline import config
from pipeline.config import DecodeConfig, TrainConfig, load_params, parse_params
from pipeline.pretrain.methods import build_method

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_parse():
    params = load_params(REPO / "params.yaml")
    assert params.decode.rate == 3
    assert set(params.data) == {"pretrain", "downstream", "lesions"}
    assert params.dataset("downstream").folds == 5
    assert {task.dataset for task in params.tasks.values()} == {"lesions"}
    assert {task.kind for task in params.tasks.values()} == {"classification", "segmentation"}
    pretrain = params.dataset("pretrain")
    assert pretrain.labels_path == pretrain.videos_path.parent / "labels.csv"


def test_unknown_keys_and_bad_values_are_named():
    with pytest.raises(ValueError, match=r"decode: unknown key\(s\) fps"):
        parse_params({"decode": {"fps": 3}})
    with pytest.raises(ValueError, match="jpeg_quality"):
        DecodeConfig(jpeg_quality=0)
    with pytest.raises(ValueError, match="folds"):
        parse_params({"data": {"x": {"root": "r", "folds": 1}}})
    with pytest.raises(ValueError, match="must be a path inside root"):
        parse_params({"data": {"x": {"root": "r", "labels": "/elsewhere/labels.csv"}}})
    with pytest.raises(ValueError, match="train.negatives: 'batch' is not one of videos, frames"):
        parse_params({"train": {"negatives": "batch"}})
    with pytest.raises(KeyError, match="no dataset 'nope'"):
        parse_params({}).dataset("nope")


def test_unlabelled_dataset_has_no_labels_path():
    params = parse_params({"data": {"raw": {"root": "somewhere", "videos": ".", "labels": None}}})
    assert params.dataset("raw").labels_path is None
    assert params.dataset("raw").videos_path == Path("somewhere")


def test_run_cards_are_read_with_todays_names():
    old = TrainConfig.from_card({"method": "meta_uscl", "jitter_on": "workers",
                                 "meta": {"normalise": False}})
    assert old.views_on == "workers" and old.method == "meta_uscl"
    assert old.meta.divide_by_weight_sum is False
    with pytest.raises(ValueError, match="card.json params: unknown key"):
        TrainConfig.from_card({"colour": "blue"})


@pytest.mark.parametrize("key, value, choices", [
    ("method", "byol", "uscl, hico, simclr, supervised, scratch, meta_uscl, meta_simclr"),
    ("preset", "papr", "code, paper"),
    ("backbone", "resnet19", "resnet18, resnet34"),
    ("pair_mode", "ppii", "ppi, two_frames, same_frame"),
    ("views_on", "gpu", "auto, workers, device"),
    ("negatives", "clips", "videos, frames"),
])
def test_a_wrong_choice_names_the_key_and_the_choices(key, value, choices):
    with pytest.raises(ValueError, match=f"train.{key}: '{value}' is not one of {choices}"):
        parse_params({"train": {key: value}})


def test_nested_method_sections_are_validated():
    with pytest.raises(ValueError, match=r"train.hico: unknown key\(s\) beta"):
        parse_params({"train": {"hico": {"beta": 1}}})
    assert parse_params({"train": {"hico": {"alpha": 0.1}}}).train.hico.alpha == 0.1
    with pytest.raises(ValueError, match="train.meta.meta_set: 'leaky' is not one of"):
        parse_params({"train": {"meta": {"meta_set": "leaky"}}})


def test_params_are_validated_before_torch_is_imported():
    """A params mistake is reported at once: loading params imports no deep-learning stack."""
    code = ("import sys; from pipeline.config import load_params; load_params(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'av', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "params.yaml")],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_the_choices_are_the_registries():
    from typing import get_args

    from pipeline.backbones import BACKBONES
    from pipeline.pretrain.pairs import PairMode

    assert tuple(BACKBONES) == config.BACKBONES
    assert set(get_args(PairMode)) == set(config.PAIR_MODES)


def test_run_card_round_trips_and_reads_version_1(tmp_path):
    from pipeline.card import CARD_VERSION, Normalisation, RunCard

    card = RunCard(method="uscl", preset="code", backbone="resnet18", classes=["a", "b"],
                   train_videos=3, labelled_videos=2, epochs=1, params={"method": "uscl"},
                   data="1", normalisation=Normalisation((0.5,) * 3, (0.25,) * 3))
    card.save(tmp_path / "card.json")
    assert RunCard.load(tmp_path / "card.json") == card and card.version == CARD_VERSION
    old = {key: value for key, value in card.to_dict().items() if key != "version"}
    old["normalise"] = old.pop("normalisation")
    assert RunCard.from_dict(old) == card
    with pytest.raises(ValueError, match="newer than this uspipe reads"):
        RunCard.from_dict({**card.to_dict(), "version": CARD_VERSION + 1})
    with pytest.raises(ValueError, match=r"not a run card \(missing backbone"):
        RunCard.from_dict({"method": "uscl"}, "x.json")


def knobs(config: TrainConfig) -> tuple:
    return config.supervised_weight, config.projection_dim, config.jitter_p, config.lr_schedule


def test_presets_fill_only_the_knobs_left_null():
    assert knobs(TrainConfig(preset="proto").resolved()) == (0.0, 128, 0.8, "cosine_per_step")
    code = TrainConfig(preset="code", jitter_p=0.5)
    assert knobs(code.resolved()) == (0.2, 256, 0.5, "constant_then_cosine")
    assert code.resolved().resolved() == code.resolved()
    with pytest.raises(ValueError, match="train.lr_schedule: 'linear' is not one of"):
        TrainConfig(lr_schedule="linear")


def test_a_replaced_preset_brings_its_own_knobs():
    """The study's "proto" runs were built as ``replace(code_config, preset="proto")`` when a
    config filled its knobs at construction: they trained with the code preset's knobs."""
    code = TrainConfig(preset="code", image_size=112)
    assert knobs(replace(code, preset="proto").resolved()) == knobs(
        TrainConfig(preset="proto", image_size=112).resolved())
    assert knobs(replace(code, preset="proto", supervised_weight=0.2).resolved()) == (
        0.2, 128, 0.8, "cosine_per_step")
    assert build_method(replace(code, preset="proto")).config.supervised_weight == 0.0
