"""The embedded sample generator: deterministic real files, POCUS schema, a learnable signal."""

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.data.synthetic import CLASSES, FRAME_RATES, clip_specs, render_frames, write_dataset
from tests.conftest import SHARED_DATA


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((folder / "videos").iterdir())}


def test_same_seed_same_files_other_seed_other_files(tmp_path, sample_videos):
    write_dataset(tmp_path / "again", count=8, seed=7, group_prefix="test")
    assert digest(tmp_path / "again") == digest(sample_videos)
    assert (tmp_path / "again" / "labels.csv").read_bytes() == \
        (sample_videos / "labels.csv").read_bytes()
    write_dataset(tmp_path / "other", count=8, seed=8, group_prefix="test")
    assert digest(tmp_path / "other") != digest(sample_videos)
    write_dataset(tmp_path / "parallel", count=8, seed=7, group_prefix="test", workers=2)
    assert digest(tmp_path / "parallel") == digest(sample_videos)


def test_labels_csv_follows_the_pocus_schema(sample_videos):
    labels = pd.read_csv(sample_videos / "labels.csv")
    assert list(labels.columns[:4]) == ["path", "label", "probe", "group"]
    pocus = SHARED_DATA / "pocus" / "labels.csv"
    if pocus.is_file():
        assert list(labels.columns) == list(pd.read_csv(pocus).columns)
    assert set(labels["label"]) == set(CLASSES)
    assert sorted(labels["path"]) == sorted(p.name for p in (sample_videos / "videos").iterdir())


def test_specs_vary_container_rate_size_and_keep_patients_to_one_class():
    specs = clip_specs(60, seed=0)
    assert {s.video_format.extension for s in specs} == {".mp4", ".avi", ".gif", ".mpeg"}
    assert set(FRAME_RATES) <= {s.fps for s in specs}
    assert len({s.size for s in specs}) >= 3
    by_patient = pd.DataFrame([(s.patient, s.label) for s in specs], columns=["p", "label"])
    assert by_patient.groupby("p")["label"].nunique().max() == 1
    counts = by_patient["label"].value_counts()
    assert counts.max() - counts.min() <= 3


def test_classes_are_learnable_across_patients_but_not_trivially():
    """A ridge classifier on raw 32x32 pixels, trained on some patients, tested on others."""
    specs = [replace(s, size=(64, 64)) for s in clip_specs(90, seed=1)]
    features, labels, patients = [], [], []
    for spec in specs:
        for pixels in render_frames(spec, times=(0.0, 0.7, 1.4)):
            small = Image.fromarray(pixels).resize((32, 32), Image.BILINEAR)
            features.append(np.asarray(small, np.float64).ravel() / 255)
            labels.append(CLASSES.index(spec.label))
            patients.append(spec.patient)
    x = np.c_[np.array(features), np.ones(len(features))]
    y, patients = np.eye(3)[labels], np.array(patients)
    test = patients % 3 == 0
    weights = np.linalg.solve(x[~test].T @ x[~test] + 10 * np.eye(x.shape[1]),
                              x[~test].T @ y[~test])
    accuracy = (np.argmax(x[test] @ weights, 1) == np.argmax(y[test], 1)).mean()
    assert 0.45 < accuracy < 0.97, accuracy  # chance is 1/3
