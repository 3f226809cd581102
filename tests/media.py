"""Small media files the tests write with PyAV."""

from pathlib import Path

import av
import numpy as np


def write_audio_only(path: Path, container: str | None = None) -> Path:
    """A file with one AAC audio stream and no video stream."""
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate = 8000
        output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return path
