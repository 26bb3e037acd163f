"""Structured logs: JSON fields, correlation ids, text mode, and secrets never printed."""

from __future__ import annotations

import io
import json
import logging

import pytest

from admin.context import request_id_var, session_id_var
from server.logging_setup import Redactor, configure_logging, setup_logging
from server.settings import Settings


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_ids_and_extra_fields(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = logging.getLogger("test.json")
    t1 = request_id_var.set("req-1234abcd")
    t2 = session_id_var.set("sess-42")
    try:
        log.info("turn done in %d ms", 512, extra={"route": "/ws/{session_id}", "status": 101})
    finally:
        request_id_var.reset(t1)
        session_id_var.reset(t2)
    log.debug("invisible at info")
    log.warning("no ids here")
    first, second = _lines(out)
    assert first["msg"] == "turn done in 512 ms"
    assert first["level"] == "info"
    assert first["logger"] == "test.json"
    assert first["request_id"] == "req-1234abcd"
    assert first["session_id"] == "sess-42"
    assert first["route"] == "/ws/{session_id}"
    assert first["status"] == 101
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert "request_id" not in second and second["level"] == "warning"


def test_explicit_session_id_wins_over_context(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    logging.getLogger("t").info("x", extra={"session_id": "explicit"})
    assert _lines(out)[0]["session_id"] == "explicit"


def test_exceptions_have_stack_traces(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        raise ValueError("bad thing")
    except ValueError:
        logging.getLogger("t").exception("failed")
    line = _lines(out)[0]
    assert line["level"] == "error"
    assert "Traceback (most recent call last)" in line["exc"]
    assert "ValueError: bad thing" in line["exc"]


def test_secrets_are_redacted_everywhere(
    restore_root: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-very-secret-value")
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok_abcdef123456")
    monkeypatch.setenv("PLAIN_SETTING", "not-a-secret-value")
    out = io.StringIO()
    configure_logging("info", "json", stream=out, extra_secrets=["from-settings-file-key"])
    log = logging.getLogger("t")
    log.info("calling with key %s", "sk-ant-very-secret-value")
    log.info("token tok_abcdef123456 and from-settings-file-key, %s", "not-a-secret-value")
    log.info("db", extra={"dsn": "postgresql://app:hunter2pass@db.internal:5432/prod"})
    log.info("redis at redis://:s3cretpw@cache:6379/0 ready")
    try:
        raise ConnectionError("auth failed for key sk-ant-very-secret-value")
    except ConnectionError:
        log.exception("provider down")
    text = out.getvalue()
    for secret in ("sk-ant-very-secret-value", "tok_abcdef123456", "from-settings-file-key",
                   "hunter2pass", "s3cretpw"):  # fmt: skip
        assert secret not in text, secret
    lines = _lines(out)
    assert lines[0]["msg"] == "calling with key ***"
    assert "not-a-secret-value" in lines[1]["msg"]
    assert lines[2]["dsn"] == "postgresql://app:***@db.internal:5432/prod"
    assert lines[3]["msg"] == "redis at redis://:***@cache:6379/0 ready"
    assert "auth failed for key ***" in lines[4]["exc"]


def test_short_values_are_not_treated_as_secrets() -> None:
    redact = Redactor(["1", "abc", "longer-secret"])
    assert redact("1 abc longer-secret") == "1 abc ***"


def test_text_mode_is_readable(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("debug", "text", stream=out)
    token = request_id_var.set("req-77777777")
    try:
        logging.getLogger("access").info("GET /api/stats 200", extra={"duration_ms": 3.2})
    finally:
        request_id_var.reset(token)
    line = out.getvalue().strip()
    assert not line.startswith("{")
    assert "INFO" in line and "access" in line and "GET /api/stats 200" in line
    assert "duration_ms=3.2" in line
    assert "[req=req-77777777]" in line


def test_setup_from_settings_redacts_setting_secrets(restore_root: None) -> None:
    settings = Settings.from_env({"LOG_LEVEL": "warning", "LOG_FORMAT": "json"},
                                 admin_api_key="admin-key-from-overrides")  # fmt: skip
    handler = setup_logging(settings)
    out = io.StringIO()
    handler.setStream(out)
    logging.getLogger("t").info("hidden by level")
    logging.getLogger("t").warning("key=admin-key-from-overrides")
    (line,) = _lines(out)
    assert line["msg"] == "key=***"
    assert logging.getLogger().level == logging.WARNING


def test_bad_level_or_format_is_refused(restore_root: None) -> None:
    with pytest.raises(ValueError):
        configure_logging("loud", "json")
    with pytest.raises(ValueError):
        configure_logging("info", "xml")
