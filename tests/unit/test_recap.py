"""The goodbye summary every language model gives at hang-up: offline and deterministic."""

from __future__ import annotations

from pipelines.llm.anthropic import AnthropicLLM
from pipelines.llm.coach import LearningCoach, coach_reply
from pipelines.llm.openai import OpenAILLM
from pipelines.llm.simulated import SimulatedLLM
from pipelines.ports import Exchange
from pipelines.recap import key_phrase, recap

HISTORY = [
    Exchange("I learned about photosynthesis today", "So the key idea is...", 1.0),
    Exchange("um, yeah", "", 2.0),
    Exchange("Then I read about cellular respiration", "Nice.", 3.0),
    Exchange("photosynthesis again", "Right.", 4.0),
]


def test_recap_lists_each_topic_once_in_order():
    assert recap(HISTORY) == (
        "Today you covered photosynthesis and cellular respiration. Nice work, and goodbye!"
    )
    assert key_phrase("um, yeah") == ""


def test_recap_of_nothing_is_a_plain_goodbye():
    assert recap([]) == "Thanks for talking with me. Goodbye!"
    assert recap([Exchange("ok", "", 0.0)]) == "Thanks for talking with me. Goodbye!"


def test_every_model_recaps_offline_with_the_same_words():
    models = [
        LearningCoach(),
        SimulatedLLM(),
        AnthropicLLM("test-key", base_url="http://127.0.0.1:9"),
        OpenAILLM("test-key", base_url="http://127.0.0.1:9"),
    ]
    assert {m.recap(HISTORY) for m in models} == {recap(HISTORY)}


def test_the_coach_answers_a_goodbye_with_the_recap():
    assert coach_reply("Goodbye!", HISTORY) == recap(HISTORY)
