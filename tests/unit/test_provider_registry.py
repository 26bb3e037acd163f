"""The provider registry: one declaration makes a provider known to the settings, the
chains and secret redaction; keys are optional per provider, names are checked, and no
SDK is imported until a provider that needs it is built."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipelines.env_values import choice
from pipelines.executor import ModelExecutor
from pipelines.ports import Exchange
from pipelines.provider_spec import ProviderSpec, Setting, api_key
from pipelines.registry import REGISTRY, ProviderSettings, build_providers, register, unregister
from pipelines.vendors import OPENAI
from server.app import create_app
from server.engine import provider_settings
from server.logging_setup import setup_logging
from server.settings import ConfigError, Settings, env_docs

ROOT = Path(__file__).resolve().parents[2]
KEY = "fk-fake-secret-0123456789"


class FakeLLM:
    name = "fake"

    def __init__(self, key: str, model: str) -> None:
        self.key = key
        self.model = model

    async def stream(self, user_text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        for word in (f"[{self.model}]", " you", " said", f" {user_text}."):
            yield word


FAKE = ProviderSpec(
    name="fake",
    stage="llm",
    settings={
        "key": api_key("FAKE_API_KEY", "Enables the fake LLM."),
        "model": Setting(
            "FAKE_MODEL", "Fake model.", default="fake-1", parse=choice("fake-1", "fake-2")
        ),
    },
    build=lambda v, ctx: FakeLLM(**v),
)


@pytest.fixture
def fake() -> Iterator[ProviderSpec]:
    register(FAKE)
    try:
        yield FAKE
    finally:
        unregister(FAKE)


@pytest.fixture
def executor() -> Iterator[ModelExecutor]:
    pool = ModelExecutor(1)
    yield pool
    pool.shutdown()


# --- (a) settings -----------------------------------------------------------------------


def test_a_declared_provider_s_settings_are_read_defaulted_and_documented(fake) -> None:
    s = Settings.from_env({"FAKE_API_KEY": KEY, "FAKE_MODEL": " Fake-2 "})
    assert s.providers["FAKE_API_KEY"] == KEY and s.providers["FAKE_MODEL"] == "fake-2"
    assert Settings.from_env({}).providers["FAKE_MODEL"] == "fake-1"
    docs = {name: (default, doc) for name, default, doc in env_docs()}
    assert docs["FAKE_API_KEY"] == ("", "Enables the fake LLM.")
    assert docs["FAKE_MODEL"] == ("fake-1", "Fake model.")


def test_a_bad_declared_value_names_the_variable(fake) -> None:
    with pytest.raises(ConfigError, match="FAKE_MODEL='fake-9': must be one of fake-1, fake-2"):
        Settings.from_env({"FAKE_MODEL": "fake-9"})
    with pytest.raises(ConfigError, match="WHISPER_THREADS"):
        Settings.from_env({"WHISPER_THREADS": "0"})
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        Settings.from_env({"OPENAI_BASE_URL": "localhost:8080/v1"})


def test_unregistered_settings_are_gone_and_refused() -> None:
    assert "FAKE_MODEL" not in Settings.from_env({}).providers
    assert "FAKE_MODEL" not in {name for name, _, _ in env_docs()}
    with pytest.raises(ConfigError, match="FAKE_MODEL: no provider declares it"):
        Settings.from_env({}, providers={"FAKE_MODEL": "fake-1"})


@pytest.mark.parametrize(
    ("env", "default"),
    [
        ("ANTHROPIC_API_KEY", ""),
        ("OPENAI_API_KEY", ""),
        ("DEEPGRAM_API_KEY", ""),
        ("ANTHROPIC_MODEL", "claude-haiku-4-5"),
        ("OPENAI_MODEL", "gpt-4o-mini"),
        ("OPENAI_STT_MODEL", "gpt-4o-mini-transcribe"),
        ("OPENAI_TTS_MODEL", "gpt-4o-mini-tts"),
        ("OPENAI_TTS_VOICE", "alloy"),
        ("DEEPGRAM_STT_MODEL", "nova-3"),
        ("DEEPGRAM_TTS_MODEL", "aura-2-thalia-en"),
        ("ANTHROPIC_BASE_URL", ""),
        ("OPENAI_BASE_URL", ""),
        ("DEEPGRAM_BASE_URL", ""),
        ("WHISPER_MODEL", ""),
        ("WHISPER_THREADS", 1),
        ("PIPER_VOICE", ""),
    ],
)
def test_every_provider_variable_keeps_its_name_and_default(env: str, default: object) -> None:
    assert Settings.from_env({}).providers[env] == default


def test_a_vendor_s_shared_settings_are_declared_once() -> None:
    users = REGISTRY.users("OPENAI_API_KEY")
    assert users == ("openai stt", "openai llm", "openai tts")
    assert REGISTRY.users("DEEPGRAM_BASE_URL") == ("deepgram stt", "deepgram tts")
    assert [name for name, _, _ in env_docs()].count("OPENAI_API_KEY") == 1


def test_a_conflicting_redeclaration_is_refused() -> None:
    other = api_key("OPENAI_API_KEY", "A different doc for the same variable.")
    clash = ProviderSpec("clash", "llm", lambda v, ctx: None, {"api_key": other})
    with pytest.raises(ValueError, match="OPENAI_API_KEY is declared differently by clash llm"):
        register(clash)
    with pytest.raises(ValueError, match="already registered"):
        register(ProviderSpec("openai", "llm", lambda v, ctx: None))
    shared = ProviderSpec("openai-too", "llm", lambda v, ctx: None, {**OPENAI})
    register(shared)  # the vendor's own declaration, shared: merged, not a conflict
    unregister(shared)
    assert REGISTRY.names("llm") == ("anthropic", "local", "openai", "simulated")


# --- (b) chains -------------------------------------------------------------------------


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env(
        {"STT_PROVIDERS": "simulated", "TTS_PROVIDERS": "simulated", **env},
        database_path=str(tmp_path / "c.db"),
        embedder="none",
    )


async def test_the_fake_leads_its_chain_and_streams_its_reply(fake, tmp_path, executor) -> None:
    settings = _settings(tmp_path, LLM_PROVIDERS="fake,local", FAKE_API_KEY=KEY)
    providers = build_providers(provider_settings(settings), executor)
    assert [m["provider"] for m in providers.llm.status()] == ["fake", "local"]
    reply = [t async for t in providers.llm.stream("hello", [])]
    assert "".join(reply) == "[fake-1] you said hello."


async def test_a_conversation_turn_goes_through_the_fake(fake, tmp_path) -> None:
    env = {"LLM_PROVIDERS": "fake,local", "FAKE_API_KEY": KEY, "FAKE_MODEL": "fake-2"}
    settings = _settings(tmp_path, **env)
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    try:
        resp = await client.post("/api/conversation", json={"text": "tides"})
        assert resp.status == 200
        assert (await resp.json())["agent_text"] == "[fake-2] you said tides."
    finally:
        await client.close()


def test_a_provider_without_its_key_is_skipped(fake, executor, caplog) -> None:
    cfg = ProviderSettings(llm_chain=("fake", "local"), values={"FAKE_API_KEY": ""})
    with caplog.at_level(logging.WARNING, logger="pipelines.registry"):
        providers = build_providers(cfg, executor)
    assert [m["provider"] for m in providers.llm.status()] == ["local"]
    assert "llm provider fake skipped: no API key" in caplog.text
    with pytest.raises(ValueError, match="LLM_PROVIDERS=fake: no provider has its key"):
        build_providers(ProviderSettings(llm_chain=("fake",)), executor)


def test_keyless_cloud_entries_are_skipped_and_local_alone_is_unwrapped(executor) -> None:
    cfg = ProviderSettings(llm_chain=("anthropic", "openai", "local"))
    providers = build_providers(cfg, executor)
    assert [m["provider"] for m in providers.llm.status()] == ["local"]
    alone = build_providers(ProviderSettings(), executor)
    assert (alone.stt.name, alone.llm.name, alone.tts.name) == ("local",) * 3
    assert alone.status() == {}


def test_an_unknown_name_says_the_stage_and_the_known_providers(executor) -> None:
    with pytest.raises(ValueError) as info:
        build_providers(ProviderSettings(tts_chain=("deepgram", "polly")), executor)
    message = str(info.value)
    assert "TTS_PROVIDERS" in message and "'polly'" in message
    assert "deepgram, local, openai, simulated" in message


def test_simulated_cannot_be_chained(executor) -> None:
    with pytest.raises(ValueError, match="STT_PROVIDERS: simulated cannot be chained"):
        build_providers(ProviderSettings(stt_chain=("local", "simulated")), executor)


# --- (c) secrets ------------------------------------------------------------------------


def test_the_fake_key_is_redacted_everywhere(fake, restore_root) -> None:
    settings = Settings.from_env({"FAKE_API_KEY": KEY, "LOG_FORMAT": "json"})
    shown = settings.redacted()
    assert shown["FAKE_API_KEY"] == "set" and shown["FAKE_MODEL"] == "fake-1"
    assert KEY not in repr(shown)
    assert KEY in settings.secrets()
    handler = setup_logging(settings)
    out = io.StringIO()
    handler.setStream(out)  # type: ignore[attr-defined]
    logging.getLogger("t").warning("calling with key %s", KEY, extra={"auth": f"Bearer {KEY}"})
    line = json.loads(out.getvalue().strip())
    assert line["msg"] == "calling with key ***" and line["auth"] == "Bearer ***"


# --- SDKs stay unloaded ------------------------------------------------------------------


def test_the_registry_and_a_keyless_server_import_no_sdk() -> None:
    code = """
import sys
from pipelines.executor import ModelExecutor
from pipelines.registry import REGISTRY, ProviderSettings, build_providers
from server.engine import provider_settings
from server.settings import Settings, env_docs

assert len(REGISTRY.specs()) == 12, REGISTRY.specs()
env_docs()
settings = Settings.from_env({"STT_PROVIDERS": "deepgram,openai,local",
                              "LLM_PROVIDERS": "anthropic,openai,local",
                              "TTS_PROVIDERS": "deepgram,openai,local"})
pool = ModelExecutor(1)
build_providers(provider_settings(settings), pool)
pool.shutdown()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("anthropic", "openai", "deepgram")))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
