"""Video ids, source listing and labels.csv handling."""

import re

import pytest

from pipeline.data.sources import ID_DIGITS, discover, list_sources, read_labels, video_id

NAMES = ["convex/Cov-Atlas+(44).gif", "convex/Cov-Atlas (44).gif", "convex/Cov.Atlas.44.gif",
         "linear/label_uncertain/Vir_or_Pneu prospective file4.mp4", "ü/ñame.mov",
         "a" * 300 + ".mp4"]


def test_ids_are_safe_unique_and_stable():
    ids = [video_id(name) for name in NAMES]
    assert len(set(ids)) == len(ids)
    for identifier in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", identifier), identifier
        assert len(identifier) <= 61 + ID_DIGITS
    assert ids == [video_id(name) for name in NAMES]
    assert video_id("convex/Cov-Atlas+(44).gif").startswith("convex__Cov-Atlas_44_gif-")


def test_listing_skips_hidden_and_non_video_files(tmp_path):
    for name in ("b.mp4", "sub/a.avi", ".hidden.mp4", ".git/x.mp4", "labels.csv", "README.md",
                 "odd.bin"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert [s.relative_path for s in list_sources(tmp_path)] == ["b.mp4", "odd.bin", "sub/a.avi"]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="video folder not found"):
        list_sources(tmp_path / "nope")


def test_labels_errors_name_the_file(tmp_path):
    no_path = tmp_path / "a.csv"
    no_path.write_text("file,label\nx.mp4,covid\n")
    with pytest.raises(ValueError, match=r"a\.csv: no 'path' column"):
        read_labels(no_path)
    twice = tmp_path / "b.csv"
    twice.write_text("path,label\nx.mp4,covid\nx.mp4,regular\n")
    with pytest.raises(ValueError, match=r"b\.csv: paths listed twice: x\.mp4"):
        read_labels(twice)


def test_discover_joins_labels_and_reports_missing(tmp_path):
    videos = tmp_path / "videos"
    (videos / "convex").mkdir(parents=True)
    (videos / "convex" / "a+(1).mp4").write_bytes(b"x")
    (videos / "unlabelled.mp4").write_bytes(b"x")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,probe,group\nconvex/a+(1).mp4,covid,convex,p1\n"
                      "gone.mp4,regular,convex,p2\n")
    sources = discover(videos, labels)
    assert [s.relative_path for s in sources] == ["convex/a+(1).mp4", "unlabelled.mp4",
                                                  "gone.mp4"]
    assert sources[0].labels == {"label": "covid", "probe": "convex", "group": "p1"}
    assert sources[1].labels == {}
    assert [s.status for s in sources] == ["ok", "ok", "missing"]
    assert sources[2].labels["label"] == "regular" and "no such file" in sources[2].error


def test_labels_paths_are_normalised_and_reserved_columns_refused(tmp_path):
    videos = tmp_path / "videos"
    (videos / "convex").mkdir(parents=True)
    (videos / "convex" / "a.mp4").write_bytes(b"x")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n./convex/a.mp4 ,covid\n")
    sources = discover(videos, labels)
    assert len(sources) == 1 and sources[0].labels == {"label": "covid"}
    labels.write_text("path,label,status\nconvex/a.mp4,covid,ok\n")
    with pytest.raises(ValueError, match="status clash"):
        discover(videos, labels, reserved=frozenset({"status"}))


def test_labels_that_match_no_file_and_empty_folders_are_errors(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    with pytest.raises(FileNotFoundError, match="no video files found"):
        discover(videos, None)
    (videos / "a.mp4").write_bytes(b"x")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nvideos/a.mp4,covid\n")
    with pytest.raises(ValueError, match="no path matches a file"):
        discover(videos, labels)
    with pytest.raises(FileNotFoundError, match="labels param to null"):
        discover(videos, tmp_path / "nope.csv")
