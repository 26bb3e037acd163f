"""Protocol v1.1 bookkeeping, without an event loop: the reply's playout paused, resumed
and ducked (what the listener heard), and the phone line's duck/pause/resume as `clear`
and audio sent again from the last acknowledged mark."""

from __future__ import annotations

import struct

import pytest

from audio.pcm import gain_db_to_factor, rms_dbfs, scale
from pipelines.playout import Playout
from server.transports.phone_playback import Clear, Mark, Media, PhonePlayback


def test_a_paused_playout_holds_what_the_listener_has_not_played():
    p = Playout(lead=0.3)
    p.wait_before(10.0)
    p.release(1.0)  # playhead 11.0
    assert p.heard_seconds(10.4) == pytest.approx(0.4)
    assert p.pause(10.4)
    assert not p.pause(10.5)  # already paused
    assert p.heard_seconds(12.0) == pytest.approx(0.4)  # nothing plays while paused
    p.release(0.1)  # sent while paused: the listener holds it too
    assert p.held == pytest.approx(0.7)
    assert p.wait_before(12.0) == 0.0
    assert p.resume(13.0)
    assert p.playhead == pytest.approx(13.7)  # plays on from where it stopped
    assert p.heard_seconds(13.5) == pytest.approx(0.9)
    assert not p.resume(13.5)


def test_what_played_ducked_under_the_callers_voice_is_not_heard_if_it_ends_in_a_cut():
    p = Playout(lead=0.3)
    p.wait_before(0.0)
    p.release(2.0)
    p.duck(0.5)
    assert p.heard_seconds(0.9) == pytest.approx(0.9)
    assert p.heard_when_cut(0.9) == pytest.approx(0.5)
    p.resume(1.0)  # dismissed: what played quietly counts as heard again
    assert p.heard_when_cut(1.2) == pytest.approx(1.2)


def test_heard_text_when_cut_stops_at_the_duck():
    p = Playout(lead=0.3)
    p.start_piece("one two three four")
    p.add_synthesized(1.0)
    p.wait_before(0.0)
    p.release(1.0)
    p.duck(0.5)
    assert p.heard_text(0.75) == "one two three"
    assert p.heard_text(0.75, cut=True) == "one two"


def test_scale_and_gain():
    loud = struct.pack("<h", 16000) * 160
    assert gain_db_to_factor(-20.0) == pytest.approx(0.1)
    quiet = scale(loud, gain_db_to_factor(-24.0))
    assert rms_dbfs(loud) - rms_dbfs(quiet) == pytest.approx(24.0, abs=0.1)
    assert scale(loud, 1.0) == loud
    assert scale(struct.pack("<h", 30000), 2.0) == struct.pack("<h", 32767)  # saturates
    with pytest.raises(ValueError):
        scale(b"\x00", 0.5)


def _chunk(value: int, ms: int = 100) -> bytes:
    return struct.pack("<h", value) * (8 * ms)


def test_phone_duck_resends_the_unheard_audio_quieter_and_resume_at_full_volume():
    pb = PhonePlayback()
    sent = [pb.audio(3, _chunk(8000)) for _ in range(4)]
    assert [o.mark for [o] in sent] == ["t3-100", "t3-200", "t3-300", "t3-400"]
    assert pb.acked(3, "100", 0)  # the first chunk played
    out = pb.duck(3, -24.0)
    assert isinstance(out[0], Clear)
    media = out[1:]
    assert [m.mark for m in media] == ["t3-200.1", "t3-300.1", "t3-400.1"]
    assert all(
        isinstance(m, Media) and rms_dbfs(m.pcm) < rms_dbfs(_chunk(8000)) - 20 for m in media
    )
    # The marks of the cleared audio come back at once: they are not audio played.
    assert not pb.acked(3, "300", 0)
    [more] = pb.audio(3, _chunk(8000))
    assert isinstance(more, Media) and more.mark == "t3-500.1"
    assert rms_dbfs(more.pcm) < rms_dbfs(_chunk(8000)) - 20  # what follows is quiet too
    assert pb.acked(3, "200", 1)
    out = pb.resume(3)
    assert isinstance(out[0], Clear)
    assert [m.mark for m in out[1:]] == ["t3-300.2", "t3-400.2", "t3-500.2"]
    assert all(m.pcm == _chunk(8000) for m in out[1:])  # full volume, nothing lost
    assert pb.resume(3) == []  # nothing to give back twice


def test_phone_pause_keeps_everything_until_resume_including_the_end_mark():
    pb = PhonePlayback()
    pb.audio(5, _chunk(4000))
    pb.audio(5, _chunk(4000))
    assert pb.acked(5, "100", 0)
    assert pb.pause(5) == [Clear()]
    assert pb.pause(5) == []
    assert pb.audio(5, _chunk(4000)) == []  # held while paused
    assert pb.end(5) == []  # the end mark follows the held audio
    out = pb.resume(5)
    assert isinstance(out[0], Clear)
    assert [o.mark for o in out[1:]] == ["t5-200.2", "t5-300.2", "t5-end.2"]
    assert isinstance(out[-1], Mark)


def test_phone_interruption_forgets_the_reply_and_a_new_turn_starts_clean():
    pb = PhonePlayback()
    pb.audio(1, _chunk(4000))
    pb.duck(1, -24.0)
    pb.interrupted(1)
    assert pb.resume(1) == []  # a cut reply is never sent again
    [m] = pb.audio(2, _chunk(4000))
    assert isinstance(m, Media) and m.pcm == _chunk(4000)  # full volume
    assert m.mark == "t2-100.2"
    assert pb.end(1) == [Mark("t1-end.2")]  # another turn's end: passed through


def test_a_duck_before_the_replys_audio_applies_to_it():
    pb = PhonePlayback()
    assert pb.duck(7, -24.0) == [Clear()]
    [m] = pb.audio(7, _chunk(8000))
    assert isinstance(m, Media) and rms_dbfs(m.pcm) < rms_dbfs(_chunk(8000)) - 20


def test_a_websocket_client_says_it_acts_on_the_new_events_with_revision_1():
    from pipelines.session_config import SessionConfig, SessionInputError
    from server.transports.browser import _start_config

    class _Session:
        config = SessionConfig(listener_yields=False)

    assert _start_config(_Session(), {"type": "start", "revision": 1}).listener_yields
    assert not _start_config(_Session(), {"type": "start"}).listener_yields
    for bad in (-1, "1", 1.5, True):
        with pytest.raises(SessionInputError):
            _start_config(_Session(), {"type": "start", "revision": bad})
    rules = SessionConfig(listener_yields=False).turn_rules(transcript_on_pause=False)
    assert not rules.barge_in_duck and rules.barge_in_pause_ms == rules.barge_in_min_speech_ms
