// Gapless playback of the reply audio as it streams in: every PCM16 chunk becomes an
// AudioBuffer scheduled to start exactly where the previous one ends on the context's
// clock. `stop()` silences everything at once (barge-in) and ignores the rest of the turn.
//
// Protocol v1.1 (docs/protocol.md): `duck()` lowers the reply's volume while the listener
// may be taking the floor, `pause()` stops it where it is, keeping what was not played
// yet, and `resume()` plays on from exactly that sample at full volume. Each acts at the
// next render quantum of the audio context.

const START_LEAD = 0.06; // seconds of cushion when (re)starting, against network jitter
const DUCK_TIME_CONSTANT = 0.002; // seconds: a duck is 15 dB down within ~5 ms (two quanta), without a click

export class ReplyPlayer {
  /** @param {BaseAudioContext} ctx  @param {(playing: boolean) => void} onPlaying */
  constructor(ctx, onPlaying, destination = ctx.destination) {
    this.ctx = ctx;
    this.onPlaying = onPlaying;
    this.out = ctx.createGain();
    this.out.connect(destination);
    this.turnId = null;
    this.rate = 24000;
    this.stoppedTurn = null;
    this.nextTime = 0;
    this.active = new Set();
    /** The turn a duck, pause or resume was about (it may come before its audio). */
    this.yieldTurn = null;
    this.ducked = false;
    /** While paused: what was not played yet, in order ({buffer, offset}). */
    this.pending = null;
    this.stats = { received: 0, scheduled: 0, played: 0, dropped: 0, underruns: 0 };
  }

  get playing() {
    return this.active.size > 0;
  }

  get paused() {
    return this.pending !== null;
  }

  /** `audio_start`: the following binary frames belong to `turnId` at `rate` Hz. */
  begin(turnId, rate) {
    if (turnId !== this.yieldTurn) this.release();
    this.turnId = turnId;
    this.rate = rate;
    this.nextTime = 0;
  }

  /** A binary frame of PCM16 little-endian mono. */
  push(data) {
    this.stats.received += 1;
    if (this.turnId === null || this.turnId === this.stoppedTurn) {
      this.stats.dropped += 1;
      return;
    }
    const samples = new Int16Array(data, 0, data.byteLength >> 1);
    if (samples.length === 0) return;
    const buffer = this.ctx.createBuffer(1, samples.length, this.rate);
    const out = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) out[i] = samples[i] / 32768;
    if (this.pending !== null) {
      this.pending.push({ buffer, offset: 0 }); // sent before the server paused: kept
      return;
    }
    const now = this.ctx.currentTime;
    if (this.nextTime < now) {
      if (this.nextTime > 0) this.stats.underruns += 1;
      this.nextTime = now + START_LEAD;
    }
    this.schedule(buffer, 0);
  }

  schedule(buffer, offset) {
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.out);
    source.startAt = this.nextTime - offset; // where the buffer's first sample plays
    source.start(this.nextTime, offset);
    this.nextTime += buffer.duration - offset;
    this.stats.scheduled += 1;
    const wasPlaying = this.playing;
    this.active.add(source);
    source.onended = () => {
      this.active.delete(source);
      this.stats.played += 1;
      if (!this.playing) this.onPlaying(false);
    };
    if (!wasPlaying) this.onPlaying(true);
  }

  /** `duck`: play turn `turnId` `gainDb` (negative) quieter from the next quantum on. */
  duck(turnId, gainDb) {
    this.yieldTurn = turnId;
    this.ducked = true;
    this.rampTo(10 ** (gainDb / 20));
  }

  /** `pause`: stop turn `turnId` now, keeping every sample not played yet. */
  pause(turnId) {
    this.yieldTurn = turnId;
    if (this.pending !== null) return;
    const now = this.ctx.currentTime;
    const sources = [...this.active].sort((a, b) => a.startAt - b.startAt);
    const pending = [];
    for (const source of sources) {
      const offset = Math.max(0, now - source.startAt);
      if (offset < source.buffer.duration) pending.push({ buffer: source.buffer, offset });
      this.silence(source);
    }
    this.active.clear();
    this.pending = pending;
    this.nextTime = 0;
    if (sources.length > 0) this.onPlaying(false);
  }

  /** `resume`: full volume, and turn `turnId` plays on from where it paused. */
  resume(turnId) {
    if (turnId !== this.yieldTurn && turnId !== this.turnId) return;
    this.ducked = false;
    this.rampTo(1);
    const pending = this.pending;
    this.pending = null;
    if (pending === null || pending.length === 0) return;
    this.nextTime = this.ctx.currentTime;
    for (const { buffer, offset } of pending) this.schedule(buffer, offset);
  }

  /** Full volume and nothing held (a new turn, or a barge-in). */
  release() {
    this.yieldTurn = null;
    this.pending = null;
    if (this.ducked) {
      this.ducked = false;
      this.rampTo(1);
    }
  }

  rampTo(gain) {
    const param = this.out.gain;
    const now = this.ctx.currentTime;
    param.cancelScheduledValues(now);
    param.setValueAtTime(param.value, now);
    param.setTargetAtTime(gain, now, DUCK_TIME_CONSTANT);
  }

  silence(source) {
    source.onended = null;
    try {
      source.stop();
    } catch {
      // already stopped
    }
    source.disconnect();
  }

  /** Stop now. Returns how many scheduled chunks were cut (0: nothing was playing). */
  stop() {
    const cut = this.active.size + (this.pending ? this.pending.length : 0);
    for (const source of this.active) this.silence(source);
    this.active.clear();
    this.release();
    this.stoppedTurn = this.turnId;
    this.nextTime = 0;
    if (this.active.size === 0 && cut > 0) this.onPlaying(false);
    return cut;
  }
}
