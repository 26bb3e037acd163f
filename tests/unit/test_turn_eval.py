"""The turn-taking evaluation's own arithmetic: the listener's playback timeline under
duck / pause / resume / interrupted (and the phone's clears), noise at a requested SNR,
the phone's cuts told from its yields, and the summary's counts and percentiles."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from loadtest import turn_eval
from loadtest.accounting import PlayerTimeline
from loadtest.phone_sim import Received
from loadtest.turn_eval import (
    END_MARKER,
    START_MARKER,
    Noise,
    Outcome,
    PhoneLine,
    Scenario,
    replace_section,
    summarise,
    timing,
)
from loadtest.voices import active_rms, mix_noise, noise, trim

approx = pytest.approx


# ----------------------------------------------------------------- player timeline
def test_audio_chains_after_a_start_lead_and_an_underrun_is_silence() -> None:
    tl = PlayerTimeline(start_lead=0.06)
    tl.push(0.0, 0.5)
    tl.push(0.1, 0.5)  # arrives while the first plays: chained, no gap
    tl.push(2.0, 0.2)  # arrives after the player ran dry: starts 60 ms later
    assert [(s.start, s.end) for s in tl.segments] == [
        (0.06, 0.56),
        (0.56, approx(1.06)),
        (2.06, approx(2.26)),
    ]
    assert tl.heard() == approx(1.2)
    assert tl.longest_silence(0.0, tl.end() or 0.0) == approx(1.0)
    assert tl.longest_silence(0.3, 1.0) == 0.0


def test_a_ducked_stretch_plays_quieter_and_is_no_silence() -> None:
    tl = PlayerTimeline(start_lead=0.06)
    tl.push(0.0, 1.0)
    tl.duck(0.5, -24.0, tag=0)
    tl.resume(0.8, tag=0)  # released: loud again, nothing moved
    gains = [(s.start, s.end, s.gain_db) for s in tl.segments]
    assert gains == [(0.06, 0.5, 0.0), (0.5, 0.8, -24.0), (0.8, approx(1.06), 0.0)]
    assert tl.ducked() == approx(0.3)
    assert tl.longest_silence(0.5, 1.06) == 0.0
    assert tl.heard() == approx(1.0)
    assert tl.end() == approx(1.06)


def test_pause_holds_everything_and_resume_plays_it_from_where_it_stopped() -> None:
    tl = PlayerTimeline(start_lead=0.06)
    tl.push(0.0, 1.0, tag=1)  # plays 0.06 .. 1.06
    tl.pause(0.5, tag=1)
    tl.push(0.6, 0.2, tag=1)  # arrives while paused: held too
    assert tl.paused and tl.heard() == approx(0.44)
    assert tl.heard(until=1.2) == approx(0.44)
    tl.resume(1.3, tag=1)
    # 0.56 s held + 0.2 s that came meanwhile, from 1.3 s on, no lead, nothing lost.
    assert tl.end(1) == approx(2.06)
    assert tl.heard(1) == approx(1.2)
    assert tl.dropped == 0.0
    assert tl.longest_silence(0.4, 2.06) == approx(0.8)


def test_resume_for_another_turn_leaves_a_pause_alone() -> None:
    tl = PlayerTimeline()
    tl.begin(0.0, 1)
    tl.push(0.0, 1.0)
    tl.pause(0.5, tag=1)
    tl.resume(0.7, tag=7)
    assert tl.paused and tl.end() == approx(0.5)


def test_interrupted_drops_the_rest_of_the_turn_but_not_the_next() -> None:
    tl = PlayerTimeline(start_lead=0.06)
    tl.begin(0.0, 1)
    tl.push(0.0, 1.0)
    tl.duck(0.3, -24.0, tag=1)
    tl.stop(0.5)
    tl.push(0.6, 0.3)  # of the stopped turn, still in flight: never played
    assert tl.heard(1) == approx(0.44)
    assert tl.dropped == approx(0.86)
    assert tl.gain_db == 0.0
    tl.begin(1.0, 2)
    tl.push(1.0, 0.5)
    assert (tl.segments[-1].start, tl.segments[-1].end, tl.segments[-1].tag) == (
        1.06,
        1.56,
        2,
    )
    assert tl.segments[-1].gain_db == 0.0


def test_a_new_turn_forgets_audio_held_for_a_paused_one() -> None:
    tl = PlayerTimeline(start_lead=0.06)
    tl.begin(0.0, 1)
    tl.push(0.0, 1.0)
    tl.pause(0.5, tag=1)
    tl.begin(0.7, 2)
    tl.push(0.7, 0.4)
    assert not tl.paused
    assert tl.heard(1) == approx(0.44) and tl.heard(2) == approx(0.4)
    assert tl.dropped == approx(0.56)


def test_phone_clear_drops_the_unplayed_and_plays_what_is_sent_after_it_at_once() -> None:
    tl = PlayerTimeline(start_lead=0.0)
    tl.push(0.0, 1.0)
    tl.clear(0.4)
    tl.push(0.41, 0.6)  # the unheard audio again, ducked
    assert [(s.start, s.end) for s in tl.segments] == [(0.0, 0.4), (0.41, approx(1.01))]
    assert tl.longest_silence(0.3, 1.01) == approx(0.01)
    assert tl.longest_silence(0.3, 1.5) == approx(0.49)


def test_longest_silence_of_an_empty_or_reversed_window() -> None:
    tl = PlayerTimeline()
    assert tl.longest_silence(1.0, 3.0) == 2.0
    assert tl.longest_silence(3.0, 1.0) == 0.0
    assert tl.end() is None


# ---------------------------------------------------------------------- phone cuts
def _phone(rx: Received) -> PhoneLine:
    return PhoneLine(SimpleNamespace(rx=rx))  # type: ignore[arg-type]


def _media(rx: Received, t: float, turn: int, seconds: float = 0.1) -> None:
    rx.media.append((t, int(seconds * 8000)))
    rx.media_turn.append(turn)


def _clear(rx: Received, t: float) -> None:
    rx.clears.append(t)
    rx.clear_media.append(len(rx.media))


def test_phone_yield_resend_is_not_a_cut_but_pause_then_interrupt_is() -> None:
    rx = Received()
    _media(rx, 0.0, 1, 1.0)
    _clear(rx, 0.3)  # duck: the unheard audio comes again
    _media(rx, 0.31, 1, 0.7)
    _clear(rx, 0.7)  # pause
    _clear(rx, 1.2)  # interrupted
    _media(rx, 3.0, 2, 0.5)  # the answer to the interruption
    line = _phone(rx)
    assert line.cuts(1) == [0.7, 1.2]
    assert line.confirmation(1) == 1.2
    assert line.first_yield_after(0.1) == (0.3, "clear")
    assert [what for _, what in line.yields()] == ["clear", "cut", "cut"]
    tl = line.timeline()
    assert tl.heard(1) == approx(0.3 + 0.39)
    assert tl.longest_silence(0.2, 0.7) == approx(0.01)


def test_phone_clear_resumed_with_only_the_end_mark_is_not_a_cut() -> None:
    rx = Received()
    _media(rx, 0.0, 1, 1.0)
    _clear(rx, 0.99)  # paused in the last 10 ms, resumed with the end mark alone
    rx.acks.append((1.5, "t1-end.2"))
    line = _phone(rx)
    assert line.cuts(1) == [] and line.confirmation(1) is None
    assert line.reply_played(1)
    assert not line.reply_played(2)


# --------------------------------------------------------------------------- noise
RATE = 16000


def _bursts(amplitude: float) -> np.ndarray:
    """0.2 s of a 300 Hz tone, 0.2 s of digital silence, three times: the tone's RMS is
    the speech level, known without measuring it."""
    t = np.arange(int(0.2 * RATE)) / RATE
    tone = amplitude * np.sin(2 * np.pi * 300 * t)
    gap = np.zeros(int(0.2 * RATE))
    return np.concatenate([tone, gap, tone, gap, tone])


def _snr(clean: np.ndarray, mixed: np.ndarray, level: float) -> float:
    gain = float(np.dot(mixed, clean) / np.dot(clean, clean))  # any turning down
    residual = mixed - gain * clean
    return 20 * math.log10(gain * level / math.sqrt(float(np.mean(residual**2))))


@pytest.mark.parametrize("colour", ["white", "pink"])
@pytest.mark.parametrize("snr_db", [20.0, 10.0, 5.0])
def test_noise_is_mixed_at_the_requested_snr(snr_db: float, colour: str) -> None:
    clean = _bursts(6000)
    pcm = clean.astype("<i2").tobytes()
    mixed = np.frombuffer(mix_noise(pcm, RATE, snr_db, 7, colour), dtype="<i2")  # type: ignore[arg-type]
    assert len(mixed) == len(clean)
    assert _snr(clean, mixed.astype(np.float64), 6000 / math.sqrt(2)) == approx(snr_db, abs=0.5)


def test_loud_speech_is_turned_down_with_its_noise_not_clipped() -> None:
    clean = _bursts(30000)
    mixed = np.frombuffer(mix_noise(clean.astype("<i2").tobytes(), RATE, 5.0, 7), dtype="<i2")
    assert np.abs(mixed.astype(np.int32)).max() <= 32767
    assert _snr(clean, mixed.astype(np.float64), 30000 / math.sqrt(2)) == approx(5.0, abs=0.5)


def test_noise_is_the_same_for_a_seed_and_pink_is_darker() -> None:
    pcm = _bursts(6000).astype("<i2").tobytes()
    assert mix_noise(pcm, RATE, 10, 1) == mix_noise(pcm, RATE, 10, 1)
    assert mix_noise(pcm, RATE, 10, 1) != mix_noise(pcm, RATE, 10, 2)
    power = np.abs(np.fft.rfft(noise(RATE, 5, "pink"))) ** 2
    freqs = np.fft.rfftfreq(RATE, 1 / RATE)
    low = power[(freqs > 50) & (freqs < 500)].mean()
    high = power[(freqs > 2000) & (freqs < 5000)].mean()
    assert low > 5 * high
    white = np.abs(np.fft.rfft(noise(RATE, 5, "white"))) ** 2
    assert white[(freqs > 50) & (freqs < 500)].mean() < 2 * white[freqs > 2000].mean()


def test_speech_level_leaves_pauses_out_and_trim_cuts_the_edges() -> None:
    clean = _bursts(6000)
    assert active_rms(clean, RATE) == approx(6000 / math.sqrt(2), rel=0.01)
    padded = np.concatenate([np.zeros(RATE // 2), clean, np.zeros(RATE // 4)])
    trimmed = trim(padded.astype("<i2").tobytes(), RATE)
    assert len(trimmed) / 2 / RATE == approx(len(clean) / RATE, abs=0.011)


# -------------------------------------------------------------------------- takes
def test_a_paused_take_has_the_pause_where_the_scenario_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fake_speak(text: str, voice: str = "piper", rate: int = RATE) -> bytes:
        return (np.full(int(len(text) * 0.05 * rate), 3000)).astype("<i2").tobytes()

    monkeypatch.setattr(turn_eval, "speak", fake_speak)
    sc = Scenario("p", "pause", "one two", "three", 1.2, noise=Noise(10, "pink", 4))
    tk = turn_eval.take(sc, 8000)
    assert tk.first_end == approx(7 * 0.05)
    assert len(tk.pcm) / 2 / 8000 == approx((7 + 5) * 0.05 + 1.2)
    assert turn_eval.take(sc, 8000) == tk  # the same noise every time
    assert turn_eval.take(Scenario("c", "backchannel", "x", over=turn_eval.COUGH), 8000).over


def test_scenarios_are_enough_named_once_and_cover_every_kind() -> None:
    names = [s.name for s in turn_eval.SCENARIOS]
    assert len(names) == len(set(names))
    assert 2 * len(names) >= 50
    assert {s.kind for s in turn_eval.SCENARIOS} == {
        "finished",
        "pause",
        "backchannel",
        "interruption",
    }
    snrs = {s.noise.snr_db for s in turn_eval.SCENARIOS if s.noise}
    assert {20, 10, 5} <= snrs
    assert turn_eval.select("interrupt-wait,mhm") == [
        s for s in turn_eval.SCENARIOS if "interrupt-wait" in s.name or "mhm" in s.name
    ]


# ------------------------------------------------------------------------- summary
def test_timing_is_nearest_rank_in_ms_and_ignores_missing_values() -> None:
    values: list[float | None] = [i / 1000 for i in range(20, 0, -1)] + [None]
    assert timing(values) == {"n": 20, "p50": 10, "p95": 19, "max": 20}
    assert timing([None]) == {"n": 0, "p50": None, "p95": None, "max": None}
    assert timing([0.25]) == {"n": 1, "p50": 250, "p95": 250, "max": 250}


def test_summary_counts_each_measure_over_its_own_calls() -> None:
    calls = [
        Outcome("a", "phone", "pause", "piper", answer_latency=1.0),
        Outcome("b", "phone", "pause", "piper", false_cut_in=True),
        Outcome("c", "phone", "finished", "piper", answer_latency=2.0),
        Outcome("d", "phone", "backchannel", "piper", yield_latency=0.1, longest_silence=0.0),
        Outcome("e", "phone", "backchannel", "piper", false_interruption=True, reply_lost=True,
                yield_latency=0.2),
        Outcome("f", "phone", "interruption", "piper", yield_latency=0.1, confirm_latency=1.0),
        Outcome("g", "phone", "interruption", "piper", missed_interruption=True),
        Outcome("h", "phone", "interruption", "piper", error="no reply"),
    ]  # fmt: skip
    s = summarise(calls)
    assert s["calls"] == 8 and s["errors"] == 1
    assert s["false_cut_ins"] == {"k": 1, "n": 2, "text": "1/2", "rate": 0.5}
    assert s["false_interruptions"]["text"] == "1/2"  # type: ignore[index]
    assert s["replies_lost"]["text"] == "1/2"  # type: ignore[index]
    assert s["missed_interruptions"]["text"] == "1/2"  # type: ignore[index]
    assert s["yielded"]["text"] == "3/4"  # type: ignore[index]
    assert s["answer_latency_ms"] == {"n": 2, "p50": 1000, "p95": 2000, "max": 2000}
    assert s["yield_latency_backchannel_ms"]["p95"] == 200  # type: ignore[index]
    assert s["confirmation_latency_ms"]["n"] == 1  # type: ignore[index]


def test_summary_groups_by_transport_and_overall() -> None:
    calls = [
        Outcome("a", "phone", "finished", "piper", answer_latency=1.0),
        Outcome("a", "browser", "finished", "piper", answer_latency=3.0),
    ]
    groups = turn_eval.summary(calls)
    assert list(groups) == ["phone", "browser", "overall"]
    assert groups["overall"]["answer_latency_ms"]["p95"] == 3000  # type: ignore[index]
    table = turn_eval.markdown(groups, calls)
    assert "| measure | phone | browser | overall |" in table
    assert "| calls (failed: no reply or timed out) | 1 (0) | 1 (0) | 2 (0) |" in table


# ------------------------------------------------------------------------ markdown
def test_replace_section_replaces_only_between_the_markers() -> None:
    doc = f"# Title\n\nIntro.\n\n{START_MARKER}\nold table\n{END_MARKER}\n\nAfter.\n"
    new = replace_section(doc, "new table\n")
    assert new == f"# Title\n\nIntro.\n\n{START_MARKER}\nnew table\n{END_MARKER}\n\nAfter.\n"
    assert replace_section(new, "new table") == new


def test_replace_section_appends_the_markers_when_missing() -> None:
    assert replace_section("# Title\n", "t") == f"# Title\n\n{START_MARKER}\nt\n{END_MARKER}\n"
    assert replace_section("", "t") == f"{START_MARKER}\nt\n{END_MARKER}\n"


def test_silences_are_listed_in_order_within_the_window() -> None:
    tl = PlayerTimeline(start_lead=0.0)
    tl.push(1.0, 1.0)
    tl.push(3.0, 1.0)
    assert tl.silences(0.5, 4.5) == [(0.5, 1.0), (2.0, 3.0), (4.0, 4.5)]
    assert tl.silences(1.2, 1.8) == []
    assert tl.longest_silence(1.2, 1.8) == 0.0


async def test_phone_onset_is_the_first_frame_on_the_pumps_schedule() -> None:
    async def say(pcm: bytes) -> tuple[float, float]:
        return 100.0, 101.0  # queued at 100.0, last frame sent at 101.0

    line = PhoneLine(SimpleNamespace(say=say))  # type: ignore[arg-type]
    one_second = bytes(2 * 8000)  # 50 frames: the first left 49 frames before the last
    assert await line.say(one_second) == (approx(101.0 - 49 * 0.02), 101.0)
    assert await line.say(bytes(2 * 100)) == (101.0, 101.0)  # less than one frame
