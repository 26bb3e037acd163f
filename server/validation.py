"""Shared input rules for every edge (HTTP and WebSocket)."""

from __future__ import annotations

import re

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TEXT_CHARS = 4000
MAX_AUDIO_FRAME_BYTES = 64 * 1024
#: `SESSION_ID` as a JSON Schema, for the API description.
SESSION_ID_SCHEMA = {"type": "string", "pattern": SESSION_ID.pattern}


def valid_session_id(value: object) -> bool:
    return isinstance(value, str) and SESSION_ID.fullmatch(value) is not None
