"""Credentials inside URLs never reach the output: the real server started with passwords
and tokens in every URL setting (server's and providers'), and whatever any logger writes.
The services are unreachable on purpose: the start-up config line is written before they
are connected to, and the failure to connect is logged too (through the same redaction)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest

from server.logging_setup import configure_logging
from server.redaction import redact_url
from server.settings import Settings, declared_settings
from tests.server_process import ROOT

#: Each variable's URL, and what start-up must show instead.
URLS = {
    "DATABASE_URL": ("postgresql://u:hunter2pw@127.0.0.1:9/x?password=hunter2pw",
                     "postgresql://u:***@127.0.0.1:9/x?password=***"),
    "REDIS_URL": ("redis://:redispw55@127.0.0.1:9/0?password=redispw55",
                  "redis://:***@127.0.0.1:9/0?password=***"),
    "OPENAI_BASE_URL": ("http://user:s3cretpw@127.0.0.1:9/v1?api_key=s3cretpw",
                        "http://user:***@127.0.0.1:9/v1?api_key=***"),
    "ANTHROPIC_BASE_URL": ("http://user:anthr0pw@127.0.0.1:9/?key=anthr0pw",
                           "http://user:***@127.0.0.1:9/?key=***"),
    "DEEPGRAM_BASE_URL": ("https://dg:deepgpw1@127.0.0.1:9/?access_token=deepgpw1",
                          "https://dg:***@127.0.0.1:9/?access_token=***"),
    "PUBLIC_URL": ("https://voice.example.com/?token=tok3nsecret",
                   "https://voice.example.com/?token=***"),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("http://o:otelpw99@127.0.0.1:9",
                                    "http://o:***@127.0.0.1:9"),
}  # fmt: skip
SECRETS = ["hunter2pw", "redispw55", "s3cretpw", "anthr0pw", "deepgpw1", "tok3nsecret",
           "otelpw99"]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://me:pw@db:5432/app", "postgresql://me:***@db:5432/app"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("http://host:8080/path@x", "http://host:8080/path@x"),  # a port is no password
        ("https://a.example/cb?code=1&Signature=abc&X-Amz-Signature=def#access_token=ghi",
         "https://a.example/cb?code=1&Signature=***&X-Amz-Signature=***#access_token=***"),
        ("/twilio/stream?sig=abc;client_secret=xyz", "/twilio/stream?sig=***;client_secret=***"),
        ("https://h/?apiKey=1&passwd=2&auth=3&page=4", "https://h/?apiKey=***&passwd=***&auth=***&page=4"),
        ("see postgresql://a:b@h/d and https://x/?token=t.", "see postgresql://a:***@h/d and https://x/?token=***"),
        ("no url here: key=value", "no url here: key=value"),
    ],
)  # fmt: skip
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_every_provider_base_url_is_redacted() -> None:
    """Whatever *_BASE_URL a provider declares (now or later) is shown redacted."""
    bases = [name for name in declared_settings() if name.endswith("_BASE_URL")]
    assert {"OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "DEEPGRAM_BASE_URL"} <= set(bases)
    env = {name: f"https://u:pw{i}secret@127.0.0.1:9/?api_key=pw{i}secret"
           for i, name in enumerate(bases)}  # fmt: skip
    shown = Settings.from_env(env).redacted()
    for name in bases:
        assert shown[name] == "https://u:***@127.0.0.1:9/?api_key=***", name
    assert "secret" not in json.dumps(shown)


def test_the_server_never_writes_a_url_credential(tmp_path) -> None:
    """Start the real server twice (Redis first fails, then, without Redis, Postgres):
    stderr holds the redacted config and the connection failure, and no secret."""
    base = {"PATH": "", "PYTHONPATH": str(ROOT), "LOG_FORMAT": "json",
            "DATABASE_PATH": str(tmp_path / "c.db")}  # fmt: skip
    every = {name: url for name, (url, _) in URLS.items()}
    without_redis = {k: v for k, v in every.items() if k != "REDIS_URL"}
    for env in (every, without_redis):
        done = subprocess.run(
            [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", "9"],
            env=base | env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        out = done.stdout + done.stderr
        assert done.returncode != 0, out  # nothing to connect to
        leaked = [s for s in SECRETS if s in out]
        assert not leaked, out
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        (config,) = [line["config"] for line in lines if line["msg"] == "starting"]
        for name in env:
            assert config[name] == URLS[name][1]
        stopped = [line for line in lines if line["msg"] == "server stopped by an error"]
        assert stopped and "Connect" in stopped[0]["exc"] + stopped[0].get("msg", "")


def test_any_logger_any_field_is_redacted(restore_root: None) -> None:
    """A library logging a URL with a password, in its message, its arguments, an extra
    field, a dict of extras or an exception, is redacted like our own code."""
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream)
    lib = logging.getLogger("some.library.connection")
    lib.debug("connecting to %s", "redis://default:libpw001@cache:6379/0")
    lib.info("GET /callback?code=1&access_token=libtok02 HTTP/1.1")
    lib.warning("retry", extra={"url": "https://h/x?api_key=libkey03",
                                "pool": {"dsn": "postgresql://a:libpw004@db/x",
                                         "hosts": ["https://u:libpw005@h2/"]},
                                "attempt": 2})  # fmt: skip
    try:
        raise ConnectionError("cannot reach https://u:libpw006@h3/?token=libtok07")
    except ConnectionError:
        lib.exception("failed")
    out = stream.getvalue()
    for secret in ("libpw001", "libtok02", "libkey03", "libpw004", "libpw005", "libpw006",
                   "libtok07"):  # fmt: skip
        assert secret not in out, secret
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["msg"] == "connecting to redis://default:***@cache:6379/0"
    assert lines[1]["msg"] == "GET /callback?code=1&access_token=*** HTTP/1.1"
    assert lines[2]["url"] == "https://h/x?api_key=***" and lines[2]["attempt"] == 2
    assert lines[2]["pool"] == {"dsn": "postgresql://a:***@db/x", "hosts": ["https://u:***@h2/"]}
    assert "https://u:***@h3/?token=***" in lines[3]["exc"]


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
