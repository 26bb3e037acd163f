"""`POST /api/webrtc/offer`: a conversation over WebRTC (aiortc), Opus audio both ways.

Signalling is one HTTP request with non-trickle ICE: the client posts its SDP offer (with
every candidate) and the learner's credential, and gets the answer (with every candidate
of ours) once the session is admitted. The conversation then lives on in a task the
lifecycle owns (`Lifecycle.start`), long after the request has returned:

- audio in: the peer's Opus track, decoded by aiortc, mixed down to mono and fed to the
  Session at 48 kHz (it resamples to the recogniser's rate, audio/resample.py);
- audio out: the reply's PCM (48 kHz) goes into `ReplyTrack`, which aiortc encodes to Opus;
  the track hands out 20 ms frames paced by the media clock, silence when there is nothing
  to play, and drops what is queued on `interrupted`;
- control: protocol v1's JSON messages (docs/protocol.md) over the data channel the client
  opens (named "control"), both ways.

The media plumbing on aiortc (the jitter buffer, the mixdown, `ReplyTrack`) is in
webrtc_media.py; lost packets are concealed by audio/conceal.py. aiortc and PyAV are the
`webrtc` extra, imported only when an offer arrives (the route answers 501 without them).
Closing the peer connection ends the session and the session ending closes the peer
connection; a data channel that never opens, ICE or DTLS failing and a peer that vanishes
end it within bounded time, with the reason logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from admin.apidoc import STRING, describe, error, obj
from admin.apidoc import json as json_answer
from audio.conceal import Concealment
from audio.resample import StreamResampler
from pipelines.events import AudioFrame, Duck, Event, Interrupted, Pause, Resume
from pipelines.session import MODES, Session, SessionInputError
from server.appkeys import ENGINE, LIMITS, SETTINGS
from server.http_errors import json_error, require_json
from server.identity.http import credential_of
from server.limits.messages import MessageBudget, Verdict
from server.limits.origin import origin_allowed
from server.limits.policy import Limits
from server.liveness import LivenessConfig, Traffic
from server.transports.base import (
    CLOSE_INVALID_SESSION,
    CLOSE_NOT_FOUND,
    CLOSE_RATE_LIMITED,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNAVAILABLE,
    Admission,
    Opening,
    Refusal,
)
from server.transports.browser import _ready_fields, _start_config
from server.transports.control import goodbye, typed_turn
from server.transports.webrtc_media import RATE, mono_s16, reply_track_class, skip_lost_packets
from server.validation import valid_session_id

if TYPE_CHECKING:
    from aiortc import RTCDataChannel, RTCPeerConnection

log = logging.getLogger(__name__)

#: An offer larger than this is not a browser's.
MAX_SDP_CHARS = 64 * 1024
#: A data channel message larger than this is not protocol v1 (a `text` turn is 4000 chars).
MAX_MESSAGE_CHARS = 64 * 1024
#: The admitted peer must open its data channel within this time (ICE, DTLS, SCTP).
CHANNEL_OPEN_TIMEOUT_S = 10.0
#: The signalling request waits this long for admission and the answer.
ANSWER_TIMEOUT_S = 15.0
#: Data channel bytes queued for a peer that does not read: past this, it is gone.
MAX_BUFFERED_BYTES = 1024 * 1024
#: Audio frames arrive 50 times a second while the peer is there (browsers send silence
#: when muted), so a few quiet seconds mean it has gone; the ping is a `ping` message.
LIVENESS = LivenessConfig(tick_s=2.0, idle_ping_s=4.0, idle_close_s=10.0, stall_s=10.0)

_HTTP_STATUS = {
    CLOSE_UNAUTHORIZED: 401,
    CLOSE_NOT_FOUND: 404,
    CLOSE_INVALID_SESSION: 400,
    CLOSE_RATE_LIMITED: 429,
}


def available() -> bool:
    try:
        import aiortc  # noqa: F401
        import av  # noqa: F401
    except ImportError:
        return False
    return True


@describe(
    "Start a conversation over WebRTC: the SDP offer in, the answer out (docs/protocol.md)",
    auth="learner_or_new",
    tags=("voice",),
    body=obj(
        {"sdp": STRING, "type": {"enum": ["offer"]}, "session_id": STRING},
        {"token": STRING, "mode": {"enum": ["continuous", "push_to_talk"]}},
    ),
    responses={
        200: json_answer(
            obj(
                {
                    "type": {"enum": ["answer"]},
                    "sdp": STRING,
                    "session_id": STRING,
                    "ice_servers": {"type": "array", "items": {"type": "object"}},
                }
            )
        ),
        400: error("Not a usable offer", "invalid_sdp", "invalid_session", "invalid_message"),
        403: error("A page of another origin", "origin_not_allowed"),
        404: error("Another learner's session", "session_not_found"),
        501: error("Installed without the webrtc extra", "webrtc_unavailable"),
    },
)
async def offer_handler(request: web.Request) -> web.Response:
    """Validate the offer, hand a `WebRTCTransport` to the lifecycle, and answer once the
    session is admitted (or say why not)."""
    if not available():
        return json_error(501, "webrtc_unavailable", "this server has no WebRTC (aiortc)")
    settings = request.app[SETTINGS]
    if not origin_allowed(
        request.headers.get("Origin"), request.host, settings.allowed_origins, settings.public_url
    ):
        return json_error(403, "origin_not_allowed", "this page's origin may not start a call")
    require_json(request)
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return json_error(400, "invalid_json", "the body must be a JSON object")
    if not isinstance(body, dict):
        return json_error(400, "invalid_json", "the body must be a JSON object")
    problem = _check_offer(body)
    if problem is not None:
        return json_error(400, *problem)
    token = body.get("token")
    if token is not None and not isinstance(token, str):
        return json_error(400, "invalid_message", "token must be a string")
    credential = token if token is not None else credential_of(request)
    mode = body.get("mode", "continuous")
    transport = WebRTCTransport(
        body["session_id"],
        body["sdp"],
        credential,
        {"mode": mode, "input_rate": RATE, "output_rate": RATE},
        _ice_servers(settings),
        client=request.remote or "unknown",
        limits=request.app[LIMITS],
        messages_per_second=settings.ws_messages_per_second,
    )
    serving = request.app[ENGINE].lifecycle.start(transport)
    serving.add_done_callback(transport.served)
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            status, answer = await asyncio.shield(transport.answer)
    except TimeoutError:
        log.warning("webrtc: no answer in time", extra={"session_id": transport.session_id})
        await transport.close(CLOSE_UNAVAILABLE, "no answer in time")
        return json_error(503, "unavailable", "the session could not be set up in time")
    return web.json_response(answer, status=status)


def _check_offer(body: dict[str, Any]) -> tuple[str, str] | None:
    """(code, message) of what is wrong with the offer's fields, or None."""
    session_id = body.get("session_id")
    if not isinstance(session_id, str) or not valid_session_id(session_id):
        return "invalid_session", "session_id must be 1-64 characters of [A-Za-z0-9_-]"
    if body.get("type", "offer") != "offer":
        return "invalid_sdp", "type must be offer"
    sdp = body.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip() or len(sdp) > MAX_SDP_CHARS:
        return "invalid_sdp", f"sdp must be an SDP offer of at most {MAX_SDP_CHARS} characters"
    if body.get("mode", "continuous") not in MODES:
        return "invalid_message", f"mode must be one of {', '.join(MODES)}"
    return None


def _ice_servers(settings: Any) -> list[dict[str, Any]]:
    """The STUN/TURN servers, in the browser's RTCIceServer shape."""
    out: list[dict[str, Any]] = []
    for url in settings.webrtc_ice_servers:
        server: dict[str, Any] = {"urls": url}
        if url.startswith(("turn:", "turns:")):
            server["username"] = settings.webrtc_turn_username
            server["credential"] = settings.webrtc_turn_password
        out.append(server)
    return out


def _parse_media_kinds(sdp: str) -> list[str]:
    """The media sections of an offer ("audio", "application", ...); ValueError if it is
    not SDP."""
    from aiortc.sdp import SessionDescription

    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever it trips on
        raise ValueError(f"not SDP: {exc!r}") from None
    return [m.kind for m in description.media]


class WebRTCTransport:
    """One peer connection, from the offer to its close."""

    kind = "webrtc"

    def __init__(
        self,
        session_id: str,
        offer_sdp: str,
        credential: str | None,
        config: dict[str, Any],
        ice_servers: Sequence[dict[str, Any]],
        *,
        client: str = "unknown",
        limits: Limits | None = None,
        messages_per_second: float = 20.0,
    ) -> None:
        self.session_id = session_id
        #: The client's address (the signalling request's), for per-address limits.
        self.client = client
        self.address_limited = True
        self.limits = limits
        self.learner_id = ""
        #: Control messages per second on the data channel (WS_MESSAGES_PER_SECOND).
        self.budget = MessageBudget(messages_per_second, time.monotonic())
        self.traffic = Traffic()
        self.liveness = LIVENESS
        #: (HTTP status, JSON body) for the signalling request.
        self.answer: asyncio.Future[tuple[int, dict[str, Any]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._offer = offer_sdp
        self._credential = credential
        self._config = config
        self._ice_servers = list(ice_servers)
        self._pc: RTCPeerConnection | None = None
        self._channel: RTCDataChannel | None = None
        self._channel_open = asyncio.Event()
        #: The connection ended (closed, failed, or the peer said `end`).
        self._gone = asyncio.Event()
        self._remote_track: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._out: Any = None  # the ReplyTrack
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._issued: str | None = None
        self._answer_body: dict[str, Any] = {}
        #: Why the conversation ended (logged once).
        self.reason = ""
        self.concealment = Concealment(RATE)

    @property
    def closed(self) -> bool:
        """Closed, and the peer connection with it (the lifecycle's last `close` waits)."""
        return self._closed and (self._closing is None or self._closing.done())

    # ------------------------------------------------------------------ handshake
    async def accept(self) -> Opening | None:
        """Parse the offer and make the answer (gathering our candidates)."""
        try:
            kinds = _parse_media_kinds(self._offer)
        except ValueError as exc:
            return self._reject(400, "invalid_sdp", str(exc))
        if "audio" not in kinds or "application" not in kinds:
            return self._reject(
                400, "invalid_sdp", "the offer needs an audio track and a data channel"
            )
        from aiortc import (
            RTCConfiguration,
            RTCIceServer,
            RTCPeerConnection,
            RTCSessionDescription,
        )

        servers = [
            RTCIceServer(s["urls"], s.get("username"), s.get("credential"))
            for s in self._ice_servers
        ]
        # An empty list, not None: aiortc would otherwise ask a public STUN server.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._pc = pc
        self._out = reply_track_class()()
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(self._offer, "offer"))
            skip_lost_packets(pc)
            pc.addTrack(self._out)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises ValueError, KeyError, ... on odd SDP
            await self._close_pc()
            return self._reject(400, "invalid_sdp", f"the offer cannot be answered: {exc}")
        local = pc.localDescription
        self._answer_body = {
            "type": local.type,
            "sdp": local.sdp,
            "session_id": self.session_id,
            "ice_servers": self._ice_servers,
        }
        return Opening(self.session_id, self._config, credential=self._credential)

    def _reject(self, status: int, code: str, message: str) -> None:
        log.warning("webrtc offer rejected: %s", message, extra={"session_id": self.session_id})
        self._closed = True
        self._settle(status, {"error": {"code": code, "message": message}})
        return None

    def _settle(self, status: int, body: dict[str, Any]) -> None:
        if not self.answer.done():
            self.answer.set_result((status, body))

    def served(self, task: asyncio.Task[None]) -> None:
        """The lifecycle is done with this transport: the request must not wait on."""
        self._settle(500, {"error": {"code": "internal", "message": "session not set up"}})

    async def refuse(self, refusal: Refusal) -> None:
        status = _HTTP_STATUS.get(refusal.code, 503)
        message = refusal.reason
        if refusal.code == CLOSE_UNAVAILABLE:
            message = f"not accepting new sessions: {refusal.reason}"
        self._settle(status, {"error": {"code": refusal.error, "message": message}})
        await self.close(refusal.code, refusal.reason)

    async def opened(self, session: Session, admission: Admission) -> None:
        self._issued = admission.issued_token
        self.learner_id = admission.learner_id
        self._settle(200, self._answer_body)
        log.info("webrtc session answered", extra={"session_id": session.id})

    # ----------------------------------------------------------------- aiortc events
    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self._channel is not None:
            channel.close()  # one control channel per connection
            return
        self._channel = channel
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._end("data channel closed"))
        if channel.readyState == "open":
            self._channel_open.set()
        else:
            channel.on("open", self._channel_open.set)

    def _on_message(self, message: str | bytes) -> None:
        self.traffic.rx += 1
        if isinstance(message, bytes):
            message = "\0binary"  # answered with an error by the receive loop
        self._inbox.put_nowait(message)

    def _on_track(self, track: Any) -> None:
        if track.kind == "audio" and not self._remote_track.done():
            self._remote_track.set_result(track)

    def _on_state(self) -> None:
        pc = self._pc
        if pc is not None and pc.connectionState in ("failed", "closed"):
            self._end(f"peer connection {pc.connectionState}")

    def _end(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason
        self._gone.set()
        self._inbox.put_nowait(None)

    # ----------------------------------------------------------------------- input
    async def receive(self, session: Session) -> None:
        try:
            try:
                async with asyncio.timeout(CHANNEL_OPEN_TIMEOUT_S):
                    await self._wait_open()
            except TimeoutError:
                self._end("data channel never opened")
            if self._channel_open.is_set() and not self._gone.is_set():
                await self._send_json(self.ready(session))
                async with asyncio.TaskGroup() as tasks:
                    audio = tasks.create_task(self._audio_in(session))
                    try:
                        await self._control_loop(session)
                    finally:
                        audio.cancel()
        finally:
            reason = self.reason or "closed"
            extra = {
                "session_id": session.id,
                "reason": reason,
                "received": self.traffic.rx,  # audio frames and messages
                "frames_concealed": self.concealment.filled,
            }
            log.info("webrtc session ended: %s", reason, extra=extra)

    async def _wait_open(self) -> None:
        """Until the data channel is open, or the connection ended before it did."""
        opened = asyncio.ensure_future(self._channel_open.wait())
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait((opened, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
            gone.cancel()

    async def _control_loop(self, session: Session) -> None:
        while (raw := await self._inbox.get()) is not None:
            verdict = self.budget.take(time.monotonic())
            if verdict is not Verdict.ALLOW:
                if verdict is Verdict.DROP_AND_TELL and self.limits is not None:
                    self.limits.on_limited("ws_messages")
                    await self._send_error("rate_limited", "too many control messages")
                continue
            try:
                if await self._handle(session, raw):
                    self._end("peer sent end")
                    return
            except SessionInputError as exc:
                await self._send_error(exc.code, str(exc))

    async def _handle(self, session: Session, raw: str) -> bool:
        if raw == "\0binary":
            raise SessionInputError("invalid_message", "audio goes over the audio track")
        if len(raw) > MAX_MESSAGE_CHARS:
            raise SessionInputError("invalid_message", "message too large")
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):
            raise SessionInputError("invalid_json", "messages must be JSON objects") from None
        if not isinstance(message, dict):
            raise SessionInputError("invalid_json", "messages must be JSON objects")
        kind = message.get("type")
        if kind == "ping":
            await self._send_json({"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "start":
            # Opus fixes the rates: only the mode and `tts` can change. The server's own
            # track ducks, pauses and resumes (protocol 1.1), whatever the client is.
            fixed = {**message, "sample_rate": RATE, "output_sample_rate": RATE, "revision": 1}
            session.configure(_start_config(session, fixed))
            await self._send_json(self.ready(session))
        elif kind == "talk_start":
            session.talk_start()
        elif kind == "talk_end":
            session.talk_end()
        elif kind == "text":
            await typed_turn(session, message, self.limits, self.learner_id)
        elif kind == "interrupt":
            session.interrupt()
        elif kind == "end":
            await self._send_json(await goodbye(session))
            await self._drain()  # then the peer connection closes: let the summary out first
            return True
        else:
            raise SessionInputError("unknown_type", f"unknown message type {kind!r}")
        return False

    async def _audio_in(self, session: Session) -> None:
        """The peer's audio, 20 ms frames at 48 kHz mono, into the session."""
        from aiortc.mediastreams import MediaStreamError

        track = await self._remote_track
        feed_audio = session.feed_audio
        traffic = self.traffic
        resampler: StreamResampler | None = None
        conceal = self.concealment
        try:
            while True:
                frame = await track.recv()
                traffic.rx += 1
                pcm = mono_s16(frame)
                if frame.sample_rate != RATE:
                    if resampler is None or resampler.src_rate != frame.sample_rate:
                        resampler = StreamResampler(frame.sample_rate, RATE)
                    pcm = resampler.process(pcm)
                for filler in conceal.before(frame.pts, frame.samples, pcm):
                    feed_audio(filler)
                feed_audio(pcm)
        except MediaStreamError:
            self._end("audio track ended")

    def ready(self, session: Session) -> dict[str, Any]:
        message = _ready_fields(session.id, session.config)
        message["transport"] = "webrtc"
        if self._issued:
            message["learner_token"], self._issued = self._issued, None
        return message

    # ---------------------------------------------------------------------- output
    async def send(self, event: Event) -> None:
        if type(event) is AudioFrame:
            self._out.play(event.turn_id, event.pcm)
            return
        out = self._out
        if out is not None:
            kind = type(event)
            if kind is Interrupted:
                assert isinstance(event, Interrupted)
                out.drop(event.turn_id)
            elif kind is Duck:
                assert isinstance(event, Duck)
                out.duck(event.turn_id, event.gain_db)
            elif kind is Pause:
                assert isinstance(event, Pause)
                out.pause(event.turn_id)
            elif kind is Resume:
                out.resume()
        await self._send_json(event.to_dict())

    async def _send_json(self, message: dict[str, Any]) -> None:
        if not self._channel_open.is_set():
            await self._channel_open.wait()
        channel = self._channel
        if self._closed or channel is None or channel.readyState != "open":
            raise ConnectionResetError("the data channel is closed")
        if channel.bufferedAmount > MAX_BUFFERED_BYTES:
            raise ConnectionResetError("the peer is not reading its data channel")
        channel.send(json.dumps(message))
        self.traffic.tx += 1

    async def _drain(self, timeout_s: float = 1.0) -> None:
        channel = self._channel
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while channel is not None and channel.bufferedAmount > 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)

    async def _send_error(self, code: str, message: str) -> None:
        await self._send_json({"type": "error", "code": code, "message": message})

    # --------------------------------------------------------------------- closing
    async def ping(self) -> None:
        with contextlib.suppress(ConnectionError):
            if self._channel_open.is_set():
                await self._send_json({"type": "ping"})

    async def close(self, code: int, reason: str) -> None:
        first = not self._closed
        self._closed = True
        if first and reason:
            self._end(reason)
        self._gone.set()
        channel = self._channel
        if first and code != 1000 and channel is not None and channel.readyState == "open":
            # What a WebSocket's close frame would say (docs/protocol.md's close codes).
            with contextlib.suppress(Exception):
                channel.send(json.dumps({"type": "close", "code": code, "reason": reason}))
        self._inbox.put_nowait(None)
        await self._close_pc()

    async def _close_pc(self) -> None:
        """Close the peer connection in a task of its own: a caller that gives up waiting
        (the watchdog's close has a deadline) must not leave it half closed, its ICE, DTLS
        and RTP tasks running."""
        pc, self._pc = self._pc, None
        if pc is not None:
            self._closing = asyncio.ensure_future(_close_peer_connection(pc, self.session_id))
        if self._closing is not None:
            await asyncio.shield(self._closing)

    def abort(self) -> None:
        """Nothing to drop without a goodbye: ending the receive loop closes the peer
        connection (the lifecycle's `close` follows)."""
        self._end("aborted")


async def _close_peer_connection(pc: RTCPeerConnection, session_id: str) -> None:
    started = time.monotonic()
    try:
        async with asyncio.timeout(10.0):
            await pc.close()
    except Exception:
        log.exception("webrtc: closing the peer connection failed")
    log.debug(
        "webrtc peer connection closed",
        extra={"session_id": session_id, "close_ms": round((time.monotonic() - started) * 1000)},
    )
