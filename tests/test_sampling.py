"""The 3-fps presentation-time rule on hand-built timestamp sequences, and against NumPy."""

from fractions import Fraction

import numpy as np
import pytest

from pipeline.data.sampling import SlotSampler, ffmpeg_fps_frame_count, kept_indices


def uniform(fps: int, count: int, start: Fraction = Fraction(0)) -> list[Fraction]:
    return [start + Fraction(i, fps) for i in range(count)]


def test_uniform_30fps_keeps_every_tenth_frame():
    assert kept_indices(uniform(30, 60)) == [0, 10, 20, 30, 40, 50]


def test_stream_not_starting_at_zero_is_relative_to_first_frame():
    # MPEG-PS files start at 0.54 s: the rule must not depend on the offset.
    assert kept_indices(uniform(25, 50, Fraction(54, 100))) == kept_indices(uniform(25, 50))


def test_slot_boundaries_are_half_open():
    # 1/3 s belongs to slot 1, just below it to slot 0.
    times = [Fraction(0), Fraction(1, 3) - Fraction(1, 10**9), Fraction(1, 3)]
    assert kept_indices(times) == [0, 2]


def test_variable_frame_rate_keeps_first_frame_of_each_slot():
    times = [0, 0.1, 0.5, 0.55, 0.7, 1.2]  # slots 0, 0, 1, 1, 2, 3
    assert kept_indices(times) == [0, 2, 4, 5]


def test_gap_longer_than_a_slot_never_duplicates():
    # A 1 s gap skips slots 1 and 2; ffmpeg's fps filter would repeat frame 0 there.
    assert kept_indices([0, 1.0, 1.1]) == [0, 1]


def test_non_monotonic_pts_never_reopen_a_used_slot():
    assert kept_indices([0, 0.4, 0.2, 0.7, 0.35]) == [0, 1, 3]


def test_missing_pts_use_the_nominal_interval():
    times = [None] * 10
    # t = 0, 0.1, ..., 0.9 with a 10 fps fallback: slots 0,0,0,0,1,1,1,2,2,2
    assert kept_indices(times, fallback_interval=Fraction(1, 10)) == [0, 4, 7]


def test_missing_first_pts_then_real_pts_continue_the_timeline():
    sampler = SlotSampler(3, fallback_interval=Fraction(1, 10))
    assert sampler.offer(None) == 0
    # The first real pts (5.1 s) is taken to be 0.1 s after the missing one.
    assert sampler.offer(Fraction(51, 10)) is None
    assert sampler.last_time == Fraction(1, 10)
    assert sampler.offer(Fraction(54, 10)) == Fraction(4, 10)


@pytest.mark.parametrize("rate", [1, 3, Fraction(1, 2), 10])
def test_other_rates(rate):
    times = uniform(30, 300)
    kept = kept_indices(times, rate)
    expected = [i for i in range(300) if i == 0 or int(i * rate / 30) > int((i - 1) * rate / 30)]
    assert kept == expected


def test_pts_in_time_base_ticks_use_exact_integer_slots():
    # 90 kHz MPEG ticks, stream starting at 0.54 s, 25 fps.
    sampler = SlotSampler(3, time_base=Fraction(1, 90000))
    kept = [i for i in range(50) if sampler.offer(48600 + 3600 * i) is not None]
    assert kept == kept_indices(uniform(25, 50))
    assert sampler.last_time == Fraction(49, 25)


def test_will_drop_only_frames_that_cannot_be_kept():
    # Decode order of an I P B B stream at 9 fps: pts 0, 3, 1, 2, 6, 4, 5; slots of 1/3 s are
    # pts 0-2, 3-5, 6-8.
    sampler = SlotSampler(3, time_base=Fraction(1, 9))
    assert not sampler.will_drop(0)  # nothing known before the first frame
    for pts in (0, 3, 1):
        sampler.announce(pts)
    assert sampler.offer(0) == 0  # slot 0 used
    assert sampler.will_drop(1) and sampler.will_drop(2)  # slot 0
    assert not sampler.will_drop(3)  # the earliest announced frame of slot 1
    sampler.announce(6)
    sampler.announce(4)
    assert sampler.will_drop(4) and sampler.will_drop(5)  # slot 1: pts 3 comes first
    assert not sampler.will_drop(6)  # slot 2
    sampler.announce(5)
    assert sampler.offer(3) == Fraction(1, 3)
    assert sampler.will_drop(3), "a used slot never reopens"


def test_rejects_non_positive_rate():
    with pytest.raises(ValueError, match="positive"):
        SlotSampler(0)


def test_matches_numpy_reference_on_random_monotonic_sequences():
    rng = np.random.default_rng(0)
    for _ in range(200):
        gaps = rng.exponential(rng.uniform(0.01, 0.5), size=rng.integers(1, 80))
        times = np.concatenate([[rng.uniform(0, 5)], gaps]).cumsum()
        slots = np.floor(3 * (times - times[0]) + 1e-12).astype(int)
        _, first = np.unique(slots, return_index=True)
        assert kept_indices([Fraction(float(t)) for t in times]) == first.tolist()


def test_kept_count_closed_form_for_gap_free_video():
    for fps in (17, 19, 23, 25, 28, 30, 60):
        for count in (1, 2, 7, 50, 101):
            span = Fraction(count - 1, fps)
            assert len(kept_indices(uniform(fps, count))) == int(3 * span) + 1


def test_ffmpeg_fps_count_hand_computed():
    # 100 frames at 25 fps from 0: ends at 4.0 s -> slots 0..11 -> 12 frames (ours: 12 too).
    assert ffmpeg_fps_frame_count(uniform(25, 100), Fraction(1, 25)) == 12
    # Same clip starting at 0.54 s: round(3 * 4.54) - round(3 * 0.54) = 14 - 2 = 12.
    assert ffmpeg_fps_frame_count(uniform(25, 100, Fraction(54, 100)), Fraction(1, 25)) == 12
    # 1.3 s of 10 fps GIF: end 1.4 s -> round(4.2) = 4 frames; ours keeps floor(3*1.3)+1 = 4.
    assert ffmpeg_fps_frame_count(uniform(10, 14), Fraction(1, 10)) == 4
    # 0.5 s at 30 fps: round(1.5) = 2 (half away from zero); ours keeps floor(1.45)+1 = 2.
    assert ffmpeg_fps_frame_count(uniform(30, 15), Fraction(1, 30)) == 2


def test_ours_equals_ffmpeg_or_one_more_on_gap_free_video():
    for fps in (10, 17, 19, 22, 23, 25, 28, 30, 60):
        for count in range(1, 200, 7):
            ours = len(kept_indices(uniform(fps, count)))
            theirs = ffmpeg_fps_frame_count(uniform(fps, count), Fraction(1, fps))
            assert ours - theirs in (0, 1), (fps, count, ours, theirs)
