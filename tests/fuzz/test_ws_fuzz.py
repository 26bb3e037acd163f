"""The quick WebSocket fuzz run of `make test` (seeded, bounded): random walks over
protocol v1 and Twilio Media Streams against the real app, two sessions at a time; every
bad input gets its documented answer, no session hears another, and once every connection
is closed no task, file descriptor or memory is left behind (the long run is `make fuzz`,
docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.fuzz_ws import campaign

WALKS = 200
STEPS = 60


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_random_walks_get_documented_answers_and_leave_nothing(tmp_path: Path) -> None:
    result = await campaign(tmp_path, walks=WALKS, steps=STEPS, seed=20261129)
    assert not result.failures, "\n".join(result.failures[:10])
    assert not result.logged_errors, result.logged_errors
    assert result.walks >= WALKS - 1 and result.steps > WALKS * 10, result.to_dict()
    assert result.browser_walks and result.phone_walks and result.refused_streams
    # Every documented error code for bad input was provoked and checked.
    assert set(result.errors_checked) >= {
        "invalid_json",
        "unknown_type",
        "invalid_message",
        "invalid_audio",
        "audio_too_large",
        "text_too_long",
    }, result.errors_checked
    assert result.ignored_checked > 0 and result.marked_events > 0, result.to_dict()
    # Nothing left behind: no more tasks than before (one an earlier test left may end now).
    assert result.tasks_after <= result.tasks_before, result.to_dict()
    assert result.fds_after <= result.fds_before, result.to_dict()
    # What stays is data the server keeps by design (each session id's last ten exchanges,
    # up to 4000 characters a turn, its captures' search index): bounded, not per walk.
    assert result.traced_growth_bytes < 512 * 1024 + 2048 * WALKS, result.to_dict()
