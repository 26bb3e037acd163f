"""End to end on cloud providers: a real server process configured (by environment only)
with Deepgram -> Anthropic -> Deepgram Aura, OpenAI as the fallback of every stage, all
pointed at loopback fakes. Real WebSocket voice turns go through while the fakes fail in
every way; the session stays alive, fallbacks happen within the turn, the metrics and
the logs name the provider and the fault, and no key is ever logged."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from pipelines.prompts import APOLOGY, SYSTEM_PROMPT
from server.client import Conversation
from tests.fakes import fixtures as fx
from tests.fakes import speechcodec
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic import default_reply as anthropic_reply
from tests.fakes.base import Fault
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.openai import FakeOpenAI
from tests.fakes.openai import default_reply as openai_reply
from tests.server_process import ServerProcess

pytestmark = pytest.mark.slow

fake_anthropic = fx.fake_anthropic
fake_openai = fx.fake_openai
fake_deepgram = fx.fake_deepgram

SENTENCE = "spaced repetition helps memory because retrieval strengthens recall"
SECOND = "photosynthesis turns light into chemical energy"
THIRD = "plants store sugar"


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def voice_turn(conv: Conversation, text: str):  # type: ignore[no-untyped-def]
    audio = speechcodec.silence(100) + speechcodec.encode(text) + speechcodec.silence(100)
    return await conv.turn(audio, mode="push_to_talk", realtime=False, timeout=15)


async def test_voice_turns_on_cloud_providers_survive_every_fault(
    tmp_path, fake_anthropic: FakeAnthropic, fake_openai: FakeOpenAI, fake_deepgram: FakeDeepgram
) -> None:
    env = {
        "STT_PROVIDERS": "deepgram,openai",
        "LLM_PROVIDERS": "anthropic,openai",
        "TTS_PROVIDERS": "deepgram,openai",
        "DEEPGRAM_API_KEY": fake_deepgram.api_key,
        "ANTHROPIC_API_KEY": fake_anthropic.api_key,
        "OPENAI_API_KEY": fake_openai.api_key,
        "DEEPGRAM_BASE_URL": fake_deepgram.base_url,
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url,
        "OPENAI_BASE_URL": fake_openai.base_url + "/v1",
        "PROVIDER_FIRST_BYTE_TIMEOUT_MS": "600",
        "LOG_LEVEL": "debug",
    }
    server = ServerProcess(tmp_path, env)
    await asyncio.to_thread(server.start)
    try:
        conv = await Conversation.connect(server.ws, "cloud-e2e", mode="push_to_talk")
        assert conv.ready["sample_rate"] == 16000

        # 1. Healthy: Deepgram hears it, Claude answers, Aura speaks.
        result = await voice_turn(conv, SENTENCE)
        assert result.final_transcript == SENTENCE
        assert result.reply == anthropic_reply({"messages": [{"content": SENTENCE}]}).strip()
        assert result.audio_frames > 0 and len(result.audio) > 16000
        body = fake_anthropic.requests[-1]["body"]
        assert body["system"] == SYSTEM_PROMPT
        assert body["messages"][-1] == {"role": "user", "content": SENTENCE}
        assert fake_deepgram.count("/v1/speak") >= 1
        assert fake_openai.requests == []

        # 2. Claude is down and Aura hangs: OpenAI answers and speaks, within the turn.
        fake_anthropic.always = Fault("status", status=500)
        fake_deepgram.fault("hang")
        result = await voice_turn(conv, SECOND)
        assert result.final_transcript == SECOND
        assert result.reply == openai_reply({"messages": [{"content": SECOND}]}).strip()
        assert result.audio_frames > 0
        assert fake_openai.count("/v1/audio/speech") >= 1
        # The context went on: OpenAI saw the first exchange.
        chat = next(r for r in fake_openai.requests if r["path"] == "/v1/chat/completions")
        assert [m["role"] for m in chat["body"]["messages"]] == [
            "system",
            "user",
            "assistant",
            "user",
        ]

        # 3. Every language model fails: one short apology, spoken; the session lives on.
        fake_openai.always = Fault("status", status=503)
        result = await voice_turn(conv, THIRD)
        assert result.final_transcript == THIRD
        assert result.reply == APOLOGY
        assert result.audio_frames > 0

        # 4. Deepgram drops mid-utterance: the stream reconnects and replays; no word lost.
        fake_openai.always = None
        fake_anthropic.always = None
        connections = fake_deepgram.connections
        fake_deepgram.live_fault = Fault("drop", after=len(speechcodec.encode("spaced repetition")))
        result = await voice_turn(conv, SENTENCE)
        assert result.final_transcript == SENTENCE
        assert fake_deepgram.connections == connections + 1
        await conv.close()

        async with aiohttp.ClientSession() as http:
            async with http.get(server.http + "/metrics", timeout=aiohttp.ClientTimeout(5)) as r:
                prom = await r.text()
        errors = "lva_provider_errors_total"
        fallbacks = "lva_provider_fallbacks_total"
        assert metric(prom, errors, stage="llm", provider="anthropic", kind="server") >= 2
        assert metric(prom, errors, stage="llm", provider="openai", kind="server") >= 1
        assert metric(prom, errors, stage="tts", provider="deepgram", kind="timeout") == 1
        assert metric(prom, errors, stage="stt", provider="deepgram", kind="dropped") == 1
        assert (
            metric(prom, fallbacks, stage="llm", from_provider="anthropic", to_provider="openai")
            >= 1
        )
        assert (
            metric(prom, fallbacks, stage="tts", from_provider="deepgram", to_provider="openai")
            == 1
        )
    finally:
        await asyncio.to_thread(server.stop)
    logs = server.logs()
    assert "llm provider anthropic failed: server" in logs
    assert "tts provider deepgram failed: timeout" in logs
    assert re.search(r"deepgram stream lost \(dropped\)", logs)
    for key in (fake_anthropic.api_key, fake_openai.api_key, fake_deepgram.api_key):
        assert key not in logs
