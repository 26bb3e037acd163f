"""Whisper in a window just longer than the utterance (`WHISPER_SHORT_WINDOW`): the same
words as in its own 30 s window, nothing from silence or noise, and a looping decode
recognised (the real tiny.en model, Piper speech)."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.voices import speak
from pipelines.stt.whisper import WhisperModelHolder, repeats_itself
from pipelines.turns import words


@pytest.fixture(scope="module")
def short() -> WhisperModelHolder:
    return WhisperModelHolder(short_window_s=10)


@pytest.fixture(scope="module")
def full() -> WhisperModelHolder:
    return WhisperModelHolder(short_window_s=30)


@pytest.mark.parametrize(
    "text",
    [
        "Can you tell me how vaccines train the immune system?",
        "Why is the sky blue?",
        "Stop.",
    ],
)
def test_a_short_window_hears_what_the_full_window_hears(
    short: WhisperModelHolder, full: WhisperModelHolder, text: str
) -> None:
    pcm = speak(text, "piper")
    assert words(short.transcribe(pcm)) == words(text)
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    heard = short._transcribe_short(audio)  # the short window itself, not its fallback
    assert heard is not None and words(heard[0]) == words(text)
    assert words(full.transcribe(pcm)) == words(text)


def test_the_first_word_of_an_interruption_is_heard_from_its_first_600_ms(
    short: WhisperModelHolder,
) -> None:
    pcm = speak("Wait, can you explain that again?", "piper")
    assert words(short.transcribe(pcm[: int(16000 * 2 * 0.6)]))[:1] == ["wait"]


def test_silence_and_noise_are_no_words(short: WhisperModelHolder) -> None:
    assert short.transcribe(bytes(16000 * 2 * 2)) == ""
    hiss = np.random.default_rng(1).normal(0, 300, 16000 * 2).astype("<i2").tobytes()
    assert words(short.transcribe(hiss)) == []


def test_a_decode_that_loops_is_recognised() -> None:
    # What tiny.en wrote for 0.5 s of "wait" in a 0.5 s window.
    assert repeats_itself("wait... " * 30)
    assert repeats_itself("Hold up Hold up Hold up Hold up Hold up Hold up Hold")
    assert repeats_itself("I learned that the mitochondria. I learned that the mitochondria.")
    assert not repeats_itself("Wait, wait, I have a question about that.")
    assert not repeats_itself("Stop. Stop the music.")
    assert not repeats_itself("Stop. Stop.")  # said, not a loop
    assert not repeats_itself("")
