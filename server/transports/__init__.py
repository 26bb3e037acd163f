"""Transports: one file per wire format, each only parsing, validating and serialising.

- `browser.py`: protocol v1 over a WebSocket (docs/protocol.md), PCM16 audio.
- `webrtc.py`: WebRTC (aiortc): Opus audio tracks, protocol v1 on a data channel, signalled
  by `POST /api/webrtc/offer`; served in a task of the lifecycle's (`Lifecycle.start`).
- `twilio_media.py`: Twilio Media Streams over a WebSocket, mu-law 8 kHz.
- `direct.py`: the browser's audio hand-off from aiohttp's parser straight to the Session.
- `websocket.py`: ping, close and abort shared by the WebSocket transports.
- `base.py`: the `Transport` interface that `server.lifecycle.Lifecycle` drives.

Admission, the session, liveness and every task of a conversation belong to the lifecycle,
so a new transport (SIP, ...) is one file implementing `base.Transport`.
"""
