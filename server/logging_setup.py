"""Process-wide logging: JSON lines for machines, aligned text for a terminal.

Every line carries the request id and session id of the code that logged it (from the
contextvars in `admin.context`), so one id finds everything that happened for a request
or a conversation. Secrets never reach the output: `RedactingFilter` replaces the values
of environment variables whose names end in _KEY, _TOKEN or _SECRET, any extra secret it
is given, and credentials in URLs (scheme://user:PASSWORD@host, and ?token=, ?password=,
?api_key=, ?signature=... parameters, see server/redaction.py) with `***`, in the message,
the arguments, extra fields (strings inside dicts and lists too) and the stack trace alike.
The filter sits on the root handler, so what libraries log is redacted as well.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from admin.context import request_id_var, session_id_var
from server.redaction import redact_url
from server.settings import Settings

_SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET")
#: Shorter values are not redacted by value: replacing every "1" or "yes" would wreck logs.
MIN_SECRET_LENGTH = 6
_RESERVED = frozenset(
    set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None)))
    | {"message", "asctime", "request_id", "session_id", "taskName"}
)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}  # fmt: skip


def secrets_from_env(env: Mapping[str, str] | None = None) -> set[str]:
    env = os.environ if env is None else env
    return {
        v
        for k, v in env.items()
        if k.upper().endswith(_SECRET_SUFFIXES) and len(v) >= MIN_SECRET_LENGTH
    }


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len,
                               reverse=True)  # fmt: skip

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return redact_url(text)

    def value(self, value: Any, depth: int = 0) -> Any:
        """An extra field redacted: strings, and the strings inside dicts, lists, tuples
        and sets (e.g. the start-up `config`); numbers and the like as they are; any other
        object as its redacted text (the formatter would print its str() anyway)."""
        if isinstance(value, str):
            return self(value)
        if value is None or isinstance(value, (bool, int, float)) or depth > 8:
            return value
        if isinstance(value, Mapping):
            return {k: self.value(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.value(v, depth + 1) for v in value]
        return self(str(value))


class RedactingFilter(logging.Filter):
    """Renders the message, its arguments and the stack trace once, redacted."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redact = redactor
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception as exc:  # a bad format string must not lose the line
            message = f"{record.msg!r} (unformattable: {exc!r})"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RESERVED and not key.startswith("_"):
                setattr(record, key, self.redact.value(value))
        return True


class ContextFilter(logging.Filter):
    """Copies the current request id and session id onto the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # A value passed explicitly (`extra={"session_id": ...}`) wins over the context.
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "session_id", None) is None:
            record.session_id = session_id_var.get()
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


def _iso(created: float) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        + f".{int(created % 1 * 1000):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg, ids, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("request_id", "session_id"):
            value = getattr(record, key, None)
            if value:
                out[key] = value
        out.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`12:00:01.234 INFO  access  GET /api/stats 200  route=/api/stats ... [req=ab12]`"""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        head = f"{clock}.{int(record.msecs):03d} {record.levelname:<7} {record.name}"
        line = f"{head}  {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += "  " + " ".join(f"{k}={v}" for k, v in extras.items())
        ids = [f"{tag}={getattr(record, key)}" for key, tag in (("request_id", "req"),
               ("session_id", "session")) if getattr(record, key, None)]  # fmt: skip
        if ids:
            line += f"  [{' '.join(ids)}]"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    *,
    stream: TextIO | None = None,
    extra_secrets: Iterable[str] = (),
) -> logging.Handler:
    """Replace the root logger's handlers with one that redacts, adds ids and formats.

    `extra_secrets`: values to hide besides those found in the environment (e.g. keys that
    came from a settings file). Returns the handler (tests read from its stream).
    """
    if level.lower() not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    if fmt not in ("json", "text"):
        raise ValueError(f"unknown log format {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(Redactor(secrets_from_env() | set(extra_secrets))))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level.lower()])
    # aiohttp's own access log is replaced by the admin middleware's `access` logger.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return handler


def setup_logging(settings: Settings) -> logging.Handler:
    """Configure from the server's settings (LOG_LEVEL, LOG_FORMAT); every secret setting
    (a server setting named *_KEY/_TOKEN/_SECRET, or one a provider declares secret) is
    redacted too, even when it did not come from the environment."""
    return configure_logging(
        settings.log_level, settings.log_format, extra_secrets=settings.secrets()
    )
