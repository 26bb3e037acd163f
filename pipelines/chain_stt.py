"""The speech-to-text side of the provider chain: one STT stream over a list of providers.

Streaming recognisers (Deepgram) hear the audio as it is spoken, so a failure usually
shows at the end of the utterance, when the final transcript does not come. The chain
therefore keeps the audio of the current utterance (bounded) and, when the active
provider fails, opens the next one, replays the utterance into it and asks it for the
final transcript, all within the same turn. Between utterances it goes back to the most
preferred provider whose breaker lets it through, so a recovered provider is used again.

The walk over the providers (breakers, timeouts, fallback, reports) is the fallback
engine's (`pipelines.fallback`); this module keeps which provider is active and what
audio it has heard. An attempt for an utterance is: open the provider if it is not the
active one and replay the utterance into it, then finalize. A recogniser is not asked
twice for the same utterance: the caller has stopped speaking and is waiting, and the
next provider costs no more to try than a second replay into one that just failed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Any

from pipelines.chain_policy import ChainPolicy, Member
from pipelines.fallback import Abandoned, AllFailed, Fallback, Rules
from pipelines.providers import STT_SAMPLE_RATE

#: Longest utterance kept for replay into a fallback (the session ends turns sooner).
MAX_REPLAY_SECONDS = 120


@dataclass(slots=True, eq=False)
class _Active:
    member: Member
    stream: Any


@dataclass(frozen=True, slots=True)
class _Utterance:
    """One utterance's call; its output is the utterance's final transcript. `replay` is
    what a provider opened for it hears first (None: the utterance so far, as it is once
    the provider is open)."""

    owner: ChainSTTStream
    replay: bytes | None

    async def open(self, member: Member) -> AsyncGenerator[str, None]:
        return _final(await self.owner._reach(member, self.replay))


async def _final(stream: Any) -> AsyncGenerator[str, None]:
    yield str(await stream.finalize())


class ChainSTTStream:
    def __init__(
        self, fallback: Fallback, policy: ChainPolicy, on_interim: Callable[[str], None]
    ) -> None:
        self._fallback = fallback
        finalize = policy.finalize_timeout
        self._final_rules = Rules(policy.open_timeout, finalize, finalize, retries=0)
        #: Opening ahead of an utterance: the provider is judged by its transcript later.
        self._opening_rules = replace(self._final_rules, hold=True)
        self._on_interim = on_interim
        self._active: _Active | None = None
        self._opening: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._utt = bytearray()
        self._limit = MAX_REPLAY_SECONDS * STT_SAMPLE_RATE * 2
        self._closed = False
        self._finalizing = False
        self._unfed = False
        #: The provider that gave this stream's last final transcript ("" before one).
        self.provider = ""

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Open the first usable provider. Never raises on provider faults: a session
        must start even if every provider is down (the next utterance tries again)."""
        await self._activate()

    async def aclose(self) -> None:
        self._closed = True
        if self._opening is not None:
            self._opening.cancel()
            with contextlib.suppress(BaseException):
                await self._opening
        active, self._active = self._active, None
        if active is not None:
            await _close_quietly(active.stream)
        for task in list(self._closing):
            with contextlib.suppress(BaseException):
                await task

    # ------------------------------------------------------------------ audio path
    def push(self, frame: bytes) -> None:
        if self._closed:
            return
        if len(self._utt) < self._limit:
            self._utt += frame
        if self._active is not None:
            self._active.stream.push(frame)
        elif self._finalizing:
            self._unfed = True  # fed to whichever provider finalize ends up with
        elif self._opening is None:
            self._start_opening()

    def _start_opening(self) -> None:
        self._opening = asyncio.get_running_loop().create_task(self._activate())
        self._opening.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task[None]) -> None:
        if self._opening is task:
            self._opening = None

    def discard(self) -> None:
        self._utt = bytearray()
        if self._active is not None:
            self._active.stream.discard()
            self._return_to_preferred()

    @property
    def transcribes_pauses(self) -> bool | None:
        """The recogniser in use transcribes a pause when asked (`speculate`); one that
        streams its interims (Deepgram) does not need to be. None: no member is open
        (between utterances, after leaving a fallback): the next one to open decides."""
        if self._active is None:
            return None
        return hasattr(self._active.stream, "speculate")

    def speculate(self) -> None:
        fn = getattr(self._active.stream, "speculate", None) if self._active else None
        if fn is not None:
            fn()

    def unspeculate(self) -> None:
        fn = getattr(self._active.stream, "unspeculate", None) if self._active else None
        if fn is not None:
            fn()

    def hurry(self, interval: float) -> None:
        """Transcribe this utterance every `interval` s (a recogniser that streams its
        interims anyway ignores it)."""
        fn = getattr(self._active.stream, "hurry", None) if self._active else None
        if fn is not None:
            fn(interval)

    async def finalize(self) -> str:
        if self._opening is not None:
            with contextlib.suppress(Exception):
                await self._opening
        # Audio pushed from now on belongs to the next utterance.
        utterance, self._utt = bytes(self._utt), bytearray()
        if not utterance and self._active is None:
            return ""
        first = self._active.member if self._active is not None else None
        self._finalizing = True
        try:
            source = _Utterance(self, utterance)
            texts = [t async for t in self._fallback.run(source, self._final_rules, first=first)]
            if self._active is not None:
                self.provider = self._active.member.name
            self._return_to_preferred()
            return "".join(texts)
        except AllFailed:
            self._lose_active()
            raise
        except Abandoned:
            return ""  # closed meanwhile
        finally:
            self._finalizing = False
            self._feed_next_utterance()

    def _feed_next_utterance(self) -> None:
        """Audio of the next utterance that arrived while no provider was active."""
        if not self._unfed or self._closed:
            return
        self._unfed = False
        if self._active is not None:
            self._active.stream.push(bytes(self._utt))
        elif self._utt and self._opening is None:
            self._start_opening()

    # ------------------------------------------------------------------ switching
    async def _activate(self) -> None:
        """Open the first usable provider and replay the utterance so far into it; with
        none usable, stay without one (the next push or finalize tries again)."""
        with contextlib.suppress(AllFailed, Abandoned):
            async for _ in self._fallback.run(_Utterance(self, None), self._opening_rules):
                pass

    async def _reach(self, member: Member, replay: bytes | None) -> Any:
        """The stream of `member`: the active one, or `member` opened now in place of the
        active provider (which has just failed this utterance), with `replay` fed to it."""
        if self._active is not None:
            if self._active.member is member:
                return self._active.stream
            self._lose_active()
        holder: list[_Active] = []
        stream = await member.provider.open(self._interim_for(holder))
        if self._closed:
            await _close_quietly(stream)
            raise Abandoned
        active = _Active(member, stream)
        holder.append(active)
        self._active = active
        audio = bytes(self._utt) if replay is None else replay
        if audio:
            stream.push(audio)
        return stream

    def _interim_for(self, holder: list[_Active]) -> Callable[[str], None]:
        """Interims reach the session only from the provider that is active now."""

        def on_interim(text: str) -> None:
            if holder and self._active is holder[0] and not self._closed:
                self._on_interim(text)

        return on_interim

    def _lose_active(self) -> None:
        """The active provider failed: close it, and feed the audio of the next utterance
        it was hearing to whichever provider comes next."""
        self._drop_active()
        self._unfed = bool(self._utt)

    def _drop_active(self) -> None:
        active, self._active = self._active, None
        if active is not None:
            task = asyncio.get_running_loop().create_task(_close_quietly(active.stream))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _return_to_preferred(self) -> None:
        """Between utterances: leave a fallback once a preferred provider may be tried."""
        active = self._active
        if active is None:
            return
        for member in self._fallback.members:
            if member is active.member:
                return
            if member.breaker.state != "open":
                self._drop_active()
                return


async def _close_quietly(stream: Any) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await stream.aclose()
