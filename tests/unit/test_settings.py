"""Settings: defaults, validation at the edge, secrets never shown, README in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.settings import ConfigError, Settings, env_docs, redact_url

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_are_the_embedded_ones():
    s = Settings.from_env({})
    assert s.port == 8080
    assert s.stt_providers == ("local",) and s.llm_providers == ("local",)
    assert s.redis_url == "" and s.database_url == ""
    assert s.database_path == "learning_captures.db"
    assert s.session_ttl_seconds == 1800 and s.endpoint_silence_ms == 700


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"VAD_AGGRESSIVENESS": "7"}, "VAD_AGGRESSIVENESS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"LLM_PROVIDERS": " , "}, "LLM_PROVIDERS"),
        ({"WEBRTC_ICE_SERVERS": "stun:stun.example.com,https://x"}, "WEBRTC_ICE_SERVERS"),
    ],
)
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert needle in str(info.value)


def test_ice_servers_are_urls_in_order():
    s = Settings.from_env({"WEBRTC_ICE_SERVERS": " stun:stun.example.com:3478, turn:t.example.com"})
    assert s.webrtc_ice_servers == ("stun:stun.example.com:3478", "turn:t.example.com")


def test_chains_parse_in_order():
    s = Settings.from_env({"LLM_PROVIDERS": "Anthropic, openai ,local"})
    assert s.llm_providers == ("anthropic", "openai", "local")


def test_secrets_are_redacted():
    s = Settings.from_env(
        {
            "ANTHROPIC_API_KEY": "sk-ant-secret",
            "ADMIN_API_KEY": "admin-secret-0123456789",
            "DATABASE_URL": "postgresql://me:hunter2@db:5432/app",
            "WEBRTC_TURN_PASSWORD": "turn-secret",
        }
    )
    shown = repr(s.redacted())
    assert "sk-ant-secret" not in shown and "admin-secret" not in shown
    assert "turn-secret" not in shown and "turn-secret" in s.secrets()
    assert "hunter2" not in shown and "postgresql://me:***@db:5432/app" in shown
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_readme_documents_every_setting():
    text = README.read_text()
    missing = [name for name, _, _ in env_docs() if not re.search(rf"`{name}`", text)]
    assert not missing, f"README lacks: {missing}"


@pytest.mark.parametrize("name", ["ADMIN_API_KEY", "METRICS_TOKEN"])
def test_short_operator_keys_stop_the_server_naming_the_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}: must be at least 16 characters"):
        Settings.from_env({name: "x" * 15})
    assert len(getattr(Settings.from_env({name: "x" * 16}), name.lower())) == 16


def test_limit_settings_are_read_and_validated() -> None:
    s = Settings.from_env(
        {"TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7", "ALLOWED_ORIGINS": "https://a.example/"}
    )
    assert s.trusted_proxies == ("10.0.0.0/8", "192.168.1.7/32")
    assert s.allowed_origins == ("https://a.example",)
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        Settings.from_env({"TRUSTED_PROXIES": "10.0.0.0/8, proxy.example"})
    with pytest.raises(ConfigError, match="ALLOWED_ORIGINS"):
        Settings.from_env({"ALLOWED_ORIGINS": "a.example"})
    with pytest.raises(ConfigError, match="AUDIO_MAX_SPEED"):
        Settings.from_env({"AUDIO_MAX_SPEED": "0.5"})
