"""Operators' view of captures: search across every learner, behind the admin key.

Learners reach only their own captures through /api/*; this route is the one way to look
across learners (support, abuse reports), and it needs `X-Admin-Key`.
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from admin.apidoc import describe, error, json
from server.appkeys import ADMIN, STORAGE
from server.http_errors import ApiError, read_json_object
from server.identity.learners import LEARNER_ID
from server.routes.captures import (
    SEARCH_ANSWER,
    SEARCH_BODY,
    SEARCH_ERRORS,
    STORAGE_DOWN,
    hit_json,
    parse_search,
    storage_call,
)
from server.validation import SESSION_ID_SCHEMA


@describe(
    "Search captures across every learner, or one (`learner_id`)",
    auth="admin",
    tags=("admin",),
    body={
        **SEARCH_BODY,
        "properties": {**SEARCH_BODY["properties"], "learner_id": SESSION_ID_SCHEMA},
    },
    responses={
        200: json(SEARCH_ANSWER),
        400: error("Bad input", *sorted(SEARCH_ERRORS | {"invalid_learner_id"})),
        503: STORAGE_DOWN,
    },
)
async def admin_search(request: web.Request) -> web.Response:
    """Like `POST /api/search`, over every learner, or one (`learner_id`)."""
    body = await read_json_object(request)
    query = parse_search(body)
    learner_id = body.get("learner_id")
    if learner_id is not None:
        if not isinstance(learner_id, str) or not LEARNER_ID.fullmatch(learner_id):
            raise ApiError(400, "invalid_learner_id", "`learner_id` must match [A-Za-z0-9_-]{1,64}")
        query = replace(query, learner_id=learner_id)
    hits = await storage_call(request.app[STORAGE].captures.search(query), "search")
    results = [hit_json(h) for h in hits]
    return web.json_response({"query": query.query, "results": results, "count": len(results)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/api/search", app[ADMIN].api.guarded(admin_search))
