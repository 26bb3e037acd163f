// Gapless playback of the reply audio as it streams in: every PCM16 chunk becomes an
// AudioBuffer scheduled to start exactly where the previous one ends on the context's
// clock. `stop()` silences everything at once (barge-in) and ignores the rest of the turn.

const START_LEAD = 0.06; // seconds of cushion when (re)starting, against network jitter

export class ReplyPlayer {
  /** @param {AudioContext} ctx  @param {(playing: boolean) => void} onPlaying */
  constructor(ctx, onPlaying) {
    this.ctx = ctx;
    this.onPlaying = onPlaying;
    this.turnId = null;
    this.rate = 24000;
    this.stoppedTurn = null;
    this.nextTime = 0;
    this.active = new Set();
    this.stats = { received: 0, scheduled: 0, played: 0, dropped: 0, underruns: 0 };
  }

  get playing() {
    return this.active.size > 0;
  }

  /** `audio_start`: the following binary frames belong to `turnId` at `rate` Hz. */
  begin(turnId, rate) {
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
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.ctx.destination);
    const now = this.ctx.currentTime;
    if (this.nextTime < now) {
      if (this.nextTime > 0) this.stats.underruns += 1;
      this.nextTime = now + START_LEAD;
    }
    source.start(this.nextTime);
    this.nextTime += buffer.duration;
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

  /** Stop now. Returns how many scheduled chunks were cut (0: nothing was playing). */
  stop() {
    const cut = this.active.size;
    for (const source of this.active) {
      source.onended = null;
      try {
        source.stop();
      } catch {
        // already stopped
      }
      source.disconnect();
    }
    this.active.clear();
    this.stoppedTurn = this.turnId;
    this.nextTime = 0;
    if (cut > 0) this.onPlaying(false);
    return cut;
  }
}
