"""Fleet-wide numbers for the admin API when several workers share a multiprocess dir.

The in-process statistics describe the one worker that happened to answer; with
`PROMETHEUS_MULTIPROC_DIR` set, this reads what every worker wrote there (the same data
`/metrics` exposes) and sums it, so the dashboard's rates do not jump when successive polls
reach different workers. Latency percentiles come from the summed histogram buckets by
linear interpolation inside a bucket (as Prometheus' `histogram_quantile` does), so they are
coarser than the per-process ones.
"""

from __future__ import annotations

import glob
import math
import os
import re
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as prom_mp

#: Routes of the monitoring surface, left out of request totals as in the overview.
MONITORING_ROUTES = ("/admin", "/metrics")
_LIVE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db$")


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """`buckets`: (upper bound, cumulative count) sorted by bound, ending with +Inf."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound  # beyond the last finite bucket: its bound is all we know
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return None  # pragma: no cover


def fleet_summary(path: str) -> dict[str, Any]:
    registry = CollectorRegistry()
    prom_mp.MultiProcessCollector(registry, path=path)
    requests = errors = turns = 0.0
    sessions = websockets = 0.0
    le: dict[float, float] = {}
    for metric in registry.collect():
        for s in metric.samples:
            route = s.labels.get("route", "")
            app_route = not route.startswith(MONITORING_ROUTES)
            if s.name == "lva_http_requests_total" and app_route:
                requests += s.value
                if s.labels.get("status", "").startswith("5"):
                    errors += s.value
            elif s.name == "lva_http_request_duration_seconds_bucket" and app_route:
                bound = float(s.labels["le"])
                le[bound] = le.get(bound, 0.0) + s.value
            elif s.name == "lva_voice_turns_total":
                turns += s.value
            elif s.name == "lva_voice_sessions":
                sessions += s.value
            elif s.name == "lva_websocket_sessions":
                websockets += s.value
    buckets = sorted(le.items())

    def ms(q: float) -> float | None:
        v = _quantile(q, buckets)
        return None if v is None else round(v * 1000.0, 2)

    live = {m.group(1) for f in glob.glob(os.path.join(path, "gauge_live*.db"))
            if (m := _LIVE_FILE.search(f))}  # fmt: skip
    return {
        "workers": len(live),
        "requests": {
            "total": int(requests),
            "errors_5xx": int(errors),
            "error_rate_5xx": round(errors / requests, 6) if requests else 0.0,
            "latency_ms": {"p50": ms(0.5), "p95": ms(0.95), "p99": ms(0.99)},
        },
        "sessions": {"active": int(sessions)},
        "websockets": {"active": int(websockets)},
        "voice": {"turns": int(turns)},
    }
