"""The process-wide voice engine: providers, the model executor and live sessions.

Route handlers and transports get it from `app[ENGINE]`; it turns settings into
`SessionConfig`s and builds `Session`s wired to the process's storage and observer. Live
conversations go through `engine.lifecycle` (server/lifecycle.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from audio.vad import EndpointerConfig
from pipelines.cloud import ProviderConfig
from pipelines.executor import ModelExecutor
from pipelines.outbox import Outbox
from pipelines.ports import CaptureSink, NullObserver, SessionObserver, SessionStore
from pipelines.registry import Providers, ProviderSettings, build_providers
from pipelines.session import Session, SessionConfig
from pipelines.turns import TurnConfig
from server.lifecycle import Authority, ConnectionLimits, Gate, Lifecycle, SessionWatcher
from server.settings import Settings

log = logging.getLogger(__name__)


def provider_settings(s: Settings) -> ProviderSettings:
    """The registry's view of the settings: the chains, the providers' declared settings,
    and the timeouts and breakers every cloud provider shares."""
    return ProviderSettings(
        stt_chain=s.stt_providers,
        llm_chain=s.llm_providers,
        tts_chain=s.tts_providers,
        values=s.providers,
        interim_interval_s=s.interim_interval_ms / 1000,
        cloud=ProviderConfig(
            connect_timeout=s.provider_connect_timeout_ms / 1000,
            first_byte_timeout=s.provider_first_byte_timeout_ms / 1000,
            retries=s.provider_retries,
            breaker_failures=s.breaker_failures,
            breaker_cooldown=s.breaker_cooldown_s,
            context_max_chars=s.llm_context_max_chars,
        ),
    )


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: SessionStore,
        captures: CaptureSink,
        observer: SessionObserver | None = None,
        providers: Providers | None = None,
        *,
        gate: Gate | None = None,
        watcher: SessionWatcher | None = None,
        authority: Authority | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.captures = captures
        self.observer = observer or NullObserver()
        self.executor = ModelExecutor(settings.executor_workers)
        self.executor.on_work = self.observer.work_time
        self.providers = providers or build_providers(
            provider_settings(settings), self.executor, self.observer
        )
        self.lifecycle = Lifecycle(
            self.new_session, settings.max_sessions, gate, watcher, authority, limits
        )
        self.ready = asyncio.Event()
        self._warm: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Load embedded models in the background so the server answers at once."""
        self._warm = asyncio.get_running_loop().create_task(self._warm_up())

    async def _warm_up(self) -> None:
        try:
            await self.providers.warm_up()
            log.info("models ready")
        except Exception:
            log.exception("model warm-up failed; models load on first use")
        finally:
            self.ready.set()

    async def close(self) -> None:
        if self._warm is not None:
            self._warm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm
        with contextlib.suppress(Exception):  # cloud clients' connection pools
            await self.providers.aclose()
        self.executor.shutdown()

    def session_config(self, **overrides: Any) -> SessionConfig:
        s = self.settings
        endpointer = EndpointerConfig(
            aggressiveness=s.vad_aggressiveness,
            start_ms=s.speech_start_ms,
            end_silence_ms=s.endpoint_silence_ms,
            preroll_ms=s.preroll_ms,
            max_utterance_ms=s.max_utterance_seconds * 1000,
        )
        turns = TurnConfig(
            end_silence_ms=s.endpoint_silence_ms,
            finished_silence_ms=s.end_silence_finished_ms,
            unfinished_silence_ms=s.end_silence_unfinished_ms,
            speculative_reply=s.speculative_reply,
            barge_in_min_speech_ms=s.barge_in_min_speech_ms,
            barge_in_confirm_ms=s.barge_in_confirm_ms,
            barge_in_min_words=s.barge_in_min_words,
            barge_in_pause=s.barge_in_pause,
            barge_in_pause_ms=s.barge_in_pause_ms,
            barge_in_duck=s.barge_in_duck,
            duck_release_ms=s.duck_release_ms,
            **({"backchannels": frozenset(s.backchannel_words)} if s.backchannel_words else {}),
        )
        overrides.setdefault("speculate_after_ms", s.speculate_after_ms)
        overrides.setdefault("echo_vad_aggressiveness", s.echo_vad_aggressiveness)
        overrides.setdefault("echo_gate_dbfs", s.echo_gate_dbfs)
        overrides.setdefault("audio_max_speed", s.audio_max_speed)
        overrides.setdefault("audio_burst_s", s.audio_burst_seconds)
        overrides.setdefault("duck_db", s.barge_in_duck_db)
        overrides.setdefault("barge_in_interim_s", s.barge_in_interim_ms / 1000)
        return SessionConfig(endpointer=endpointer, turns=turns, **overrides)

    def new_session(
        self, session_id: str, outbox: Outbox, overrides: dict[str, Any], learner_id: str
    ) -> Session:
        """A Session with the server's defaults and `overrides` (SessionConfig fields)."""
        p = self.providers
        return Session(
            session_id,
            stt=p.stt,
            llm=p.llm,
            tts=p.tts,
            store=self.store,
            captures=self.captures,
            outbox=outbox,
            config=self.session_config(**overrides),
            observer=self.observer,
            learner_id=learner_id,
        )
