"""The bounded structures behind the admin API: percentiles, windows, limits, labels."""

from __future__ import annotations

import random

import pytest

from admin.auth import FailureLimiter, keys_match
from admin.prom import LabelGuard
from admin.stats import HttpStats, LogHistogram, WindowedHistogram


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(q * len(ordered) + 0.999999) - 1)]


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_percentiles_within_relative_precision(q: float) -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-3.0, 1.2) for _ in range(20000)]  # ~50 ms median, long tail
    hist = LogHistogram()
    for v in values:
        hist.observe(v)
    got = hist.quantile(q)
    want = _exact(values, q)
    assert got is not None
    assert abs(got - want) / want < 0.03, (got, want)


def test_histogram_memory_does_not_grow() -> None:
    hist = LogHistogram()
    size = len(hist.counts)
    for i in range(100000):
        hist.observe(i * 1e-5)
    hist.observe(10_000.0)  # beyond the range: counted in the last bucket (~10 min)
    assert len(hist.counts) == size < 500
    assert hist.count == 100001
    assert hist.max == 10_000.0
    assert 550.0 < hist.quantile(1.0) < 650.0  # percentiles saturate at the range's top
    assert LogHistogram().quantile(0.5) is None


def test_window_forgets_old_observations() -> None:
    clock = Clock()
    win = WindowedHistogram(slot_seconds=60, slots=5, clock=clock)
    for _ in range(10):
        win.observe(1.0)
    clock.now += 200
    for _ in range(10):
        win.observe(0.01)
    recent = win.recent()
    assert recent.count == 20
    assert recent.quantile(0.99) == pytest.approx(1.0, rel=0.03)
    clock.now += 150  # the 1 s observations are now more than 5 minutes old
    win.observe(0.01)
    recent = win.recent()
    assert recent.count == 11
    assert recent.quantile(0.99) == pytest.approx(0.01, rel=0.03)
    assert win.total.count == 21
    assert len(win._ring) <= 5


def test_http_stats_series_are_capped() -> None:
    stats = HttpStats()
    stats.MAX_SERIES = 3
    for i in range(10):
        stats.record(f"/r{i}", "GET", 200, 0.01)
    routes = {row["route"] for row in stats.endpoints()}
    assert routes == {"/r0", "/r1", "/r2", "<other>"}
    assert stats.overall.requests == 10


def test_failure_limiter_counts_failures_in_a_window_then_blocks() -> None:
    clock = Clock()
    lim = FailureLimiter(max_failures=3, window_seconds=60, clock=clock)
    assert lim.fail("1.2.3.4") == 0
    clock.now += 61  # that failure left the window
    assert lim.fail("1.2.3.4") == 0
    clock.now += 10
    assert lim.fail("1.2.3.4") == 0
    clock.now += 10
    assert lim.fail("1.2.3.4") == 60  # the third in a minute: blocked for a window
    assert lim.retry_after("1.2.3.4") == 60
    assert lim.retry_after("5.6.7.8") == 0  # other clients are not affected
    clock.now += 59.5
    assert lim.retry_after("1.2.3.4") == 1
    clock.now += 0.5
    assert lim.retry_after("1.2.3.4") == 0


def test_failure_limiter_doubles_the_wait_for_a_client_that_goes_on() -> None:
    clock = Clock()
    lim = FailureLimiter(max_failures=2, window_seconds=10, max_backoff_seconds=35, clock=clock)
    waits = []
    for _ in range(4):
        lim.fail("a")
        waits.append(lim.fail("a"))
        assert lim.fail("a") == lim.retry_after("a")  # failing while blocked: same wait
        clock.now += waits[-1]
    assert waits == [10, 20, 35, 35]  # doubling, capped
    clock.now += 10.1  # a whole window without failing: the next block starts small again
    lim.fail("a")
    assert lim.fail("a") == 10


def test_failure_limiter_forgets_old_clients_first() -> None:
    lim = FailureLimiter(max_failures=1, window_seconds=60, max_clients=2, clock=Clock())
    lim.fail("a")
    lim.fail("b")
    lim.fail("c")
    assert lim.retry_after("a") == 0  # forgotten: the table stays bounded
    assert lim.retry_after("c") > 0


def test_keys_match() -> None:
    assert keys_match("secret-key", "secret-key")
    assert not keys_match("secret-key", "secret-kez")
    assert not keys_match("secret-key", None)
    assert not keys_match("", "")  # no key configured never matches
    assert not keys_match("secret-key", "sécret-key")


def test_label_guard_cleans_and_caps() -> None:
    guard = LabelGuard(cap=2)
    assert guard("provider", "Deep Gram!") == "deep_gram"
    assert guard("provider", "") == "unknown"
    assert guard("provider", "third") == "other"
    assert guard("provider", "deep gram") == "deep_gram"  # already seen
    assert guard("kind", "x" * 100) == "x" * 40
