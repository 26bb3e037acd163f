"""Deepgram live transcription over its WebSocket (`listen.v1.connect`), one connection
per conversation.

Audio goes out as linear16 at 16 kHz as it is spoken; interim results become interim
transcripts. At the end of a turn we send `Finalize`, which makes Deepgram flush what it
holds at once: the final transcript is every `is_final` result of the utterance up to the
one that answers the Finalize (`from_finalize`), so we never wait for Deepgram's own
endpointing. During silence a `KeepAlive` goes out every few seconds (Deepgram closes a
socket that hears nothing for 10 s).

If the socket drops, the stream reconnects and replays the audio of the utterance in
progress (and of one awaiting its Finalize answer), so no words are lost; results already
received for that audio are forgotten because the replay produces them again. After
`reconnect_attempts` failed tries within one utterance the stream gives up and
`finalize` raises, and the provider chain replays the utterance into the next provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines import resilience as rz
from pipelines.provider_spec import ProviderSpec, Setting
from pipelines.providers import STT_SAMPLE_RATE, ProviderError
from pipelines.vendors import DEEPGRAM

if TYPE_CHECKING:  # the SDK itself is imported only when a provider is built
    from deepgram import AsyncDeepgramClient
    from deepgram.environment import DeepgramClientEnvironment

log = logging.getLogger(__name__)

DEFAULT_MODEL = "nova-3"

PROVIDER = ProviderSpec(
    name="deepgram",
    stage="stt",
    settings={
        **DEEPGRAM,
        "model": Setting("DEEPGRAM_STT_MODEL", "Deepgram live model.", default=DEFAULT_MODEL),
    },
    build=lambda v, ctx: DeepgramSTT(
        **v, connect_timeout=ctx.cfg.connect_timeout, finalize_timeout=ctx.cfg.first_byte_timeout
    ),
)

_FINALIZE = "Finalize"
_CLOSE = "CloseStream"
#: Items (frames or control messages) waiting for the socket: ~20 s of 20 ms frames.
_QUEUE_ITEMS = 1000
#: A connection that lived this long was healthy: its loss starts a new count of retries.
_HEALTHY_SECONDS = 10.0
#: Audio kept for replay: the session ends utterances long before this.
_MAX_REPLAY_BYTES = 120 * STT_SAMPLE_RATE * 2


def environment_for(base_url: str) -> DeepgramClientEnvironment:
    """Production, or every Deepgram endpoint on `base_url` (a proxy or a test server)."""
    from deepgram.environment import DeepgramClientEnvironment

    if not base_url:
        return DeepgramClientEnvironment.PRODUCTION
    base = base_url.rstrip("/")
    ws = "ws" + base[4:] if base.startswith("http") else base
    return DeepgramClientEnvironment(base=base, production=ws, agent=ws, agent_rest=base)


def fast_headers(client: AsyncDeepgramClient) -> AsyncDeepgramClient:
    """The SDK rebuilds its request headers for every call, looking its own version up in
    the installed package metadata (about 2 ms each time). They never change for one
    client, so build them once."""
    wrapper = getattr(client, "_client_wrapper", None)
    build = getattr(wrapper, "get_headers", None)
    if build is not None:
        headers = build()
        wrapper.get_headers = lambda: dict(headers)  # type: ignore[union-attr]
    return client


class DeepgramSTT:
    name = "deepgram"

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str = "",
        language: str = "en",
        endpointing_ms: int = 300,
        connect_timeout: float = 1.5,
        finalize_timeout: float = 2.5,
        keepalive_s: float = 3.0,
        send_timeout: float = 5.0,
        reconnect_attempts: int = 2,
    ) -> None:
        self.model = model
        self.language = language
        self.endpointing_ms = endpointing_ms
        self.connect_timeout = connect_timeout
        self.finalize_timeout = finalize_timeout
        self.keepalive_s = keepalive_s
        self.send_timeout = send_timeout
        self.reconnect_attempts = reconnect_attempts
        #: Told about faults the stream recovered from by itself (set by the chain).
        self.on_fault: Callable[[str, str], None] | None = None
        from deepgram import AsyncDeepgramClient

        self._client = fast_headers(
            AsyncDeepgramClient(api_key=api_key, environment=environment_for(base_url))
        )
        # The websockets client logs request headers (the key among them) at debug level.
        rz.install_redaction(("websockets.client", "websockets"), [api_key])

    def connect(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._client.listen.v1.connect(
            model=self.model,
            language=self.language,
            encoding="linear16",
            sample_rate=STT_SAMPLE_RATE,
            channels=1,
            interim_results="true",
            punctuate="true",
            smart_format="true",
            endpointing=self.endpointing_ms,
        )

    async def open(self, on_interim: Callable[[str], None]) -> DeepgramStream:
        stream = DeepgramStream(self, on_interim)
        await stream.start()
        return stream


@dataclass(slots=True)
class _Pending:
    """A Finalize sent and not answered yet: the audio it covers, and who waits for it
    (None for a discarded utterance whose results are thrown away)."""

    audio: bytes
    answer: asyncio.Future[str] | None


def _classify(name: str, exc: BaseException) -> ProviderError:
    """Like `classify_exception`, and a refused handshake's retry-after: the SDK's ApiError
    carries the request's headers, the handshake response hides in its `__context__`."""
    err = rz.classify_exception(name, exc)
    if err.kind == rz.RATE_LIMITED and getattr(err, "retry_after", None) is None:
        ctx = exc.__context__
        headers = getattr(ctx, "headers", None) or getattr(
            getattr(ctx, "response", None), "headers", None
        )
        err.retry_after = rz.retry_after_of(headers)  # type: ignore[attr-defined]
    return err


class DeepgramStream:
    def __init__(self, owner: DeepgramSTT, on_interim: Callable[[str], None]) -> None:
        self._owner = owner
        self._on_interim = on_interim
        self._queue: asyncio.Queue[bytes | str] = asyncio.Queue(maxsize=_QUEUE_ITEMS)
        self._utt = bytearray()
        self._waiting: deque[_Pending] = deque()
        self._finals: list[str] = []
        self._reconnects = 0
        self._broken: ProviderError | None = None
        self._closing = False
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._overflow_logged = False

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.get_running_loop().create_task(self._supervise(ready))
        try:
            await ready
        except BaseException:
            self._closing = True
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            raise

    async def aclose(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._connected:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_CLOSE)
        task = self._task
        if task is not None:
            # Deepgram answers CloseStream with Metadata and closes; don't wait long.
            with contextlib.suppress(BaseException):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(task)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._fail(rz.fault(self._owner.name, "closed", "stream closed"))

    # ------------------------------------------------------------------ audio path
    def push(self, frame: bytes) -> None:
        if self._closing:
            return
        if len(self._utt) < _MAX_REPLAY_BYTES:
            self._utt += frame
        if self._broken is not None or not self._connected:
            return  # a reconnect replays the utterance
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            if not self._overflow_logged:
                self._overflow_logged = True
                log.warning("deepgram send queue full; audio kept for replay only")

    async def finalize(self) -> str:
        if self._broken is not None:
            raise self._broken
        audio, self._utt = bytes(self._utt), bytearray()
        if not audio:
            text, self._finals = " ".join(self._finals), []
            return text
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(audio, answer))
        if self._connected:
            try:
                self._queue.put_nowait(_FINALIZE)
            except asyncio.QueueFull:
                raise rz.fault(self._owner.name, rz.TIMEOUT, "send queue full") from None
        async with asyncio.timeout(self._owner.finalize_timeout):
            text = await answer
        self._reconnects = 0
        return text

    def discard(self) -> None:
        audio, self._utt = bytes(self._utt), bytearray()
        if audio and self._connected and self._broken is None:
            # Flush what Deepgram holds of it and drop the answer, so that its words
            # do not leak into the next utterance.
            self._waiting.append(_Pending(b"", None))
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_FINALIZE)
        elif not self._waiting:
            self._finals = []

    # ------------------------------------------------------------------ results
    def _on_message(self, message: Any) -> None:
        kind = getattr(message, "type", None)
        if kind == "Results":
            self._on_results(message)
        elif kind == "Error":
            raise rz.fault(self._owner.name, rz.SERVER, "error message")

    def _on_results(self, message: Any) -> None:
        alternatives = message.channel.alternatives
        text = (alternatives[0].transcript or "").strip() if alternatives else ""
        if not message.is_final:
            if text and not self._closing:
                self._on_interim(" ".join([*self._finals, text]))
            return
        if text:
            self._finals.append(text)
        if message.from_finalize and self._waiting:
            pending = self._waiting.popleft()
            final, self._finals = " ".join(self._finals), []
            if pending.answer is not None and not pending.answer.done():
                pending.answer.set_result(final)
        elif text and not self._closing:
            self._on_interim(" ".join(self._finals))

    # ------------------------------------------------------------------ connection
    async def _supervise(self, ready: asyncio.Future[None]) -> None:
        name = self._owner.name
        while not self._closing:
            began = time.monotonic()
            try:
                await self._session(ready)
                err = rz.fault(name, rz.DROPPED, "socket closed by the provider")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                err = _classify(name, exc)
            finally:
                self._connected = False
            if not ready.done():
                ready.set_exception(err)
                return
            if self._closing:
                return
            if time.monotonic() - began >= _HEALTHY_SECONDS:
                self._reconnects = 0  # it had been fine for a while: a new incident
            if err.permanent or self._reconnects >= self._owner.reconnect_attempts:
                self._fail(err)
                return
            self._reconnects += 1
            seconds = (len(self._utt) + sum(len(p.audio) for p in self._waiting)) / 32000
            log.warning(
                "deepgram stream lost (%s); reconnecting and replaying %.1f s of audio",
                err.kind, seconds, extra={"provider": name, "fault": err.kind},
            )  # fmt: skip
            if self._owner.on_fault is not None:
                self._owner.on_fault(name, err.kind)
            await asyncio.sleep(0.05 * self._reconnects)

    async def _session(self, ready: asyncio.Future[None]) -> None:
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(self._owner.connect_timeout):
                socket = await stack.enter_async_context(self._owner.connect())
            self._restore()
            self._connected = True
            if not ready.done():
                ready.set_result(None)
            tasks = [
                asyncio.create_task(self._send_loop(socket)),
                asyncio.create_task(self._receive_loop(socket)),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]

    def _restore(self) -> None:
        """After (re)connecting: queue the audio the provider must hear again."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._finals = []
        self._waiting = deque(
            p for p in self._waiting if p.answer is not None and not p.answer.done()
        )
        for pending in self._waiting:
            self._queue.put_nowait(pending.audio)
            self._queue.put_nowait(_FINALIZE)
        if self._utt:
            self._queue.put_nowait(bytes(self._utt))

    async def _send_loop(self, socket: Any) -> None:
        keepalive = self._owner.keepalive_s
        while True:
            try:
                async with asyncio.timeout(keepalive):
                    item = await self._queue.get()
            except TimeoutError:
                item = "KeepAlive"
            async with asyncio.timeout(self._owner.send_timeout):
                if isinstance(item, bytes):
                    await socket.send_media(item)
                elif item == _FINALIZE:
                    await socket.send_finalize()
                elif item == _CLOSE:
                    await socket.send_close_stream()
                else:
                    await socket.send_keep_alive()

    async def _receive_loop(self, socket: Any) -> None:
        async for message in socket:
            self._on_message(message)

    def _fail(self, err: ProviderError) -> None:
        self._broken = self._broken or err
        while self._waiting:
            pending = self._waiting.popleft()
            if pending.answer is not None and not pending.answer.done():
                pending.answer.set_exception(err)
                pending.answer.exception()  # whoever awaits still gets it; no GC warning
