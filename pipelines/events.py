"""The typed vocabulary of everything a Session tells its transport.

Transports (browser WebSocket, Twilio Media Streams) translate these into their own wire
format; the engine never knows which one it talks to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(slots=True, frozen=True)
class Event:
    type: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"type": self.type}
        for name in self.__slots__:  # type: ignore[attr-defined]
            d[name] = getattr(self, name)
        return d


@dataclass(slots=True, frozen=True)
class Vad(Event):
    type: ClassVar[str] = "vad"
    speaking: bool


@dataclass(slots=True, frozen=True)
class Transcript(Event):
    type: ClassVar[str] = "transcript"
    turn_id: int
    text: str
    final: bool


@dataclass(slots=True, frozen=True)
class ResponseDelta(Event):
    type: ClassVar[str] = "response_delta"
    turn_id: int
    text: str


@dataclass(slots=True, frozen=True)
class ResponseDone(Event):
    type: ClassVar[str] = "response_done"
    turn_id: int
    text: str


@dataclass(slots=True, frozen=True)
class AudioStart(Event):
    type: ClassVar[str] = "audio_start"
    turn_id: int
    sample_rate: int


@dataclass(slots=True, frozen=True)
class AudioFrame(Event):
    """PCM16 mono at the session's output rate. Sent as a binary frame, never as JSON."""

    type: ClassVar[str] = "audio"
    turn_id: int
    pcm: bytes


@dataclass(slots=True, frozen=True)
class AudioEnd(Event):
    type: ClassVar[str] = "audio_end"
    turn_id: int


@dataclass(slots=True, frozen=True)
class Interrupted(Event):
    type: ClassVar[str] = "interrupted"
    turn_id: int


@dataclass(slots=True, frozen=True)
class Duck(Event):
    """Protocol v1.1: the caller may be taking the floor: play reply `turn_id` `gain_db`
    quieter from now on (it goes on playing: a backchannel leaves only a dip)."""

    type: ClassVar[str] = "duck"
    turn_id: int
    gain_db: float


@dataclass(slots=True, frozen=True)
class Pause(Event):
    """Protocol v1.1: stop playing reply `turn_id` now, keeping what is not played yet
    (`position_ms`: how much of it the server reckons was played)."""

    type: ClassVar[str] = "pause"
    turn_id: int
    position_ms: int


@dataclass(slots=True, frozen=True)
class Resume(Event):
    """Protocol v1.1: play reply `turn_id` again at full volume, from where it paused: no
    gap, no repeat. Ends a `duck` as well as a `pause`."""

    type: ClassVar[str] = "resume"
    turn_id: int
    position_ms: int


@dataclass(slots=True, frozen=True)
class Error(Event):
    type: ClassVar[str] = "error"
    code: str
    message: str
