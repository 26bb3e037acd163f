"""The Anthropic and OpenAI language-model adapters and the LLM chain, through fake servers
that speak the real wire protocols, with every fault the chain must survive."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import pytest

from pipelines.chain import ChainPolicy, LLMChain
from pipelines.llm.anthropic import AnthropicLLM
from pipelines.llm.openai import OpenAILLM
from pipelines.ports import Exchange
from pipelines.prompts import APOLOGY, SYSTEM_PROMPT
from tests.fakes import fixtures as fx
from tests.fakes.anthropic import FakeAnthropic, default_reply
from tests.fakes.fixtures import RecordingObserver, collect
from tests.fakes.openai import FakeOpenAI
from tests.fakes.openai import default_reply as openai_reply

POLICY = ChainPolicy(
    first_byte_timeout=0.5, idle_timeout=1.0, retries=1, breaker_failures=3, breaker_cooldown=30.0
)
USER = "spaced repetition helps memory"
ANTHROPIC_TEXT = default_reply({"messages": [{"content": USER}]})
OPENAI_TEXT = openai_reply({"messages": [{"content": USER}]})

fake_anthropic = fx.fake_anthropic
fake_openai = fx.fake_openai
observer = fx.observer


def anthropic_llm(fake: FakeAnthropic, **kw: object) -> AnthropicLLM:
    return AnthropicLLM(fake.api_key, base_url=fake.base_url, connect_timeout=0.5, **kw)  # type: ignore[arg-type]


def openai_llm(fake: FakeOpenAI) -> OpenAILLM:
    return OpenAILLM(fake.api_key, base_url=fake.base_url + "/v1", connect_timeout=0.5)


def chain(fa: FakeAnthropic, fo: FakeOpenAI, obs: RecordingObserver, **policy: float) -> LLMChain:
    p = dataclasses.replace(POLICY, **policy)
    return LLMChain([anthropic_llm(fa), openai_llm(fo)], p, obs)


async def reply(llm: LLMChain, history: list[Exchange] | None = None) -> str:
    return "".join(await collect(llm.stream(USER, history or [])))


async def test_anthropic_streams_with_system_prompt_and_history(fake_anthropic) -> None:
    history = [
        Exchange("photosynthesis turns light into energy", "Nice. Why light?", 1.0),
        Exchange("half heard", "", 2.0),
    ]
    fake_anthropic.chunk_delay = 0.01
    llm = anthropic_llm(fake_anthropic, model="claude-test-model")
    deltas = await collect(llm.stream(USER, history))
    assert len(deltas) > 5  # streamed piece by piece, not as one block
    assert "".join(deltas) == ANTHROPIC_TEXT
    body = fake_anthropic.requests[-1]["body"]
    assert body["model"] == "claude-test-model"
    assert body["system"] == SYSTEM_PROMPT
    assert body["stream"] is True
    # The exchange with an empty reply is left out; roles alternate and end with the user.
    assert body["messages"] == [
        {"role": "user", "content": "photosynthesis turns light into energy"},
        {"role": "assistant", "content": "Nice. Why light?"},
        {"role": "user", "content": USER},
    ]
    await llm.aclose()


async def test_openai_streams_with_system_message(fake_openai) -> None:
    llm = openai_llm(fake_openai)
    deltas = await collect(llm.stream(USER, [Exchange("a", "b", 1.0)]))
    assert "".join(deltas) == OPENAI_TEXT
    body = fake_openai.requests[-1]["body"]
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert body["messages"][1:] == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": USER},
    ]
    await llm.aclose()


async def test_server_error_is_retried_once_then_falls_back(
    fake_anthropic, fake_openai, observer
) -> None:
    fake_anthropic.always = fake_anthropic_fault("status", status=500)
    llm = chain(fake_anthropic, fake_openai, observer)
    assert await reply(llm) == OPENAI_TEXT
    assert fake_anthropic.count("/v1/messages") == 2  # one retry, then the next provider
    assert observer.errors == [("llm", "anthropic", "server")] * 2
    assert observer.fallbacks == [("llm", "anthropic", "openai")]
    assert [(st, p) for st, p, _ in observer.latencies] == [("llm", "openai")]


async def test_transient_error_recovers_on_retry_without_fallback(
    fake_anthropic, fake_openai, observer
) -> None:
    fake_anthropic.fault("status", status=529)  # overloaded, once
    llm = chain(fake_anthropic, fake_openai, observer)
    assert await reply(llm) == ANTHROPIC_TEXT
    assert observer.errors == [("llm", "anthropic", "server")]
    assert observer.fallbacks == []
    assert fake_openai.count("/v1/chat/completions") == 0


async def test_rate_limit_honours_retry_after_in_the_breaker(
    fake_anthropic, fake_openai, observer
) -> None:
    fake_anthropic.fault("status", status=429, retry_after=20)
    llm = chain(fake_anthropic, fake_openai, observer)
    assert await reply(llm) == OPENAI_TEXT
    assert fake_anthropic.count("/v1/messages") == 1  # 429 is not retried
    status = llm.status()[0]
    assert status["provider"] == "anthropic" and status["state"] == "open"
    assert 19 <= status["retry_in_s"] <= 20
    # While the provider asked us to wait, it is not called at all.
    assert await reply(llm) == OPENAI_TEXT
    assert fake_anthropic.count("/v1/messages") == 1
    assert observer.errors == [("llm", "anthropic", "rate_limited")]


async def test_bad_key_is_permanent_and_never_retried(
    fake_anthropic, fake_openai, observer
) -> None:
    bad = AnthropicLLM("sk-ant-wrong-key-999", base_url=fake_anthropic.base_url)
    llm = LLMChain([bad, openai_llm(fake_openai)], POLICY, observer)
    assert await reply(llm) == OPENAI_TEXT
    assert await reply(llm) == OPENAI_TEXT
    assert fake_anthropic.count("/v1/messages") == 1
    assert observer.errors == [("llm", "anthropic", "auth")]
    assert llm.status()[0]["state"] == "open"


async def test_hang_before_first_byte_times_out_and_falls_back(
    fake_anthropic, fake_openai, observer
) -> None:
    fake_anthropic.fault("hang")
    llm = chain(fake_anthropic, fake_openai, observer, first_byte_timeout=0.3)
    start = time.perf_counter()
    assert await reply(llm) == OPENAI_TEXT
    assert time.perf_counter() - start < 1.0
    assert observer.errors == [("llm", "anthropic", "timeout")]
    assert observer.fallbacks == [("llm", "anthropic", "openai")]


async def test_slow_first_token_within_budget_is_not_a_fault(
    fake_anthropic, fake_openai, observer
) -> None:
    fake_anthropic.first_delay = 0.2
    llm = chain(fake_anthropic, fake_openai, observer, first_byte_timeout=0.5)
    assert await reply(llm) == ANTHROPIC_TEXT
    assert observer.errors == []
    [(stage, provider, seconds)] = observer.latencies  # time to first token, per provider
    assert (stage, provider) == ("llm", "anthropic") and 0.2 <= seconds < 0.5


async def test_drop_mid_stream_ends_the_reply_without_repeating_it(
    fake_anthropic, fake_openai, observer
) -> None:
    fake_anthropic.fault("drop", after=4)
    llm = chain(fake_anthropic, fake_openai, observer)
    text = await reply(llm)
    assert text == "So the key idea "  # the four tokens the user already got, once
    assert fake_openai.count("/v1/chat/completions") == 0
    assert observer.errors == [("llm", "anthropic", "dropped")]
    assert observer.fallbacks == []


async def test_error_event_before_text_falls_back(fake_anthropic, fake_openai, observer) -> None:
    fake_anthropic.always = fake_anthropic_fault("error_event", after=0)
    llm = chain(fake_anthropic, fake_openai, observer)
    assert await reply(llm) == OPENAI_TEXT
    assert observer.errors == [("llm", "anthropic", "server")] * 2


async def test_malformed_event_before_text_falls_back(
    fake_anthropic, fake_openai, observer
) -> None:
    fake_anthropic.fault("malformed", after=0)
    llm = chain(fake_anthropic, fake_openai, observer)
    assert await reply(llm) == OPENAI_TEXT
    assert observer.errors == [("llm", "anthropic", "protocol")]


async def test_openai_faults_are_classified(fake_anthropic, fake_openai, observer) -> None:
    llm = LLMChain([openai_llm(fake_openai), anthropic_llm(fake_anthropic)], POLICY, observer)
    fake_openai.fault("status", status=401)
    assert await reply(llm) == ANTHROPIC_TEXT
    llm2 = LLMChain([openai_llm(fake_openai), anthropic_llm(fake_anthropic)], POLICY, observer)
    fake_openai.fault("drop", after=2)
    assert await reply(llm2) == "You mentioned "
    llm3 = LLMChain([openai_llm(fake_openai), anthropic_llm(fake_anthropic)], POLICY, observer)
    fake_openai.fault("error_event", after=0)
    fake_openai.fault("malformed", after=0)
    assert await reply(llm3) == ANTHROPIC_TEXT
    assert observer.errors == [
        ("llm", "openai", "auth"),
        ("llm", "openai", "dropped"),
        ("llm", "openai", "server"),
        ("llm", "openai", "protocol"),
    ]


async def test_everything_failing_gives_one_apology(fake_anthropic, fake_openai, observer) -> None:
    fake_anthropic.always = fake_anthropic_fault("status", status=500)
    fake_openai.always = fake_anthropic_fault("status", status=503)
    llm = chain(fake_anthropic, fake_openai, observer)
    deltas = await collect(llm.stream(USER, []))
    assert deltas == [APOLOGY]
    assert observer.fallbacks == [("llm", "anthropic", "openai")]
    assert [e[1] for e in observer.errors] == ["anthropic"] * 2 + ["openai"] * 2


async def test_breaker_opens_then_half_opens_and_closes(
    fake_anthropic, fake_openai, observer
) -> None:
    llm = chain(
        fake_anthropic, fake_openai, observer, retries=0, breaker_failures=2, breaker_cooldown=0.3
    )
    fake_anthropic.always = fake_anthropic_fault("status", status=500)
    await reply(llm)
    assert llm.status()[0]["state"] == "closed"
    await reply(llm)
    assert llm.status()[0]["state"] == "open"
    calls = fake_anthropic.count("/v1/messages")
    assert await reply(llm) == OPENAI_TEXT
    assert fake_anthropic.count("/v1/messages") == calls  # skipped while open
    await asyncio.sleep(0.35)
    assert llm.status()[0]["state"] == "half_open"
    fake_anthropic.always = None  # the provider recovered
    assert await reply(llm) == ANTHROPIC_TEXT  # the probe goes through
    assert llm.status()[0] == {
        "provider": "anthropic",
        "state": "closed",
        "failures": 0,
        "retry_in_s": 0.0,
        "last_fault": "server",
    }


async def test_cancelling_mid_reply_releases_the_half_open_probe(
    fake_anthropic, fake_openai, observer
) -> None:
    llm = chain(
        fake_anthropic, fake_openai, observer, retries=0, breaker_failures=1, breaker_cooldown=0.2
    )
    fake_anthropic.fault("status", status=500)
    await reply(llm)
    await asyncio.sleep(0.25)
    fake_anthropic.chunk_delay = 0.05
    agen = llm.stream(USER, [])
    assert await anext(agen) == "So "
    await agen.aclose()  # a barge-in: the probe proved nothing
    assert await reply(llm) == ANTHROPIC_TEXT  # a new probe is allowed at once


async def test_keys_never_reach_the_logs(fake_anthropic, fake_openai, observer, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    bad = AnthropicLLM("sk-ant-secret-never-log-me", base_url=fake_anthropic.base_url)
    fake_openai.fault("status", status=500)
    fake_openai.fault("status", status=500)
    llm = LLMChain([bad, openai_llm(fake_openai)], POLICY, observer)
    assert await reply(llm) == APOLOGY
    assert "provider anthropic failed: auth" in caplog.text
    assert "provider openai failed: server" in caplog.text
    for key in ("sk-ant-secret-never-log-me", fake_openai.api_key):
        assert key not in caplog.text
    await bad.aclose()


def fake_anthropic_fault(kind: str, **kw: object):  # type: ignore[no-untyped-def]
    from tests.fakes.base import Fault

    return Fault(kind, **kw)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_sdk_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials from the environment must not leak into the adapters under test."""
    for name in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "OPENAI_API_KEY",
        "ANTHROPIC_BASE_URL",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
