// AudioWorklet processors of the audiokit page: capture (input frames to the page) and playback
// (a jitter buffer the page fills with processed audio; silence while it runs dry).

class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}

class Playback extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.buffer = new Float32Array(opts.capacity || sampleRate * 2);
    this.prebuffer = opts.prebuffer || Math.round(sampleRate * 0.04);  // jitter buffer: 40 ms
    this.read = 0; this.size = 0; this.playing = false;
    this.port.onmessage = (event) => this.push(event.data);
  }
  push(samples) {
    const cap = this.buffer.length;
    for (let i = 0; i < samples.length; i++) {
      if (this.size === cap) { this.read = (this.read + 1) % cap; this.size--; }  // overflow: drop oldest
      this.buffer[(this.read + this.size) % cap] = samples[i];
      this.size++;
    }
  }
  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!this.playing && this.size >= this.prebuffer) this.playing = true;
    for (let i = 0; i < out.length; i++) {
      if (this.playing && this.size > 0) {
        out[i] = this.buffer[this.read];
        this.read = (this.read + 1) % this.buffer.length; this.size--;
      } else {
        out[i] = 0;
      }
    }
    if (this.size === 0) this.playing = false;  // underrun: fill up again before playing
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    return true;
  }
}

registerProcessor("audiokit-capture", Capture);
registerProcessor("audiokit-playback", Playback);
