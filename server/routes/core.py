"""Health, the typed-conversation API and the web client's entry page."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from admin.apidoc import STRING, TIME, describe, error, json, obj
from pipelines.conversation import text_turn
from server import __version__
from server.appkeys import ENGINE, LIMITS, STORAGE
from server.http_errors import ApiError, read_json_object
from server.identity.http import credential_of, learner_of
from server.limits.http import within
from server.routes.captures import storage_call
from server.validation import MAX_TEXT_CHARS, SESSION_ID_SCHEMA, valid_session_id

routes = web.RouteTableDef()

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
SERVICE = "learning-voice-agent"
#: A typed turn that has no whole reply by then is abandoned (the chain's own timeouts
#: normally end it much sooner, with an apology).
REPLY_TIMEOUT_S = 30.0


#: The web client loads only its own files and talks only to its own origin; no page may
#: frame it (clickjacking the talk button), no plugin, no inline script.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; worker-src 'self'; object-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@routes.get("/")
@describe(
    "Health (JSON), or the web client for a browser that asks for HTML",
    tags=("health",),
    responses={
        200: {
            "description": "Health, or the page",
            "content": {
                "application/json": {
                    "schema": obj({"status": STRING, "service": STRING, "version": STRING})
                },
                "text/html": {"schema": STRING},
            },
        }
    },
)
async def root(request: web.Request) -> web.StreamResponse:
    """Browsers get the app; everything else (curl, load balancers) gets health JSON."""
    index = STATIC_DIR / "index.html"
    if "text/html" in request.headers.get("Accept", "") and index.exists():
        headers = {
            "Cache-Control": "no-cache",
            "Content-Security-Policy": PAGE_CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Vary": "Accept",
        }
        return web.FileResponse(index, headers=headers)
    return web.json_response(
        {"status": "healthy", "service": SERVICE, "version": __version__},
        headers={"Vary": "Accept"},
    )


@routes.get("/health/ready")
@describe(
    "Readiness: 200 once the embedded models are loaded",
    tags=("health",),
    responses={
        200: json(obj({"status": {"enum": ["ready"]}})),
        503: json(obj({"status": {"enum": ["loading"]}}), "Still loading", **{"Retry-After": "1"}),
    },
)
async def ready(request: web.Request) -> web.Response:
    """Readiness for load balancers: 200 once the embedded models are loaded."""
    if request.app[ENGINE].ready.is_set():
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "loading"}, status=503, headers={"Retry-After": "1"})


@routes.post("/api/conversation")
@describe(
    "A typed turn, in the same session context as voice",
    auth="learner_or_new",
    tags=("conversation",),
    body=obj(
        {"text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS}},
        {"session_id": SESSION_ID_SCHEMA},
    ),
    responses={
        200: json(
            obj(
                {
                    "session_id": STRING,
                    "user_text": STRING,
                    "agent_text": STRING,
                    "timestamp": TIME,
                },
                {"learner_token": STRING},
            ),
            "The reply; `learner_token` when the caller had no credential (a new learner)",
        ),
        400: error("Bad input", "invalid_text", "text_too_long", "invalid_session_id"),
        404: error("The session belongs to another learner", "session_not_found"),
        429: error("Over a limit (typed turns per learner)", "rate_limited"),
        503: error("The capture store is unavailable", "storage_unavailable"),
        504: error("No reply in time", "reply_timeout"),
    },
)
async def conversation(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "invalid_text", "`text` must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise ApiError(400, "text_too_long", f"`text` is limited to {MAX_TEXT_CHARS} characters")
    session_id = body.get("session_id")
    if session_id is None:
        session_id = uuid.uuid4().hex
    elif not valid_session_id(session_id):
        raise ApiError(400, "invalid_session_id", "`session_id` must match [A-Za-z0-9_-]{1,64}")
    limits = request.app[LIMITS]
    if credential_of(request) is None:  # the turn counts against the client's address
        await within(limits.anonymous_turn(request.remote or "unknown"))
    learner = await learner_of(request, create=True)
    if not learner.issued_token:
        await within(limits.conversation_turn(learner.id))
    engine = request.app[ENGINE]
    storage = request.app[STORAGE]
    owner = await storage_call(
        storage.captures.claim_session(session_id, learner.id), "capture store"
    )
    if owner != learner.id:
        raise ApiError(404, "session_not_found", "no such session")
    user_text = text.strip()
    try:
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            agent_text, ts = await text_turn(
                engine.providers.llm,
                storage.sessions,
                storage.writer,
                session_id,
                user_text,
                learner.id,
            )
    except TimeoutError:
        raise ApiError(
            504, "reply_timeout", f"no reply within {REPLY_TIMEOUT_S:.0f} s; try again"
        ) from None
    answer = {
        "session_id": session_id,
        "user_text": user_text,
        "agent_text": agent_text,
        "timestamp": datetime.fromtimestamp(ts, UTC).isoformat(),
    }
    if learner.issued_token:  # a new learner: the client presents this to continue
        answer["learner_token"] = learner.issued_token
    return web.json_response(answer)
