"""The quick HTTP fuzz run of `make test`: the real server process against its own
OpenAPI description, seeded and bounded (the long run is `make fuzz`, docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.fuzz_http import fuzz_server, run, server_alive

CASES = 500
SECONDS = 45.0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_generated_requests_get_documented_answers_and_no_5xx(tmp_path: Path) -> None:
    with fuzz_server(tmp_path) as url:
        result = run(url, cases=CASES, seed=20261129, max_seconds=SECONDS)
        assert server_alive(url)
    report = [f"{f.operation} [{f.mode}] {f.status} {f.check}\n{f.curl}" for f in result.failures]
    assert not report, "\n\n".join(report[:10])
    assert result.server_errors == 0, result.by_status
    assert result.cases >= min(CASES, 150), result.to_dict()  # the bound is time, not luck
    # Every operation was reached, and the authorised paths answered 2xx too.
    assert result.by_status.get("200", 0) > 20, result.by_status
