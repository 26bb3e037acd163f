"""An HTTP operation's description, declared beside its handler: `@describe(...)`.

`server/openapi.py` walks the app's router and joins each route with the description its
handler carries, so the OpenAPI document is generated from the routes themselves and a
route without a description is a failing test, not a silent gap. Here are only the
pieces a handler states about itself (its body, parameters and own answers); what every
route of a kind shares (the error shape, 401 for a credential, 415/413/400 for a JSON
body, 429 from the limits) is added by the generator from `auth`, `body` and the path.

It lives in `admin/` because both rooms describe routes and `admin` imports nothing of
the server's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
Auth = Literal["learner", "learner_or_new", "admin", "metrics", "twilio"] | None

#: The shared error shape; the generator registers it as `#/components/schemas/Error`.
ERROR_REF = {"$ref": "#/components/schemas/Error"}
#: What `openapi` attribute a described handler carries.
ATTRIBUTE = "openapi"


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    auth: Auth = None
    #: JSON request body schema (the body must then be `application/json`).
    body: Mapping[str, Any] | None = None
    #: Form body schema (`application/x-www-form-urlencoded`), e.g. Twilio's webhook.
    form: Mapping[str, Any] | None = None
    #: Query parameters: name -> schema.
    query: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Path parameters: name -> schema.
    path: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: status -> an OpenAPI response object (see `json`, `error`, `content`).
    responses: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    #: A WebSocket upgrade (101 to a WebSocket client, 400 to plain HTTP).
    websocket: bool = False


def describe(summary: str, **fields: Any) -> Callable[[F], F]:
    """Attach an `Operation` to a handler (a function or a method)."""
    operation = Operation(summary, **fields)

    def attach(handler: F) -> F:
        setattr(handler, ATTRIBUTE, operation)
        return handler

    return attach


def described(handler: object) -> Operation | None:
    found = getattr(handler, ATTRIBUTE, None)
    return found if isinstance(found, Operation) else None


def json(schema: Mapping[str, Any], description: str = "OK", **headers: str) -> dict[str, Any]:
    """A JSON answer with `schema`; `headers`: name -> description."""
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": dict(schema)}},
    }
    if headers:
        out["headers"] = {
            n: {"description": d, "schema": {"type": "string"}} for n, d in headers.items()
        }
    return out


def error(description: str, *codes: str, **headers: str) -> dict[str, Any]:
    """An error answer in the shared shape; `codes`: the `error.code` values it may carry."""
    text = f"{description} (`{'`, `'.join(codes)}`)" if codes else description
    return json(ERROR_REF, text, **headers)


def content(media_type: str, description: str = "OK", **headers: str) -> dict[str, Any]:
    """A non-JSON answer (a page, a file, Prometheus text)."""
    out = json({"type": "string"}, description, **headers)
    out["content"] = {media_type: {"schema": {"type": "string"}}}
    return out


def obj(required: Mapping[str, Any], optional: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A JSON object schema: `required` properties must be present, `optional` may be."""
    props = {**required, **(optional or {})}
    return {"type": "object", "required": list(required), "properties": props}


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": "string", "format": "date-time", "nullable": True}
ANY_OBJECT = {"type": "object"}
