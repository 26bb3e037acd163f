"""What a transport may ask of a session: how the conversation runs (`SessionConfig`,
`MODES`) and the error for input the session cannot act on (`SessionInputError`).

Apart from the Session so that the parts of a session read the configuration without
importing the Session; `pipelines.session` re-exports all three names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from audio.vad import EndpointerConfig
from pipelines.turns import TurnConfig

MODES = ("continuous", "push_to_talk")


class SessionInputError(ValueError):
    """Input the session cannot act on; the transport reports it and goes on."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class SessionConfig:
    mode: str = "continuous"
    input_rate: int = 16000
    output_rate: int = 16000
    tts: bool = True
    endpointer: EndpointerConfig = field(default_factory=EndpointerConfig)
    #: Start the final transcript speculatively after this much trailing silence.
    speculate_after_ms: int = 200
    audio_lead_s: float = 0.3
    audio_chunk_ms: int = 100
    keepalive_s: float = 60.0
    #: Turn-taking in continuous mode (pipelines/turns.py).
    turns: TurnConfig = field(default_factory=TurnConfig)
    #: Phone lines echo the agent: while it plays, use this VAD mode and ignore quieter frames.
    echo_guard: bool = False
    echo_vad_aggressiveness: int = 3
    echo_gate_dbfs: float = -45.0
    #: The transport reports playback (Twilio marks): remember only acknowledged audio.
    playback_acks: bool = False
    #: Audio is accepted at most this many times faster than real time, sustained, with
    #: `audio_burst_s` seconds of slack (`audio.pace`); the excess is dropped
    #: (the server's AUDIO_MAX_SPEED and AUDIO_BURST_SECONDS).
    audio_max_speed: float = 1.5
    audio_burst_s: float = 3.0
    #: A ducked reply (protocol v1.1 `duck`) plays this many dB quieter.
    duck_db: float = 24.0
    #: The listener's player acts on `duck`, `pause` and `resume` (a protocol 1.1 client;
    #: over WebRTC and the phone the server does it). False, a protocol 1 client: the reply
    #: is not ducked and pauses after `barge_in_min_speech_ms`, as in protocol 1.
    listener_yields: bool = True
    #: While the caller's speech may be an interruption, it is transcribed this often
    #: (0: at the recogniser's usual interim cadence), so words of intent confirm it early.
    barge_in_interim_s: float = 0.2

    def turn_rules(self, *, transcript_on_pause: bool) -> TurnConfig:
        """`turns` with the frame size and pause threshold the session's audio runs on;
        `transcript_on_pause`: the recogniser transcribes pauses (see `TurnConfig`)."""
        turns = replace(
            self.turns,
            frame_ms=self.endpointer.frame_ms,
            speculate_after_ms=self.speculate_after_ms,
            transcript_on_pause=transcript_on_pause,
        )
        if not self.listener_yields:
            turns = replace(
                turns, barge_in_duck=False, barge_in_pause_ms=turns.barge_in_min_speech_ms
            )
        return turns
