// AudioWorklet: microphone samples at the AudioContext's rate -> 16 kHz PCM16 frames of
// 20 ms (320 samples, 640 bytes), plus the frame's level in dBFS for the meter.
//
// Resampling is a windowed-sinc low-pass interpolator: browsers rarely open a 16 kHz
// context, and plain decimation of 48 kHz speech would fold 8-24 kHz noise into the band
// the recogniser listens to. The kernel is tabulated once so each output sample costs
// about 50 multiply-adds and no trigonometry.

const OUT_RATE = 16000;
const FRAME = 320; // 20 ms at 16 kHz
const ZERO_CROSSINGS = 8; // per side, at the low-pass cutoff
const TABLE_STEPS = 64; // kernel samples per input sample

class Resampler {
  constructor(inRate, outRate) {
    this.step = inRate / outRate; // input samples per output sample
    this.passthrough = inRate === outRate;
    // Cutoff in cycles per input sample: just under the output Nyquist when downsampling.
    const fc = 0.5 * Math.min(1, outRate / inRate) * 0.92;
    this.half = Math.ceil(ZERO_CROSSINGS / (2 * fc)); // half-width in input samples
    const n = this.half * TABLE_STEPS + 2;
    this.table = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const d = i / TABLE_STEPS;
      const x = 2 * fc * d;
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      const w = d >= this.half ? 0 : 0.5 + 0.5 * Math.cos((Math.PI * d) / this.half);
      this.table[i] = 2 * fc * sinc * w;
    }
    this.buf = new Float32Array(8192);
    this.len = 0;
    this.pos = this.half; // fractional input index of the next output sample
  }

  kernel(d) {
    const t = Math.abs(d) * TABLE_STEPS;
    const i = t | 0;
    const f = t - i;
    return this.table[i] * (1 - f) + this.table[i + 1] * f;
  }

  // Append input samples; call `emit(sample)` for each output sample now computable.
  push(input, emit) {
    if (this.passthrough) {
      for (let i = 0; i < input.length; i++) emit(input[i]);
      return;
    }
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array((this.len + input.length) * 2);
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
    const half = this.half;
    while (this.pos + half < this.len) {
      const centre = Math.floor(this.pos);
      let acc = 0;
      for (let k = centre - half + 1; k <= centre + half; k++) {
        acc += this.buf[k] * this.kernel(this.pos - k);
      }
      emit(acc);
      this.pos += this.step;
    }
    // Drop samples no later output can reach.
    const keepFrom = Math.floor(this.pos) - half;
    if (keepFrom > 0) {
      this.buf.copyWithin(0, keepFrom, this.len);
      this.len -= keepFrom;
      this.pos -= keepFrom;
    }
  }
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    // `sampleRate` is the AudioWorkletGlobalScope's: the context's real rate.
    this.resampler = new Resampler(sampleRate, OUT_RATE);
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
    this.energy = 0;
    this.emitSample = (s) => this.addSample(s);
    this.mono = new Float32Array(128);
  }

  addSample(s) {
    const v = s > 1 ? 1 : s < -1 ? -1 : s;
    this.frame[this.filled++] = v < 0 ? Math.round(v * 0x8000) : Math.round(v * 0x7fff);
    this.energy += v * v;
    if (this.filled === FRAME) {
      const rms = Math.sqrt(this.energy / FRAME);
      const level = rms > 1e-6 ? 20 * Math.log10(rms) : -120;
      const pcm = this.frame.buffer;
      this.port.postMessage({ pcm, level }, [pcm]);
      this.frame = new Int16Array(FRAME);
      this.filled = 0;
      this.energy = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      const n = input[0].length;
      if (this.mono.length !== n) this.mono = new Float32Array(n);
      const mono = this.mono;
      if (input.length === 1) {
        mono.set(input[0]);
      } else {
        mono.fill(0);
        for (const ch of input) for (let i = 0; i < n; i++) mono[i] += ch[i] / input.length;
      }
      this.resampler.push(mono, this.emitSample);
    }
    return true; // keep running while the microphone is connected
  }
}

registerProcessor("capture-processor", CaptureProcessor);
