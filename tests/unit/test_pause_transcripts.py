"""Early pause transcripts: asked once per pause, called off when the caller goes on."""

from __future__ import annotations

from pipelines.pause_transcripts import PauseTranscripts


class Recogniser:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def speculate(self) -> None:
        self.calls.append("speculate")

    def unspeculate(self) -> None:
        self.calls.append("unspeculate")


def feed(pauses: PauseTranscripts, silences: list[float]) -> None:
    for silence in silences:
        pauses.frame(silence)


def test_one_request_per_pause_and_called_off_when_the_caller_goes_on():
    stt = Recogniser()
    pauses = PauseTranscripts(stt, after_ms=200)
    assert pauses.supported
    feed(pauses, [0, 20, 100, 180])
    assert stt.calls == []
    feed(pauses, [200, 220, 240])
    assert stt.calls == ["speculate"]
    feed(pauses, [0, 0, 20, 200])
    assert stt.calls == ["speculate", "unspeculate", "speculate"]


def test_a_new_utterance_starts_without_a_pending_request():
    stt = Recogniser()
    pauses = PauseTranscripts(stt, after_ms=200)
    feed(pauses, [0, 200])
    pauses.reset()
    feed(pauses, [0, 200])
    assert stt.calls == ["speculate", "speculate"]  # no call-off for the ended utterance


def test_a_recogniser_without_pause_transcripts_is_left_alone():
    pauses = PauseTranscripts(object(), after_ms=200)
    assert not pauses.supported
    feed(pauses, [0, 200, 400, 0])  # nothing to call, nothing raised
    assert not PauseTranscripts(None, after_ms=200).supported
