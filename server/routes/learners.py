"""A learner's own data: credentials, sessions, export and deletion.

Every route here answers for the caller's learner only; a session of another learner is a
404, exactly like one that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from server.appkeys import ERASURE, IDENTITY, LIMITS, STORAGE
from server.http_errors import ApiError
from server.identity.http import learner_of
from server.limits.http import within
from server.routes.captures import (
    EXPORT_MAX,
    capture_json,
    int_field,
    iso,
    owned_session,
    render_markdown,
    session_id_param,
    storage_call,
)

routes = web.RouteTableDef()

SESSIONS_DEFAULT, SESSIONS_MAX = 50, 500


@routes.post("/api/learners")
async def new_learner(request: web.Request) -> web.Response:
    """An anonymous learner and its credential (the web client's first visit)."""
    await within(request.app[LIMITS].new_learner(request.remote or "unknown"))
    learner = request.app[IDENTITY].new_anonymous()
    return web.json_response(
        {"learner_id": learner.id, "learner_token": learner.issued_token}, status=201
    )


@routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    learner = await learner_of(request)
    return web.json_response({"learner_id": learner.id})


@routes.delete("/api/me")
async def forget_me(request: web.Request) -> web.Response:
    """Forget me: every session, capture, index entry and context of the caller."""
    learner = await learner_of(request)
    # Shielded: a deletion that outlives the request's timeout still finishes.
    erasing = asyncio.shield(request.app[ERASURE].forget_learner(learner.id))
    deleted = await storage_call(erasing, "deletion")
    return web.json_response({"forgotten": True, "captures_deleted": deleted})


@routes.get("/api/me/export")
async def export_me(request: web.Request) -> web.Response:
    """Everything the caller said, across sessions (JSON or Markdown)."""
    learner = await learner_of(request)
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "markdown"):
        raise ApiError(400, "invalid_format", "`format` must be json or markdown")
    captures = await storage_call(
        request.app[STORAGE].captures.learner_history(learner.id, EXPORT_MAX), "capture store"
    )
    ext = "md" if fmt == "markdown" else "json"
    headers = {"Content-Disposition": f'attachment; filename="my-learning.{ext}"'}
    if fmt == "markdown":
        text = render_markdown("everything I said", captures)
        return web.Response(text=text, content_type="text/markdown", headers=headers)
    body = {
        "learner_id": learner.id,
        "exported_at": iso(datetime.now(UTC).timestamp()),
        "captures": [{"session_id": c.session_id, **capture_json(c)} for c in captures],
        "count": len(captures),
    }
    return web.json_response(body, headers=headers)


@routes.get("/api/sessions")
async def my_sessions(request: web.Request) -> web.Response:
    learner = await learner_of(request)
    limit = int_field(request.query.get("limit", SESSIONS_DEFAULT), "limit", 1, SESSIONS_MAX)
    sessions = await storage_call(
        request.app[STORAGE].captures.list_sessions(learner.id, limit), "capture store"
    )
    return web.json_response(
        {
            "sessions": [
                {
                    "session_id": s.session_id,
                    "title": s.title,
                    "created_at": iso(s.created_at),
                    "last_at": iso(s.last_at),
                    "captures": s.captures,
                }
                for s in sessions
            ],
            "count": len(sessions),
        }
    )


@routes.delete("/api/sessions/{session_id}")
async def delete_session(request: web.Request) -> web.Response:
    session_id = session_id_param(request)
    learner = await learner_of(request)
    await owned_session(request, learner, session_id)
    erasing = asyncio.shield(request.app[ERASURE].delete_session(session_id))
    deleted = await storage_call(erasing, "deletion")
    return web.json_response(
        {"session_id": session_id, "deleted": True, "captures_deleted": deleted}
    )
