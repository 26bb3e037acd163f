"""Load test of the HTTP API with locust, with a pass/fail verdict against the runbook's
thresholds (p95 < 2000 ms, error rate < 0.1 %).

    ADMIN_API_KEY=... locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 \
        --headless -u 50 -r 10 -t 2m

Each simulated user is a learner: mostly typed conversation turns in their own session,
searches and stats, health checks like a load balancer's, and (when ADMIN_API_KEY is set)
an operator's admin reads. At the end the verdict is printed and the exit code is 1 when a
threshold is missed (override with LOCUST_P95_MS and LOCUST_MAX_ERROR_RATE). For the
voice WebSocket path use `python -m loadtest.voice_load`.
"""

from __future__ import annotations

import os
import random
import uuid

from locust import HttpUser, between, events, task

P95_LIMIT_MS = float(os.environ.get("LOCUST_P95_MS", "2000"))
MAX_ERROR_RATE = float(os.environ.get("LOCUST_MAX_ERROR_RATE", "0.001"))
ADMIN_KEY = os.environ.get("ADMIN_API_KEY", "")

TOPICS = (
    "I learned that spaced repetition beats cramming for long-term memory",
    "Photosynthesis turns light, water and carbon dioxide into sugar",
    "The mitochondria release energy from glucose",
    "Compound interest grows savings exponentially over time",
    "In Spanish, ser is for identity and estar is for states",
    "TCP retransmits lost segments and slows down when the network is congested",
)
QUERIES = ("spaced repetition", "energy", "interest", "spanish verbs", "network", "memory")


class Learner(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.session_id = f"locust-{uuid.uuid4().hex[:16]}"

    @task(5)
    def conversation(self) -> None:
        body = {"session_id": self.session_id, "text": random.choice(TOPICS)}
        with self.client.post("/api/conversation", json=body, catch_response=True) as r:
            if r.status_code != 200 or not r.json().get("agent_text"):
                r.failure(f"conversation: {r.status_code} {r.text[:200]}")

    @task(3)
    def search(self) -> None:
        body = {"query": random.choice(QUERIES), "limit": 10}
        with self.client.post("/api/search", json=body, catch_response=True) as r:
            if r.status_code != 200 or "results" not in r.json():
                r.failure(f"search: {r.status_code} {r.text[:200]}")

    @task(2)
    def stats(self) -> None:
        self.client.get("/api/stats")

    @task(2)
    def health(self) -> None:
        with self.client.get("/", catch_response=True) as r:
            if r.status_code != 200 or r.json().get("status") != "healthy":
                r.failure(f"health: {r.status_code} {r.text[:200]}")

    @task(1)
    def history(self) -> None:
        self.client.get(
            f"/api/sessions/{self.session_id}/history", name="/api/sessions/[id]/history"
        )

    @task(1)
    def admin(self) -> None:
        if not ADMIN_KEY:
            return
        headers = {"X-Admin-Key": ADMIN_KEY}
        self.client.get("/admin/api/metrics", headers=headers)
        self.client.get("/admin/api/health/detailed", headers=headers)


@events.quitting.add_listener
def verdict(environment, **_kw) -> None:
    """Print PASS/FAIL against the thresholds and set the exit code."""
    total = environment.stats.total
    if not total.num_requests:
        print("LOAD TEST FAIL: no requests were made")
        environment.process_exit_code = 1
        return
    p95 = total.get_response_time_percentile(0.95)
    error_rate = total.num_failures / total.num_requests
    ok_latency = p95 < P95_LIMIT_MS
    ok_errors = error_rate < MAX_ERROR_RATE
    print(
        f"LOAD TEST {'PASS' if ok_latency and ok_errors else 'FAIL'}: "
        f"{total.num_requests} requests, p95 {p95:.0f} ms (limit {P95_LIMIT_MS:.0f}), "
        f"errors {error_rate:.3%} (limit {MAX_ERROR_RATE:.1%}), "
        f"{total.total_rps:.1f} req/s"
    )
    for entry in sorted(environment.stats.entries.values(), key=lambda e: e.name):
        if entry.num_requests:
            print(
                f"  {entry.method:<5} {entry.name:<32} n={entry.num_requests:<6} "
                f"p95={entry.get_response_time_percentile(0.95):.0f} ms "
                f"failures={entry.num_failures}"
            )
    if not (ok_latency and ok_errors):
        environment.process_exit_code = 1
