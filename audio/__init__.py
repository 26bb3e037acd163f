"""Pure, synchronous audio code: codecs, resampling, framing, levels, VAD and endpointing.

No asyncio, no sockets, no imports from the rest of the project: every function here can be
tested with a numpy array and called inline (microseconds a frame) from the event loop.
"""

from audio.framing import ALLOWED_FRAME_MS, Reframer
from audio.mulaw import mulaw_decode, mulaw_encode
from audio.pcm import SILENCE_DBFS, float_to_pcm16, frame_bytes, pcm16_to_float, rms_dbfs
from audio.resample import SUPPORTED_RATES, StreamResampler, resample
from audio.vad import (
    VAD_FRAME_MS,
    VAD_SAMPLE_RATES,
    Endpointer,
    EndpointerConfig,
    EndReason,
    TurnDetector,
    VadEvent,
)

__all__ = [
    "ALLOWED_FRAME_MS",
    "SILENCE_DBFS",
    "SUPPORTED_RATES",
    "VAD_FRAME_MS",
    "VAD_SAMPLE_RATES",
    "EndReason",
    "Endpointer",
    "EndpointerConfig",
    "Reframer",
    "StreamResampler",
    "TurnDetector",
    "VadEvent",
    "float_to_pcm16",
    "frame_bytes",
    "mulaw_decode",
    "mulaw_encode",
    "pcm16_to_float",
    "resample",
    "rms_dbfs",
]
