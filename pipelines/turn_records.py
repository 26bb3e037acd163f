"""What each finished turn leaves behind: the exchange in the session context (or, if the
store fails, at least a capture), its stage latencies and, once the capture is handed
over, the times of all its stages (`TurnTrace`) for the observer.

Kept apart from the replies that produce the turns, so that remembering a turn has one
path whether the reply finished, was interrupted, or was cut off by a hang-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from pipelines.conversation import record_exchange
from pipelines.ports import Capture, CaptureSink, SessionObserver, SessionStore, TurnTrace

log = logging.getLogger(__name__)

#: Marks reported as stage latencies, in seconds after `speech_end` (the other marks of a
#: turn are for its trace only).
LATENCY_MARKS = ("stt_final", "llm_first_token", "first_audio")


class TurnRecords:
    def __init__(
        self,
        session_id: str,
        store: SessionStore,
        captures: CaptureSink,
        observer: SessionObserver,
        learner_id: str = "",
        *,
        clock: Callable[[], float] = time.monotonic,
        providers: Mapping[str, str] | None = None,
    ) -> None:
        self._session_id = session_id
        #: Whose words these are: every capture carries it (ownership, deletion).
        self.learner_id = learner_id
        self._store = store
        self._captures = captures
        self._observer = observer
        self._clock = clock
        self._providers: Mapping[str, str] = providers or {}
        #: Exchanges recorded so far (finished or interrupted).
        self.count = 0
        #: Seconds from the end of speech to each stage of the last completed turn.
        self.last_stages: dict[str, float] = {}

    async def record(
        self,
        turn_id: int,
        user: str,
        agent: str,
        *,
        interrupted: bool,
        mode: str,
        marks: dict[str, float],
        speculative: bool = False,
    ) -> None:
        """Remember the exchange (`agent` is what the listener heard of the reply), then
        report the turn's stage times (`marks`, completed here with the capture's)."""
        self.count += 1
        marks["capture_start"] = self._clock()
        meta = {"mode": mode, "turn_id": turn_id, "interrupted": interrupted}
        try:
            await record_exchange(
                self._store, self._captures, self._session_id, user, agent, meta, self.learner_id
            )
        except Exception:
            log.exception("session store append failed", extra={"session_id": self._session_id})
            capture = Capture(
                self._session_id, user, agent, time.time(), meta, learner_id=self.learner_id
            )
            self._captures.submit(capture)
        marks["capture_handoff"] = now = self._clock()
        self._observer.turn_finished(
            TurnTrace(
                self._session_id,
                turn_id,
                mode,
                dict(marks),
                time.time() - now,
                interrupted,
                speculative,
                self._providers,
            )
        )

    def report(self, marks: dict[str, float], mode: str) -> None:
        """Stage latencies of a completed reply, from its clock marks (`speech_end` = 0)."""
        end = marks["speech_end"]
        stages = {k: marks[k] - end for k in LATENCY_MARKS if k in marks}
        if "tts_request" in marks and "first_audio" in marks:
            stages["tts_first_audio"] = marks["first_audio"] - marks["tts_request"]
        self.last_stages = stages
        log.info(
            "turn stages",
            extra={
                "session_id": self._session_id,
                **{k: round(v * 1000) for k, v in stages.items()},
            },
        )
        self._observer.turn_completed(stages, mode)
