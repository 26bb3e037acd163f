// Microphone capture: getUserMedia with the browser's echo cancellation, noise
// suppression and gain control on, through an AudioWorklet that hands back 20 ms frames
// of 16 kHz PCM16 and their level. The page decides whether a frame is sent.

export class MicError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const CONSTRAINTS = {
  audio: {
    channelCount: 1,
    echoCancellation: true,
    noiseSuppression: true,
    autoGainControl: true,
  },
  video: false,
};

function describe(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new MicError(
        "mic_denied",
        "Microphone access was denied. Allow the microphone for this site in the " +
          "browser's address bar, or type your message below.",
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return new MicError("mic_missing", "No microphone was found. Connect one, or type below.");
    case "NotReadableError":
    case "AbortError":
      return new MicError(
        "mic_busy",
        "The microphone is in use by another application or could not be started.",
      );
    default:
      return new MicError("mic_failed", `The microphone could not be opened: ${err}`);
  }
}

export class MicCapture {
  static loaded = new WeakSet();

  /** @param {AudioContext} ctx  @param {(pcm: ArrayBuffer, levelDb: number) => void} onFrame */
  constructor(ctx, onFrame) {
    this.ctx = ctx;
    this.onFrame = onFrame;
    this.stream = null;
    this.node = null;
    this.source = null;
    this.sink = null;
    /** Called when the browser ends the track (device unplugged, permission revoked). */
    this.onEnded = null;
  }

  get open() {
    return this.node !== null;
  }

  async start() {
    if (this.node) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new MicError(
        "mic_unavailable",
        "This page cannot use the microphone: it needs https:// (or localhost) and a " +
          "current browser. You can still type below.",
      );
    }
    if (!this.ctx.audioWorklet) {
      throw new MicError("mic_unavailable", "This browser has no AudioWorklet support.");
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(CONSTRAINTS);
    } catch (err) {
      throw describe(err);
    }
    try {
      if (!MicCapture.loaded.has(this.ctx)) {
        await this.ctx.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url));
        MicCapture.loaded.add(this.ctx);
      }
    } catch (err) {
      stream.getTracks().forEach((t) => t.stop());
      throw new MicError("mic_failed", `The audio processor could not be loaded: ${err}`);
    }
    this.stream = stream;
    this.source = this.ctx.createMediaStreamSource(stream);
    this.node = new AudioWorkletNode(this.ctx, "capture-processor", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
      channelInterpretation: "speakers",
    });
    this.node.port.onmessage = (e) => this.onFrame(e.data.pcm, e.data.level);
    // A silent sink keeps the graph pulling the worklet in every browser.
    this.sink = this.ctx.createGain();
    this.sink.gain.value = 0;
    this.source.connect(this.node).connect(this.sink).connect(this.ctx.destination);
    for (const track of stream.getAudioTracks()) {
      track.addEventListener("ended", () => {
        this.stop();
        if (this.onEnded) this.onEnded();
      });
    }
  }

  stop() {
    if (this.node) {
      this.node.port.onmessage = null;
      this.source.disconnect();
      this.node.disconnect();
      this.sink.disconnect();
    }
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = this.node = this.source = this.sink = null;
  }
}
