"""The speech-to-text side of the provider chain: one STT stream over a list of providers.

Streaming recognisers (Deepgram) hear the audio as it is spoken, so a failure usually
shows at the end of the utterance, when the final transcript does not come. The chain
therefore keeps the audio of the current utterance (bounded) and, when the active
provider fails, opens the next one, replays the utterance into it and asks it for the
final transcript, all within the same turn. Between utterances it goes back to the most
preferred provider whose breaker lets it through, so a recovered provider is used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines import resilience as rz
from pipelines.chain import LAST_RESORT_FACTOR
from pipelines.providers import STT_SAMPLE_RATE

if TYPE_CHECKING:
    from pipelines.chain import Member, STTChain

log = logging.getLogger(__name__)

#: Longest utterance kept for replay into a fallback (the session ends turns sooner).
MAX_REPLAY_SECONDS = 120


@dataclass(slots=True, eq=False)
class _Active:
    member: Member
    stream: Any


class ChainSTTStream:
    def __init__(self, chain: STTChain, on_interim: Callable[[str], None]) -> None:
        self._chain = chain
        self._on_interim = on_interim
        self._active: _Active | None = None
        self._opening: asyncio.Task[bool] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._utt = bytearray()
        self._limit = MAX_REPLAY_SECONDS * STT_SAMPLE_RATE * 2
        self._closed = False
        self._finalizing = False
        self._unfed = False

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Open the first usable provider. Never raises on provider faults: a session
        must start even if every provider is down (the next utterance tries again)."""
        await self._activate(set())

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
            self._opening = asyncio.get_running_loop().create_task(self._activate(set()))
            self._opening.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task[bool]) -> None:
        if self._opening is task:
            self._opening = None

    def discard(self) -> None:
        self._utt = bytearray()
        if self._active is not None:
            self._active.stream.discard()
            self._return_to_preferred()

    def speculate(self) -> None:
        fn = getattr(self._active.stream, "speculate", None) if self._active else None
        if fn is not None:
            fn()

    def unspeculate(self) -> None:
        fn = getattr(self._active.stream, "unspeculate", None) if self._active else None
        if fn is not None:
            fn()

    async def finalize(self) -> str:
        chain = self._chain
        if self._opening is not None:
            with contextlib.suppress(Exception):
                await self._opening
        # Audio pushed from now on belongs to the next utterance.
        utterance, self._utt = bytes(self._utt), bytearray()
        if not utterance and self._active is None:
            return ""
        tried: set[Member] = set()
        self._finalizing = True
        try:
            while True:
                active = self._active
                if active is None:
                    if not await self._activate(tried, utterance):
                        break
                    active = self._active
                    assert active is not None
                timeout = chain.policy.finalize_timeout
                if self._is_last(active.member, tried):
                    timeout *= LAST_RESORT_FACTOR
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(timeout):
                        text = await active.stream.finalize()
                except asyncio.CancelledError:
                    active.member.breaker.release()
                    raise
                except Exception as exc:
                    chain.failed(active.member, exc)
                    tried.add(active.member)
                    self._drop_active()
                    self._unfed = bool(self._utt)
                    continue
                active.member.breaker.record_success()
                chain.first_output(active.member, started)
                self._return_to_preferred()
                return str(text)
        finally:
            self._finalizing = False
            self._feed_next_utterance()
        log.error("every stt provider failed for an utterance", extra={"stage": chain.stage})
        raise rz.fault("stt", "unavailable", "no speech-to-text provider answered")

    def _feed_next_utterance(self) -> None:
        """Audio of the next utterance that arrived while no provider was active."""
        if not self._unfed or self._closed:
            return
        self._unfed = False
        if self._active is not None:
            self._active.stream.push(bytes(self._utt))
        elif self._utt and self._opening is None:
            self._opening = asyncio.get_running_loop().create_task(self._activate(set()))
            self._opening.add_done_callback(self._opened)

    # ------------------------------------------------------------------ switching
    async def _activate(self, exclude: set[Member], replay: bytes | None = None) -> bool:
        """Open the first usable provider not in `exclude` and replay `replay` (default:
        the utterance so far) into it. Reports the fallback from the last one that failed."""
        chain = self._chain
        previous = next((m for m in reversed(chain.members) if m in exclude), None)
        for member in chain.members:
            if member in exclude or not member.breaker.allow():
                continue
            if previous is not None:
                chain.fell_back(previous, member)
            holder: list[_Active] = []
            try:
                async with asyncio.timeout(chain.policy.open_timeout):
                    stream = await member.provider.open(self._interim_for(holder))
            except asyncio.CancelledError:
                member.breaker.release()
                raise
            except Exception as exc:
                chain.failed(member, exc)
                exclude.add(member)
                previous = member
                continue
            if self._closed:
                await _close_quietly(stream)
                return False
            active = _Active(member, stream)
            holder.append(active)
            self._active = active
            audio = bytes(self._utt) if replay is None else replay
            if audio:
                stream.push(audio)
            return True
        return False

    def _interim_for(self, holder: list[_Active]) -> Callable[[str], None]:
        """Interims reach the session only from the provider that is active now."""

        def on_interim(text: str) -> None:
            if holder and self._active is holder[0] and not self._closed:
                self._on_interim(text)

        return on_interim

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
        for member in self._chain.members:
            if member is active.member:
                return
            if member.breaker.state != "open":
                self._drop_active()
                return

    def _is_last(self, member: Member, tried: set[Member]) -> bool:
        members = self._chain.members
        later = members[members.index(member) + 1 :]
        return all(m in tried or m.breaker.state == "open" for m in later)


async def _close_quietly(stream: Any) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await stream.aclose()
