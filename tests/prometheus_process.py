"""Prometheus itself (Debian's binary) as a child process on loopback, for tests that check
the shipped alert rules against a real scrape of the server."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.promql import RULES
from tests.server_process import free_port

BINARY = Path("/usr/bin/prometheus")
JOB = "learning-voice-agent"  # the job name the rules and the runbook use


def require_prometheus() -> None:
    if not BINARY.exists():
        pytest.skip(
            f"!!! {BINARY} is MISSING: the Prometheus scrape test did NOT run. Install "
            "Debian's `prometheus` package (scripts/ensure-test-deps.sh does as root)."
        )


class PrometheusProcess:
    """Scrapes `targets` (host:port) every second and evaluates `rules` every second."""

    def __init__(self, tmp: Path, targets: list[str], rules: Path = RULES) -> None:
        self.port = free_port()
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.config = tmp / "prometheus.yml"
        self.log_path = tmp / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": targets}]},
            ],
        }
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> PrometheusProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                str(BINARY),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready in {timeout}s:\n{self.logs()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.proc = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant vector: [{"metric": {...}, "value": [ts, "1.5"]}, ...]."""
        data = self._get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def scalar(self, expr: str) -> float | None:
        """The value of a one-sample vector, or None when the vector is empty."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts: [{"labels", "annotations", "state", "value", ...}]."""
        return self._get("/api/v1/alerts")["alerts"]

    def targets(self) -> list[dict[str, Any]]:
        """Scrape targets with `health` and `lastError` (for failure messages)."""
        return [
            {k: t.get(k) for k in ("scrapeUrl", "health", "lastError")}
            for t in self._get("/api/v1/targets")["activeTargets"]
        ]

    def rule_health(self) -> dict[str, str]:
        """Alert name -> "ok" / "err" / "unknown" as Prometheus last evaluated it."""
        groups = self._get("/api/v1/rules", type="alert")["groups"]
        return {r["name"]: r["health"] for g in groups for r in g["rules"]}
