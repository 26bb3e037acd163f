"""The turn controller on its own: fed what the Session observes, it returns what to do.
No event loop, no audio pipeline: every decision is checked to the frame."""

from __future__ import annotations

import struct

from pipelines.floor import Floor, Verdict
from pipelines.turns import Act, TurnConfig

FRAME = 20
LOUD = struct.pack("<h", 8000) * 320  # about -12 dBFS: the caller
QUIET = struct.pack("<h", 60) * 320  # about -55 dBFS: the agent's echo on a phone line


def speak(floor: Floor, pattern: str, frame: bytes = LOUD) -> list[tuple[int, Act]]:
    """Feed frames: 'v' voiced, '.' unvoiced. Returns (frame index, act) for every act."""
    out: list[tuple[int, Act]] = []
    silence = 0
    for i, ch in enumerate(pattern):
        silence = 0 if ch == "v" else silence + FRAME
        out.extend((i, act) for act in floor.frame(frame, silence))
    return out


def acts_of(events: list[tuple[int, Act]]) -> list[Act]:
    return [a for _, a in events]


def test_a_new_turn_to_an_idle_agent_drops_a_held_reply_and_is_no_interruption():
    floor = Floor()
    assert floor.speech_started(agent_busy=False, voiced_ms=60) == [Act.DROP_SPECULATION]
    # Long speech to an idle agent never pauses or interrupts anything.
    assert acts_of(speak(floor, "v" * 100)) == []


def test_speech_over_the_agent_ducks_then_pauses_it_and_intent_confirms_the_barge_in():
    floor = Floor(TurnConfig(barge_in_min_speech_ms=300, barge_in_pause_ms=300))
    assert floor.speech_started(agent_busy=True, voiced_ms=0) == [Act.DUCK_REPLY]
    events = speak(floor, "v" * 20)
    assert events == [(14, Act.PAUSE_REPLY)]  # 15 voiced frames = 300 ms
    assert floor.interim("wait") == [Act.INTERRUPT]


def test_the_echo_gate_keeps_quiet_frames_from_taking_the_floor():
    cfg = TurnConfig(barge_in_min_speech_ms=300, barge_in_pause_ms=300)
    floor = Floor(cfg)
    floor.gate_echo(-45.0)
    # Behind the echo gate the agent ducks for the caller's first loud frame, not before.
    assert floor.speech_started(agent_busy=True, voiced_ms=0) == []
    assert acts_of(speak(floor, "v" * 40, QUIET)) == []  # echo: never voiced, no dip
    assert acts_of(speak(floor, "v" * 15, LOUD)) == [Act.DUCK_REPLY, Act.PAUSE_REPLY]
    ungated = Floor(cfg)
    assert ungated.speech_started(agent_busy=True, voiced_ms=0) == [Act.DUCK_REPLY]
    assert acts_of(speak(ungated, "v" * 15, QUIET)) == [Act.PAUSE_REPLY]


def test_a_backchannel_over_the_agent_resumes_it_and_is_not_answered():
    floor = Floor()
    assert floor.speech_started(agent_busy=True, voiced_ms=0) == [Act.DUCK_REPLY]
    assert acts_of(speak(floor, "v" * 20)) == []  # 400 ms: ducked, not paused
    floor.speech_ended()
    verdict = floor.final(floor.utterance_ended(), "Mhm.", caller_went_on=False)
    assert verdict == Verdict("Mhm.", (Act.RESUME_REPLY,))
    assert not verdict.answer


def test_a_finished_sentence_ends_the_turn_sooner_than_an_unfinished_one():
    cfg = TurnConfig(finished_silence_ms=200, unfinished_silence_ms=600, end_silence_ms=400)
    for text, frames in (("Tell me about the moon.", 10), ("Tell me about the", 30)):
        floor = Floor(cfg)
        floor.speech_started(agent_busy=False, voiced_ms=0)
        speak(floor, "v" * 10)
        floor.interim(text)
        events = speak(floor, "." * 40)
        assert events[-1] == (frames - 1, Act.END_TURN), text


def test_a_speculative_reply_is_committed_when_the_final_says_the_same():
    floor = Floor(TurnConfig(speculate_after_ms=200, unfinished_silence_ms=900))
    floor.speech_started(agent_busy=False, voiced_ms=0)
    speak(floor, "v" * 10 + "." * 12)
    assert floor.interim("Photosynthesis makes sugar") == [Act.SPECULATE]
    assert floor.speculated == "Photosynthesis makes sugar"
    verdict = floor.final(
        floor.utterance_ended(), "Photosynthesis makes sugar.", caller_went_on=False
    )
    assert verdict == Verdict(
        "Photosynthesis makes sugar.", (), answer="Photosynthesis makes sugar.", commit=True
    )


def test_a_speculative_reply_is_dropped_when_the_final_differs():
    floor = Floor(TurnConfig(speculate_after_ms=200))
    floor.speech_started(agent_busy=False, voiced_ms=0)
    speak(floor, "v" * 10 + "." * 12)
    assert floor.interim("black holes") == [Act.SPECULATE]
    verdict = floor.final(floor.utterance_ended(), "black holes and stars", caller_went_on=False)
    assert verdict.acts == (Act.DROP_SPECULATION,)
    assert verdict.answer == "black holes and stars" and not verdict.commit


def test_speech_resuming_in_the_pause_drops_the_speculation():
    floor = Floor(TurnConfig(speculate_after_ms=200, unfinished_silence_ms=900))
    floor.speech_started(agent_busy=False, voiced_ms=0)
    speak(floor, "v" * 10 + "." * 12)
    floor.interim("I was reading about")
    assert acts_of(speak(floor, "v")) == [Act.DROP_SPECULATION]
    assert floor.speculated is None


def test_a_turn_the_caller_continued_is_answered_together_with_the_next():
    floor = Floor()
    floor.speech_started(agent_busy=False, voiced_ms=0)
    first = floor.utterance_ended()
    floor.speech_started(agent_busy=False, voiced_ms=0)  # the caller went on
    held = floor.final(first, "black holes and", caller_went_on=True)
    assert held == Verdict("black holes and", (Act.DROP_SPECULATION,))
    second = floor.final(floor.utterance_ended(), "stars.", caller_went_on=False)
    assert second.shown == second.answer == "black holes and stars."


def test_a_held_reply_to_the_last_part_is_not_released_for_both_parts():
    """Push-to-talk pressed again before the first release's final came: the second
    release's held reply answers only its own words, so it is dropped and both parts are
    answered together."""
    floor = Floor()
    assert floor.released("black holes and") == [Act.SPECULATE]
    first = floor.utterance_ended()
    carried = floor.final(first, "black holes and", caller_went_on=True)
    assert carried.answer == "" and Act.DROP_SPECULATION in carried.acts
    assert floor.released("stars.") == [Act.SPECULATE]
    second = floor.final(floor.utterance_ended(), "stars.", caller_went_on=False)
    assert second.answer == "black holes and stars."
    assert not second.commit and Act.DROP_SPECULATION in second.acts


def test_push_to_talk_turns_are_answered_unless_empty():
    floor = Floor()
    assert floor.utterance_ended() is None
    assert floor.final(None, "ptt words", caller_went_on=False).answer == "ptt words"
    assert floor.final(None, "", caller_went_on=False) == Verdict("")


def test_the_agents_own_words_heard_back_do_not_interrupt_it():
    floor = Floor(TurnConfig(barge_in_min_words=3))
    floor.agent_said("Mitochondria make energy for the cell")
    floor.speech_started(agent_busy=True, voiced_ms=0)
    speak(floor, "v" * 20)
    assert floor.interim("mitochondria make energy") == []
    verdict = floor.final(floor.utterance_ended(), "mitochondria make energy", caller_went_on=False)
    assert not verdict.answer and Act.RESUME_REPLY in verdict.acts


def test_an_utterance_the_endpointer_ended_takes_no_more_frames():
    floor = Floor()
    floor.speech_started(agent_busy=True, voiced_ms=0)
    floor.speech_ended()
    assert speak(floor, "v" * 40) == []


def test_new_rules_forget_the_utterance_in_progress():
    floor = Floor()
    floor.speech_started(agent_busy=True, voiced_ms=0)
    floor.gate_echo(-45.0)
    floor.configure(TurnConfig(barge_in_min_speech_ms=300))
    assert floor.utterance_ended() is None
    assert speak(floor, "v" * 40) == []  # no utterance: nothing to judge
