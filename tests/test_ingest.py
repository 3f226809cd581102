"""The decode stage on real files: bad inputs, incremental runs, resume, determinism."""

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import DecodeConfig
from pipeline.data.decode import RECEIPT_SUFFIX, decode_video
from pipeline.data.ingest import ingest
from pipeline.data.manifest import (
    FRAME_SCHEMA,
    FRAMES_FILE,
    VIDEOS_FILE,
    load_manifest,
    write_frame_table,
)
from pipeline.data.synthetic import FORMATS, ClipSpec, write_clip
from tests.media import write_audio_only

CONFIG = DecodeConfig(workers=1, min_frames=2)


def clip(folder: Path, name: str, fmt_index: int = 0, seconds: float = 1.5, fps: int = 23) -> Path:
    fmt = FORMATS[fmt_index]
    spec = ClipSpec("covid", 1, 1, fps if fps in fmt.frame_rates else fmt.frame_rates[0],
                    seconds, (64, 80), fmt, seed=len(name))
    write_clip(spec, folder / name)
    return folder / name


def faststart_mp4(path: Path, frames: int = 60, fps: int = 20) -> Path:
    """An MP4 with its index up front, so a cut-short copy still opens."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as output:
        stream = output.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(frames):
            pixels = np.full((64, 64, 3), index * 4 % 255, np.uint8)
            output.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        output.mux(stream.encode(None))
    return path


@pytest.fixture()
def bad_corpus(tmp_path: Path) -> Path:
    """Two good clips and one of each kind of bad input."""
    videos = tmp_path / "videos"
    videos.mkdir()
    clip(videos, "good one.mp4")
    clip(videos, "good+(2).avi", fmt_index=1)
    (videos / "zero.mp4").touch()
    (videos / "notes.mp4").write_text("not a video at all\n" * 100)
    data = clip(videos, "cut.mp4", seconds=3).read_bytes()
    (videos / "cut.mp4").write_bytes(data[: len(data) // 2])  # index at the end: unreadable
    data = clip(videos, "cut.avi", fmt_index=1, seconds=3).read_bytes()
    (videos / "cut.avi").write_bytes(data[: len(data) // 2])  # breaks mid-stream
    data = bytearray(clip(videos, "corrupt.mp4", seconds=3).read_bytes())
    data[len(data) // 3: len(data) // 2] = bytes(len(data) // 2 - len(data) // 3)
    (videos / "corrupt.mp4").write_bytes(bytes(data))  # zeroed in the middle
    data = faststart_mp4(videos / "cut_faststart.mp4").read_bytes()
    (videos / "cut_faststart.mp4").write_bytes(data[: len(data) * 2 // 3])  # breaks mid-packet
    path = faststart_mp4(videos / "cut_clean.mp4")
    with av.open(str(path)) as container:
        starts = [packet.pos for packet in container.demux(video=0) if packet.pos]
    path.write_bytes(path.read_bytes()[: starts[len(starts) // 2]])  # ends at a packet boundary
    clip(videos, "one frame.mp4", seconds=0.3)  # keeps 1 frame < min_frames 2
    write_audio_only(videos / "audio_only.mp4")
    return videos


EXPECTED_STATUS = {
    "good one.mp4": "ok", "good+(2).avi": "ok", "zero.mp4": "empty", "notes.mp4": "unreadable",
    "cut.mp4": "unreadable", "cut.avi": "decode_error", "corrupt.mp4": "decode_error",
    "cut_faststart.mp4": "decode_error", "cut_clean.mp4": "truncated",
    "one frame.mp4": "too_short", "audio_only.mp4": "no_video_stream",
}


@pytest.mark.parametrize("workers", [1, 2])
def test_each_bad_video_gets_a_status_and_the_others_decode(bad_corpus, tmp_path, workers):
    out = tmp_path / "out"
    summary = ingest(bad_corpus, None, out, replace(CONFIG, workers=workers), progress=False)
    videos = load_manifest(out).videos.set_index("source_path")
    assert videos["status"].to_dict() == EXPECTED_STATUS
    assert summary.counts["ok"] == 2 and len(summary.failures) == 9
    failed = videos[videos["status"] != "ok"]
    assert failed["error"].str.len().gt(10).all()
    assert failed["shard"].isna().all()
    assert "0 bytes" in videos.loc["zero.mp4", "error"]
    assert "min_frames=2" in videos.loc["one frame.mp4", "error"]
    assert "cut short" in videos.loc["cut_faststart.mp4", "error"]
    assert "cut short" in videos.loc["cut_clean.mp4", "error"]
    assert "decoding failed after" in videos.loc["corrupt.mp4", "error"]
    shards = sorted(p.name for p in (out / "shards").glob("*.tar"))
    assert shards == sorted(Path(s).name for s in videos["shard"].dropna())
    assert not list((out / "shards").glob(".tmp-*")), "no partial files"


def test_incremental_add_remove_and_param_change(sample_videos, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(sample_videos / "videos", videos)
    out = tmp_path / "out"
    first = ingest(videos, sample_videos / "labels.csv", out, CONFIG, progress=False)
    assert (first.decoded, first.reused) == (8, 0)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")}

    again = ingest(videos, sample_videos / "labels.csv", out, CONFIG, progress=False)
    assert (again.decoded, again.reused, again.removed) == (0, 8, 0)
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")}

    clip(videos, "new clip.mp4")
    added = ingest(videos, sample_videos / "labels.csv", out, CONFIG, progress=False)
    assert (added.decoded, added.reused) == (1, 8)

    removed_name = sorted(p.name for p in videos.iterdir())[0]
    (videos / removed_name).unlink()
    removed = ingest(videos, None, out, CONFIG, progress=False)
    assert (removed.decoded, removed.reused, removed.removed) == (0, 8, 2)  # tar + receipt
    manifest = load_manifest(out)
    assert removed_name not in set(manifest.videos["source_path"])
    assert len(list((out / "shards").glob("*.tar"))) == 8
    assert manifest.videos["label"].isna().all(), "labels come from the current labels.csv"

    requality = ingest(videos, None, out, replace(CONFIG, jpeg_quality=80), progress=False)
    assert requality.decoded == 8


def test_interrupted_run_resumes_with_only_the_unfinished_videos(sample_videos, tmp_path):
    out = tmp_path / "out"
    ingest(sample_videos / "videos", sample_videos / "labels.csv", out, CONFIG, progress=False)
    # Simulate a kill: manifests never written, one video's receipt missing, a temp file left.
    (out / VIDEOS_FILE).unlink()
    (out / FRAMES_FILE).unlink()
    next((out / "shards").glob(f"*{RECEIPT_SUFFIX}")).unlink()
    (out / "shards" / ".tmp-half-written.tar.abc").write_bytes(b"partial")
    resumed = ingest(sample_videos / "videos", sample_videos / "labels.csv", out, CONFIG,
                     progress=False)
    assert (resumed.decoded, resumed.reused) == (1, 7)
    assert not list((out / "shards").glob(".tmp-*"))
    assert len(load_manifest(out).videos) == 8


def test_same_params_give_the_same_shards_and_manifests(sample_videos, tmp_path):
    outputs = []
    for name, workers in (("a", 1), ("b", 2)):
        out = tmp_path / name
        ingest(sample_videos / "videos", sample_videos / "labels.csv", out,
               replace(CONFIG, workers=workers), progress=False)
        outputs.append(out)
    shards = [{p.name: p.read_bytes() for p in (o / "shards").glob("*.tar")} for o in outputs]
    assert shards[0] == shards[1]
    for name in (VIDEOS_FILE, FRAMES_FILE):
        pd.testing.assert_frame_equal(pd.read_parquet(outputs[0] / name),
                                      pd.read_parquet(outputs[1] / name))


def test_manifest_rows_agree_with_the_sampling_rule(decoded_sample):
    manifest = load_manifest(decoded_sample)
    assert (manifest.videos["status"] == "ok").all()
    for video in manifest.videos.itertuples():
        frames = manifest.frames_of(video.video_id)
        assert len(frames) == video.kept_frames > 0
        slots = (frames["timestamp_s"] * 3 + 1e-9).astype(int).tolist()
        assert slots == list(range(len(slots))), "gap-free clips fill consecutive slots"
        assert frames["frame_index"].is_monotonic_increasing
        assert video.duration_s == pytest.approx(video.frames / video.fps, rel=0.05)


def test_labels_are_joined_and_missing_rows_reported(sample_videos, tmp_path):
    labels = pd.read_csv(sample_videos / "labels.csv")
    extra = pd.DataFrame([{"path": "lost.mp4", "label": "covid", "probe": "convex",
                           "group": "x", "license": "", "uncertain": 0}])
    csv = tmp_path / "labels.csv"
    pd.concat([labels, extra]).to_csv(csv, index=False)
    out = tmp_path / "out"
    ingest(sample_videos / "videos", csv, out, CONFIG, progress=False)
    videos = load_manifest(out).videos.set_index("source_path")
    assert videos.loc["lost.mp4", "status"] == "missing"
    assert "no such file" in videos.loc["lost.mp4", "error"]
    for row in labels.itertuples():
        assert videos.loc[row.path, "label"] == row.label
        assert videos.loc[row.path, "group"] == row.group


def test_killed_stage_resumes_and_ends_like_an_uninterrupted_run(sample_videos, tmp_path):
    """SIGKILL the decode stage after its first video, rerun it: only the rest is decoded and
    the outputs equal those of a run that was never interrupted."""
    videos = tmp_path / "videos"
    for copy in range(3):  # 24 clips, so the kill lands mid-run
        for clip_path in (sample_videos / "videos").iterdir():
            target = videos / f"copy{copy}" / clip_path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(clip_path, target)
    script = ("import sys; from pathlib import Path; from pipeline.config import DecodeConfig; "
              "from pipeline.data.ingest import ingest; "
              "s = ingest(Path(sys.argv[1]), None, Path(sys.argv[2]), DecodeConfig(workers=1), "
              "progress=False); print(s.decoded, s.reused)")
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", script, str(videos), str(killed)],
                               stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list((killed / "shards").glob(f"*{RECEIPT_SUFFIX}")):
        assert process.poll() is None, "the stage finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / VIDEOS_FILE).exists()

    done = subprocess.run([sys.executable, "-c", script, str(videos), str(killed)],
                          capture_output=True, text=True, check=True)
    decoded, reused = map(int, done.stdout.split())
    assert reused >= 1 and decoded + reused == 24 and decoded >= 1
    assert not list((killed / "shards").glob(".tmp-*"))

    clean = tmp_path / "clean"
    ingest(videos, None, clean, CONFIG, progress=False)
    for name in (VIDEOS_FILE, FRAMES_FILE):
        pd.testing.assert_frame_equal(pd.read_parquet(killed / name),
                                      pd.read_parquet(clean / name))
    assert {p.name: p.read_bytes() for p in (killed / "shards").glob("*.tar")} == \
        {p.name: p.read_bytes() for p in (clean / "shards").glob("*.tar")}


def _die_on_crash_videos(task):
    """Stands in for decode_video in forked workers: a worker process dies on 'crash' files."""
    if "crash" in task.relative_path:
        os.kill(os.getpid(), signal.SIGKILL)
    return decode_video(task)


def test_a_worker_that_dies_fails_only_its_own_video(sample_videos, tmp_path, monkeypatch):
    videos = tmp_path / "videos"
    shutil.copytree(sample_videos / "videos", videos)
    shutil.copy(next(videos.glob("*.mp4")), videos / "crash me.mp4")
    monkeypatch.setattr("pipeline.data.ingest.decode_video", _die_on_crash_videos)
    summary = ingest(videos, None, tmp_path / "out", replace(CONFIG, workers=2), progress=False)
    statuses = load_manifest(tmp_path / "out").videos.set_index("source_path")["status"]
    assert statuses["crash me.mp4"] == "crashed"
    assert (statuses.drop("crash me.mp4") == "ok").all() and len(statuses) == 9
    assert summary.counts == {"ok": 8, "crashed": 1}


@pytest.mark.parametrize(("rows", "row_group_rows"),
                         [(0, 1024 * 1024), (7, 1024 * 1024), (70_000, 1024 * 1024),
                          (2 * 65_536, 65_536), (2 * 65_536 + 1, 65_536)])
def test_streamed_frame_table_has_the_bytes_of_writing_it_whole(tmp_path, rows,
                                                                 row_group_rows):
    """The decode stage streams frames.parquet a row group at a time (bounded memory); the
    file is byte for byte what pyarrow writes from all rows at once, so caches and checksums
    of existing datasets stay valid."""
    table = [dict(video_id=f"clip-{i // 30:016x}", kept_index=i % 30, frame_index=10 * i,
                  timestamp_s=i / 3, pts=512 * i, shard=f"shards/clip-{i // 30:016x}.tar",
                  member=f"{i:06d}.jpg", offset=512 + 6144 * i, size=5000 + i % 7,
                  width=112, height=112, sha256=f"{i:064x}") for i in range(rows)]
    pq.write_table(pa.Table.from_pylist(table, schema=FRAME_SCHEMA), tmp_path / "whole.parquet",
                   row_group_size=row_group_rows)
    write_frame_table(iter(table), tmp_path / "streamed.parquet", row_group_rows)
    assert (tmp_path / "streamed.parquet").read_bytes() == \
        (tmp_path / "whole.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "streamed.parquet").metadata.num_rows == rows


def test_frame_rows_come_from_the_receipts_and_a_vanished_one_is_named(sample_videos, tmp_path,
                                                                        monkeypatch):
    """The stage writes frames.parquet from the receipts (not from rows held in memory): a
    receipt removed between decoding and writing stops it with the receipt's path, and no
    manifest is written (frames.parquet goes first, atomically)."""
    from pipeline.data import ingest as ingest_module

    original = ingest_module.write_manifests

    def remove_a_receipt_first(folder, videos, frames):
        next((folder / "shards").glob(f"*{RECEIPT_SUFFIX}")).unlink()
        original(folder, videos, frames)

    monkeypatch.setattr(ingest_module, "write_manifests", remove_a_receipt_first)
    with pytest.raises(RuntimeError, match=r"\.receipt\.json: the receipt vanished"):
        ingest(sample_videos / "videos", None, tmp_path / "out", CONFIG, progress=False)
    assert not (tmp_path / "out" / FRAMES_FILE).exists()
    assert not (tmp_path / "out" / VIDEOS_FILE).exists()
