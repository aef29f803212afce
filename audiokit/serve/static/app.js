// The audiokit web page: microphone -> /v1/stream -> speakers, through AudioWorklets.
// window.audiokit exposes what happened since the last Start (for tests): the last KEEP_SECONDS of
// received audio, sample counts, latency, rate, errors.
"use strict";

const $ = (id) => document.getElementById(id);
const MESSAGE_SECONDS = 0.02;  // 20 ms messages
const KEEP_SECONDS = 10;  // state.received keeps about this much of the newest audio
const state = window.audiokit = {
  running: false, sampleRate: null, received: [], receivedSamples: 0, sentSamples: 0,
  latencyMs: null, ready: null, done: null, error: null, settings: null,
};
let context = null, socket = null, media = null, nodes = {}, sendTimes = [], pending = [], pendingLength = 0;
let kept = 0;  // samples in state.received
let sending = false;  // from Start until `end`: no audio goes after it

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

async function loadModels() {
  const health = await (await fetch("/healthz")).json();
  const task = $("mode").value.split(":")[0];
  $("model").innerHTML = "";
  for (const m of health.models.filter((m) => m.task === task)) {
    const option = document.createElement("option");
    option.value = option.textContent = m.name;
    $("model").appendChild(option);
  }
}

function wsUrl() {
  const url = new URL("/v1/stream", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

function sendAudio(frame) {
  if (!sending) return;
  pending.push(frame); pendingLength += frame.length;
  const size = Math.round(state.sampleRate * MESSAGE_SECONDS);
  if (pendingLength >= size && socket.readyState === WebSocket.OPEN && state.ready) sendPending();
}

function sendPending() {
  if (!pendingLength) return;
  const message = new Float32Array(pendingLength);
  let offset = 0;
  for (const piece of pending) { message.set(piece, offset); offset += piece.length; }
  pending = []; pendingLength = 0;
  socket.send(message.buffer);
  state.sentSamples += message.length;
  sendTimes.push([state.sentSamples, performance.now()]);
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
  if (!$("bypass").checked) nodes.playback.port.postMessage(samples);
}

async function start() {
  $("start").disabled = true; $("status").textContent = "starting";
  Object.assign(state, {  // a new session: nothing of the last one counts
    received: [], receivedSamples: 0, sentSamples: 0, latencyMs: null, ready: null, done: null, error: null,
  });
  kept = 0; sendTimes = []; pending = []; pendingLength = 0;
  $("latency").textContent = "-";
  const processing = $("browser-processing").checked;
  media = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing, channelCount: 1 },
  });
  const track = media.getAudioTracks()[0];
  state.settings = track.getSettings();
  $("settings").textContent = JSON.stringify(state.settings, null, 2);
  context = new AudioContext();  // the device's rate: Firefox ignores a requested one; the server resamples
  state.sampleRate = context.sampleRate;
  await context.audioWorklet.addModule("/static/worklets.js");
  const source = context.createMediaStreamSource(media);
  nodes.capture = new AudioWorkletNode(context, "audiokit-capture");
  nodes.playback = new AudioWorkletNode(context, "audiokit-playback", {
    outputChannelCount: [1], processorOptions: { prebuffer: Math.round(context.sampleRate * 0.04) },
  });
  source.connect(nodes.capture);
  nodes.playback.connect(context.destination);
  nodes.capture.port.onmessage = (event) => {
    showLevel("in", event.data);
    if ($("bypass").checked) nodes.playback.port.postMessage(event.data);
    sendAudio(event.data);
  };
  const [task, bitrate] = $("mode").value.split(":");
  const start = { type: "start", task, sample_rate: context.sampleRate, format: "f32le" };
  if ($("model").value) start.model = $("model").value;  // else the server's model for the task
  if (bitrate) start.bitrate = Number(bitrate);
  const ws = socket = new WebSocket(wsUrl());  // a previous session's socket may still be closing
  ws.binaryType = "arraybuffer";
  ws.onopen = () => ws.send(JSON.stringify(start));
  ws.onmessage = (event) => {
    if (ws !== socket) return;
    if (typeof event.data !== "string") { receiveAudio(new Float32Array(event.data)); return; }
    const message = JSON.parse(event.data);
    if (message.type === "ready") {
      state.ready = message;
      $("algorithmic").textContent = (1000 * message.latency_samples / message.sample_rate).toFixed(0);
      $("status").textContent = "streaming (" + message.session + ", " + context.sampleRate + " Hz)";
    } else if (message.type === "done") {
      state.done = message;
    } else if (message.type === "error") {
      state.error = message;
      $("status").textContent = "error " + message.code + ": " + message.message;
    }
  };
  ws.onclose = (event) => {
    if (ws !== socket) return;
    if (!state.error) $("status").textContent = "closed (" + event.code + ")";
    stop();
  };
  sending = true;
  state.running = true;
  $("stop").disabled = false;
}

function stop() {
  if (nodes.capture) nodes.capture.port.onmessage = null;
  if (sending && socket.readyState === WebSocket.OPEN) {  // the rest of the audio, then end
    if (state.ready) sendPending();
    socket.send(JSON.stringify({ type: "end" }));
  } else if (socket && socket.readyState === WebSocket.CONNECTING) {
    socket.close();
  }
  sending = false;
  if (media) media.getTracks().forEach((t) => t.stop());
  if (context) context.close();
  context = null; media = null; state.running = false;
  $("start").disabled = false; $("stop").disabled = true;
}

$("start").onclick = () => start().catch((err) => {
  state.error = { message: String(err) };
  $("status").textContent = "error: " + err;
  $("start").disabled = false;
});
$("stop").onclick = stop;
$("mode").onchange = loadModels;
loadModels();
