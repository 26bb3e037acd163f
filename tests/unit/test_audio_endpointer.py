"""Endpointer on audio: synthetic voiced signal and real synthesised speech (espeak-ng).

Boundaries are known by construction (the speech is placed at a known frame inside digital
silence plus low noise), so START, END and the pre-roll can be checked against them.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from audio.mulaw import mulaw_decode, mulaw_encode
from audio.pcm import rms_dbfs
from audio.resample import resample
from audio.vad import Endpointer, EndpointerConfig, EndReason, VadEvent

RATE = 16000
FRAME_MS = 20
START_WINDOW_FRAMES = 15  # 300 ms
END_FRAMES = 25  # 500 ms
# webrtcvad's own hangover after a long enough speech run (vad_core.c kOverHangMax2 for 20 ms
# frames: 7 frames in modes 0-1, 5 in modes 2-3), plus two frames of slack for where a
# decaying signal crosses its threshold.
HANGOVER_FRAMES = {0: 9, 1: 9, 2: 7, 3: 7}
SLACK_FRAMES = 2


def voiced_signal(seconds: float, rate: int = RATE) -> np.ndarray:
    """A 150 Hz sawtooth (harmonic-rich, like a glottal pulse train) with a 4 Hz syllable AM."""
    t = np.arange(int(rate * seconds)) / rate
    saw = 2.0 * ((t * 150.0) % 1.0) - 1.0
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)
    return saw * envelope * 0.3 * 32767


def place(speech: np.ndarray, lead_s: float, tail_s: float, rate: int = RATE) -> bytes:
    """Speech between digital silence plus faint (-64 dBFS) noise, as PCM16 bytes."""
    rng = np.random.default_rng(7)
    lead, tail = int(lead_s * rate), int(tail_s * rate)
    x = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    x = x + rng.normal(0.0, 20.0, x.size)
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def frames_of(pcm: bytes, rate: int = RATE) -> list[bytes]:
    size = rate * FRAME_MS // 1000 * 2
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


def run(ep: Endpointer, frames: list[bytes]) -> tuple[dict[VadEvent, list[int]], list[bytes]]:
    """Feed frames; return event frame indices and the pre-roll taken at the first START."""
    events: dict[VadEvent, list[int]] = {e: [] for e in VadEvent}
    preroll: list[bytes] = []
    for i, frame in enumerate(frames):
        event = ep.process(frame, i * FRAME_MS / 1000)
        events[event].append(i)
        if event is VadEvent.START and not preroll:
            preroll = ep.take_preroll()
    return events, preroll


def assert_boundaries(
    frames: list[bytes],
    onset: int,
    offset: int,
    events: dict,
    preroll: list[bytes],
    aggressiveness: int = 2,
) -> None:
    """One utterance, START within the start window of the onset, END = offset + 500 ms."""
    assert len(events[VadEvent.START]) == 1, events[VadEvent.START]
    assert len(events[VadEvent.END]) == 1, events[VadEvent.END]
    (start,) = events[VadEvent.START]
    (end,) = events[VadEvent.END]
    assert onset <= start < onset + START_WINDOW_FRAMES
    # offset is the first frame after the speech; END arrives 25 frames after the last
    # voiced frame, which is the last speech frame plus webrtcvad's short hangover.
    expected = offset - 1 + END_FRAMES
    assert expected - SLACK_FRAMES <= end <= expected + HANGOVER_FRAMES[aggressiveness]
    # The pre-roll is contiguous audio ending with the START frame and reaching back
    # before the onset, so the first syllable is not lost.
    assert preroll[-1] == frames[start]
    first = start - len(preroll) + 1
    assert first <= onset
    assert b"".join(preroll) == b"".join(frames[first : start + 1])


def test_synthetic_voice_boundaries() -> None:
    pcm = place(voiced_signal(1.5), lead_s=1.0, tail_s=1.5)
    frames = frames_of(pcm)
    onset, offset = 50, 125  # 1.0 s and 2.5 s in 20 ms frames
    events, preroll = run(Endpointer(), frames)
    assert_boundaries(frames, onset, offset, events, preroll)
    assert len(preroll) == 30  # preroll_ms + start_window_ms = 600 ms


@pytest.mark.parametrize("aggressiveness", [0, 1, 2, 3])
def test_synthetic_voice_at_every_aggressiveness(aggressiveness: int) -> None:
    pcm = place(voiced_signal(1.5), lead_s=1.0, tail_s=1.5)
    frames = frames_of(pcm)
    events, preroll = run(Endpointer(EndpointerConfig(aggressiveness=aggressiveness)), frames)
    assert_boundaries(frames, 50, 125, events, preroll, aggressiveness)


def test_phone_path_mulaw_at_8khz() -> None:
    """The phone transport: 8 kHz mu-law in, decoded and endpointed at 8 kHz."""
    pcm = place(voiced_signal(1.0, 8000), lead_s=0.6, tail_s=1.2, rate=8000)
    line = mulaw_decode(mulaw_encode(pcm))
    frames = frames_of(line, 8000)
    events, preroll = run(Endpointer(EndpointerConfig(sample_rate=8000)), frames)
    assert_boundaries(frames, 30, 80, events, preroll)


def test_silence_and_noise_never_start() -> None:
    frames = frames_of(place(np.zeros(0), lead_s=3.0, tail_s=0.0))
    frames += [bytes(640)] * 100
    events, _ = run(Endpointer(), frames)
    assert events[VadEvent.START] == []
    assert len(events[VadEvent.SILENCE]) == len(frames)


def test_second_utterance_preroll_holds_only_audio_after_the_first_end() -> None:
    speech = voiced_signal(0.6)
    gap = np.zeros(int(0.62 * RATE))  # long enough to end the first utterance
    pcm = place(np.concatenate([speech, gap, speech]), lead_s=1.0, tail_s=1.0)
    frames = frames_of(pcm)
    ep = Endpointer()
    starts, ends, prerolls = [], [], []
    for i, frame in enumerate(frames):
        event = ep.process(frame, i * 0.02)
        if event is VadEvent.START:
            starts.append(i)
            prerolls.append(ep.take_preroll())
            assert ep.take_preroll() == []  # handed over once
        elif event is VadEvent.END:
            ends.append(i)
    assert len(starts) == 2 and len(ends) == 2
    second = prerolls[1]
    assert second[-1] == frames[starts[1]]
    # Frames after END 1 up to START 2: nothing already passed on during speech 1.
    assert len(second) == starts[1] - ends[0]
    assert b"".join(second) == b"".join(frames[ends[0] + 1 : starts[1] + 1])


def test_preroll_near_the_beginning_is_shorter_than_the_ring() -> None:
    frames = frames_of(place(voiced_signal(0.5), lead_s=0.04, tail_s=0.0))
    ep = Endpointer()
    for i, frame in enumerate(frames):
        if ep.process(frame, i * 0.02) is VadEvent.START:
            assert ep.take_preroll() == frames[: i + 1]
            break
    else:
        pytest.fail("no START")


def test_force_end_and_reset() -> None:
    frames = frames_of(place(voiced_signal(1.0), lead_s=0.2, tail_s=0.0))
    ep = Endpointer()
    events = [ep.process(f, 0.0) for f in frames[:30]]
    assert VadEvent.START in events and ep.in_speech
    assert ep.force_end() is True
    assert ep.detector.last_end_reason is EndReason.FORCED
    assert ep.force_end() is False
    ep.reset()
    assert ep.take_preroll() == []
    assert not ep.in_speech


def test_frames_from_a_reused_buffer_are_copied_into_the_ring() -> None:
    frames = frames_of(place(voiced_signal(0.5), lead_s=0.2, tail_s=0.0))
    ep = Endpointer()
    buffer = bytearray(640)
    for i, frame in enumerate(frames):
        buffer[:] = frame
        if ep.process(buffer, i * 0.02) is VadEvent.START:
            buffer[:] = bytes(640)
            assert ep.take_preroll() == frames[: i + 1]
            return
    pytest.fail("no START")


def test_is_speech_is_the_raw_classifier_and_does_not_disturb_process() -> None:
    frames = frames_of(place(voiced_signal(1.0), lead_s=0.5, tail_s=1.0))
    assert Endpointer().is_speech(frames[40]) is True
    assert Endpointer().is_speech(bytes(640)) is False
    plain, probed = Endpointer(), Endpointer()
    expected = [plain.process(f, 0.0) for f in frames]
    got = []
    for f in frames:
        probed.is_speech(f)
        got.append(probed.process(f, 0.0))
    assert got == expected


@pytest.mark.parametrize("size", [0, 320, 639, 641, 960])
def test_wrong_frame_size_is_rejected(size: int) -> None:
    ep = Endpointer()
    with pytest.raises(ValueError, match="640 bytes"):
        ep.process(bytes(size), 0.0)
    with pytest.raises(ValueError, match="640 bytes"):
        ep.is_speech(bytes(size))


@pytest.mark.parametrize("rate", [22050, 24000, 44100])
def test_rates_webrtcvad_cannot_take_are_rejected(rate: int) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        Endpointer(EndpointerConfig(sample_rate=rate))


def test_aggressiveness_can_be_changed_and_survives_reset() -> None:
    pcm = place(voiced_signal(1.5), lead_s=1.0, tail_s=1.5)
    frames = frames_of(pcm)
    mode0 = run(Endpointer(EndpointerConfig(aggressiveness=0)), frames)[0][VadEvent.END]
    mode3 = run(Endpointer(EndpointerConfig(aggressiveness=3)), frames)[0][VadEvent.END]
    assert mode0 != mode3  # longer hangover in the lenient modes
    ep = Endpointer(EndpointerConfig(aggressiveness=0))
    ep.set_aggressiveness(3)
    ep.reset()
    assert run(ep, frames)[0][VadEvent.END] == mode3
    with pytest.raises(ValueError):
        ep.set_aggressiveness(5)


def test_end_silence_and_trailing_silence_are_reachable_on_the_endpointer() -> None:
    frames = frames_of(place(voiced_signal(1.0), lead_s=0.5, tail_s=1.0))
    ep = Endpointer()
    ep.end_silence_ms = 200
    assert ep.detector.end_silence_ms == 200
    events, _ = run(ep, frames)
    (end,) = events[VadEvent.END]
    # 10 unvoiced frames of 20 ms after the last voiced one (75 + hangover), not 25.
    assert 75 - 1 + 10 <= end <= 75 - 1 + 10 + HANGOVER_FRAMES[2]
    assert ep.trailing_silence_ms == 0.0


# --- real (synthesised) speech -------------------------------------------------------------

ESPEAK = shutil.which("espeak-ng")


def espeak_pcm16k(text: str, tmp_path: Path) -> np.ndarray:
    out = tmp_path / "speech.wav"
    subprocess.run(
        [ESPEAK or "espeak-ng", "-v", "en-us", "-s", "140", "-w", str(out), text],
        check=True,
        capture_output=True,
        timeout=30,
    )
    with wave.open(str(out)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        raw = w.readframes(w.getnframes())
        rate = w.getframerate()
    return np.frombuffer(resample(raw, rate, RATE), dtype="<i2").astype(np.float64)


def speech_extent(pcm: bytes, threshold_dbfs: float = -45.0) -> tuple[int, int]:
    """First frame and one-past-last frame whose level is above the threshold."""
    loud = [i for i, f in enumerate(frames_of(pcm)) if rms_dbfs(f) > threshold_dbfs]
    return loud[0], loud[-1] + 1


@pytest.mark.skipif(ESPEAK is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
@pytest.mark.parametrize(
    "text",
    [
        "Spaced repetition helps me remember what I learn.",
        "Tell me more about the Krebs cycle.",
    ],
)
def test_espeak_speech_boundaries(text: str, tmp_path: Path) -> None:
    speech = espeak_pcm16k(text, tmp_path)
    pcm = place(speech, lead_s=1.0, tail_s=1.5)
    frames = frames_of(pcm)
    onset, offset = speech_extent(pcm)
    assert onset >= 50  # the lead silence really is silent
    events, preroll = run(Endpointer(), frames)
    assert_boundaries(frames, onset, offset, events, preroll)
