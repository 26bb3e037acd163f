"""The web client over WebRTC in a real browser: Debian Chromium's fake microphone (a
Piper WAV) goes out as Opus, the real server (Whisper, coach, Piper) answers on the audio
track and the data channel, and the page plays the reply through its <audio> element.
Also: the page falls back to the WebSocket when WebRTC cannot be set up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.browser_util import (
    CHROMIUM,
    Server,
    chromium_args,
    chromium_missing_reason,
    lva,
    wait_lva,
    wait_speech_then_quiet,
)
from tests.speech import silence, synth, wer, write_wav

pytestmark = [pytest.mark.slow, pytest.mark.browser]

_missing = chromium_missing_reason()
if _missing:
    pytestmark.append(pytest.mark.skip(reason=f"BROWSER TESTS SKIPPED: {_missing}"))

SCRIPT = "Today I learned that honey never goes bad because it has very little water."
LEAD_S, TRAIL_S = 1.0, 3.5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("webrtc-browser")


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[Server]:
    srv = Server(workdir)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(workdir: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    wav = write_wav(workdir / "speech.wav", silence(LEAD_S) + synth(SCRIPT) + silence(TRAIL_S))
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(wav))
        yield b
        b.close()


@pytest.fixture
def open_page(browser: Any, server: Server) -> Iterator[Any]:
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(query: str) -> Any:
        context = browser.new_context(viewport={"width": 1000, "height": 700})
        contexts.append(context)
        pg = context.new_page()
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(server.url + "/" + query)
        return pg

    yield open_
    for context in contexts:
        context.close()
    assert errors == [], f"uncaught page errors: {errors}"


def test_push_to_talk_over_webrtc(open_page: Any) -> None:
    page = open_page("?transport=webrtc")
    wait_lva(page, "s.connection === 'open' && s.transport === 'webrtc'", 30)
    wait_lva(page, "s.serverMode === 'push_to_talk'")
    for n in (1, 2):
        if n == 2:
            # Press in the silence after a loop of the speech (the browser's echo
            # canceller may have damped the loop heard while the reply played).
            wait_speech_then_quiet(page, quiet_ms=800)
        page.keyboard.down("Space")
        wait_lva(page, "s.talking && s.micOpen", 15)
        wait_speech_then_quiet(page, quiet_ms=800)
        page.keyboard.up("Space")
        wait_lva(page, f"s.finalTranscripts.length >= {n}", 30)
        final = lva(page, "finalTranscripts")[n - 1]
        assert wer(SCRIPT, final) <= 0.2, final
        wait_lva(page, f"s.replies.length >= {n}", 40)
        # The reply was heard: audible on the remote track, then quiet again.
        wait_lva(page, f"(s.messages.audio_end || 0) >= {n} && !s.playing", 40)
    assert lva(page, "audioChunksPlayed") >= 10, "under half a second of the reply was heard"
    assert lva(page, "audioChunksSent") > 50  # frames read while the track was on
    assert lva(page, "transport") == "webrtc" and lva(page, "errors") == []


def test_hands_free_and_barge_in_over_webrtc(open_page: Any) -> None:
    page = open_page("?transport=webrtc")
    wait_lva(page, "s.connection === 'open' && s.transport === 'webrtc'", 30)
    page.click("label:has(#mode-hf)")
    wait_lva(page, "s.serverMode === 'continuous' && s.micOpen")
    wait_lva(page, "s.finalTranscripts.length >= 1", 40)
    assert wer(SCRIPT, lva(page, "finalTranscripts")[0]) <= 0.2
    wait_lva(page, "s.replies.length >= 1 && s.audioChunksPlayed > 0", 30)
    # The WAV loops and speaks over the reply: the server ducks (then pauses) its own
    # track at once and confirms with `interrupted`, dropping the reply's queued audio.
    # (The page mutes the track too, if the reply is still sounding then: how much of
    # the reply is left when the loop comes round depends on how fast it was answered.)
    wait_lva(page, "s.interruptedReceived >= 1 && s.yields.some(y => y.type === 'duck')", 40)
    wait_lva(page, "s.finalTranscripts.length >= 2", 40)
    assert wer(SCRIPT, lva(page, "finalTranscripts")[1]) <= 0.2
    assert lva(page, "errors") == []


def test_falls_back_to_the_websocket(open_page: Any, browser: Any) -> None:
    """An offer that fails (here: the route is unreachable) leaves the page on the
    WebSocket, where a typed turn works as ever."""
    page = open_page("#talk")
    page.context.route("**/api/webrtc/offer", lambda route: route.abort())
    page.reload()
    wait_lva(page, "s.connection === 'open' && s.transport === 'websocket'", 30)
    assert "offer" in lva(page, "fallbackReason")
    page.fill("#text-input", "What is spaced repetition?")
    page.press("#text-input", "Enter")
    wait_lva(page, "s.replies.length >= 1", 30)
