"""The spans of one voice turn, planned after the fact from its clock marks (`TurnTrace`).

Pure: names, times and attributes, no OpenTelemetry (server/turn_tracer.py emits the
plan). `voice.turn` runs from the first mark of the turn to its last; its children are
the stages below, each from its start mark to its end mark. A stage the turn started but
did not finish (a barge-in, a hang-up) ends where the turn was cut off; a stage that never
started has no span. Attributes are ids, the mode and provider names: never words. The ids
are on `voice.turn` only (a backend finds a trace by any of its spans' attributes): every
attribute costs CPU on each turn, to build and to encode.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.ports import TurnTrace

Attribute = str | int | float | bool

#: (span, start mark, end mark, events as (event, mark)), in the order of a turn.
STAGES: tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...] = (
    ("voice.endpointing", "speech_start", "endpoint", (("speech_end", "speech_end"),)),
    ("voice.stt", "endpoint", "stt_final", ()),
    ("voice.llm", "llm_request", "llm_done", (("first_token", "llm_first_token"),)),
    ("voice.tts", "tts_request", "tts_done", ()),
    ("voice.playout", "first_audio", "playout_end", ()),
    ("voice.capture", "capture_start", "capture_handoff", ()),
)
#: The stage spans that name the provider serving them (`TurnTrace.providers` key).
_PROVIDER_OF = {"voice.stt": "stt", "voice.llm": "llm", "voice.tts": "tts"}


@dataclass(frozen=True, slots=True)
class PlannedSpan:
    name: str
    #: Nanoseconds since the epoch.
    start_ns: int
    end_ns: int
    attributes: dict[str, Attribute]
    events: tuple[tuple[str, int], ...] = ()


def plan_turn(
    turn: TurnTrace, request_id: str | None = None
) -> tuple[PlannedSpan, list[PlannedSpan]]:
    """The `voice.turn` span and its stage spans, in the order of `STAGES`."""
    marks = turn.marks
    first = min(marks.values())
    base = round((first + turn.epoch_offset) * 1e9)

    def ns(mark: float) -> int:  # one epoch conversion per turn: differences stay exact
        return base + round((mark - first) * 1e9)

    cut = marks.get("interrupted")
    stages: list[PlannedSpan] = []
    for name, start_mark, end_mark, events in STAGES:
        start = marks.get(start_mark)
        end = marks.get(end_mark, cut)
        if start is None or end is None:
            continue
        end = max(end, start)
        provider = turn.providers.get(_PROVIDER_OF.get(name, ""))
        attributes: dict[str, Attribute] = {"voice.provider": provider} if provider else {}
        at = tuple(
            (event, ns(min(max(marks[mark], start), end)))
            for event, mark in events
            if mark in marks
        )
        stages.append(PlannedSpan(name, ns(start), ns(end), attributes, at))

    root: dict[str, Attribute] = {
        "session.id": turn.session_id,
        "turn.id": turn.turn_id,
        "voice.mode": turn.mode,
        "voice.interrupted": turn.interrupted,
        "voice.speculative": turn.speculative,
    }
    if request_id:
        root["request.id"] = request_id
    if "first_audio" in marks and "speech_end" in marks:
        latency = (marks["first_audio"] - marks["speech_end"]) * 1000
        root["voice.first_audio_ms"] = round(latency, 1)
    return PlannedSpan("voice.turn", ns(first), ns(max(marks.values())), root), stages
