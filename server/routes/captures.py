"""Search, stats, a session's history and its export: the captures HTTP API.

Handlers only validate, call storage (`app[STORAGE]`) and serialise. A storage failure is
a 503 JSON error (the database is down, not the request wrong); bad input is a 400. Search,
history and export answer for the caller's learner only (docs/security.md); stats are
counts, with no content.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

from admin.apidoc import (
    INTEGER,
    NULLABLE_TIME,
    NUMBER,
    STRING,
    TIME,
    describe,
    error,
    json,
    obj,
)
from server.appkeys import LIMITS, STORAGE
from server.http_errors import ApiError, read_json_object
from server.identity.http import learner_of
from server.identity.learners import Learner
from server.limits.http import within
from server.storage.base import SearchHit, SearchQuery, StoredCapture
from server.validation import SESSION_ID_SCHEMA, valid_session_id

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

T = TypeVar("T")
MAX_QUERY_CHARS = 20_000
MAX_LIMIT = 100
HISTORY_DEFAULT, HISTORY_MAX = 50, 1000
EXPORT_MAX = 10_000
STORAGE_TIMEOUT = 10.0


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _bad(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)


def int_field(value: object, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        # int() itself decides: str.isdigit() also accepts "²", which int() rejects.
        try:
            value = int(value) if isinstance(value, str) and len(value) <= 20 else None
        except ValueError:
            value = None
        if value is None:
            raise _bad(f"invalid_{name}", f"`{name}` must be an integer from {lo} to {hi}")
    if not lo <= value <= hi:
        raise _bad(f"invalid_{name}", f"`{name}` must be an integer from {lo} to {hi}")
    return value


def _time_field(value: object, name: str) -> float | None:
    """Epoch seconds (number) or an ISO-8601 string; None when absent."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value) and 0 <= value < 1e11:
            return float(value)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            # Same range as numbers: year 1 at +14:00 is before any datetime Postgres
            # filters can be built from (that was a 503 for a bad request).
            ts = parsed.timestamp()
            if 0 <= ts < 1e11:
                return ts
    raise _bad(f"invalid_{name}", f"`{name}` must be epoch seconds or an ISO-8601 time")


def session_id_param(request: web.Request) -> str:
    session_id = request.match_info["session_id"]
    if not valid_session_id(session_id):
        raise _bad("invalid_session_id", "session id must match [A-Za-z0-9_-]{1,64}")
    return session_id


async def storage_call(aw: Awaitable[T], what: str) -> T:
    """Await a storage call with a timeout; failures become a 503, not a 500."""
    try:
        async with asyncio.timeout(STORAGE_TIMEOUT):
            return await aw
    except ApiError:
        raise
    except Exception as exc:
        log.warning("storage call failed", extra={"call": what, "error": repr(exc)[:200]})
        raise ApiError(
            503, "storage_unavailable", f"{what} is unavailable, try again", **{"Retry-After": "5"}
        ) from None


#: Epoch seconds or an ISO-8601 time.
TIME_FILTER = {"oneOf": [{"type": "number", "minimum": 0}, {"type": "string", "maxLength": 64}]}
SEARCH_BODY = obj(
    {"query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS}},
    {
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        "session_id": SESSION_ID_SCHEMA,
        "since": TIME_FILTER,
        "until": TIME_FILTER,
    },
)
HIT = obj(
    {
        "id": {},
        "session_id": STRING,
        "timestamp": NULLABLE_TIME,
        "user_text": STRING,
        "agent_text": STRING,
        "snippet": STRING,
        "score": NUMBER,
    }
)
SEARCH_ANSWER = obj({"query": STRING, "results": {"type": "array", "items": HIT}, "count": INTEGER})
SEARCH_ERRORS = {
    "invalid_query",
    "query_too_long",
    "invalid_limit",
    "invalid_session_id",
    "invalid_since",
    "invalid_until",
    "invalid_range",
}
CAPTURE = obj(
    {
        "id": {},
        "timestamp": NULLABLE_TIME,
        "user_text": STRING,
        "agent_text": STRING,
        "metadata": {},
    }
)
SESSION_PATH = {"session_id": SESSION_ID_SCHEMA}
NOT_YOURS = error("No such session, or another learner's (the same answer)", "session_not_found")
STORAGE_DOWN = error(
    "The capture store is unavailable", "storage_unavailable", **{"Retry-After": "5"}
)
FORMAT_QUERY = {"format": {"type": "string", "enum": ["json", "markdown"]}}


def parse_search(body: dict[str, Any]) -> SearchQuery:
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise _bad("invalid_query", "`query` must be a non-empty string")
    if len(query) > MAX_QUERY_CHARS:
        raise _bad("query_too_long", f"`query` is limited to {MAX_QUERY_CHARS} characters")
    limit = int_field(body.get("limit", 10), "limit", 1, MAX_LIMIT)
    session_id = body.get("session_id")
    if session_id is not None and not valid_session_id(session_id):
        raise _bad("invalid_session_id", "`session_id` must match [A-Za-z0-9_-]{1,64}")
    since = _time_field(body.get("since"), "since")
    until = _time_field(body.get("until"), "until")
    if since is not None and until is not None and since > until:
        raise _bad("invalid_range", "`since` must not be after `until`")
    return SearchQuery(query.strip(), limit, session_id, since, until)


async def owned_session(request: web.Request, learner: Learner, session_id: str) -> None:
    """404 unless `session_id` belongs to the caller (another's is as if it did not exist)."""
    owner = await storage_call(
        request.app[STORAGE].captures.session_owner(session_id), "capture store"
    )
    if owner != learner.id:
        raise ApiError(404, "session_not_found", "no such session")


@routes.post("/api/search")
@describe(
    "Search my captures by keyword and meaning",
    auth="learner",
    tags=("captures",),
    body=SEARCH_BODY,
    responses={
        200: json(SEARCH_ANSWER),
        400: error("Bad input", *sorted(SEARCH_ERRORS)),
        404: NOT_YOURS,
        429: error("Over a limit (searches per learner)", "rate_limited"),
        503: STORAGE_DOWN,
    },
)
async def search(request: web.Request) -> web.Response:
    query = parse_search(await read_json_object(request))
    learner = await learner_of(request)
    await within(request.app[LIMITS].search(learner.id))
    query = replace(query, learner_id=learner.id)
    if query.session_id is not None:
        await owned_session(request, learner, query.session_id)
    hits = await storage_call(request.app[STORAGE].captures.search(query), "search")
    results = [hit_json(h) for h in hits]
    return web.json_response({"query": query.query, "results": results, "count": len(results)})


def hit_json(h: SearchHit) -> dict[str, Any]:
    return {
        "id": h.id,
        "session_id": h.session_id,
        "timestamp": iso(h.timestamp),
        "user_text": h.user_text,
        "agent_text": h.agent_text,
        "snippet": h.snippet,
        "score": round(h.score, 6),
    }


@routes.get("/api/stats")
@describe(
    "Capture and session totals (counts only)",
    tags=("captures",),
    responses={
        200: json(
            obj(
                {
                    "total_captures": INTEGER,
                    "total_sessions": INTEGER,
                    "captures_last_24h": INTEGER,
                    "last_capture_at": NULLABLE_TIME,
                    "active_sessions": INTEGER,
                }
            )
        ),
        503: STORAGE_DOWN,
    },
)
async def stats(request: web.Request) -> web.Response:
    storage = request.app[STORAGE]
    totals = await storage_call(storage.captures.stats(), "capture store")
    active = await storage_call(storage.sessions.count_active(), "session store")
    return web.json_response(
        {
            "total_captures": totals.total_captures,
            "total_sessions": totals.total_sessions,
            "captures_last_24h": totals.captures_last_24h,
            "last_capture_at": iso(totals.last_capture_at),
            "active_sessions": active,
        }
    )


def capture_json(c: StoredCapture) -> dict[str, Any]:
    return {
        "id": c.id,
        "timestamp": iso(c.timestamp),
        "user_text": c.user_text,
        "agent_text": c.agent_text,
        "metadata": c.metadata,
    }


@routes.get("/api/sessions/{session_id}/history")
@describe(
    "A session's captures, oldest first",
    auth="learner",
    tags=("sessions",),
    path=SESSION_PATH,
    query={"limit": {"type": "integer", "minimum": 1, "maximum": HISTORY_MAX}},
    responses={
        200: json(
            obj(
                {
                    "session_id": STRING,
                    "captures": {"type": "array", "items": CAPTURE},
                    "count": INTEGER,
                }
            )
        ),
        400: error("Bad input", "invalid_session_id", "invalid_limit"),
        404: NOT_YOURS,
        503: STORAGE_DOWN,
    },
)
async def history(request: web.Request) -> web.Response:
    session_id = session_id_param(request)
    limit = int_field(request.query.get("limit", HISTORY_DEFAULT), "limit", 1, HISTORY_MAX)
    await owned_session(request, await learner_of(request), session_id)
    captures = await storage_call(
        request.app[STORAGE].captures.history(session_id, limit), "capture store"
    )
    return web.json_response(
        {
            "session_id": session_id,
            "captures": [capture_json(c) for c in captures],
            "count": len(captures),
        }
    )


@routes.get("/api/sessions/{session_id}/export")
@describe(
    "A session's captures as a file (JSON or Markdown)",
    auth="learner",
    tags=("sessions",),
    path=SESSION_PATH,
    query=FORMAT_QUERY,
    responses={
        200: {
            "description": "The file",
            "headers": {"Content-Disposition": {"schema": STRING}},
            "content": {
                "application/json": {
                    "schema": obj(
                        {
                            "session_id": STRING,
                            "exported_at": TIME,
                            "captures": {"type": "array", "items": CAPTURE},
                            "count": INTEGER,
                        }
                    )
                },
                "text/markdown": {"schema": STRING},
            },
        },
        400: error("Bad input", "invalid_session_id", "invalid_format"),
        404: NOT_YOURS,
        503: STORAGE_DOWN,
    },
)
async def export(request: web.Request) -> web.Response:
    session_id = session_id_param(request)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "markdown"):
        raise _bad("invalid_format", "`format` must be json or markdown")
    await owned_session(request, await learner_of(request), session_id)
    captures = await storage_call(
        request.app[STORAGE].captures.history(session_id, EXPORT_MAX), "capture store"
    )
    if not captures:
        raise ApiError(404, "session_not_found", "no captures for this session")
    ext = "md" if fmt == "markdown" else "json"
    disposition = f'attachment; filename="session-{session_id}.{ext}"'
    if fmt == "markdown":
        return web.Response(
            text=render_markdown(session_id, captures),
            content_type="text/markdown",
            headers={"Content-Disposition": disposition},
        )
    body = {
        "session_id": session_id,
        "exported_at": iso(datetime.now(UTC).timestamp()),
        "captures": [capture_json(c) for c in captures],
        "count": len(captures),
    }
    return web.json_response(body, headers={"Content-Disposition": disposition})


def render_markdown(session_id: str, captures: list[StoredCapture]) -> str:
    """A readable transcript; user text is quoted so it cannot forge headings."""
    lines = [f"# Learning session {session_id}", ""]
    for c in captures:
        lines.append(f"## {iso(c.timestamp)}")
        lines.append("")
        lines.append("**You:**")
        lines.extend(_quote(c.user_text))
        lines.append("")
        lines.append("**Companion:**")
        lines.extend(_quote(c.agent_text))
        lines.append("")
    return "\n".join(lines)


def _quote(text: str) -> list[str]:
    return ["> " + line if line else ">" for line in (text.splitlines() or [""])]
