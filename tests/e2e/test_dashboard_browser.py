"""The admin dashboard in headless Chromium against a real server with live traffic: the
key is asked for once, kept in sessionStorage and sent as a header (never in a URL), and
the charts are drawn with real data."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.server_process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
KEY = "browser-admin-key-0123456789"
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "admin-dashboard.png"
CHART_IDS = ("c-rps", "c-err", "c-lat", "c-voice", "c-sessions", "c-cpu", "c-mem", "c-lag")


async def _conversation(server: ServerProcess, sid: str, turns: list[str]) -> None:
    """Typed turns with spoken replies, so every voice stage (first_audio too) is measured."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{server.ws}/ws/{sid}") as ws:
            await ws.send_json({"type": "start", "tts": True})
            for text in turns:
                await ws.send_json({"type": "text", "text": text})
                async with asyncio.timeout(60):
                    async for msg in ws:
                        if msg.type is aiohttp.WSMsgType.TEXT:
                            if json.loads(msg.data)["type"] == "audio_end":
                                break
            await asyncio.sleep(3)  # stay connected a while: the sessions chart shows it
            await ws.send_json({"type": "end"})
            async for _ in ws:
                pass


class Traffic(threading.Thread):
    """HTTP requests at a steady few per second until stopped."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop_event = threading.Event()
        self.sent = 0

    def run(self) -> None:
        paths = ["/", "/api/stats", "/health/ready", "/api/no-such-route"]
        while not self.stop_event.wait(0.15):
            path = paths[self.sent % len(paths)]
            try:
                urllib.request.urlopen(self.server.http + path, timeout=5).read()
            except Exception:
                pass  # 404s are part of the traffic
            self.sent += 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    proc = ServerProcess(
        tmp_path_factory.mktemp("dash"), env={"ADMIN_API_KEY": KEY, "REDIS_URL": ""}
    ).start()
    yield proc
    proc.stop()


def test_dashboard_draws_live_data(server: ServerProcess, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    traffic = Traffic(server)
    traffic.start()
    voice = threading.Thread(
        target=asyncio.run,
        args=(
            _conversation(
                server,
                "dashboard-demo",
                [
                    "I am learning how photosynthesis turns light into sugar.",
                    "Chlorophyll absorbs red and blue light best.",
                    "So leaves look green because green light is reflected.",
                ],
            ),
        ),
        daemon=True,
    )
    voice.start()
    requests: list[tuple[str, dict[str, str]]] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                ],
            )
            page = browser.new_page(viewport={"width": 1360, "height": 1000})
            page.on("request", lambda r: requests.append((r.url, r.headers)))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # The wrong-key attempt below is answered 401 on purpose; anything else is a bug.
            page.on(
                "console",
                lambda m: (
                    m.type == "error" and "status of 401" not in m.text and errors.append(m.text)
                ),
            )

            page.goto(server.http + "/admin/")
            assert page.is_visible("#key-form")
            assert not page.is_visible("#dash")

            # A wrong key: told so, and still asked.
            page.fill("#key-input", "not-the-right-key")
            page.click("#key-form button[type=submit]")
            page.wait_for_selector("#key-error:has-text('invalid')", timeout=10000)
            assert page.evaluate("sessionStorage.getItem('lva-admin-key')") is None

            page.fill("#key-input", KEY)
            page.click("#key-form button[type=submit]")
            page.wait_for_selector("#dash", state="visible", timeout=10000)
            assert page.evaluate("sessionStorage.getItem('lva-admin-key')") == KEY

            # Wait for several polls: rates need two, the voice turns need their replies.
            page.wait_for_function(
                """() => ['c-rps', 'c-lat', 'c-cpu', 'c-mem', 'c-sessions'].every(
                       id => Number(document.getElementById(id).dataset.points || 0) >= 6)
                   && Number(document.getElementById('c-voice').dataset.series || 0) >= 3""",
                timeout=90000,
            )
            voice.join(90)
            page.wait_for_timeout(2500)  # one more poll after the conversation ended

            stats = page.evaluate(
                """(ids) => ids.map(id => {
                    const c = document.getElementById(id);
                    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let lit = 0;
                    for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0) lit++;
                    return {id, points: +c.dataset.points, series: +c.dataset.series, lit,
                            w: c.width, h: c.height};
                })""",
                list(CHART_IDS),
            )
            for s in stats:
                assert s["w"] > 200 and s["h"] > 100, s
                assert s["points"] >= 2, s
                assert s["lit"] > 500, s  # axes, labels and the lines themselves
            by_id = {s["id"]: s for s in stats}
            assert by_id["c-lat"]["series"] == 3  # p50, p95, p99
            assert by_id["c-voice"]["series"] >= 3  # stt_final, llm_first_token, first_audio

            rps = float(page.inner_text("#s-rps"))
            assert rps > 1.0, rps  # the traffic thread sends ~6 requests a second
            assert int(page.inner_text("#s-turns")) >= 3
            assert page.inner_text("#endpoints").count("/api/stats") == 1
            assert "<unmatched>" in page.inner_text("#endpoints")
            assert "health: " in page.inner_text("#health")
            assert "database" in page.inner_text("#health-checks")

            # The maintenance switch works from the page.
            page.on("dialog", lambda d: d.accept())
            page.fill("#m-message", "Back in five minutes")
            page.click("#m-toggle")
            page.wait_for_selector("#m-state:has-text('ON')", timeout=10000)
            status, body = server.get_json("/api/stats")
            assert status == 503 and body["error"]["message"] == "Back in five minutes"
            page.click("#m-toggle")
            page.wait_for_selector("#m-state:has-text('off')", timeout=10000)
            assert server.get_json("/api/stats")[0] == 200

            shot = tmp_path / "admin-dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert not errors, errors
            browser.close()
    finally:
        traffic.stop_event.set()
        traffic.join(5)

    assert 10_000 < shot.stat().st_size < 300_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)

    api_calls = [(u, h) for u, h in requests if "/admin/api/" in u]
    assert len(api_calls) >= 20
    for url, _headers in requests:
        assert KEY not in url, url  # never in a URL
    keys = [h.get("x-admin-key") for _u, h in api_calls]
    # Every admin call carries the key header: the wrong one only in the first (refused)
    # round of parallel calls, the right one afterwards.
    assert set(keys) == {KEY, "not-the-right-key"}
    assert keys.count("not-the-right-key") <= 5


def test_dashboard_uses_fleet_totals_in_multiprocess_mode(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With PROMETHEUS_MULTIPROC_DIR (as with several workers) the rates come from the
    fleet totals; the page says how many workers there are."""
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("dash-mp")
    (tmp / "prom").mkdir()
    env = {"ADMIN_API_KEY": KEY, "REDIS_URL": "", "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prom")}
    server = ServerProcess(tmp, env=env).start()
    traffic = Traffic(server)
    traffic.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(server.http + "/admin/")
            page.fill("#key-input", KEY)
            page.click("#key-form button[type=submit]")
            page.wait_for_function(
                "() => Number(document.getElementById('c-rps').dataset.points || 0) >= 3",
                timeout=60000,
            )
            assert "1 workers" in page.inner_text("#updated")
            assert float(page.inner_text("#s-rps")) > 1.0
            browser.close()
    finally:
        traffic.stop_event.set()
        traffic.join(5)
        server.stop()
