"""One JSON error shape for every HTTP failure: {"error": {"code", "message"}}."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(web.HTTPException):
    """Raise from a handler to answer with a JSON error."""

    def __init__(self, status: int, code: str, message: str, **headers: str) -> None:
        self.status_code = status
        super().__init__(
            text=web.json_response(error_body(code, message)).text,
            content_type="application/json",
            headers=headers or None,
        )
        self.code = code


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(error_body(code, message), status=status)


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        if isinstance(request.match_info.route.resource, web.StaticResource):
            await _static_file_or_404(request)
        return await handler(request)
    except ApiError:
        raise
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = _CODES.get(exc.status, "http_error")
        resp = json_error(exc.status, code, exc.reason)
        for name in ("Allow", "Retry-After"):
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
        return resp
    except Exception:
        log.exception("unhandled error", extra={"route": request.path})
        return json_error(500, "internal", "internal server error")


async def _static_file_or_404(request: web.Request) -> None:
    """A static route's file must exist before aiohttp's handler is asked for it: for a
    missing file that handler answers an empty `application/octet-stream` 404 (not our
    error shape), and a name the file system refuses (too long: ENAMETOOLONG) was a 500."""
    directory = request.match_info.route.get_info().get("directory")
    filename = request.match_info.get("filename", "")
    loop = asyncio.get_running_loop()
    if directory is None or not await loop.run_in_executor(None, _is_file, directory, filename):
        raise web.HTTPNotFound()


def _is_file(directory: Path, filename: str) -> bool:
    try:
        return (Path(directory) / filename).is_file()
    except (OSError, ValueError):  # too long, a NUL byte, ...
        return False


def is_json(content_type: str) -> bool:
    """`application/json` or a `+json` type (aiohttp has dropped any `; charset=...`)."""
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def require_json(request: web.Request) -> None:
    if not is_json(request.content_type):
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the body as JSON, with `Content-Type: application/json`",
        )


async def read_json_object(request: web.Request, max_bytes: int = 64 * 1024) -> dict:
    """The request body as a JSON object, or a clear 4xx. The body must be declared JSON
    (`Content-Type: application/json`): a form or text/plain post, which a page on another
    site can send without asking, is refused with 415 before it is read."""
    require_json(request)
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "payload_too_large", f"body over {max_bytes} bytes")
    # StreamReader.read(n) returns what has arrived so far, not n bytes: read to EOF
    # (bounded) so a body that comes in several TCP segments is not cut short.
    chunks: list[bytes] = []
    size = 0
    while size <= max_bytes:
        chunk = await request.content.read(max_bytes + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    raw = b"".join(chunks)
    if len(raw) > max_bytes:
        raise ApiError(413, "payload_too_large", f"body over {max_bytes} bytes")
    import json

    try:
        body = json.loads(raw or b"null")
    except (ValueError, RecursionError):  # RecursionError: nesting like [[[[... 64 KB deep
        raise ApiError(400, "invalid_json", "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    return body
