"""The bad-input suite (docs/reliability.md): every input is generated here, decoded by the real
stage code, and each case asserts its status, a fragment of its message, and that no temporary
file is left. One bad entry never stops the others."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import unicodedata
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import DecodeConfig
from pipeline.data.ingest import ingest
from pipeline.data.manifest import FRAMES_FILE, VIDEOS_FILE, load_manifest
from pipeline.data.sources import discover, read_labels, video_id
from pipeline.data.splits import copies_across_groups, split_table
from pipeline.data.synthetic import FORMATS, ClipSpec, write_clip
from tests.conftest import REPO
from tests.media import write_audio_only

CONFIG = DecodeConfig(workers=2, min_frames=2)


def no_temporaries(folder: Path) -> bool:
    return not [path for path in folder.rglob(".tmp-*")]


def clip(path: Path, seconds: float = 1.5, fmt_index: int = 0, size=(64, 80)) -> Path:
    fmt = FORMATS[fmt_index]
    write_clip(ClipSpec("covid", 1, 1, fmt.frame_rates[0], seconds, size, fmt, seed=3), path)
    return path


def encode(path: Path, codec: str, pix_fmt: str, size: tuple[int, int], frames: int = 12,
           fps: int = 10, container: str | None = None, pts=None, rotation: int = 0,
           options: dict | None = None) -> Path:
    """Frames of a moving bar, encoded with PyAV; ``pts``: explicit times (VFR)."""
    height, width = size
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options or {}
        if pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for index in range(frames):
            pixels = np.zeros((height, width, 3), np.uint8)
            pixels[:, (index * 5) % width] = 255
            pixels[: height // 4, :] = 90  # marks the top: shows the rotation
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[index], Fraction(1, 1000)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path


# name -> (status, message fragment); built by the fixture below
CASES = {
    "good.mp4": ("ok", None),
    "zero.mp4": ("empty", "0 bytes"),
    "text.mp4": ("unreadable", "not a readable video container"),
    "cut_index.mp4": ("unreadable", "cut short before its index"),
    "cut.avi": ("decode_error", "decoding failed after"),
    "mp4_named.avi": ("ok", None),
    "audio_only.m4a": ("no_video_stream", "no video stream"),
    "one_frame.mp4": ("too_short", "min_frames=2"),
    "vfr.mp4": ("ok", None),
    "no_pts.h264": ("ok", None),
    "odd_33x17.mkv": ("ok", None),
    "huge_3840x2160.avi": ("ok", None),
    "hevc_10bit.mp4": ("ok", None),
    "vp9.webm": ("ok", None),
    "rotated.mp4": ("ok", None),
    "rotated_45.mp4": ("unsupported", "display rotation of 45 degrees"),
    "scan.dcm": ("unreadable", "not a readable DICOM file"),
    "Patient [anon] 02.mp4": ("ok", None),
    "odd [/bold].mp4": ("empty", "0 bytes"),  # "[/" read as markup used to raise
    "scan(=),;.mp4": ("ok", None),
    "scan;)++).mp4": ("ok", None),
    "pipe.mp4": ("special_file", "named pipe"),
    "socket.mp4": ("special_file", "a socket"),
    "dangling.mp4": ("broken_link", "dangling"),
    "loop_a.mp4": ("link_loop", "cycle"),
    "loop_b.mp4": ("link_loop", "cycle"),
    "outside.mp4": ("outside_root", "outside the dataset folder"),
    "outside_folder": ("outside_root", "outside the dataset folder"),
    "inside_link.mp4": ("ok", None),
    "sub/nested.mp4": ("ok", None),
    "copy_of_good.mp4": ("ok", None),
    "listed_folder": ("missing", "is a folder"),
    "gone.mp4": ("missing", "no such file"),
    "../../etc/passwd": ("outside_root", "leaves the dataset folder"),
}
NFD_NAME = unicodedata.normalize("NFD", "échographie.mp4")  # as macOS writes it
BAD_BYTES_NAME = os.fsdecode(b"clip-\xff\xfe.mp4")  # not valid UTF-8


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """A dataset root holding every case, plus its labels.csv."""
    base = tmp_path_factory.mktemp("hostile")
    videos = base / "videos"
    (videos / "sub").mkdir(parents=True)
    good = clip(videos / "good.mp4")
    (videos / "zero.mp4").touch()
    (videos / "text.mp4").write_text("not a video\n" * 50)
    data = clip(base / "long.mp4", seconds=3).read_bytes()
    (videos / "cut_index.mp4").write_bytes(data[: len(data) // 2])
    data = clip(base / "long.avi", seconds=3, fmt_index=1).read_bytes()
    (videos / "cut.avi").write_bytes(data[: len(data) // 2])
    shutil.copy(good, videos / "mp4_named.avi")
    write_audio_only(videos / "audio_only.m4a", container="mp4")
    clip(videos / "one_frame.mp4", seconds=0.3)
    encode(videos / "vfr.mp4", "libx264", "yuv420p", (32, 48), frames=8,
           pts=[0, 40, 90, 500, 560, 1300, 1350, 2100])
    encode(videos / "no_pts.h264", "libx264", "yuv420p", (32, 48), frames=20, container="h264")
    encode(videos / "odd_33x17.mkv", "ffv1", "yuv444p", (17, 33), container="matroska")
    encode(videos / "huge_3840x2160.avi", "mjpeg", "yuvj420p", (2160, 3840), frames=5)
    encode(videos / "hevc_10bit.mp4", "libx265", "yuv420p10le", (64, 64),
           options={"x265-params": "log-level=error"})
    encode(videos / "vp9.webm", "libvpx-vp9", "yuv420p", (64, 64), container="webm")
    encode(videos / "rotated.mp4", "libx264", "yuv420p", (32, 64), rotation=90)
    encode(videos / "rotated_45.mp4", "libx264", "yuv420p", (32, 64), rotation=45)
    (videos / "scan.dcm").write_bytes(bytes(128) + b"DICM" + bytes(200))
    shutil.copy(good, videos / "Patient [anon] 02.mp4")
    (videos / "odd [").mkdir()
    (videos / "odd [" / "bold].mp4").touch()
    clip(videos / "scan(=),;.mp4", seconds=1.2)
    clip(videos / "scan;)++).mp4", seconds=1.8)
    os.mkfifo(videos / "pipe.mp4")
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(videos / "socket.mp4"))
    (videos / "dangling.mp4").symlink_to(base / "nothing.mp4")
    (videos / "loop_a.mp4").symlink_to(videos / "loop_b.mp4")
    (videos / "loop_b.mp4").symlink_to(videos / "loop_a.mp4")
    (videos / "outside.mp4").symlink_to(base / "long.mp4")
    (videos / "outside_folder").symlink_to(base, target_is_directory=True)
    (videos / "inside_link.mp4").symlink_to(videos / "scan(=),;.mp4")
    (videos / "sub_again").symlink_to(videos / "sub", target_is_directory=True)  # listed once
    clip(videos / "sub" / "nested.mp4", seconds=2.1)
    shutil.copy(good, videos / "copy_of_good.mp4")
    (videos / "listed_folder").mkdir()
    (videos / ".hidden.mp4").write_text("skipped silently")
    (videos / "notes.txt").write_text("skipped silently")
    shutil.copy(good, videos / NFD_NAME)
    shutil.copy(good, videos / BAD_BYTES_NAME)
    nfc = unicodedata.normalize("NFC", NFD_NAME)
    (base / "labels.csv").write_text(
        "path,label,group\n"
        f"good.mp4,covid,p1\ncopy_of_good.mp4,covid,p2\n{nfc},regular,p3\n"
        "\"scan(=),;.mp4\",pneumonia,p4\nlisted_folder,covid,p5\ngone.mp4,covid,p6\n"
        "../../etc/passwd,covid,p7\npipe.mp4,covid,p8\n", encoding="utf-8")
    return base


@pytest.fixture(scope="module")
def decoded(hostile, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("decoded")
    ingest(hostile / "videos", hostile / "labels.csv", out, CONFIG, progress=False)
    return out, load_manifest(out).videos.set_index("source_path")


@pytest.mark.parametrize("name", list(CASES))
def test_each_case_gets_its_status_and_a_message_naming_it(decoded, name):
    _, videos = decoded
    status, fragment = CASES[name]
    row = videos.loc[name]
    assert row["status"] == status, row["error"]
    if fragment is None:
        assert pd.isna(row["error"]) and row["kept_frames"] >= 2
    else:
        assert row["error"].startswith(f"{name}: ") and fragment in row["error"]
        assert pd.isna(row["shard"])


def test_nothing_else_is_listed_and_no_temporary_is_left(decoded):
    out, videos = decoded
    expected = {*CASES, unicodedata.normalize("NFC", NFD_NAME), "clip-\\xff\\xfe.mp4"}
    assert set(videos.index) == expected  # hidden, .txt and the second sub/ link: not listed
    assert no_temporaries(out)
    assert sorted(p.name for p in (out / "shards").glob("*.tar")) == sorted(
        Path(s).name for s in videos["shard"].dropna())


def test_ids_are_unique_and_labels_follow_paths_not_ids(decoded):
    _, videos = decoded
    assert videos["video_id"].is_unique
    # the pair whose 8-hex ids collided: distinct ids, and only the listed one is labelled
    assert videos.loc["scan(=),;.mp4", "label"] == "pneumonia"
    assert pd.isna(videos.loc["scan;)++).mp4", "label"])
    assert video_id("scan(=),;.mp4") != video_id("scan;)++).mp4")


def test_names_match_labels_after_unicode_normalisation_and_odd_bytes_decode(decoded):
    _, videos = decoded
    nfc = unicodedata.normalize("NFC", NFD_NAME)
    assert videos.loc[nfc, "status"] == "ok" and videos.loc[nfc, "label"] == "regular"
    assert "missing" not in set(videos.loc[[nfc], "status"])
    assert videos.loc["clip-\\xff\\xfe.mp4", "status"] == "ok"


def test_two_names_equal_after_normalisation_are_an_id_collision(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for form in ("NFC", "NFD"):
        (videos / unicodedata.normalize(form, "é.mp4")).write_bytes(b"x" * 10)
    sources = discover(videos, None)
    assert [s.status for s in sources] == ["id_collision", "id_collision"]
    assert "same id" in sources[0].error and "rename one" in sources[0].error


def test_special_videos_decode_as_displayed(decoded):
    out, videos = decoded
    rotated = videos.loc["rotated.mp4"]
    assert rotated["rotation"] == 90
    frames = load_manifest(out).frames
    first = frames[frames["video_id"] == rotated["video_id"]].iloc[0]
    assert (first["width"], first["height"]) == (32, 64)  # stored upright: 64x32 turned
    assert videos.loc["hevc_10bit.mp4", "codec"] == "hevc"
    assert videos.loc["vp9.webm", "codec"] == "vp9"
    assert (videos.loc["odd_33x17.mkv", "width"], videos.loc["odd_33x17.mkv", "height"]) == (33, 17)
    vfr = frames[frames["video_id"] == videos.loc["vfr.mp4", "video_id"]]
    assert vfr["timestamp_s"].is_monotonic_increasing and len(vfr) >= 3
    assert videos.loc["no_pts.h264", "kept_frames"] >= 2


def test_copies_in_different_groups_are_reported_and_kept_on_one_side(decoded):
    _, videos = decoded
    ok = videos.reset_index()
    ok = ok[ok["status"] == "ok"]
    copies = copies_across_groups(ok)
    assert any({"good.mp4", "copy_of_good.mp4"} <= set(copy["videos"]) for copy in copies)
    for seed in range(5):
        split = split_table(ok, 0.3, seed).set_index("video_id")["split"]
        assert split[videos.loc["good.mp4", "video_id"]] == \
            split[videos.loc["copy_of_good.mp4", "video_id"]]


def test_console_output_prints_brackets_as_they_are(decoded):
    out, _ = decoded
    runner = CliRunner()
    for command in (["errors"], ["summary"]):
        result = runner.invoke(app, [*command, "-d", str(out)])
        assert result.exit_code == 0, result.output
    errors = runner.invoke(app, ["errors", "-d", str(out), "--json"]).output
    assert "odd [/bold].mp4" in errors
    summary = runner.invoke(app, ["summary", "-d", str(out)]).output
    assert "identical files in groups" in summary


@pytest.mark.parametrize(("content", "fragment"), [
    (b"path,label\n\xff\xfe,covid\n", "not UTF-8"),
    (b"", "empty file"),
    (b'path,label\n"a.mp4,covid\n', "not a valid CSV"),
])
def test_bad_labels_csv_errors_name_the_file(tmp_path, content, fragment):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(content)
    with pytest.raises(ValueError, match=fragment) as caught:
        read_labels(labels)
    assert str(labels) in str(caught.value)


@pytest.fixture()
def shared_tmp() -> Path:
    """A folder other users can reach (pytest's own is private to root)."""
    folder = Path(os.path.realpath(tempfile.mkdtemp(prefix="uspipe-test-")))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_file_unreadable_to_this_user_fails_alone(shared_tmp):
    """As a non-root user (a forked child drops to ``nobody`` when the tests run as root)."""
    videos, out = shared_tmp / "videos", shared_tmp / "out"
    for folder in (videos, out):
        folder.mkdir()
        folder.chmod(0o777)
    clip(videos / "a.mp4")
    clip(videos / "b.mp4")
    (videos / "locked.mp4").write_bytes(b"secret")
    (videos / "locked.mp4").chmod(0)
    (videos / "locked_folder").mkdir()
    clip(videos / "locked_folder" / "c.mp4")
    (videos / "locked_folder").chmod(0)
    run_as_other_user(lambda: ingest(videos, None, out, replace(CONFIG, workers=1),
                                     progress=False), shared_tmp / "child.log")
    status = load_manifest(out).videos.set_index("source_path")
    assert status.loc["locked.mp4", "status"] == "unreadable"
    assert "locked.mp4: cannot read: Permission denied" in status.loc["locked.mp4", "error"]
    assert status.loc["locked_folder", "status"] == "unreadable"
    assert "locked_folder: cannot list this folder" in status.loc["locked_folder", "error"]
    assert (status.drop(["locked.mp4", "locked_folder"])["status"] == "ok").all()
    assert no_temporaries(out)


def run_as_other_user(work, log: Path) -> None:
    """Run ``work`` in a forked child that, when root, first becomes ``nobody``."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            work()
        except BaseException:  # noqa: BLE001 - reported through the log
            log.write_text(traceback.format_exc())
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, log.read_text() if log.exists() else status


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture()
def clean_copy(decoded, tmp_path) -> Path:
    out, _ = decoded
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    runner = CliRunner()
    assert runner.invoke(app, ["verify", "-d", str(copy)]).exit_code == 0
    return copy


def _first_shard(folder: Path) -> tuple[Path, pd.DataFrame]:
    manifest = load_manifest(folder)
    row = manifest.videos[manifest.videos["status"] == "ok"].iloc[0]
    return folder / row["shard"], manifest.frames_of(row["video_id"])


def test_verify_catches_a_damaged_member_header(clean_copy):
    shard, frames = _first_shard(clean_copy)
    flip_byte(shard, int(frames.iloc[2]["offset"]) - 512 + 10)  # inside the 3rd header's name
    result = CliRunner().invoke(app, ["verify", "-d", str(clean_copy), "--json"])
    assert result.exit_code == 1 and "members parse" in result.output


def test_verify_catches_a_changed_json_member(clean_copy):
    shard, frames = _first_shard(clean_copy)
    row = frames.iloc[1]
    json_data = int(row["offset"]) + int(row["size"])
    json_data += -json_data % 512 + 512  # past the padding, over the .json member's header
    flip_byte(shard, json_data + 2)
    result = CliRunner().invoke(app, ["verify", "-d", str(clean_copy), "--json"])
    assert result.exit_code == 1 and "content differs from the manifest row" in result.output


@pytest.mark.parametrize("name", [FRAMES_FILE, VIDEOS_FILE])
def test_a_flipped_byte_in_a_manifest_is_refused_everywhere(clean_copy, name):
    path = clean_copy / name
    flip_byte(path, len(path.read_bytes()) // 3)
    runner = CliRunner()
    for command in ("verify", "summary", "errors"):
        result = runner.invoke(app, [command, "-d", str(clean_copy)])
        assert result.exit_code == 2, result.output
        assert name in result.output and "SHA-256 differs" in result.output


def test_stage_errors_are_one_line_unless_debugging(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("USPIPE_DEBUG", None)
    done = subprocess.run([sys.executable, str(REPO / "stages" / "split.py"), "nope"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("split@nope: error: ")
    debug = subprocess.run([sys.executable, str(REPO / "stages" / "split.py"), "nope",
                            "--debug"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_workers_die_with_a_killed_stage(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    first = clip(videos / "clip0.mp4", seconds=10, size=(240, 320))
    for index in range(1, 16):
        shutil.copy(first, videos / f"clip{index}.mp4")
    script = (f"from pathlib import Path\nfrom pipeline.config import DecodeConfig\n"
              f"from pipeline.data.ingest import ingest\n"
              f"ingest(Path({str(videos)!r}), None, Path({str(tmp_path / 'out')!r}), "
              f"DecodeConfig(workers=2), progress=False)\n")
    stage = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    children: list[int] = []
    deadline = time.monotonic() + 60
    while len(children) < 2 and time.monotonic() < deadline and stage.poll() is None:
        time.sleep(0.05)
        children = child_pids(stage.pid)
    assert len(children) >= 2 and stage.poll() is None, "the pool never started"
    stage.send_signal(signal.SIGKILL)
    stage.wait()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in children)


def child_pids(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(value) for value in text.split()]


def alive(pid: int) -> bool:
    """Running or sleeping (a zombie waiting for its reaper has exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
