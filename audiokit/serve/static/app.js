// The audiokit web page: microphone -> /v1/stream -> speakers, through AudioWorklets.
// window.audiokit exposes what happened since the last Start (for tests): the last KEEP_SECONDS of
// received audio, sample counts, latency, rate, errors.
// Every URL is relative to the page's own (healthz, v1/stream, static/...), so the page also works
// behind a reverse proxy that serves it under a path prefix (https://host/audiokit/).
"use strict";

const $ = (id) => document.getElementById(id);
const MESSAGE_SECONDS = 0.02;  // 20 ms messages
const KEEP_SECONDS = 10;  // state.received keeps about this much of the newest audio
// Share of ready's max_messages_per_second the page uses, in bursts of at most half the server's (as
// audiokit.client): a page that fell behind (audio captured before `ready`, a slow network) catches up
// in messages of max_message_bytes without being closed for its rate.
const PACE = 0.9;
// a stream is given up when `ready` has not come this long after Start, or after `end` the server has
// sent nothing for as long (a stopped or overloaded server)
const ANSWER_SECONDS = 10;
const QUIET_SECONDS = 5;  // while streaming, no audio back for this long is shown on the status line
const SERVER_DEFAULTS = { max_message_bytes: 65536, max_messages_per_second: 200 };  // if `ready` lacks them
const state = window.audiokit = {
  running: false, sampleRate: null, received: [], receivedSamples: 0, sentSamples: 0,
  latencyMs: null, ready: null, done: null, error: null, closeCode: null, settings: null,
};
// The last Start's microphone and audio graph; a Start that Stop cancelled keeps its own, released.
let run = null;  // { media, context, nodes, released }
let sendTimes = [];
let session = null;  // the last Start's stream; an earlier one may still be sending its rest
let kept = 0;  // samples in state.received

function dbfs(samples) {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  return samples.length ? 10 * Math.log10(sum / samples.length + 1e-12) : -120;
}

function showLevel(which, samples) {
  const db = Math.max(-80, dbfs(samples));
  $("level-" + which).value = db;
  $("db-" + which).textContent = db.toFixed(0);
}

// The server's /healthz, or an Error saying why the server cannot take streams now.
async function health() {
  let response;
  try {
    response = await fetch("healthz", { cache: "no-store" });
  } catch (err) {  // nothing answered: the server is down, or the network or a proxy failed
    throw new Error("cannot reach the server (" + err.message + "); is it running? Reload the page to retry");
  }
  const body = await response.json().catch(() => null);  // a proxy's error page is not JSON
  if (!response.ok || !body || !Array.isArray(body.models)) {
    const why = body && body.status ? body.status : response.statusText;
    throw new Error("the server is not ready: healthz answered HTTP " + response.status
      + (why ? " (" + why + ")" : "") + "; reload the page to retry");
  }
  return body;
}

let servedModels = [];  // healthz's models, as last fetched

// healthz's answer, or null; the server line says whether the server is ready, or why not.
async function checkServer() {
  try {
    const served = await health();
    $("server").textContent = served.status;
    return served;
  } catch (err) {
    $("server").textContent = "error: " + err.message;
    return null;
  }
}

// The models of the chosen task in the model list, and the server line.
async function loadModels() {
  const answer = await checkServer();
  const models = answer ? answer.models : [];
  servedModels = models;
  // modes of tasks no served model has are disabled; a disabled choice moves to the first served one
  const served = new Set(models.map((m) => m.task));
  if (served.size) {
    const modes = [...$("mode").options];
    for (const option of modes) option.disabled = !served.has(option.value);
    if ($("mode").selectedOptions[0].disabled) $("mode").value = modes.find((o) => !o.disabled).value;
  }
  const task = $("mode").value;
  $("model").innerHTML = "";
  for (const m of models.filter((m) => m.task === task)) {
    const option = document.createElement("option");
    option.value = option.textContent = m.name;
    $("model").appendChild(option);
  }
  showBitrates();
}

// The bitrates the chosen codec model codes at (healthz's `bitrates`, bits/s): the one chosen before
// if this model has it, else the highest up to 6 kbps.
function showBitrates() {
  const codec = $("mode").value === "codec";
  const model = servedModels.find((m) => m.name === $("model").value);
  const bitrates = codec && model && Array.isArray(model.bitrates) ? model.bitrates : [];
  const previous = Number($("bitrate").value);
  $("bitrate-choice").hidden = !codec;
  $("atten-lim-choice").hidden = $("dry-choice").hidden = codec;  // the enhancer's knobs
  $("bitrate").innerHTML = "";
  for (const bps of bitrates) {
    const option = document.createElement("option");
    option.value = bps;
    option.textContent = bps / 1000 + " kbps";
    $("bitrate").appendChild(option);
  }
  const upTo6 = bitrates.filter((bps) => bps <= 6000);
  if (bitrates.length) {
    $("bitrate").value = bitrates.includes(previous) ? previous : (upTo6.length ? upTo6.at(-1) : bitrates[0]);
  }
}

function wsUrl() {
  const url = new URL("v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

// One stream: `start` once the socket opens; the captured audio waits until `ready` (which names the
// limits), then goes in messages of at most max_message_bytes, paced below max_messages_per_second;
// after Stop the rest of it, then `end` (also when Stop came before `ready`). Only the current session
// updates the page.
class Session {
  constructor(start) {
    this.rate = start.sample_rate;
    this.pending = []; this.pendingLength = 0;  // captured, not yet sent
    this.capturing = true;  // until Stop: audio after it is not sent
    this.ended = false;  // `end` sent, or the socket closed: nothing more goes
    this.finished = false;  // `done` came: the server processed all it took
    this.limits = null;  // from `ready`
    this.tokens = 0; this.last = 0; this.timer = null;  // the pacer (a token bucket)
    this.waiting = null; this.expect("start");  // cleared by `ready`
    this.heard = 0; this.quiet = null;  // when audio last came back; the check of it while streaming
    const ws = this.ws = new WebSocket(wsUrl());
    ws.binaryType = "arraybuffer";
    ws.onopen = () => ws.send(JSON.stringify(start));
    ws.onmessage = (event) => this.receive(event);
    ws.onclose = (event) => this.closed(event);
  }

  get current() { return this === session; }

  push(frame) {
    if (!this.capturing) return;
    this.pending.push(frame); this.pendingLength += frame.length;
    this.flush();
  }

  stop() {  // no more audio: what was captured, then `end`, as soon as `ready` allows
    if (this.current && this.capturing) $("status").textContent = "stopping: sending the rest, then end";
    this.capturing = false;
    this.flush();
  }

  abandon() {  // a Start that failed: nothing to send
    this.capturing = false; this.ended = true;
    clearTimeout(this.timer); clearTimeout(this.waiting); clearInterval(this.quiet);
    this.ws.close();
  }

  checkQuiet() {  // while streaming: say so when the server has sent no audio back for a while
    const seconds = Math.floor((performance.now() - this.heard) / 1000);
    if (!this.current || !this.capturing || seconds < QUIET_SECONDS) return;
    $("status").textContent = this.streaming + ": no audio back from the server for " + seconds
      + " s; is it stopped or overloaded?";
  }

  expect(sent) {  // (re)start the wait for the server's answer to `sent`
    clearTimeout(this.waiting);
    this.waiting = setTimeout(() => this.noAnswer(sent), 1000 * ANSWER_SECONDS);
  }

  noAnswer(sent) {  // nothing came within ANSWER_SECONDS of `start`'s sending or of `end`: give up, say so
    const opened = this.ws.readyState !== WebSocket.CONNECTING;
    this.abandon();
    if (!this.current) return;
    const message = "no answer from the server within " + ANSWER_SECONDS + " s ("
      + (opened ? "no reply to " + sent : "the connection did not open") + "); is it stopped or overloaded?";
    state.error = { message };
    $("status").textContent = "error: " + message;
    checkServer();
    stop();
  }

  // Send what the limits allow now: whole 20 ms messages while capturing (more at once, up to the
  // size limit, when behind), everything and then `end` after Stop; a timer resumes when the pacer is
  // out of messages.
  flush() {
    if (!this.limits || this.ended || this.ws.readyState !== WebSocket.OPEN) return;
    const most = Math.max(1, Math.floor(this.limits.max_message_bytes / Float32Array.BYTES_PER_ELEMENT));
    const least = Math.min(most, Math.round(this.rate * MESSAGE_SECONDS));
    while (this.pendingLength && (this.pendingLength >= least || !this.capturing)) {
      if (!this.take()) return;
      this.sendAudio(Math.min(most, this.pendingLength));
    }
    if (!this.capturing && this.take()) {
      this.ws.send(JSON.stringify({ type: "end" }));
      this.ended = true;
      this.expect("end");
    }
  }

  take() {  // one message from the pacer, else false and a flush when the next one is due
    const now = performance.now() / 1000;
    this.tokens = Math.min(this.burst, this.tokens + (now - this.last) * this.perSecond);
    this.last = now;
    if (this.tokens >= 1) { this.tokens -= 1; return true; }
    if (this.timer === null) {
      const due = 1000 * (1 - this.tokens) / this.perSecond;
      this.timer = setTimeout(() => { this.timer = null; this.flush(); }, due);
    }
    return false;
  }

  sendAudio(length) {  // the first `length` pending samples as one message
    const message = new Float32Array(length);
    let offset = 0;
    while (offset < length) {
      const piece = this.pending[0], n = Math.min(piece.length, length - offset);
      message.set(n === piece.length ? piece : piece.subarray(0, n), offset);
      if (n === piece.length) this.pending.shift(); else this.pending[0] = piece.subarray(n);
      offset += n;
    }
    this.pendingLength -= length;
    this.ws.send(message.buffer);
    if (!this.current) return;
    state.sentSamples += length;
    sendTimes.push([state.sentSamples, performance.now()]);
  }

  receive(event) {
    if (typeof event.data !== "string") {
      if (this.ended) this.expect("end");  // the rest is still coming
      this.heard = performance.now();
      if (this.current && this.capturing && $("status").textContent !== this.streaming) {
        $("status").textContent = this.streaming;  // it was saying that nothing came back
      }
      if (this.current) receiveAudio(new Float32Array(event.data));
      return;
    }
    const message = JSON.parse(event.data);
    if (this.ended) this.expect("end");  // the rest is still coming
    if (message.type === "done") this.finished = true;
    if (message.type === "ready") {
      clearTimeout(this.waiting);
      this.limits = Object.assign({}, SERVER_DEFAULTS, message);
      this.perSecond = PACE * this.limits.max_messages_per_second;
      this.burst = this.limits.max_messages_per_second;
      this.tokens = this.burst - 1; this.last = performance.now() / 1000;  // `start` was one
      if (this.current) {
        state.ready = message;
        $("algorithmic").textContent = (1000 * message.latency_samples / message.sample_rate).toFixed(0);
        this.streaming = "streaming (" + message.session + ", " + this.rate + " Hz)";
        if (this.capturing) $("status").textContent = this.streaming;
        this.heard = performance.now();
        this.quiet = setInterval(() => this.checkQuiet(), 1000);
      }
      this.flush();  // what was captured while `ready` was on its way
    } else if (!this.current) {
      return;
    } else if (message.type === "done") {
      state.done = message;
    } else if (message.type === "error") {
      state.error = message;
      $("status").textContent = "error " + message.code + ": " + message.message + hint(message.code);
    }
  }

  closed(event) {  // after `done` and Stop: closed; else, without the server's error, say what happened
    const stopped = !this.capturing;
    this.ended = true; this.capturing = false;
    clearTimeout(this.timer); clearTimeout(this.waiting); clearInterval(this.quiet);
    if (!this.current) return;
    state.closeCode = event.code;
    const code = event.code + (event.reason ? ": " + event.reason : "");
    if (this.finished && stopped && !state.error) {
      $("status").textContent = "closed (" + event.code + ")";
    } else if (!state.error) {  // a drain, a server that went away, a lost connection
      const message = this.finished
        ? "the server ended the stream (" + code + "; shutting down?)"
        : "the connection to the server closed before the stream finished (" + code + ")";
      state.error = { code: event.code, message };
      $("status").textContent = "error: " + message;
    }
    if (state.error) checkServer();  // is the server still there?
    stop();
  }
}

// What the user can do about an error code the page cannot mend itself.
function hint(code) {
  if (code !== 4401) return "";
  const url = new URL(location.href);
  url.searchParams.set("token", "TOKEN");  // the page passes its own ?token= on to the stream
  return "; open this page with the server's --token in its address: "
    + url.toString().replace("token=TOKEN", "token=<token>");
}

function receiveAudio(samples) {
  state.received.push(samples); kept += samples.length;
  while (kept - state.received[0].length >= KEEP_SECONDS * state.sampleRate) kept -= state.received.shift().length;
  state.receivedSamples += samples.length;
  // latency: the newest sample that came back was sent with the first chunk whose end covers it
  while (sendTimes.length > 1 && sendTimes[0][0] < state.receivedSamples) sendTimes.shift();
  if (sendTimes.length && sendTimes[0][0] >= state.receivedSamples) {
    state.latencyMs = performance.now() - sendTimes[0][1];
    $("latency").textContent = state.latencyMs.toFixed(0);
  }
  showLevel("out", samples);
  if (!$("bypass").checked && run && run.nodes.playback) run.nodes.playback.port.postMessage(samples);
}

// Close a Start's microphone and audio graph (after Stop, a closed stream, or a Start that failed or
// was stopped: what it opens after that is closed again when it notices).
function release(r = run) {
  if (!r) return;
  r.released = true;
  if (r.nodes.capture) r.nodes.capture.port.onmessage = null;
  if (r.media) r.media.getTracks().forEach((t) => t.stop());
  if (r.context) r.context.close().catch(() => {});
  if (r === run) { run = null; state.running = false; }
}

// Stop is on from the click: the microphone's permission prompt, or a server slow to send the
// worklets, may keep a Start waiting.
async function start() {
  const r = run = { media: null, context: null, nodes: {}, released: false };
  $("start").disabled = true; $("stop").disabled = false; $("status").textContent = "starting";
  Object.assign(state, {  // a new session: nothing of the last one counts
    received: [], receivedSamples: 0, sentSamples: 0, latencyMs: null, ready: null, done: null, error: null,
    closeCode: null,
  });
  kept = 0; sendTimes = []; session = null;
  $("latency").textContent = "-";
  try {
    await openStream(r);
  } catch (err) {
    const stopped = r.released;  // Stop came first: it said so and reset the buttons
    release(r);
    if (stopped) return;
    if (session) session.abandon();
    session = null;
    $("stop").disabled = true;
    throw err;
  }
  state.running = true;
}

class Stopped extends Error {}  // Stop while Start was waiting

// The enhancer's knobs as typed (left empty: the server's defaults, no limit and 0); the server refuses
// values out of range, with a message the status line shows.
function knobs() {
  const given = {};
  for (const [id, key, name] of [["atten-lim-db", "atten_lim_db", "attenuation limit"], ["dry", "dry", "dry"]]) {
    const input = $(id);
    if (input.validity.badInput) throw new Error("the " + name + " is not a number");
    if (input.value !== "") given[key] = Number(input.value);
  }
  return given;
}

async function openStream(r) {  // microphone, worklets, socket: start()'s part that may fail
  if (!navigator.mediaDevices) {  // browsers offer microphones (and worklets) only to secure pages
    throw new Error("this page may not use the microphone: browsers allow it only over https, or at "
      + "http://127.0.0.1 or http://localhost");
  }
  const task = $("mode").value;
  const enhancing = task === "enhance" ? knobs() : null;  // first: a typo fails Start before the microphone
  const processing = $("browser-processing").checked;
  const media = r.media = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing, channelCount: 1 },
  });
  if (r.released) throw new Stopped();
  const track = media.getAudioTracks()[0];
  state.settings = track.getSettings();
  $("settings").textContent = JSON.stringify(state.settings, null, 2);
  // the device's rate: Firefox ignores a requested one; the server resamples
  const context = r.context = new AudioContext();
  state.sampleRate = context.sampleRate;
  await context.audioWorklet.addModule("static/worklets.js");
  if (r.released) throw new Stopped();
  const nodes = r.nodes;
  const source = context.createMediaStreamSource(media);
  nodes.capture = new AudioWorkletNode(context, "audiokit-capture");
  nodes.playback = new AudioWorkletNode(context, "audiokit-playback", {
    outputChannelCount: [1], processorOptions: { prebuffer: Math.round(context.sampleRate * 0.04) },
  });
  source.connect(nodes.capture);
  nodes.playback.connect(context.destination);
  const start = { type: "start", task, sample_rate: context.sampleRate, format: "f32le" };
  if ($("model").value) start.model = $("model").value;  // else the server's model for the task
  if (task === "codec" && $("bitrate").value) start.bitrate = Number($("bitrate").value);
  // enhance: the band above the model's rate, and the knobs
  if (enhancing) Object.assign(start, { high_band: $("high-band").checked }, enhancing);
  const stream = session = new Session(start);  // a previous session's socket may still be finishing
  nodes.capture.port.onmessage = (event) => {
    showLevel("in", event.data);
    if ($("bypass").checked) nodes.playback.port.postMessage(event.data);
    stream.push(event.data);
  };
}

function stop() {
  if (session) session.stop();  // the audio captured so far, then `end` (once `ready` came)
  else if (run) $("status").textContent = "stopped before the stream started";
  release();
  $("start").disabled = false; $("stop").disabled = true;
}

$("start").onclick = () => start().catch((err) => {
  state.error = { message: String(err) };
  $("status").textContent = "error: " + err;
  $("start").disabled = false;
  checkServer();  // a server that went away fails Start with the browser's words (worklets not loaded)
});
$("stop").onclick = stop;
$("mode").onchange = loadModels;
$("model").onchange = showBitrates;
loadModels();
