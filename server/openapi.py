"""The OpenAPI 3 description of the HTTP API, generated from the app's own router.

Each route's handler carries its description (`@describe(...)` beside the handler,
admin/apidoc.py); this module walks `app.router`, joins each route with it and adds what
every route of a kind shares, so nothing is kept twice:

- every error is `{"error": {"code", "message"}}` (`#/components/schemas/Error`);
- a JSON body: 400 `invalid_json`, 413 `payload_too_large`, 415 `unsupported_media_type`;
- a learner's route: `Authorization: Bearer <learner_token>`, 401 and the per-learner 429;
- an admin route: `X-Admin-Key`, 401, 429 `too_many_attempts`, 503 `admin_disabled`;
- a route the per-address request limit counts (server/limits/middleware.py): 429
  `rate_limited` with Retry-After; `/api/*`: 503 `maintenance` while maintenance is on;
- every answer: `X-Request-ID`.

Served at `GET /openapi.json` (no auth: it describes, it holds no data).
`undescribed(app)` lists the routes without a description (a test keeps it empty).
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from admin.apidoc import STRING, Operation, describe, described, error, json
from admin.middleware import MAINTENANCE_GATED_PREFIXES
from server import __version__
from server.limits.middleware import UNCOUNTED_PATHS, UNCOUNTED_PREFIXES

OPENAPI_VERSION = "3.0.3"
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": STRING, "message": STRING},
        }
    },
}
SECURITY_SCHEMES = {
    "learnerToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A learner token: POST /api/learners issues one (docs/security.md)",
    },
    "adminKey": {"type": "apiKey", "in": "header", "name": "X-Admin-Key"},
    "metricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "METRICS_TOKEN, when it is set (else /metrics is open)",
    },
    "twilioSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Twilio-Signature",
        "description": "Twilio's signature (unless TWILIO_VALIDATE_SIGNATURE=false)",
    },
}
_SECURITY: dict[str | None, list[dict[str, list[str]]]] = {
    "learner": [{"learnerToken": []}],
    "learner_or_new": [{"learnerToken": []}, {}],
    "admin": [{"adminKey": []}],
    "metrics": [{"metricsToken": []}, {}],
    "twilio": [{"twilioSignature": []}, {}],
}
_CREDENTIAL_CODES = (
    "missing_credential",
    "invalid_credential",
    "invalid_token",
    "token_expired",
    "learner_forgotten",
)
_REQUEST_ID = {"X-Request-ID": {"description": "The request's id (also in its log line)",
                                "schema": STRING}}  # fmt: skip
_RETRY_AFTER = {"Retry-After": "Seconds to wait"}

#: Files under a static prefix (the web client, the dashboard's scripts).
STATIC_FILES = Operation(
    "A static file",
    tags=("static",),
    path={"filename": {"type": "string"}},
    responses={
        200: {"description": "The file"},
        403: error("Outside the directory", "forbidden"),
        404: error("No such file", "not_found"),
    },
)


def _shared_responses(path: str, op: Operation) -> dict[int, dict[str, Any]]:
    """What the middlewares and the route's kind add to its own answers."""
    out: dict[int, dict[str, Any]] = {}
    if op.body is not None:
        out[400] = error("The body is not a JSON object", "invalid_json")
        out[413] = error("The body is over 64 KiB", "payload_too_large")
        out[415] = error("The body is not declared JSON", "unsupported_media_type")
    if op.auth in ("learner", "learner_or_new"):
        out[401] = error("A missing or unusable learner credential", *_CREDENTIAL_CODES,
                         **{"WWW-Authenticate": "Bearer"})  # fmt: skip
        out[429] = error("Over a limit (per learner)", "rate_limited", **_RETRY_AFTER)
        out[503] = error("The identity provider's keys cannot be fetched",
                         "identity_provider_unavailable", **_RETRY_AFTER)  # fmt: skip
    elif op.auth in ("admin", "metrics"):
        out[401] = error("A missing or wrong key", "unauthorized")
        out[429] = error("Too many wrong keys from this address", "too_many_attempts",
                         **_RETRY_AFTER)  # fmt: skip
        if op.auth == "admin":
            out[503] = error("ADMIN_API_KEY is not set: admin is closed", "admin_disabled")
    elif op.auth == "twilio":
        out[403] = error("Not signed by Twilio", "invalid_signature", "twilio_not_configured")
    if not (path in UNCOUNTED_PATHS or path.startswith(UNCOUNTED_PREFIXES)):
        out[429] = error("Over a limit (docs/security.md#limits)", "rate_limited",
                         "too_many_attempts", **_RETRY_AFTER)  # fmt: skip
    if path.startswith(MAINTENANCE_GATED_PREFIXES):
        out[503] = error("Maintenance mode is on (or a dependency is down)", "maintenance",
                         "storage_unavailable", "identity_provider_unavailable",
                         "admin_disabled", **_RETRY_AFTER)  # fmt: skip
    if op.websocket:
        out[101] = {"description": "Switching Protocols: the WebSocket"}
    return out


def _operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    responses = _shared_responses(path, op)
    for status, own in copy.deepcopy(dict(op.responses)).items():
        shared = responses.get(status)
        if shared is not None and shared["description"] != own["description"]:
            # The route's own answer and the shared one for the same status: one error
            # shape, both causes named.
            own["description"] = f"{own['description']}; or {shared['description']}"
            own["headers"] = {**shared.get("headers", {}), **own.get("headers", {})}
        responses[status] = own
    for answer in responses.values():
        answer.setdefault("headers", {}).update(_REQUEST_ID)
    parameters: list[dict[str, Any]] = []
    names = [p.strip("{}").split(":")[0] for p in path.split("/") if p.startswith("{")]
    for name in names:
        schema = op.path.get(name, {"type": "string"})
        parameters.append({"name": name, "in": "path", "required": True, "schema": dict(schema)})
    for name, schema in op.query.items():
        parameters.append({"name": name, "in": "query", "required": False, "schema": dict(schema)})
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{method.lower()}_{path}",
        "responses": {str(status): answer for status, answer in sorted(responses.items())},
    }
    if op.tags:
        out["tags"] = list(op.tags)
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        schema = copy.deepcopy(dict(op.body))
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    elif op.form is not None:
        form = {"application/x-www-form-urlencoded": {"schema": copy.deepcopy(dict(op.form))}}
        out["requestBody"] = {"required": False, "content": form}
    if op.auth in _SECURITY:
        out["security"] = _SECURITY[op.auth]
    return out


def _routes(app: web.Application) -> list[tuple[str, str, Operation | None]]:
    """(method, path template, description) of every route; HEAD follows its GET."""
    found = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        resource = route.resource
        if resource is None:
            continue
        if isinstance(resource, web.StaticResource):
            found.append((route.method, resource.canonical.rstrip("/") + "/{filename}",
                          STATIC_FILES))  # fmt: skip
        else:
            found.append((route.method, resource.canonical, described(route.handler)))
    return found


def undescribed(app: web.Application) -> list[str]:
    """`METHOD /path` of every route whose handler carries no description."""
    return [f"{method} {path}" for method, path, op in _routes(app) if op is None]


def document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of `app`'s routes (those without a description are left out)."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, op in _routes(app):
        if op is not None:
            paths.setdefault(path, {})[method.lower()] = _operation(method, path, op)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Learning Voice Agent",
            "version": __version__,
            "description": "The HTTP API (README.md); the voice protocol is docs/protocol.md.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


_DOCUMENT: web.AppKey[dict[str, Any]] = web.AppKey("openapi_document", dict)


async def _made_at_startup(app: web.Application) -> None:
    app[_DOCUMENT] = document(app)  # every route is added by now


@describe(
    "This description (OpenAPI 3)",
    tags=("health",),
    responses={200: json({"type": "object", "required": ["openapi", "paths"]})},
)
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[_DOCUMENT])


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_json, name="openapi")
    app.on_startup.append(_made_at_startup)
