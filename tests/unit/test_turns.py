"""The turn-taking state machine, frame by frame: adaptive end of turn, speculation,
barge-in confirmation, backchannels, noise and echo."""

from __future__ import annotations

import pytest

from pipelines.turns import Act, Completion, TurnConfig, TurnTaker, completion

FRAME = 20


def run(tt: TurnTaker, pattern: str) -> list[tuple[int, Act]]:
    """Feed frames: 'v' voiced, '.' unvoiced. Returns (frame index, act) for every act."""
    out: list[tuple[int, Act]] = []
    silence = 0
    for i, ch in enumerate(pattern):
        voiced = ch == "v"
        silence = 0 if voiced else silence + FRAME
        out.extend((i, act) for act in tt.frame(voiced, silence))
        if out and out[-1][1] is Act.END_TURN:
            break
    return out


def end_frame(acts: list[tuple[int, Act]]) -> int:
    return next(i for i, a in acts if a is Act.END_TURN)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I learned how vaccines train the immune system.", Completion.FINISHED),
        ("What is spaced repetition?", Completion.FINISHED),
        ("I was reading about black holes and", Completion.UNFINISHED),
        ("So I think um.", Completion.UNFINISHED),  # Whisper puts a period on anything
        ("The reason is because...", Completion.UNFINISHED),
        ("it goes like this,", Completion.UNFINISHED),
        ("spaced repetition", Completion.UNKNOWN),
        ("", Completion.UNKNOWN),
        # A clause opened by "that", "because"... with only a noun phrase after it: the
        # full stop is the recogniser's, the sentence goes on after a pause.
        ("I learned that the mitochondria.", Completion.UNKNOWN),
        ("I stayed home because my brother.", Completion.UNKNOWN),
        ("I learned that the mitochondria make energy.", Completion.FINISHED),
        ("I know that my dog barks.", Completion.FINISHED),
        ("I know that the answer is four.", Completion.FINISHED),
        ("I like that one.", Completion.FINISHED),
        ("Tell me about the mitochondria.", Completion.FINISHED),
    ],
)
def test_completion_reads_the_transcript(text, expected):
    assert completion(text) is expected


def test_end_of_turn_adapts_to_the_words():
    cfg = TurnConfig(end_silence_ms=500, finished_silence_ms=300, unfinished_silence_ms=900)
    ends = {}
    for name, text in (
        ("finished", "That is how vaccines work."),
        ("unfinished", "I was reading about black holes and"),
        ("unknown", "black holes"),
    ):
        tt = TurnTaker(cfg)
        tt.speech_started(agent_busy=False)
        run(tt, "v" * 20)
        tt.interim(text)
        acts = run(tt, "." * 100)
        ends[name] = (end_frame(acts) + 1) * FRAME
    assert ends == {"finished": 300, "unfinished": 900, "unknown": 500}


def test_waits_for_the_transcript_of_the_pause_when_the_recogniser_sends_one():
    cfg = TurnConfig(finished_silence_ms=300, transcript_on_pause=True, speculate_after_ms=200)
    tt = TurnTaker(cfg)
    utt, _ = tt.speech_started(agent_busy=False)
    run(tt, "v" * 20 + "." * 12)  # 240 ms into the pause: its transcript is on the way
    assert utt.pause_text_pending
    assert tt.interim("That is the whole idea.") == [Act.SPECULATE]
    assert utt.speculated == "That is the whole idea." and not utt.pause_text_pending
    assert tt.frame(False, 280) == []
    assert tt.frame(False, 300) == [Act.END_TURN]


def test_a_late_transcript_of_a_long_enough_pause_ends_the_turn_at_once():
    # The client may stop sending audio during the pause: no frame would end the turn.
    cfg = TurnConfig(finished_silence_ms=350, transcript_on_pause=True)
    tt = TurnTaker(cfg)
    utt, _ = tt.speech_started(agent_busy=False)
    acts = run(tt, "v" * 20 + "." * 30)  # 600 ms of pause, still waiting for words
    assert Act.END_TURN not in [a for _, a in acts]
    assert tt.interim("That is all.") == [Act.SPECULATE, Act.END_TURN]
    assert tt.final(utt, "That is all.") == [Act.COMMIT]


def test_speculative_reply_is_committed_when_the_final_matches():
    tt = TurnTaker(TurnConfig(speculate_after_ms=200))
    utt, _ = tt.speech_started(agent_busy=False)
    run(tt, "v" * 20 + "." * 11)
    assert tt.interim("Photosynthesis makes sugar.") == [Act.SPECULATE]
    assert tt.interim("Photosynthesis makes sugar") == []  # same words: keep it
    acts = run(tt, "." * 40)
    assert acts[-1][1] is Act.END_TURN
    assert tt.final(utt, "photosynthesis makes sugar.") == [Act.COMMIT]


def test_speculation_is_dropped_when_the_caller_goes_on():
    tt = TurnTaker(TurnConfig(speculate_after_ms=200, unfinished_silence_ms=900))
    utt, _ = tt.speech_started(agent_busy=False)
    run(tt, "v" * 20 + "." * 11)
    assert tt.interim("I was reading about black holes and") == [Act.SPECULATE]
    acts = run(tt, "." * 10 + "v")  # 420 ms pause, then more words
    assert [a for _, a in acts] == [Act.DROP_SPECULATION]
    run(tt, "v" * 30)
    tt.interim("I was reading about black holes and they evaporate.")
    # The second pause holds a reply to the whole sentence, which its final releases.
    assert [a for _, a in run(tt, "." * 40)] == [Act.SPECULATE, Act.END_TURN]
    assert tt.final(utt, "I was reading about black holes and they evaporate.") == [Act.COMMIT]


def test_a_final_that_differs_from_the_speculation_starts_a_fresh_reply():
    tt = TurnTaker(TurnConfig(speculate_after_ms=200))
    utt, _ = tt.speech_started(agent_busy=False)
    run(tt, "v" * 20 + "." * 11)
    tt.interim("Black holes.")
    run(tt, "." * 40)
    assert tt.final(utt, "Black holes evaporate.") == [Act.DROP_SPECULATION, Act.RESPOND]


def test_new_speech_drops_a_pending_speculation_of_the_ended_turn():
    tt = TurnTaker(TurnConfig(speculate_after_ms=200))
    utt, _ = tt.speech_started(agent_busy=False)
    run(tt, "v" * 20 + "." * 11)
    tt.interim("Black holes.")
    run(tt, "." * 40)
    _, acts = tt.speech_started(agent_busy=False)
    assert acts == [Act.DROP_SPECULATION]
    assert tt.final(utt, "Black holes.") == [Act.RESPOND]  # the session carries it over


def test_barge_in_ducks_at_once_pauses_then_confirms_after_enough_voiced_speech():
    cfg = TurnConfig(barge_in_min_speech_ms=300, barge_in_pause_ms=300, barge_in_confirm_ms=900)
    tt = TurnTaker(cfg)
    utt, acts = tt.speech_started(agent_busy=True, voiced_ms=120)
    assert acts == [Act.DUCK_REPLY]  # the first frame the VAD calls speech
    acts = run(tt, "v" * 60)
    # 120 ms at start + 9 frames = 300 ms: pause; 39 frames more = 900 ms: interrupt.
    assert acts == [(8, Act.PAUSE_REPLY), (38, Act.INTERRUPT)]
    assert utt.confirmed and not utt.candidate and not utt.ducked and not utt.paused


def test_a_ducked_reply_is_loud_again_as_soon_as_the_caller_stops():
    tt = TurnTaker(TurnConfig(duck_release_ms=200, barge_in_pause_ms=600))
    utt, acts = tt.speech_started(agent_busy=True, voiced_ms=120)
    assert acts == [Act.DUCK_REPLY]
    # 100 ms more of "mhm", a 200 ms breath, then "mhm" again.
    acts = run(tt, "v" * 5 + "." * 10 + "v" * 5 + "." * 10)
    assert acts == [
        (14, Act.RESUME_REPLY),  # 10 unvoiced frames = 200 ms
        (15, Act.DUCK_REPLY),
        (29, Act.RESUME_REPLY),
    ]
    assert not utt.ducked
    assert tt.final(utt, "Mhm, mhm.") == [Act.DISMISS]  # nothing left to give back


def test_a_candidate_that_grows_is_paused_and_stays_paused_through_its_pauses():
    tt = TurnTaker(TurnConfig(barge_in_pause_ms=600, duck_release_ms=200))
    utt, _ = tt.speech_started(agent_busy=True, voiced_ms=120)
    acts = run(tt, "v" * 24 + "." * 20)
    # 120 + 24 x 20 = 600 ms voiced at frame 23: paused; a 400 ms pause does not release it.
    assert acts == [(23, Act.PAUSE_REPLY)]
    assert utt.paused and not utt.ducked
    assert tt.final(utt, "") == [Act.RESUME_REPLY, Act.DISMISS]


def test_no_duck_when_the_agent_is_quiet_or_ducking_is_off():
    tt = TurnTaker(TurnConfig())
    _, acts = tt.speech_started(agent_busy=False)
    assert Act.DUCK_REPLY not in acts
    tt = TurnTaker(TurnConfig(barge_in_duck=False, barge_in_pause_ms=300))
    _, acts = tt.speech_started(agent_busy=True, voiced_ms=120)
    assert acts == []
    assert run(tt, "v" * 10 + "." * 12) == [(8, Act.PAUSE_REPLY)]


def test_short_speech_over_the_agent_leaves_only_a_dip():
    tt = TurnTaker(TurnConfig(barge_in_min_speech_ms=300, duck_release_ms=200))
    utt, acts = tt.speech_started(agent_busy=True, voiced_ms=120)
    assert acts == [Act.DUCK_REPLY]
    acts = run(tt, "v" * 5 + "." * 40)  # a cough: 220 ms voiced
    assert [a for _, a in acts] == [Act.RESUME_REPLY, Act.END_TURN]
    assert tt.final(utt, "") == [Act.DISMISS]


def test_noise_without_words_resumes_the_reply():
    cfg = TurnConfig(barge_in_min_speech_ms=300, barge_in_pause_ms=300, barge_in_confirm_ms=900)
    tt = TurnTaker(cfg)
    utt, _ = tt.speech_started(agent_busy=True, voiced_ms=120)
    acts = run(tt, "v" * 15 + "." * 40)  # 420 ms of loud noise
    assert [a for _, a in acts] == [Act.PAUSE_REPLY, Act.END_TURN]
    assert tt.final(utt, "") == [Act.RESUME_REPLY, Act.DISMISS]


@pytest.mark.parametrize("said", ["Mhm.", "Uh-huh.", "yeah yeah", "Okay, right.", "I see."])
def test_backchannels_do_not_interrupt(said):
    tt = TurnTaker(TurnConfig())
    utt, _ = tt.speech_started(agent_busy=True, voiced_ms=120)
    run(tt, "v" * 25)
    assert tt.interim(said) == []
    assert tt.final(utt, said) == [Act.RESUME_REPLY, Act.DISMISS]


def test_a_long_backchannel_transcript_blocks_the_duration_rule():
    tt = TurnTaker(TurnConfig(barge_in_confirm_ms=900))
    tt.speech_started(agent_busy=True, voiced_ms=120)
    run(tt, "v" * 20)
    tt.interim("Yeah, yeah, okay.")
    acts = run(tt, "v" * 40)
    assert Act.INTERRUPT not in [a for _, a in acts]


def test_a_few_content_words_do_not_block_the_duration_rule():
    tt = TurnTaker(TurnConfig(barge_in_confirm_ms=900, barge_in_min_words=3))
    tt.speech_started(agent_busy=True, voiced_ms=120)
    run(tt, "v" * 20)
    assert tt.interim("Today I learned") == []  # one content word: not enough by itself
    acts = run(tt, "v" * 20)
    assert [a for _, a in acts] == [Act.INTERRUPT]  # ...but it is speech, and long enough


def test_words_of_intent_or_enough_content_words_confirm_early():
    for text in ("Wait, what?", "Stop.", "tell me about the moon landing"):
        tt = TurnTaker(TurnConfig(barge_in_min_words=3))
        tt.speech_started(agent_busy=True, voiced_ms=120)
        run(tt, "v" * 10)
        assert tt.interim(text) == [Act.INTERRUPT], text
    tt = TurnTaker(TurnConfig(barge_in_min_words=3))
    tt.speech_started(agent_busy=True, voiced_ms=120)
    run(tt, "v" * 10)
    assert tt.interim("and make a check") == []  # a hum mis-heard as filler words


def test_a_word_of_intent_heard_early_confirms_at_the_frame_with_enough_voice():
    """A "Wait." transcribed before BARGE_IN_MIN_SPEECH_MS were voiced (behind a phone's
    echo gate few frames count) does not wait for the next transcript."""
    tt = TurnTaker(TurnConfig(barge_in_min_speech_ms=200))
    utt, _ = tt.speech_started(agent_busy=True, voiced_ms=120)
    run(tt, "vv..")  # 160 ms voiced
    assert tt.interim("Wait.") == []
    # The third voiced frame makes 200 ms: at once, no new transcript needed.
    assert run(tt, "..vvv") == [(3, Act.INTERRUPT)]
    assert utt.confirmed
    # Words that are not a reason to stop do not confirm at that frame.
    tt = TurnTaker(TurnConfig(barge_in_min_speech_ms=200))
    tt.speech_started(agent_busy=True, voiced_ms=120)
    run(tt, "vv")
    assert tt.interim("Mhm.") == []
    assert run(tt, "vvvv") == []


def test_the_agents_own_words_echoed_back_do_not_interrupt():
    tt = TurnTaker(TurnConfig(barge_in_min_words=2))
    tt.agent_said("So the key idea is spaced repetition. Why do you think that works?")
    utt, _ = tt.speech_started(agent_busy=True, voiced_ms=120)
    run(tt, "v" * 20)
    assert tt.interim("the key idea is spaced repetition why") == []
    assert tt.final(utt, "key idea spaced repetition") == [Act.RESUME_REPLY, Act.DISMISS]
    # A real interruption that shares a word with the reply still counts its own words.
    tt.speech_started(agent_busy=True, voiced_ms=120)
    run(tt, "v" * 20)
    assert tt.interim("repetition sounds boring honestly") == [Act.INTERRUPT]


def test_a_short_real_interruption_ends_as_a_new_turn():
    tt = TurnTaker(TurnConfig())
    utt, _ = tt.speech_started(agent_busy=True, voiced_ms=120)
    run(tt, "v" * 20 + "." * 30)
    assert tt.final(utt, "Hold on.") == [Act.INTERRUPT, Act.RESPOND]


def test_candidate_turns_end_on_the_default_silence_whatever_the_words():
    cfg = TurnConfig(end_silence_ms=500, unfinished_silence_ms=900)
    tt = TurnTaker(cfg)
    tt.speech_started(agent_busy=True, voiced_ms=120)
    run(tt, "v" * 10)
    tt.interim("um and")
    acts = run(tt, "." * 60)
    assert (end_frame(acts) - 0 + 1) * FRAME == 500


def test_config_is_validated():
    with pytest.raises(ValueError):
        TurnConfig(finished_silence_ms=10)
    with pytest.raises(ValueError):
        TurnConfig(barge_in_min_words=0)


def test_push_to_talk_release_holds_a_reply_on_the_last_interim():
    tt = TurnTaker(TurnConfig())
    utt, acts = tt.released("Photosynthesis makes sugar.")
    assert acts == [Act.SPECULATE] and utt.speculated == "Photosynthesis makes sugar."
    assert tt.final(utt, "photosynthesis makes sugar") == [Act.COMMIT]
    utt, _ = tt.released("Photosynthesis makes")
    assert tt.final(utt, "photosynthesis makes sugar") == [Act.DROP_SPECULATION, Act.RESPOND]
    # Nothing heard yet, or speculation off: nothing to hold.
    assert tt.released("")[1] == []
    assert TurnTaker(TurnConfig(speculative_reply=False)).released("Hi.")[1] == []


def test_a_held_reply_whose_final_failed_is_dropped():
    tt = TurnTaker(TurnConfig())
    utt, _ = tt.released("Photosynthesis makes sugar.")
    assert tt.abandoned(utt) == [Act.DROP_SPECULATION]
    assert utt.speculated is None


def test_a_pause_speculates_on_the_latest_interim_of_a_streaming_recogniser():
    tt = TurnTaker(TurnConfig(speculate_after_ms=200, end_silence_ms=700))
    utt, _ = tt.speech_started(agent_busy=False)
    run(tt, "v" * 20)
    assert tt.interim("photosynthesis makes sugar") == []  # still speaking
    # The frame at which the pause reaches 200 ms holds the reply; the interim that comes
    # next with the same words keeps it.
    acts = run(tt, "." * 10)
    assert acts == [(9, Act.SPECULATE)] and utt.speculated == "photosynthesis makes sugar"
    assert tt.interim("photosynthesis makes sugar") == []
    # One with a word more (the latest interim was early) replaces it.
    assert tt.interim("photosynthesis makes sugar daily") == [Act.DROP_SPECULATION, Act.SPECULATE]
    # The pause goes on (220 ms, 240 ms...): no punctuation, so the turn ends at 700 ms.
    later = [(ms, tt.frame(False, ms)) for ms in range(220, 720, 20)]
    assert [(ms, acts) for ms, acts in later if acts] == [(700, [Act.END_TURN])]
    assert tt.final(utt, "Photosynthesis makes sugar daily.") == [Act.COMMIT]


def test_a_pause_waits_for_its_own_transcript_when_the_recogniser_sends_one():
    tt = TurnTaker(TurnConfig(speculate_after_ms=200, transcript_on_pause=True))
    tt.speech_started(agent_busy=False)
    run(tt, "v" * 20)
    tt.interim("I was reading")  # an earlier pause's transcript: stale by now
    assert run(tt, "." * 10) == []


def test_a_pause_of_a_candidate_interruption_or_with_speculation_off_holds_nothing():
    tt = TurnTaker(TurnConfig(speculate_after_ms=200, barge_in_confirm_ms=5000))
    tt.speech_started(agent_busy=True)
    run(tt, "v" * 20)
    tt.interim("the library closes")
    assert Act.SPECULATE not in [a for _, a in run(tt, "." * 10)]
    tt = TurnTaker(TurnConfig(speculate_after_ms=200, speculative_reply=False))
    tt.speech_started(agent_busy=False)
    run(tt, "v" * 20)
    tt.interim("photosynthesis makes sugar")
    assert run(tt, "." * 10) == []


def test_an_utterance_may_say_its_recogniser_streams_whatever_the_rules_default():
    # A chain configured with Whisper (pause transcripts) that fell back to Deepgram.
    tt = TurnTaker(TurnConfig(speculate_after_ms=200, transcript_on_pause=True))
    utt, _ = tt.speech_started(agent_busy=False, pause_transcripts=False)
    run(tt, "v" * 20)
    tt.interim("photosynthesis makes sugar")
    assert run(tt, "." * 10) == [(9, Act.SPECULATE)] and not utt.pause_text_pending
