"""A learner's own data: credentials, sessions, export and deletion.

Every route here answers for the caller's learner only; a session of another learner is a
404, exactly like one that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiohttp import web

from admin.apidoc import INTEGER, STRING, TIME, describe, error, json, obj
from server.appkeys import ERASURE, IDENTITY, LIMITS, STORAGE
from server.http_errors import ApiError
from server.identity.http import learner_of
from server.limits.http import within
from server.routes.captures import (
    CAPTURE,
    EXPORT_MAX,
    FORMAT_QUERY,
    NOT_YOURS,
    SESSION_PATH,
    STORAGE_DOWN,
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
@describe(
    "A new anonymous learner and its credential",
    tags=("learners",),
    responses={201: json(obj({"learner_id": STRING, "learner_token": STRING}), "Created")},
)
async def new_learner(request: web.Request) -> web.Response:
    """An anonymous learner and its credential (the web client's first visit)."""
    await within(request.app[LIMITS].new_learner(request.remote or "unknown"))
    learner = request.app[IDENTITY].new_anonymous()
    return web.json_response(
        {"learner_id": learner.id, "learner_token": learner.issued_token}, status=201
    )


@routes.get("/api/me")
@describe(
    "Who I am",
    auth="learner",
    tags=("learners",),
    responses={200: json(obj({"learner_id": STRING}))},
)
async def me(request: web.Request) -> web.Response:
    learner = await learner_of(request)
    return web.json_response({"learner_id": learner.id})


@routes.delete("/api/me")
@describe(
    "Forget me: every session, capture, index entry and context; the credential ends",
    auth="learner",
    tags=("learners",),
    responses={
        200: json(obj({"forgotten": {"enum": [True]}, "captures_deleted": INTEGER})),
        503: STORAGE_DOWN,
    },
)
async def forget_me(request: web.Request) -> web.Response:
    """Forget me: every session, capture, index entry and context of the caller."""
    learner = await learner_of(request)
    # Shielded: a deletion that outlives the request's timeout still finishes.
    erasing = asyncio.shield(request.app[ERASURE].forget_learner(learner.id))
    deleted = await storage_call(erasing, "deletion")
    return web.json_response({"forgotten": True, "captures_deleted": deleted})


@routes.get("/api/me/export")
@describe(
    "Everything I said, across sessions, as a file (JSON or Markdown)",
    auth="learner",
    tags=("learners",),
    query=FORMAT_QUERY,
    responses={
        200: {
            "description": "The file",
            "headers": {"Content-Disposition": {"schema": STRING}},
            "content": {
                "application/json": {
                    "schema": obj(
                        {
                            "learner_id": STRING,
                            "exported_at": TIME,
                            "captures": {
                                "type": "array",
                                "items": {
                                    **CAPTURE,
                                    "required": [*CAPTURE["required"], "session_id"],
                                },
                            },
                            "count": INTEGER,
                        }
                    )
                },
                "text/markdown": {"schema": STRING},
            },
        },
        400: error("Bad input", "invalid_format"),
        503: STORAGE_DOWN,
    },
)
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
@describe(
    "My sessions, newest first",
    auth="learner",
    tags=("sessions",),
    query={"limit": {"type": "integer", "minimum": 1, "maximum": SESSIONS_MAX}},
    responses={
        200: json(
            obj(
                {
                    "sessions": {
                        "type": "array",
                        "items": obj(
                            {
                                "session_id": STRING,
                                "title": STRING,
                                "created_at": {**TIME, "nullable": True},
                                "last_at": {**TIME, "nullable": True},
                                "captures": INTEGER,
                            }
                        ),
                    },
                    "count": INTEGER,
                }
            )
        ),
        400: error("Bad input", "invalid_limit"),
        503: STORAGE_DOWN,
    },
)
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
@describe(
    "Delete a session everywhere",
    auth="learner",
    tags=("sessions",),
    path=SESSION_PATH,
    responses={
        200: json(
            obj({"session_id": STRING, "deleted": {"enum": [True]}, "captures_deleted": INTEGER})
        ),
        400: error("Bad input", "invalid_session_id"),
        404: NOT_YOURS,
        503: STORAGE_DOWN,
    },
)
async def delete_session(request: web.Request) -> web.Response:
    session_id = session_id_param(request)
    learner = await learner_of(request)
    await owned_session(request, learner, session_id)
    erasing = asyncio.shield(request.app[ERASURE].delete_session(session_id))
    deleted = await storage_call(erasing, "deletion")
    return web.json_response(
        {"session_id": session_id, "deleted": True, "captures_deleted": deleted}
    )
