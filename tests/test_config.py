"""params.yaml -> typed configs: the repository's params parse, mistakes are named."""

from pathlib import Path

import pytest

from pipeline.config import DecodeConfig, TrainConfig, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def test_repository_params_parse():
    params = load_params(REPO / "params.yaml")
    assert params.decode.rate == 3
    assert set(params.data) == {"pretrain", "downstream"}
    assert params.dataset("downstream").folds == 5
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
    with pytest.raises(ValueError, match="train.negatives must be 'videos' or 'frames'"):
        parse_params({"train": {"negatives": "batch"}})
    with pytest.raises(KeyError, match="no dataset 'nope'"):
        parse_params({}).dataset("nope")


def test_unlabelled_dataset_has_no_labels_path():
    params = parse_params({"data": {"raw": {"root": "somewhere", "videos": ".", "labels": None}}})
    assert params.dataset("raw").labels_path is None
    assert params.dataset("raw").videos_path == Path("somewhere")


def test_run_cards_are_read_with_todays_names():
    config = TrainConfig.from_card({"method": "meta_uscl", "jitter_on": "workers"})
    assert config.views_on == "workers" and config.method == "meta_uscl"
    with pytest.raises(ValueError, match="card.json params: unknown key"):
        TrainConfig.from_card({"colour": "blue"})
