"""Twilio voice webhook: `POST /twilio/voice` answers a call with TwiML that connects it to a
bidirectional Media Stream at `/twilio/stream` (handled in server/transports/twilio_media.py).

Every /twilio/* request must carry a valid `X-Twilio-Signature` (HMAC of the URL Twilio
called and its POST parameters, keyed with TWILIO_AUTH_TOKEN), so that only Twilio can open
phone sessions. `TWILIO_VALIDATE_SIGNATURE=false` turns the check off for local testing.

The stream's own signature covers only the stream URL, the same for every call, so it
proves nothing about which call is streaming: the TwiML also gives the stream a one-use
token bound to the call (server/transports/twilio_tokens.py), without which its `start` is
refused, signatures on or off.

The URL a signature is checked against is PUBLIC_URL when set (required once phone calls
are configured on a server that is not loopback-only), else the request's own scheme and
Host: X-Forwarded-* headers are anyone's to send, so they are not believed.
"""

from __future__ import annotations

import logging

from aiohttp import web
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, Stream, VoiceResponse

from admin.apidoc import STRING, content, describe, error
from server.appkeys import SETTINGS, STREAM_GATE
from server.http_errors import ApiError
from server.settings import Settings
from server.transports.twilio_media import stream_handler
from server.transports.twilio_tokens import TOKEN_PARAM

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

STREAM_PATH = "/twilio/stream"
#: Twilio's parameter values are short; anything longer is not from Twilio.
_MAX_PARAM = 256


def public_base(request: web.Request, settings: Settings) -> str:
    """The server's base URL as the caller (Twilio) sees it, e.g. https://voice.example.com:
    PUBLIC_URL, else the request's own scheme and Host (never X-Forwarded-*)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


def ws_base(http_base: str) -> str:
    if http_base.startswith("https://"):
        return "wss://" + http_base[len("https://") :]
    if http_base.startswith("http://"):
        return "ws://" + http_base[len("http://") :]
    return http_base


def check_signature(
    request: web.Request, url: str, params: dict[str, str], settings: Settings
) -> bool:
    """Raise 403 unless the request is signed by Twilio or the check is switched off;
    whether the signature was verified."""
    if not settings.twilio_validate_signature:
        return False
    if not settings.twilio_auth_token:
        raise ApiError(
            403,
            "twilio_not_configured",
            "TWILIO_AUTH_TOKEN is not set, so Twilio requests cannot be verified "
            "(set it, or TWILIO_VALIDATE_SIGNATURE=false for local testing)",
        )
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not RequestValidator(settings.twilio_auth_token).validate(
        url, params, signature
    ):
        log.warning("rejected twilio request with a bad signature", extra={"path": request.path})
        raise ApiError(403, "invalid_signature", "X-Twilio-Signature does not match this request")
    return True


@routes.post("/twilio/voice")
@describe(
    "Twilio's voice webhook: TwiML connecting the call to its Media Stream",
    auth="twilio",
    tags=("phone",),
    form={
        "type": "object",
        "properties": {"CallSid": STRING, "From": STRING, "AccountSid": STRING},
    },
    responses={200: content("text/xml", "TwiML: <Connect><Stream> with the call's token")},
)
async def voice(request: web.Request) -> web.Response:
    """Answer an incoming call: connect it to our Media Streams endpoint."""
    settings = request.app[SETTINGS]
    form = await request.post()
    params = {k: v for k, v in form.items() if isinstance(v, str)}
    base = public_base(request, settings)
    check_signature(request, base + request.path_qs, params, settings)
    call_sid = params.get("CallSid", "")[:_MAX_PARAM]
    response = VoiceResponse()
    connect = Connect()
    stream = Stream(url=ws_base(base) + STREAM_PATH)
    stream.parameter(name="callSid", value=call_sid)
    stream.parameter(name=TOKEN_PARAM, value=request.app[STREAM_GATE].issue(call_sid))
    if params.get("From"):
        stream.parameter(name="from", value=params["From"][:_MAX_PARAM])
    connect.append(stream)
    response.append(connect)
    log.info("twilio call answered", extra={"call_sid": call_sid})
    return web.Response(text=str(response), content_type="text/xml")


@routes.get(STREAM_PATH)
@describe(
    "Twilio Media Streams (WebSocket), docs/phone.md",
    auth="twilio",
    tags=("phone",),
    websocket=True,
    responses={400: error("Not a WebSocket upgrade", "bad_request")},
)
async def stream(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    url = ws_base(public_base(request, settings)) + request.path_qs
    signed = check_signature(request, url, {}, settings)
    # Every call's stream comes from Twilio's own addresses: a signed one is limited per
    # call (its token), not per address.
    return await stream_handler(request, address_limited=not signed)
