"""Phone calls end to end: the real server process on embedded defaults (Whisper tiny.en, the
learning coach, Piper), the Twilio webhook with real signatures, and the phone simulator
speaking Media Streams at real-time pace with Piper-made speech."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import websockets
from twilio.request_validator import RequestValidator

from loadtest.phone_sim import PhoneCall, stream_parameters
from pipelines.llm.coach import coach_reply
from server.transports.twilio_tokens import TOKEN_PARAM
from tests.server_process import ServerProcess
from tests.speech import silence, synth

pytestmark = pytest.mark.slow

TOKEN = "phone-test-auth-token"
FIRST = "I learned how vaccines train the immune system."
SECOND = "Today I learned that spaced repetition helps me remember vocabulary."
INTERRUPT = "Wait, can you explain that again more slowly please?"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("phone"), env={"TWILIO_AUTH_TOKEN": TOKEN})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def voice() -> dict[str, bytes]:
    """Piper speech at 8 kHz (the phone rate)."""
    rng = np.random.default_rng(7)
    n = int(0.3 * 8000)
    spectrum = np.fft.rfft(rng.normal(0, 1, n))
    freqs = np.fft.rfftfreq(n, 1 / 8000)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    noise = np.fft.irfft(spectrum, n)
    noise = (noise / np.abs(noise).max() * 0.6 * 32767).astype("<i2").tobytes()
    return {
        "first": synth(FIRST, 8000),
        "second": synth(SECOND, 8000),
        "interrupt": synth(INTERRUPT, 8000),
        "mhm": synth("Mhm.", 8000),
        "noise": noise,
    }


def _url(server: ServerProcess, path: str) -> str:
    return f"{server.ws}{path}"


def _call(server: ServerProcess) -> PhoneCall:
    url = _url(server, "/twilio/stream")
    return PhoneCall(url, auth_token=TOKEN)


def _captures(server: ServerProcess, session_id: str) -> list[tuple[str, str, dict]]:
    deadline = time.monotonic() + 3
    rows: list = []
    while time.monotonic() < deadline:
        with sqlite3.connect(server.db_path) as db:
            rows = db.execute(
                "SELECT user_text, agent_text, metadata FROM captures WHERE session_id = ? "
                "ORDER BY id",
                (session_id,),
            ).fetchall()
        time.sleep(0.3)  # capture batches flush every 200 ms
        if rows:
            break
    return [(u, a, json.loads(m)) for u, a, m in rows]


def _log_events(server: ServerProcess, msg: str, session_id: str) -> list[dict]:
    out = []
    for line in server.logs().splitlines():
        if msg in line:
            with_fields = json.loads(line)
            if with_fields.get("session_id") == session_id:
                out.append(with_fields)
    return out


def _post_form(url: str, params: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(
        url, data=urllib.parse.urlencode(params).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_voice_webhook_returns_twiml_for_signed_requests_only(server):
    url = server.http + "/twilio/voice"
    params = {"CallSid": "CA" + "1" * 32, "From": "+15550100", "AccountSid": "AC" + "2" * 32}
    good = RequestValidator(TOKEN).compute_signature(url, params)
    status, body = _post_form(url, params, {"X-Twilio-Signature": good})
    assert status == 200, body
    assert body.startswith("<?xml") and "<Response><Connect>" in body
    assert f'<Stream url="ws://127.0.0.1:{server.port}/twilio/stream">' in body
    assert f'<Parameter name="callSid" value="CA{"1" * 32}" />' in body
    assert stream_parameters(body)[TOKEN_PARAM].startswith("v1.")  # this call's stream token

    forged = RequestValidator("not-the-token").compute_signature(url, params)
    for headers in ({"X-Twilio-Signature": forged}, {}):
        status, body = _post_form(url, params, headers)
        assert status == 403
        assert json.loads(body)["error"]["code"] == "invalid_signature"
    # A signed request whose parameters were changed on the way is rejected too.
    status, _ = _post_form(url, {**params, "From": "+15550199"}, {"X-Twilio-Signature": good})
    assert status == 403


async def test_stream_handshake_needs_a_signature(server):
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(_url(server, "/twilio/stream")):
            pass
    assert info.value.response.status_code == 403


async def test_malformed_messages_are_ignored_and_the_call_goes_on(server, voice):
    async with _call(server) as call:
        ws = call._ws
        assert ws is not None
        for junk in ("not json", "[1]", '{"event":"media"}', '{"event":"media","media":'
                     '{"payload":"%%%"}}', '{"event":"mark","mark":{"name":"x"}}',
                     '{"event":"dance"}', '{"event":"dtmf","dtmf":{"digit":"5"}}'):  # fmt: skip
            await ws.send(junk)
        await ws.send(b"\x00\x01")
        _, spoke_end = await call.say(voice["first"] + silence(0.1, 8000))
        await call.wait_media(spoke_end, timeout=20)
    sid = f"call-{call.call_sid}"
    ended = _log_events(server, "phone call ended", sid)
    assert ended and ended[0]["ignored_messages"] >= 7


async def test_multi_turn_call(server, voice):
    async with _call(server) as call:
        started = time.monotonic()
        _, end1 = await call.say(voice["first"])
        first_audio = await call.wait_media(end1, timeout=20)
        await call.wait_reply_played(end1, timeout=30)
        _, end2 = await call.say(voice["second"])
        second_audio = await call.wait_media(end2, timeout=20)
        await call.wait_reply_played(end2, timeout=30)
    assert first_audio - end1 < 6 and second_audio - end2 < 6
    assert len(call.rx.turns()) == 2 and not call.rx.clears
    assert len(call.rx.acks) == len(call.rx.marks)  # every mark played and echoed
    rows = _captures(server, f"call-{call.call_sid}")
    assert [r[2]["interrupted"] for r in rows] == [False, False]
    assert "vaccines" in rows[0][0].lower() and "repetition" in rows[1][0].lower()
    assert "vaccines" in rows[0][1].lower()
    assert rows[1][1].lower().startswith("so the key idea is")
    # The caller heard (and acknowledged) every second of both replies.
    assert len(call.rx.audio) / 8000 > 4.0
    assert time.monotonic() - started < 60


async def test_barge_in_clears_at_once_and_remembers_only_what_was_played(server, voice):
    async with _call(server) as call:
        _, spoke_end = await call.say(voice["first"])
        first_audio = await call.wait_media(spoke_end, timeout=20)
        await _sleep_until(first_audio + 1.0)
        talk_start, _ = await call.say(voice["interrupt"])
        assert call.rx.clears, "no clear while the caller talked over the reply"
        await call.wait_media(call.rx.clears[-1], timeout=25)
        await call.wait_reply_played(talk_start, timeout=30)
    rx = call.rx
    cuts = rx.cuts()
    assert len(cuts) == 1, (rx.clears, cuts)
    clear_t = cuts[0]
    assert talk_start < clear_t < talk_start + 3.0
    # The agent yielded (ducked: a clear and its audio again, quieter) before the cut.
    yields = rx.yields()
    assert yields and talk_start < yields[0] < clear_t
    # No media of the interrupted reply after the cut; the next media is the new reply.
    turns = rx.turns()
    interrupted_turn = turns[0]
    after = [rx.media_turn[i] for i, (t, _) in enumerate(rx.media) if t > clear_t]
    assert after and interrupted_turn not in after
    # Server side: `clear` went out within 100 ms of the barge-in decision.
    sid = f"call-{call.call_sid}"
    (cleared,) = _log_events(server, "twilio clear sent", sid)
    assert 0 <= cleared["clear_latency_ms"] < 100
    rows = _captures(server, sid)
    heard, reply2 = rows[0], rows[1]
    assert heard[2]["interrupted"] is True and reply2[2]["interrupted"] is False
    # ~1.3 s of a reply that starts "So the key idea is vaccines train immune. ..." played.
    acked = [_mark_ms(name) for t, name in rx.acks if name.startswith(f"t{interrupted_turn}-")]
    assert max(acked) / 1000 < 2.5
    words = heard[1].split()
    full = coach_reply(heard[0], []).split()  # the reply the coach gave, whole
    assert 1 <= len(words) < len(full) and full[: len(words)] == words, heard[1]
    assert "?" not in heard[1]  # the follow-up question was never played
    assert "explain" in reply2[0].lower() or "slowly" in reply2[0].lower()


def _mark_ms(name: str) -> int:
    """`t<turn>-<ms>[.<generation>]` -> ms (-1 for an end mark)."""
    position = name.split("-", 1)[1].split(".", 1)[0]
    return -1 if position == "end" else int(position)


async def _sleep_until(t: float) -> None:
    import asyncio

    await asyncio.sleep(max(0.0, t - time.monotonic()))


@pytest.mark.parametrize("sound", ["mhm", "noise"])
async def test_backchannel_or_noise_during_the_reply_does_not_lose_it(server, voice, sound):
    async with _call(server) as call:
        _, spoke_end = await call.say(voice["first"])
        first_audio = await call.wait_media(spoke_end, timeout=20)
        await _sleep_until(first_audio + 0.8)
        sound_start, _ = await call.say(voice[sound])
        await call.wait_reply_played(spoke_end, timeout=30)
    # The agent yielded for the sound (ducked, resumed: each a clear and its audio again)
    # but never cut its reply.
    assert not call.rx.cuts()
    assert all(t > sound_start for t in call.rx.yields())
    assert len(call.rx.turns()) == 1  # no reply to the sound itself
    rows = _captures(server, f"call-{call.call_sid}")
    assert len(rows) == 1
    user, agent, meta = rows[0]
    assert meta["interrupted"] is False and "vaccines" in user.lower()
    assert agent.endswith("?") and len(agent.split()) >= 8  # the whole reply, question too
    # And the caller got all of its audio (every mark of it played and acknowledged).
    assert "-end" in call.rx.acks[-1][1]
