"""The web client's player acting on protocol v1.1 (`duck`, `pause`, `resume`), in real
Chromium, measured to the sample.

The player (server/static/player.js, unchanged) renders into an OfflineAudioContext, which
suspends at exact render quanta (128 frames) so the test can deliver each event at a known
time and read what came out. The reply is a ramp whose every sample has its own value, so
the output shows whether playback stopped at the next quantum, and whether it went on
from the very sample where it stopped: no gap (beyond the pause itself), no repeat.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.browser_util import CHROMIUM, ROOT, chromium_args, chromium_missing_reason

pytestmark = [pytest.mark.slow, pytest.mark.browser]

_missing = chromium_missing_reason()
if _missing:
    pytestmark.append(pytest.mark.skip(reason=f"BROWSER TESTS SKIPPED: {_missing}"))

RATE = 48000
QUANTUM = 128

# Renders `seconds` of the player's output with the reply pushed at the start and each
# [time, action, arg] event delivered at its time (a multiple of the render quantum).
PROBE = """
async ([rate, seconds, replyS, events]) => {
  const { ReplyPlayer } = await import("/player.js");
  const ctx = new OfflineAudioContext(1, Math.round(rate * seconds), rate);
  const player = new ReplyPlayer(ctx, () => {});
  player.begin(1, rate);
  const total = Math.round(rate * replyS), chunk = rate / 10;
  for (let off = 0; off < total; off += chunk) {
    const pcm = new Int16Array(Math.min(chunk, total - off));
    for (let i = 0; i < pcm.length; i++) pcm[i] = 1000 + off + i;  // never 0: 0 is silence
    player.push(pcm.buffer);
  }
  for (const [t, action, arg] of events) {
    ctx.suspend(t).then(() => {
      if (action === "duck") player.duck(1, arg);
      else if (action === "pause") player.pause(1);
      else if (action === "resume") player.resume(1);
      ctx.resume();
    });
  }
  const out = (await ctx.startRendering()).getChannelData(0);
  return Array.from(out, (v) => Math.round(v * 32768));
}
"""


@pytest.fixture(scope="module")
def static_url() -> Iterator[str]:
    """server/static over HTTP (ES modules do not load from file://)."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(ROOT / "server" / "static")
    )
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def page(static_url: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(None)
        )
        pg = browser.new_page()
        pg.goto(static_url + "/index.html")
        yield pg
        browser.close()


def render(page: Any, seconds: float, reply_s: float, events: list[list[Any]]) -> list[int]:
    return page.evaluate(PROBE, [RATE, seconds, reply_s, events])


def runs(samples: list[int]) -> list[tuple[int, int]]:
    """(start, end) of each stretch of non-zero output."""
    out: list[tuple[int, int]] = []
    start = None
    for i, v in enumerate(samples):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(samples)))
    return out


def test_pause_stops_at_the_next_quantum_and_resume_goes_on_from_the_same_sample(page):
    pause_at, resume_at = 120 * QUANTUM / RATE, 240 * QUANTUM / RATE  # 0.32 s, 0.64 s
    out = render(page, 1.2, 0.5, [[pause_at, "pause", None], [resume_at, "resume", None]])
    (a0, a1), (b0, b1) = runs(out)
    assert a1 == 120 * QUANTUM  # silent from the quantum the pause came in
    assert b0 == 240 * QUANTUM  # playing again from the quantum the resume came in
    played = out[a0:a1] + out[b0:b1]
    # Every sample of the reply once, in order: nothing skipped, nothing repeated.
    assert played == list(range(1000, 1000 + round(0.5 * RATE)))


def test_duck_lowers_the_reply_by_15_db_within_two_quanta_and_resume_restores_it(page):
    duck_at, resume_at = 120 * QUANTUM / RATE, 200 * QUANTUM / RATE
    out = render(page, 1.0, 0.6, [[duck_at, "duck", -24], [resume_at, "resume", None]])
    d, r = 120 * QUANTUM, 200 * QUANTUM
    # It keeps playing throughout (no gap), quieter between the duck and the resume.
    [(start, _)] = runs(out)
    expected = [1000 + i - start for i in range(len(out))]
    assert out[d - 1] == expected[d - 1]
    ratio = [out[i] / expected[i] for i in range(d + 2 * QUANTUM, r)]
    assert max(ratio) < 10 ** (-15 / 20)
    assert min(ratio) > 10 ** (-30 / 20)  # ducked, not stopped
    after = [out[i] / expected[i] for i in range(r + 4 * QUANTUM, r + 20 * QUANTUM)]
    assert min(after) > 0.99
