"""The ``uspipe`` CLI on a decoded dataset: JSON outputs, sheets, verify, errors, bad input."""

import json
import shutil

import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import DecodeConfig
from pipeline.data.ingest import ingest
from pipeline.data.manifest import load_manifest

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(map(str, args)))


@pytest.fixture()
def dataset(decoded_sample, tmp_path):
    copy = tmp_path / "sample"
    shutil.copytree(decoded_sample, copy)
    return copy


def test_summary_json_counts(dataset):
    result = run("summary", "-d", dataset, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    videos = load_manifest(dataset).videos
    assert info["videos"] == info["ok"] == len(videos) == 8
    assert info["frames"] == int(videos["kept_frames"].sum())
    assert info["by_label"] == videos["label"].value_counts().to_dict()
    assert info["fps"]["min"] == videos["fps"].min()
    assert "duration_s" in run("summary", "-d", dataset).output


def test_video_shows_kept_timestamps(dataset):
    manifest = load_manifest(dataset)
    video_id = manifest.videos["video_id"].iloc[0]
    info = json.loads(run("video", video_id, "-d", dataset, "--json").output)
    frames = manifest.frames_of(video_id)
    assert info["kept_timestamps_s"] == pytest.approx(frames["timestamp_s"].tolist())
    assert info["source_path"] == manifest.videos["source_path"].iloc[0]


def test_unknown_id_and_missing_manifest_are_clear(dataset, tmp_path):
    result = run("video", "no-such-video", "-d", dataset)
    assert result.exit_code == 2 and "unknown video id 'no-such-video'" in result.output
    result = run("summary", "-d", tmp_path / "empty")
    assert result.exit_code == 2 and "no manifest" in result.output


def test_sheet_writes_a_png_with_every_kept_frame(dataset, tmp_path):
    manifest = load_manifest(dataset)
    row = manifest.videos.iloc[0]
    out = tmp_path / "sheet.png"
    result = run("sheet", row.video_id, "-d", dataset, "-o", out, "--columns", 4, "--width", 50)
    assert result.exit_code == 0, result.output
    image = Image.open(out)
    rows = -(-int(row.kept_frames) // 4)
    assert image.width == 4 * 50 and image.height >= rows * 50 * row.height / row.width


def test_verify_passes_then_detects_a_flipped_byte(dataset):
    assert run("verify", "-d", dataset).exit_code == 0
    frame = load_manifest(dataset).frames.iloc[3]
    shard = dataset / frame.shard
    data = bytearray(shard.read_bytes())
    data[frame.offset + frame.size // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = run("verify", "-d", dataset, "--json")
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["mismatches"] == [{"video_id": frame.video_id, "member": frame.member,
                                     "problem": "sha256 differs"}]


def test_errors_lists_failed_videos(tmp_path, sample_videos):
    videos = tmp_path / "videos"
    shutil.copytree(sample_videos / "videos", videos)
    (videos / "broken.mp4").write_text("nope")
    ingest(videos, None, tmp_path / "out", DecodeConfig(workers=1), progress=False)
    failed = json.loads(run("errors", "-d", tmp_path / "out", "--json").output)
    assert [(f["source_path"], f["status"]) for f in failed] == [("broken.mp4", "unreadable")]
    assert "broken.mp4" in run("errors", "-d", tmp_path / "out").output


def test_sheet_with_a_missing_shard_says_so(dataset, tmp_path):
    row = load_manifest(dataset).videos.iloc[0]
    (dataset / row.shard).unlink()
    result = run("sheet", row.video_id, "-d", dataset, "-o", tmp_path / "s.png")
    assert result.exit_code == 2 and "No such file" in result.output
    assert not (tmp_path / "s.png").exists()
