"""Presentation-time frame sampling: keep ``n`` frames per second of video.

The rule (the one the decode stage applies, documented in the README):

* A frame's time is ``t = (pts - pts_first) * time_base`` in exact rational seconds, relative to
  the first decoded frame (streams that do not start at 0, e.g. MPEG-PS at 0.54 s, start at t = 0).
* Time is cut into slots of ``1/n`` s: slot ``k`` is ``[k/n, (k+1)/n)``, i.e. ``k = floor(n * t)``.
* The first decoded frame (in presentation order) that falls into a slot not yet used is kept;
  every later frame of that slot is dropped. A slot is never reopened: a frame whose slot is not
  above the last kept slot (late or non-monotonic pts) is dropped.
* Slots with no frame (gaps longer than ``1/n`` s in variable-frame-rate video) stay empty: unlike
  ffmpeg's ``fps`` filter, frames are never duplicated.
* A frame without pts is placed one nominal frame interval after the previous frame (or at 0 for
  the first frame); the nominal interval is ``1/rate`` with the stream's guessed frame rate.

A clip whose frames span ``T`` seconds with frame rate ``>= n`` therefore keeps
``floor(n * T) + 1`` frames. :func:`ffmpeg_fps_frame_count` documents what ``ffmpeg -vf fps=n``
outputs for the same clip, for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fractions import Fraction

DEFAULT_FRAME_INTERVAL = Fraction(1, 25)


class SlotSampler:
    """Streaming form of the rule: offer each decoded frame's pts, get its time if it is kept.

    Timestamps are counted in ticks of ``time_base`` and compared with integer arithmetic
    (exact, and cheap enough to run on every decoded frame); only kept frames get a
    :class:`~fractions.Fraction` time.

    Args:
        rate: frames to keep per second (``n``), a positive number.
        time_base: seconds per pts tick (1 when offering times in seconds).
        fallback_interval: seconds between frames, assumed for frames without pts.
    """

    def __init__(self, rate: float | Fraction, time_base: Fraction = Fraction(1),
                 fallback_interval: Fraction | None = None) -> None:
        rate = Fraction(rate).limit_denominator(1_000_000)
        if rate <= 0:
            raise ValueError(f"sampling rate must be positive, got {rate}")
        self.rate, self.time_base = rate, Fraction(time_base)
        self._ticks_per_frame = (fallback_interval or DEFAULT_FRAME_INTERVAL) / self.time_base
        self._slot_numerator = self.time_base.numerator * rate.numerator
        self._slot_denominator = self.time_base.denominator * rate.denominator
        self._first: int | Fraction | None = None
        self._previous: int | Fraction | None = None  # relative ticks of the last frame offered
        self._last_slot = -1
        self._announced: list[int | Fraction] = []  # pts announced before the first frame
        self._earliest_in_slot: dict[int, int | Fraction] = {}

    def _slot(self, pts: int | Fraction) -> int:
        return ((pts - self._first) * self._slot_numerator) // self._slot_denominator

    def announce(self, pts: int | Fraction) -> None:
        """Tell the sampler a frame with this pts is coming (its packet is about to be decoded)."""
        if self._first is None:
            self._announced.append(pts)
            return
        slot = self._slot(pts)
        if pts < self._earliest_in_slot.get(slot, pts + 1):
            self._earliest_in_slot[slot] = pts

    def will_drop(self, pts: int | Fraction) -> bool:
        """True if a frame with this pts cannot be kept, whatever frames come later.

        That is so once its slot is used, or once an earlier frame of its slot has been
        announced. Lets a decoder skip frames before decoding them (see
        :meth:`pipeline.data.video.VideoDecoder.sample`). Always False before the first frame.
        """
        if self._first is None:
            return False
        slot = self._slot(pts)
        return slot <= self._last_slot or self._earliest_in_slot.get(slot, pts) < pts

    @property
    def last_time(self) -> Fraction | None:
        """Relative time in seconds of the last frame offered (kept or not)."""
        return None if self._previous is None else self._previous * self.time_base

    def offer(self, pts: int | Fraction | None) -> Fraction | None:
        """Return the frame's relative time in seconds if the frame is kept, else None."""
        if pts is not None and self._first is not None:
            ticks = pts - self._first
        else:  # no pts, or the first pts: continue one nominal interval after the last frame
            ticks = 0 if self._previous is None else self._previous + self._ticks_per_frame
            if pts is not None:
                self._first = pts - ticks
                for announced in self._announced:
                    self.announce(announced)
        self._previous = ticks
        slot = (ticks * self._slot_numerator) // self._slot_denominator
        if slot <= self._last_slot:
            return None
        self._last_slot = slot
        return ticks * self.time_base


def kept_indices(times: Sequence[Fraction | float | None], rate: float | Fraction = 3,
                 fallback_interval: Fraction | None = None) -> list[int]:
    """Indices of the frames kept from absolute frame times (seconds, ``None`` = missing pts)."""
    sampler = SlotSampler(rate, fallback_interval=fallback_interval)
    return [i for i, s in enumerate(times)
            if sampler.offer(None if s is None else Fraction(s)) is not None]


def _round_half_away(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2)) if x >= 0 else -math.floor(-x + Fraction(1, 2))


def ffmpeg_fps_frame_count(times: Iterable[Fraction | float], last_duration: Fraction | float,
                           rate: float | Fraction = 3) -> int:
    """Frames ``ffmpeg -vf fps=rate`` outputs for frames at ``times`` (absolute seconds).

    The fps filter (libavfilter/vf_fps.c, default ``round=near``, ``eof_action=round``) maps every
    input time to the output grid ``1/rate`` with round-half-away-from-zero, starts at the first
    frame's rounded slot, emits exactly one frame per grid slot (duplicating or dropping input
    frames) and stops at the rounded end time ``t_last + last_duration``. So it outputs
    ``round(rate * (t_last + d)) - round(rate * t_first)`` frames. Our rule keeps
    ``floor(rate * (t_last - t_first)) + 1`` for gap-free video: equal, or one more.
    """
    rate = Fraction(rate).limit_denominator(1_000_000)
    values = [Fraction(t) for t in times]
    if not values:
        return 0
    end = max(values) + Fraction(last_duration)
    return max(0, _round_half_away(rate * end) - _round_half_away(rate * min(values)))

