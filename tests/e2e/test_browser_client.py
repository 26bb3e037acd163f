"""The web client in a real browser against the real server (embedded Whisper, coach, Piper).

Headless Debian Chromium hears a speech WAV made here with the bundled Piper voice through
its fake microphone. The tests drive the page the way a person would (hold the button or
the space bar, switch to hands-free, type, search) and read the outcome from the DOM and
the page's `window.__lva` counters.

Set UPDATE_SCREENSHOTS=1 to refresh docs/screenshot-*.png.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser_util import (
    ADMIN_KEY,
    CHROMIUM,
    ROOT,
    Server,
    chromium_args,
    chromium_missing_reason,
    lva,
    wait_lva,
    wait_quiet,
    wait_speech_then_quiet,
)
from tests.speech import silence, synth, wer, write_wav

pytestmark = [pytest.mark.slow, pytest.mark.browser]

_missing = chromium_missing_reason()
if _missing:
    pytestmark.append(pytest.mark.skip(reason=f"BROWSER TESTS SKIPPED: {_missing}"))

# Clear for Whisper tiny.en in every loop (a phrase like "spaced repetition" is not).
SCRIPT = "Today I learned that honey never goes bad because it has very little water."
LEAD_S, TRAIL_S = 1.0, 3.5
VIEWPORT = {"width": 1000, "height": 700}
MAX_SHOT_BYTES = 200_000


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[Server]:
    srv = Server(workdir)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def speech_wav(workdir: Path) -> Path:
    """Lead silence, the script, then silence long enough for a whole reply to start
    before the loop speaks again (hands-free barge-in needs the reply to be sounding)."""
    return write_wav(workdir / "speech.wav", silence(LEAD_S) + synth(SCRIPT) + silence(TRAIL_S))


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Any, speech_wav: Path) -> Iterator[Any]:
    b = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=chromium_args(speech_wav)
    )
    yield b
    b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server.url + "/?transport=ws")  # the WebSocket path (WebRTC: test_webrtc_browser)
    wait_lva(pg, "s.connection === 'open' && s.serverMode === 'push_to_talk'")
    yield pg
    context.close()
    assert errors == [], f"uncaught page errors: {errors}"


def screenshot(page: Any, name: str, tmp: Path) -> None:
    target = ROOT / "docs" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp
    path = target / f"screenshot-{name}.png"
    page.screenshot(path=str(path))
    size = path.stat().st_size
    assert 5_000 < size < MAX_SHOT_BYTES, f"{path}: {size} bytes"


def texts(page: Any, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def hold_while_speaking(page: Any, press: Any, release: Any) -> None:
    """Press in silence, keep holding through the looped speech, release once quiet."""
    press()
    wait_lva(page, "s.talking && s.micOpen", 15)
    wait_speech_then_quiet(page, quiet_ms=800)
    release()


def wait_turn_done(page: Any, n: int) -> None:
    """The n-th reply is complete and its audio has finished playing."""
    wait_lva(page, f"s.replies.length >= {n}", 40)
    wait_lva(page, f"(s.messages.audio_end || 0) >= {n} && !s.playing", 40)


def search_until_found(
    page: Any, query: str, session_id: str, expect: str, timeout: float = 20.0
) -> Any:
    """Search until a hit of `session_id` whose user text contains `expect` shows, and
    return it. Captures are written in batches off the hot path, so the first searches
    may not see the newest one yet."""
    page.fill("#search-input", query)
    hits = page.locator("#results li.hit").filter(
        has=page.locator(f".session-link[data-session='{session_id}']")
    )
    for _ in range(int(timeout / 0.5)):
        page.click("#search-form button[type=submit]")
        page.wait_for_function("() => !document.querySelector('#results[aria-busy]')")
        for i in range(hits.count()):
            if expect.lower() in hits.nth(i).locator(".q").inner_text().lower():
                return hits.nth(i)
        page.wait_for_timeout(500)
    pytest.fail(f"search {query!r} never found {expect!r}: {texts(page, '#results .q')}")


def test_push_to_talk_voice_turns_typed_turn_and_search(page: Any, workdir: Path) -> None:
    session_id = lva(page, "sessionId")
    talk = page.locator("#talk")

    # Turn 1: hold the button with the mouse for as long as the speech lasts.
    talk.hover()
    hold_while_speaking(page, page.mouse.down, page.mouse.up)
    wait_lva(page, "s.finalTranscripts.length >= 1", 30)
    final = texts(page, "#log .turn .user.final")[-1]
    assert wer(SCRIPT, final) <= 0.2, final
    assert lva(page, "lastInterimTranscript"), "no interim transcript was shown while speaking"
    wait_turn_done(page, 1)
    reply = texts(page, "#log .turn .agent.done")[-1]
    assert reply and reply == lva(page, "lastReply")
    assert lva(page, "replyDeltas") >= 2, "the reply did not stream in pieces"
    played, received = lva(page, "audioChunksPlayed"), lva(page, "audioChunksReceived")
    assert played > 0 and played == received, (played, received)
    assert lva(page, "audioChunksSent") > 50  # ~20 ms frames while the button was held

    # Turn 2: the space bar, pressed in the silence between two loops of the speech.
    wait_quiet(page, 1200)
    hold_while_speaking(
        page, lambda: page.keyboard.down("Space"), lambda: page.keyboard.up("Space")
    )
    wait_lva(page, "s.finalTranscripts.length >= 2", 30)
    assert wer(SCRIPT, texts(page, "#log .turn .user.final")[-1]) <= 0.2
    wait_turn_done(page, 2)
    assert lva(page, "audioChunksPlayed") > played
    assert lva(page, "errors") == []
    screenshot(page, "push-to-talk", workdir)

    # A typed turn whose text looks like markup: it must come back as plain text.
    tricky = "I learned that <b>bold</b> tags & <img src=x> elements are markup"
    page.fill("#text-input", tricky)
    page.press("#text-input", "Enter")
    wait_lva(page, "s.replies.length >= 3", 30)
    assert texts(page, "#log .turn .user.final")[-1] == tricky
    assert page.locator("#log b, #log img").count() == 0

    # Search finds the spoken capture, with highlighted words.
    page.click("#nav-search")
    wait_lva(page, "s.view === 'search'")
    hit = search_until_found(page, "that thing about honey going bad", session_id, "honey")
    assert wer(SCRIPT, hit.locator(".q").inner_text().removeprefix("You").strip()) <= 0.2
    marks = [m.lower() for m in hit.locator(".snippet mark").all_inner_texts()]
    assert "honey" in marks, marks
    screenshot(page, "search", workdir)

    # The markup-looking capture is found and shown as text; only <mark> is markup.
    hit = search_until_found(page, "bold tags elements markup", session_id, "<b>bold</b>")
    assert "<b>bold</b> tags & <img src=x> elements" in hit.locator(".q").inner_text()
    assert "bold" in [m.lower() for m in hit.locator(".snippet mark").all_inner_texts()]
    assert page.locator("#results b, #results img").count() == 0

    # Export downloads this session's transcript (an authorised fetch saved as a file).
    page.click("#nav-talk")
    with page.expect_download(timeout=10_000) as info:
        page.click("#export-session")
    assert info.value.suggested_filename == f"session-{session_id}.md"
    info.value.save_as(workdir / "export.md")
    markdown = (workdir / "export.md").read_text()
    assert f"# Learning session {session_id}" in markdown and "bold" in markdown


def test_hands_free_reply_then_barge_in(page: Any, workdir: Path) -> None:
    page.click("label:has(#mode-hf)")
    wait_lva(page, "s.serverMode === 'continuous' && s.micOpen")
    assert page.locator("#talk").is_disabled()

    # The first loop of the speech is one turn: transcript, streamed reply, audio.
    wait_lva(page, "s.finalTranscripts.length >= 1", 30)
    final = lva(page, "finalTranscripts")[0]
    assert wer(SCRIPT, final) <= 0.2, final
    wait_lva(page, "s.replies.length >= 1 && s.audioChunksPlayed > 0", 30)
    assert texts(page, "#log .turn .agent")[0] == lva(page, "replies")[0]

    # The loop speaks again while the reply is sounding: the page cuts playback at once
    # (vad speaking) and the server confirms with `interrupted`.
    wait_lva(page, "s.interruptedReceived >= 1 && s.bargeIns >= 1", 30)
    assert page.locator("#log .turn .agent.interrupted").count() >= 1
    scheduled, played = lva(page, "audioChunksScheduled"), lva(page, "audioChunksPlayed")
    assert played < scheduled, "every scheduled chunk played: nothing was cut"
    # The interrupting speech becomes the next turn.
    wait_lva(page, "s.finalTranscripts.length >= 2", 30)
    assert wer(SCRIPT, lva(page, "finalTranscripts")[1]) <= 0.2
    wait_lva(page, "s.replies.length >= 2", 30)
    assert lva(page, "errors") == []
    screenshot(page, "hands-free", workdir)


RESAMPLE_PROBE = """
async ([rate, freq]) => {
  const ctx = new OfflineAudioContext(1, rate, rate);  // one second
  await ctx.audioWorklet.addModule("/static/capture-worklet.js");
  const node = new AudioWorkletNode(ctx, "capture-processor");
  const frames = [];
  node.port.onmessage = (e) => frames.push(new Int16Array(e.data.pcm));
  const osc = new OscillatorNode(ctx, { frequency: freq });
  osc.connect(new GainNode(ctx, { gain: 0.5 })).connect(node).connect(ctx.destination);
  osc.start();
  await ctx.startRendering();
  await new Promise((r) => setTimeout(r, 300));  // let the last port messages arrive
  const pcm = frames.flatMap((f) => Array.from(f)).map((v) => v / 32768);
  const body = pcm.slice(800, pcm.length - 800);  // skip the filter's start-up
  const rms = Math.sqrt(body.reduce((a, v) => a + v * v, 0) / body.length);
  let crossings = 0;
  for (let i = 1; i < body.length; i++) if ((body[i - 1] < 0) !== (body[i] < 0)) crossings++;
  const sizes = [...new Set(frames.map((f) => f.length))];
  return { samples: pcm.length, sizes, rms, hz: crossings / 2 / (body.length / 16000) };
}
"""


@pytest.mark.parametrize("rate", [48000, 44100])
def test_capture_worklet_makes_16k_frames_without_aliasing(
    browser: Any, server: Server, rate: int
) -> None:
    """The worklet's resampler keeps speech-band tones and removes what would fold over."""
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.goto(server.url + "/static/index.html")
        tone = pg.evaluate(RESAMPLE_PROBE, [rate, 1000])
        assert tone["sizes"] == [320], tone  # 20 ms frames of 16 kHz
        assert 15_500 <= tone["samples"] <= 16_000, tone  # one second at 16 kHz
        assert abs(tone["hz"] - 1000) < 15, tone
        assert abs(tone["rms"] - 0.5 / 2**0.5) < 0.02, tone  # passband gain ~1
        # 12 kHz is above the 8 kHz output Nyquist: decimated naively it would alias to
        # 4 kHz at full strength; filtered it must be at least 40 dB down.
        high = pg.evaluate(RESAMPLE_PROBE, [rate, 12000])
        assert high["rms"] < 0.354 * 0.01, high
    finally:
        context.close()


SNIPPET_PROBE = """
async (snippet) => {
  const { snippetFragment } = await import("/static/markup.js");
  const box = document.createElement("div");
  box.append(snippetFragment(snippet));
  return {
    text: box.textContent,
    tags: [...box.querySelectorAll("*")].map((e) => e.tagName.toLowerCase()),
    marks: [...box.querySelectorAll("mark")].map((e) => e.textContent),
  };
}
"""


def test_snippets_render_only_mark_elements(browser: Any, server: Server) -> None:
    """Whatever a snippet holds, only <mark> becomes markup; the rest is shown as text."""
    context = browser.new_context()
    try:
        pg = context.new_page()
        pg.goto(server.url + "/static/index.html")
        hostile = (
            "a <mark>spaced</mark> &lt;b&gt;x&lt;/b&gt; <img src=x onerror=alert(1)>"
            "<script>alert(2)</script> <mark>repetition &amp; more</mark> <mark>open"
        )
        out = pg.evaluate(SNIPPET_PROBE, hostile)
        assert out["tags"] == ["mark", "mark", "mark"], out
        assert out["marks"] == ["spaced", "repetition & more", "open"], out
        assert "<b>x</b> <img src=x onerror=alert(1)><script>alert(2)</script>" in out["text"]
    finally:
        context.close()


def _admin(server: Server, body: dict[str, Any]) -> None:
    req = urllib.request.Request(
        server.url + "/admin/api/maintenance",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Admin-Key": ADMIN_KEY},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def test_server_error_is_shown_and_the_page_retries(page: Any, server: Server) -> None:
    """Maintenance refuses new sessions (`error` + close 4503): the page says so, backs
    off, and connects by itself once maintenance ends."""
    _admin(server, {"enabled": True, "message": "back soon", "retry_after": 5})
    try:
        page.click("#new-session")
        wait_lva(page, "s.errors.includes('unavailable') && s.connection === 'reconnecting'")
        notices = page.inner_text("#notices")
        assert "not accepting new sessions" in notices and "(unavailable)" in notices
        assert "Retrying in" in notices
    finally:
        _admin(server, {"enabled": False})
    wait_lva(page, "s.connection === 'open'", 30)
    page.wait_for_function("() => !document.querySelector('#notices [data-key=conn]')")


def test_mic_denied_is_explained(playwright: Any, server: Server) -> None:
    """Without the auto-accepting permission UI, headless Chromium denies the microphone."""
    b = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=chromium_args(None, fake_ui=False)
    )
    try:
        pg = b.new_page(viewport=VIEWPORT)
        pg.goto(server.url + "/?transport=ws")  # the WebSocket path (WebRTC: test_webrtc_browser)
        wait_lva(pg, "s.connection === 'open'")
        pg.locator("#talk").hover()
        pg.mouse.down()
        wait_lva(pg, "s.errors.includes('mic_denied')", 15)
        pg.mouse.up()
        assert "Microphone access was denied" in pg.inner_text("#notices")
        assert lva(pg, "audioChunksSent") == 0
    finally:
        b.close()


def test_reconnects_with_the_same_session_after_a_server_restart(page: Any, server: Server) -> None:
    """Runs last in this module: it restarts the shared server on the same port."""
    session_id = lva(page, "sessionId")
    page.fill("#text-input", "I learned that octopuses have three hearts")
    page.press("#text-input", "Enter")
    wait_lva(page, "s.replies.length >= 1", 30)

    # Restart while the reply is still being spoken: the exchange is captured anyway
    # (what was heard of it), and a clean shutdown flushes it to SQLite.
    assert lva(page, "playing") or lva(page, "audioChunksReceived") == 0
    server.stop()
    wait_lva(page, "s.connection === 'reconnecting'", 15)
    page.wait_for_selector("#notices [data-key=conn]", timeout=15_000)
    assert "Cannot reach the server" in page.inner_text("#notices")

    server.start()
    wait_lva(page, "s.connection === 'open' && s.reconnects >= 1", 60)
    assert lva(page, "sessionId") == session_id
    page.fill("#text-input", "What else should I know about octopuses?")
    page.press("#text-input", "Enter")
    wait_lva(page, "s.replies.length >= 2", 30)

    # A reload keeps the session id (sessionStorage) and shows its stored history.
    page.reload()
    wait_lva(page, "s.connection === 'open' && s.historyLoaded >= 1", 30)
    assert lva(page, "sessionId") == session_id
    past = texts(page, "#log .turn.past .user")
    assert "I learned that octopuses have three hearts" in past, past
