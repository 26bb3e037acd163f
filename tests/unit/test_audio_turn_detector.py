"""TurnDetector timing, to the frame, on synthetic voiced/unvoiced sequences."""

from __future__ import annotations

import pytest

from audio.vad import EndpointerConfig, EndReason, TurnDetector, VadEvent

S, ST, SP, E = VadEvent.SILENCE, VadEvent.START, VadEvent.SPEECH, VadEvent.END


def runs(*spec: tuple[bool, int]) -> list[bool]:
    """[(True, 3), (False, 2)] -> [True, True, True, False, False]."""
    return [voiced for voiced, count in spec for _ in range(count)]


def feed(det: TurnDetector, voiced: list[bool], frame_s: float = 0.02) -> list[VadEvent]:
    return [det.step(v, i * frame_s) for i, v in enumerate(voiced)]


def indices(events: list[VadEvent], kind: VadEvent) -> list[int]:
    return [i for i, e in enumerate(events) if e is kind]


def test_start_on_the_sixth_voiced_frame() -> None:
    events = feed(TurnDetector(), runs((False, 10), (True, 20)))
    # 120 ms = 6 frames of 20 ms: frames 10..15 are voiced, START on frame 15.
    assert indices(events, ST) == [15]
    assert events[:15] == [S] * 15
    assert events[16:] == [SP] * 14


def test_start_counts_voiced_frames_in_a_sliding_window() -> None:
    # Every other frame voiced: the 6th voiced frame (index 10) lies within 15 frames of the 1st.
    events = feed(TurnDetector(), [i % 2 == 0 for i in range(30)])
    assert indices(events, ST) == [10]


def test_sparse_voicing_never_fills_the_window() -> None:
    # One voiced frame in three: any 15-frame window holds exactly 5 voiced frames (100 ms).
    events = feed(TurnDetector(), [i % 3 == 0 for i in range(600)])
    assert set(events) == {S}


def test_short_blips_never_start_speech() -> None:
    # 100 ms blips every 300 ms: the window never holds 120 ms of voice.
    events = feed(TurnDetector(), runs((True, 5), (False, 10)) * 40)
    assert set(events) == {S}


def test_blips_start_speech_once_two_fit_in_the_window() -> None:
    # Period 14 frames: at frame 14 the 300 ms window (frames 0..14) holds 0..4 plus 14.
    # (With period 15, as above, the window always holds exactly 5 voiced frames.)
    events = feed(TurnDetector(), runs((True, 5), (False, 9)) * 3)
    assert indices(events, ST) == [14]


def test_end_on_the_25th_unvoiced_frame() -> None:
    det = TurnDetector()
    events = feed(det, runs((True, 6), (False, 30)))
    assert indices(events, ST) == [5]
    # 500 ms / 20 ms = 25 unvoiced frames: frames 6..30, END on frame 30.
    assert indices(events, E) == [30]
    assert events[6:30] == [SP] * 24
    assert events[31:] == [S] * 5
    assert det.last_end_reason is EndReason.SILENCE
    assert not det.in_speech


def test_trailing_silence_grows_per_unvoiced_frame_and_resets_on_voice() -> None:
    det = TurnDetector()
    feed(det, runs((True, 6)))
    assert det.trailing_silence_ms == 0.0
    seen = []
    for _ in range(24):
        assert det.step(False, 0.0) is SP
        seen.append(det.trailing_silence_ms)
    assert seen == [20.0 * k for k in range(1, 25)]
    assert det.step(True, 0.0) is SP
    assert det.trailing_silence_ms == 0.0
    assert det.in_speech


def test_gaps_shorter_than_end_silence_do_not_end_the_utterance() -> None:
    seq = runs((True, 6), *[(False, 24), (True, 3)] * 10, (False, 25))
    events = feed(TurnDetector(), seq)
    assert indices(events, ST) == [5]
    assert indices(events, E) == [len(seq) - 1]


def test_max_utterance_forces_end_and_speech_restarts_after_start_ms() -> None:
    det = TurnDetector(EndpointerConfig(max_utterance_ms=1000))
    events = feed(det, runs((True, 80)))
    # START on frame 5 is the utterance's first frame; the 50th (1000 ms) is frame 54.
    assert indices(events, E) == [54]
    assert det.last_end_reason is EndReason.MAX_UTTERANCE
    # The start window was cleared: a new START needs 6 more voiced frames.
    assert indices(events, ST) == [5, 60]


def test_force_end() -> None:
    det = TurnDetector()
    assert det.force_end() is False
    feed(det, runs((True, 6)))
    assert det.in_speech
    assert det.force_end() is True
    assert not det.in_speech
    assert det.last_end_reason is EndReason.FORCED
    assert det.speech_started_at is None
    # Voice continuing after a push-to-talk release needs a full start again.
    events = feed(det, runs((True, 6)))
    assert indices(events, ST) == [5]


def test_speech_started_at_is_the_time_passed_with_the_start_frame() -> None:
    det = TurnDetector()
    assert det.speech_started_at is None
    for i, voiced in enumerate(runs((False, 3), (True, 6))):
        det.step(voiced, 100.0 + i * 0.02)
    assert det.speech_started_at == pytest.approx(100.0 + 8 * 0.02)


def test_end_silence_can_be_changed_mid_turn() -> None:
    det = TurnDetector()
    feed(det, runs((True, 6), (False, 12)))
    assert det.trailing_silence_ms == 240.0
    det.end_silence_ms = 200
    assert det.step(False, 0.0) is E
    det.end_silence_ms = 1000
    events = feed(det, runs((True, 6), (False, 50)))
    assert indices(events, E) == [55]
    with pytest.raises(ValueError, match="at least frame_ms"):
        det.end_silence_ms = 10


def test_reset_forgets_partial_window_and_speech() -> None:
    det = TurnDetector()
    feed(det, runs((True, 5)))
    det.reset()
    assert det.step(True, 0.0) is S  # would have been START without the reset
    feed(det, runs((True, 5)))
    assert det.in_speech
    det.reset()
    assert not det.in_speech and det.trailing_silence_ms == 0.0


@pytest.mark.parametrize(
    ("frame_ms", "start_at", "end_after"),
    [(10, 11, 50), (30, 3, 17)],  # ceil(120/f) voiced frames; ceil(500/f) unvoiced frames
)
def test_other_frame_durations(frame_ms: int, start_at: int, end_after: int) -> None:
    det = TurnDetector(EndpointerConfig(frame_ms=frame_ms))
    events = feed(det, runs((True, start_at + 1), (False, 60)), frame_ms / 1000)
    assert indices(events, ST) == [start_at]
    assert indices(events, E) == [start_at + end_after]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frame_ms": 25},
        {"aggressiveness": 4},
        {"start_ms": 400},  # longer than the 300 ms window
        {"end_silence_ms": 0},
        {"preroll_ms": -1},
        {"max_utterance_ms": 5},
    ],
)
def test_invalid_config_is_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        EndpointerConfig(**kwargs)
