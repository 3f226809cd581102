"""PyAV decoding of the generator's real video files: kept counts, timestamps, resize, cap."""

from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image

from pipeline.data.synthetic import FORMATS, ClipSpec, write_clip
from pipeline.data.video import DecodeError, VideoDecoder, scaled_size


def make_clip(folder: Path, fmt_index: int, fps: int, seconds: float,
              size=(96, 112)) -> tuple[ClipSpec, Path]:
    spec = ClipSpec("regular", 1, fmt_index, fps, seconds, size, FORMATS[fmt_index], seed=3)
    path = folder / spec.name
    write_clip(spec, path)
    return spec, path


def gif_frame_times(path: Path) -> list[Fraction]:
    """Frame start times from the GIF's own delay fields, read with PIL (not FFmpeg)."""
    times, clock = [], Fraction(0)
    with Image.open(path) as gif:
        for index in range(gif.n_frames):
            gif.seek(index)
            times.append(clock)
            clock += Fraction(gif.info["duration"], 1000)
    return times


@pytest.mark.parametrize("fmt_index", range(len(FORMATS)))
def test_generated_clips_decode_with_expected_kept_count(tmp_path, fmt_index):
    fmt = FORMATS[fmt_index]
    fps = fmt.frame_rates[0]
    spec, path = make_clip(tmp_path, fmt_index, fps, 2.4)
    frame_count = round(spec.seconds * fps)
    with VideoDecoder(path) as decoder:
        kept = list(decoder.sample(3))
        info = decoder.info
    if fmt.extension == ".gif":
        times = gif_frame_times(path)  # GIF delays are centiseconds: not exactly 1/fps
        assert decoder.frames == len(times) == frame_count
        expected = len({int(3 * t) for t in times})
    else:
        assert decoder.frames == frame_count
        expected = int(3 * Fraction(frame_count - 1, fps)) + 1
    assert len(kept) == expected
    assert info.codec == {"libx264": "h264"}.get(fmt.codec, fmt.codec)
    assert (info.width, info.height) == (112, 96)
    assert kept[0].timestamp == 0
    slots = [int(3 * frame.timestamp) for frame in kept]
    assert slots == sorted(set(slots)), "one kept frame per slot, in order"
    assert all(frame.image.mode == "RGB" and frame.image.size == (112, 96) for frame in kept)


def test_container_is_probed_not_taken_from_the_extension(tmp_path):
    _, path = make_clip(tmp_path, 0, 23, 1.0)  # an MP4 ...
    disguised = path.rename(tmp_path / "really_an_mp4.avi")  # ... named .avi, as in POCUS
    with VideoDecoder(disguised) as decoder:
        assert decoder.info.container.startswith("mov,mp4")
        assert len(list(decoder.sample(3))) == 3


def test_max_frames_stops_decoding_early(tmp_path):
    _, path = make_clip(tmp_path, 1, 30, 3.0)
    with VideoDecoder(path) as decoder:
        kept = list(decoder.sample(3, max_frames=4))
        assert len(kept) == 4
        assert decoder.frames == 31  # frame 30 (t = 1.0 s) is the 4th kept frame


def test_short_side_resize_keeps_aspect(tmp_path):
    _, path = make_clip(tmp_path, 0, 23, 1.0, size=(120, 200))
    with VideoDecoder(path) as decoder:
        frame = next(decoder.sample(3, short_side=60))
    assert frame.image.size == (100, 60)


def test_scaled_size_never_upscales():
    assert scaled_size(640, 480, None) == (640, 480)
    assert scaled_size(640, 480, 800) == (640, 480)
    assert scaled_size(640, 480, 240) == (320, 240)


def test_errors_name_the_problem(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as output:
        stream = output.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame(format="s16", layout="mono", samples=800)
        frame.sample_rate = 8000
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    for path, status, words in ((empty, "empty", "0 bytes"), (text, "unreadable", "not a readable"),
                                (audio, "no_video_stream", "no video stream")):
        with pytest.raises(DecodeError, match=words) as caught:
            VideoDecoder(path)
        assert caught.value.status == status


@pytest.mark.parametrize("fmt_index", [0, 3])  # h264 and mpeg2: both have B-frames
def test_skipping_non_reference_frames_keeps_the_same_frames(tmp_path, fmt_index):
    _, path = make_clip(tmp_path, fmt_index, FORMATS[fmt_index].frame_rates[-1], 4.0)
    outputs = {}
    for skip in (False, True):
        with VideoDecoder(path) as decoder:
            kept = [(f.frame_index, f.timestamp, f.pts, f.image.tobytes())
                    for f in decoder.sample(3, skip_nonref=skip)]
            outputs[skip] = (kept, decoder.frames, decoder.decoded_frames)
    assert outputs[True][0] == outputs[False][0]
    assert outputs[True][1] == outputs[False][1] == outputs[False][2]
    assert outputs[True][2] < outputs[True][1], "some frames were skipped undecoded"

