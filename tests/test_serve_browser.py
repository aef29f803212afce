"""The web page in headless Chromium (Debian's chromium + chromedriver, driven by Selenium): a fake
microphone plays a speech WAV, the page streams it through the codec and plays the result; the audio
that came back must be speech (non-silent) matching the offline codec round trip of that WAV."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import signal as sps
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from serve_support import free_port, prefix_proxy, running_server, speech

from audiokit import Codec, io
from audiokit.serve import ServerConfig
from audiokit.serve import app as serve_app
from audiokit.serve.connection import handle_stream
from audiokit.serve.engines import Engine

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser(wav_path, profile, *flags: str) -> webdriver.Chrome:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    assert not missing, f"{missing} missing: `make setup` installs chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav_path}",
        "--autoplay-policy=no-user-gesture-required",
        *flags,
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def _best_correlation(segment: np.ndarray, reference: np.ndarray) -> float:
    """Largest normalised correlation of ``segment`` with an equally long window of ``reference``."""
    n = segment.shape[0]
    segment = segment - segment.mean()
    dots = sps.correlate(reference, segment, mode="valid", method="fft")  # one per window start
    energy = np.concatenate([[0.0], np.cumsum(reference.astype(np.float64) ** 2)])
    norms = np.sqrt(energy[n:] - energy[:-n]) * np.linalg.norm(segment)
    return float(np.max(np.abs(dots) / (norms + 1e-9)))


def test_page_streams_fake_microphone(tmp_path):
    codec = Codec.from_pretrained("speech-16k")
    x = speech(3.0, 0.2)
    wav_path = tmp_path / "mic.wav"
    sf.write(wav_path, x, 16000, subtype="PCM_16")
    config = ServerConfig(max_streams_per_client=4)
    with running_server(config, {"speech-16k": Engine("speech-16k", codec, 4)}) as server:
        driver = _browser(wav_path, tmp_path / "profile")
        try:
            driver.get(server.http + "/")
            deadline = time.monotonic() + 20
            while not driver.execute_script("return document.getElementById('model').options.length"):
                assert time.monotonic() < deadline, "the page did not list the models from /healthz"
                time.sleep(0.1)
            driver.find_element(By.ID, "start").click()
            deadline = time.monotonic() + 30
            got = 0
            while time.monotonic() < deadline:
                state = driver.execute_script("return window.audiokit")
                assert state["error"] is None, state["error"]
                got = state["receivedSamples"]
                if state["sampleRate"] and got >= 2.5 * state["sampleRate"] and state["latencyMs"]:
                    break
                time.sleep(0.25)
            rate = driver.execute_script("return window.audiokit.sampleRate")
            script = "return window.audiokit.received.flatMap((a) => Array.from(a))"
            received = np.array(driver.execute_script(script), np.float32)
            latency = driver.find_element(By.ID, "latency").text
            settings = driver.execute_script("return window.audiokit.settings")
            driver.save_screenshot(str(tmp_path / "page.png"))
        finally:
            driver.quit()
    assert got >= 2.5 * rate, f"only {got} samples came back at {rate} Hz"
    assert float(latency) > 0
    assert settings.get("echoCancellation") is False and settings.get("noiseSuppression") is False
    back = io.resample(received[:, None], int(rate), 16000)[:, 0]
    assert np.sqrt(np.mean(back**2)) > 1e-3  # not silence
    with torch.no_grad():
        offline = codec.decode(codec.encode(torch.from_numpy(np.tile(x, 3))[None, None], 6000))[0, 0].numpy()
    segment = back[len(back) // 4 : len(back) // 4 + 16000]  # 1 s of the looping capture, anywhere
    corr = _best_correlation(segment, offline)
    # unrelated audio scores ~0.04 here (1 s windows); the browser's own resampling of the capture
    # shifts the codec's waveform, so the same speech scored 0.49-0.6 across runs
    assert corr > 0.3, (corr, len(back), rate)
    assert (tmp_path / "page.png").stat().st_size > 0


def _page(server, tmp_path, seconds: float = 3.0) -> webdriver.Chrome:
    """Chromium on the page of ``server``, its models listed, with ``seconds`` of speech (looping) as
    its fake microphone."""
    wav_path = tmp_path / "mic.wav"
    sf.write(wav_path, speech(seconds, 0.2), 16000, subtype="PCM_16")
    driver = _browser(wav_path, tmp_path / "profile")
    try:
        driver.get(server.http + "/")
        _wait(driver, "return document.getElementById('model').options.length", 20, "no models listed")
    except BaseException:
        driver.quit()
        raise
    return driver


def _wait(driver, script: str, seconds: float, what: str):
    """The first truthy result of ``script`` in the page within ``seconds``; fail with ``what`` and the
    page's state."""
    deadline = time.monotonic() + seconds
    while not (result := driver.execute_script(script)):
        if time.monotonic() > deadline:
            state = driver.execute_script("return window.audiokit")
            if state is None:
                raise AssertionError(f"{what}: the page's script did not run")
            state.pop("received", None)
            raise AssertionError(f"{what}: {state}")
        time.sleep(0.1)
    return result


@dataclass
class _Wire:
    """What the server's stream handler saw: ``started`` is set when a ``start`` was accepted (``ready``
    then waits ``delay`` seconds; the handler takes ``end`` ``end_delay`` seconds late); ``messages`` are
    the client's, in order: bytes as their length, text as its ``type``."""

    delay: float
    end_delay: float = 0.0
    started: threading.Event = field(default_factory=threading.Event)
    messages: list = field(default_factory=list)


@pytest.fixture
def slow_ready(monkeypatch) -> Callable[[float], _Wire]:
    """``slow_ready(delay, end_delay=0)``: the server's ``ready`` leaves ``delay`` seconds late (a busy or
    distant server), its handler takes ``end`` ``end_delay`` seconds late, and what the client sends is
    recorded in the returned :class:`_Wire`."""

    def install(delay: float, end_delay: float = 0.0) -> _Wire:
        wire = _Wire(delay, end_delay)

        async def handle(websocket, state):
            send_text, receive = websocket.send_text, websocket.receive

            async def send_text_late(data: str) -> None:
                if json.loads(data).get("type") == "ready":
                    wire.started.set()
                    await asyncio.sleep(wire.delay)
                await send_text(data)

            async def receive_recorded() -> dict:
                message = await receive()
                if message["type"] == "websocket.receive":
                    data = message.get("bytes")
                    text = None if data is not None else json.loads(message["text"]).get("type")
                    wire.messages.append(len(data) if data is not None else text)
                    if text == "end":
                        await asyncio.sleep(wire.end_delay)
                return message

            websocket.send_text, websocket.receive = send_text_late, receive_recorded
            await handle_stream(websocket, state)

        monkeypatch.setattr(serve_app, "handle_stream", handle)
        return wire

    return install


def _codec_server(port: int | None = None, **limits):
    codec = Codec.from_pretrained("speech-16k")
    return running_server(
        ServerConfig(max_streams_per_client=4, **limits), {"speech-16k": Engine("speech-16k", codec, 4)}, port
    )


def test_page_splits_and_paces_what_it_captured_before_a_slow_ready(tmp_path, slow_ready):
    """A `ready` 1.5 s late finds 1.5 s captured (265 KB at 44.1 kHz; as one message: 1009): the page
    must send it in messages within ``max_message_bytes`` and keep below ``max_messages_per_second``
    (a limit the page's 20 ms messages alone would exceed), and the stream go on in real time."""
    wire = slow_ready(1.5)
    limit, rate_limit = 16000, 20
    with _codec_server(max_message_bytes=limit, max_messages_per_second=rate_limit) as server:
        driver = _page(server, tmp_path)
        try:
            driver.find_element(By.ID, "start").click()
            _wait(
                driver,
                "const s = window.audiokit; return s.error || s.closeCode != null || "
                "(s.ready && s.receivedSamples >= 3 * s.sampleRate)",
                40,
                "3 s did not come back",
            )
            driver.find_element(By.ID, "stop").click()
            _wait(driver, "const s = window.audiokit; return s.error || s.closeCode != null", 30, "no close")
            state = driver.execute_script("return window.audiokit")
        finally:
            driver.quit()
    assert state["error"] is None and state["closeCode"] == 1000, (state["error"], state["closeCode"])
    assert state["ready"]["max_message_bytes"] == limit
    sizes = [m for m in wire.messages if isinstance(m, int)]
    assert max(sizes) <= limit, max(sizes)
    assert sum(sizes) == 4 * state["sentSamples"] == 4 * state["done"]["samples_in"]
    assert state["done"]["samples_out"] == state["done"]["samples_in"]
    assert wire.messages[0] == "start" and wire.messages[-1] == "end"
    # what waited for `ready` went as several full messages (the page's own are 20 ms, 3840 bytes at 48 kHz)
    assert sizes[:3] == [limit] * 3, sizes[:10]


def test_page_stop_before_ready_sends_what_it_captured(tmp_path, slow_ready):
    """Stop after the socket opened but before `ready`: the audio captured so far still goes once `ready`
    comes, then `end`; the stream ends with `done` counting it, and nothing follows `end`."""
    wire = slow_ready(2.0)
    with _codec_server() as server:
        driver = _page(server, tmp_path)
        try:
            driver.find_element(By.ID, "start").click()
            assert wire.started.wait(20), "the server never got `start`"
            time.sleep(0.5)
            assert driver.execute_script("return window.audiokit.ready") is None  # still 1.5 s to go
            driver.find_element(By.ID, "stop").click()
            running = driver.execute_script("return window.audiokit.running")
            _wait(driver, "const s = window.audiokit; return s.error || s.closeCode != null", 30, "no close")
            state = driver.execute_script("return window.audiokit")
        finally:
            driver.quit()
    assert running is False
    assert state["error"] is None and state["closeCode"] == 1000, (state["error"], state["closeCode"])
    rate = state["sampleRate"]
    assert state["done"]["samples_in"] == state["sentSamples"] >= 0.4 * rate, (state["done"], rate)
    assert state["done"]["samples_out"] == state["done"]["samples_in"] == state["receivedSamples"]
    assert wire.messages[0] == "start" and wire.messages[-1] == "end"
    assert wire.messages.count("end") == 1


def test_page_says_stopping_and_gives_up_on_a_server_silent_after_end(tmp_path, slow_ready):
    """Stop, then a server that sends nothing more (here: it takes `end` 20 s late): the status says the
    page is stopping (it still said "streaming (...)"), and after 10 s of silence the page gives up
    with an error saying so (it waited for `done` forever)."""
    slow_ready(0.0, end_delay=20.0)
    with _codec_server() as server:
        driver = _page(server, tmp_path)
        try:
            driver.find_element(By.ID, "start").click()
            _wait(driver, "return window.audiokit.receivedSamples > 0", 30, "no audio came back")
            driver.find_element(By.ID, "stop").click()
            stopping = driver.find_element(By.ID, "status").text
            time.sleep(1)  # the rest came back, `done` did not
            still = driver.find_element(By.ID, "status").text
            error = _wait(driver, "return window.audiokit.error", 20, "no error shown")
            state = driver.execute_script("return window.audiokit")
            status = driver.find_element(By.ID, "status").text
        finally:
            driver.quit()
    assert stopping == still == "stopping: sending the rest, then end", (stopping, still)
    expected = "no answer from the server within 10 s (no reply to end); is it stopped or overloaded?"
    assert error["message"] == expected and status == "error: " + expected, (error, status)
    assert state["done"] is None and state["closeCode"] is not None and not state["running"]


def test_page_says_when_no_audio_comes_back(tmp_path, monkeypatch):
    """Streaming, and the server stops sending output (stopped, overloaded: here its sends stall after
    ten messages): after 5 s the status says that no audio came back, and when audio comes again it says
    "streaming" again (it said "streaming" throughout, the page playing silence)."""
    stalled, resumed = threading.Event(), threading.Event()

    async def handle(websocket, state):
        send_bytes, sent = websocket.send_bytes, []

        async def send_stalling(data: bytes) -> None:
            sent.append(len(data))
            if len(sent) > 10:
                stalled.set()
                while not resumed.is_set():
                    await asyncio.sleep(0.05)
            await send_bytes(data)

        websocket.send_bytes = send_stalling
        await handle_stream(websocket, state)

    monkeypatch.setattr(serve_app, "handle_stream", handle)
    with _codec_server() as server:
        driver = _page(server, tmp_path)
        try:
            driver.find_element(By.ID, "start").click()
            assert stalled.wait(30), "the server sent no output"
            quiet = (
                "const s = document.getElementById('status').textContent; return s.includes('no audio') && s"
            )
            shown = _wait(driver, quiet, 15, "the status did not say that no audio came back")
            resumed.set()
            streaming = "return /^streaming \\([^)]*\\)$/.test(document.getElementById('status').textContent)"
            _wait(driver, streaming, 10, "the status did not say streaming again")
            state = driver.execute_script("return window.audiokit")
        finally:
            resumed.set()
            driver.quit()
    assert shown.startswith("streaming (speech-16k-0, "), shown
    assert shown.endswith(": no audio back from the server for 5 s; is it stopped or overloaded?"), shown
    assert state["error"] is None and state["running"], state["error"]


# Before Start: remember every microphone stream and AudioContext the page opens (_OPENED), and make
# loading the worklets fail (as a blocked or missing /static/worklets.js would).
_OPENED = """
window.opened = { streams: [], contexts: [] };
const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (c) => {
  const s = await getUserMedia(c); window.opened.streams.push(s); return s;
};
const Base = window.AudioContext;
window.AudioContext = class extends Base {
  constructor(...args) { super(...args); window.opened.contexts.push(this); }
};
"""
_FAILING_WORKLETS = (
    _OPENED
    + """
window.addModule = AudioWorklet.prototype.addModule;
AudioWorklet.prototype.addModule = () => Promise.reject(new DOMException("no worklets", "AbortError"));
"""
)


def _released_then_started_again(driver) -> tuple[dict, dict]:
    """Once every AudioContext the page opened is closed: what the page holds (microphone streams and
    contexts it opened, tracks still live, the buttons' ``disabled``, ``running``, the status line); then,
    the worklets restored and Start clicked again, ``window.audiokit`` once audio comes back (or an
    error does)."""
    _wait(driver, "return window.opened.contexts.every((c) => c.state === 'closed')", 5, "open context")
    released = driver.execute_script(
        "return { streams: window.opened.streams.length, contexts: window.opened.contexts.length,"
        " live: window.opened.streams.flatMap((s) => s.getTracks())"
        ".filter((t) => t.readyState !== 'ended').length,"
        " start: document.getElementById('start').disabled,"
        " stop: document.getElementById('stop').disabled, running: window.audiokit.running,"
        " status: document.getElementById('status').textContent }"
    )
    driver.execute_script("AudioWorklet.prototype.addModule = window.addModule")
    driver.find_element(By.ID, "start").click()
    _wait(driver, "const s = window.audiokit; return s.error || s.receivedSamples > 0", 30, "no audio")
    return released, driver.execute_script("return window.audiokit")


def test_page_releases_the_microphone_when_start_fails(tmp_path):
    """`addModule` failing after `getUserMedia` succeeded: the error is shown, the microphone's tracks are
    stopped and the AudioContext closed; a later Start works."""
    with _codec_server() as server:
        driver = _page(server, tmp_path)
        try:
            driver.execute_script(_FAILING_WORKLETS)
            driver.find_element(By.ID, "start").click()
            error = _wait(driver, "return window.audiokit.error", 20, "no error shown")
            opened, retried = _released_then_started_again(driver)
        finally:
            driver.quit()
    assert "no worklets" in error["message"], error
    expected = {"streams": 1, "contexts": 1, "live": 0, "start": False, "stop": True, "running": False}
    assert opened.items() >= expected.items(), opened
    assert retried["error"] is None and retried["ready"] is not None


# As _FAILING_WORKLETS, but loading the worklets never ends (a server that does not answer).
_WAITING_WORKLETS = _FAILING_WORKLETS.replace(
    'Promise.reject(new DOMException("no worklets", "AbortError"))', "new Promise(() => {})"
)


def test_page_stop_cancels_a_start_that_waits(tmp_path):
    """A Start that waits (a permission prompt, a server that does not send the worklets: here an
    `addModule` that never settles): Stop is on and cancels it, the microphone and the AudioContext are
    released, the status says so, and a later Start streams (Stop was disabled: the buttons were stuck)."""
    with _codec_server() as server:
        driver = _page(server, tmp_path)
        try:
            driver.execute_script(_WAITING_WORKLETS)
            driver.find_element(By.ID, "start").click()
            _wait(driver, "return window.opened.contexts.length", 20, "no AudioContext opened")
            stop = driver.find_element(By.ID, "stop").is_enabled()
            driver.find_element(By.ID, "stop").click()
            stopped, retried = _released_then_started_again(driver)
        finally:
            driver.quit()
    assert stop, "Stop was disabled while Start waited"
    expected = {"live": 0, "start": False, "stop": True, "running": False}
    assert stopped.items() >= {**expected, "status": "stopped before the stream started"}.items(), stopped
    assert retried["error"] is None and retried["ready"] is not None


def test_page_gives_up_on_a_ready_that_does_not_come(tmp_path, slow_ready):
    """A server that takes `start` and never answers (stopped, overloaded: here a `ready` held back 20 s):
    after 10 s the page says so, closes the socket, releases the microphone and offers Start again (it
    said "streaming" or "starting" for as long as the server stayed silent)."""
    slow_ready(20.0)
    with _codec_server() as server:
        driver = _page(server, tmp_path)
        try:
            driver.execute_script(_OPENED)
            driver.find_element(By.ID, "start").click()
            error = _wait(driver, "return window.audiokit.error", 20, "no error shown")
            _wait(driver, "return window.audiokit.closeCode != null", 5, "the socket stayed open")
            after = driver.execute_script(
                "return { live: window.opened.streams.flatMap((s) => s.getTracks())"
                ".filter((t) => t.readyState !== 'ended').length,"
                " contexts: window.opened.contexts.filter((c) => c.state !== 'closed').length,"
                " start: document.getElementById('start').disabled,"
                " stop: document.getElementById('stop').disabled, running: window.audiokit.running,"
                " status: document.getElementById('status').textContent }"
            )
        finally:
            driver.quit()
    expected = "no answer from the server within 10 s (no reply to start); is it stopped or overloaded?"
    assert error["message"] == expected, error
    assert after == {
        "live": 0,
        "contexts": 0,
        "start": False,
        "stop": True,
        "running": False,
        "status": "error: " + expected,
    }, after


def test_page_names_its_meters_and_announces_its_status(tmp_path):
    """In the accessibility tree (what a screen reader reads): the level meters are named, and the
    server and status lines are live regions, so a change ("error 4429: server full ...") is announced
    (the meters had no name, and nothing on the page was live)."""
    with _codec_server() as server:
        driver = _page(server, tmp_path)
        try:
            nodes = driver.execute_cdp_cmd("Accessibility.getFullAXTree", {})["nodes"]
        finally:
            driver.quit()

    def value(node, key):
        return (node.get(key) or {}).get("value")

    meters = [value(n, "name") for n in nodes if value(n, "role") == "meter"]
    live = [
        (value(n, "role"), value(n, "name"))
        for n in nodes
        if {"name": "live", "value": {"type": "token", "value": "polite"}} in n.get("properties", [])
    ]
    assert meters == ["input", "output"], meters
    assert [role for role, _ in live] == ["status", "status"], live


@pytest.mark.parametrize("high_band", [True, False])
def test_page_asks_for_the_high_band_as_its_box_says(tmp_path, high_band):
    """Enhance from the page: the high-band box (checked by default) goes out as `high_band`, and the
    page shows the latency the server reports for it (20 ms more with it, at the browser's 44.1/48 kHz)."""
    from serve_support import random_enhancer

    enhancer, _ = random_enhancer(tmp_path)
    with running_server(ServerConfig(), {"enhance-16k": Engine("enhance-16k", enhancer, 4)}) as server:
        wav_path = tmp_path / "mic.wav"
        sf.write(wav_path, speech(3.0, 0.2), 16000, subtype="PCM_16")
        driver = _browser(wav_path, tmp_path / "profile")
        try:
            driver.get(server.http + "/")
            driver.find_element(By.ID, "mode").send_keys("enhance")  # the models of that task are listed
            _wait(driver, "return document.getElementById('model').options.length", 20, "no models listed")
            assert driver.find_element(By.ID, "high-band").is_selected()  # the default
            if not high_band:
                driver.find_element(By.ID, "high-band").click()
            driver.find_element(By.ID, "start").click()
            ready = _wait(driver, "return window.audiokit.ready", 20, "no ready")
            shown = _wait(
                driver, "return document.getElementById('algorithmic').textContent", 5, "no latency"
            )
        finally:
            driver.quit()
    rate = ready["sample_rate"]
    assert rate > 16000 and ready["high_band"] is high_band
    assert ready["latency_samples"] == round((0.04 if high_band else 0.02) * rate)
    assert shown == ("40" if high_band else "20")


def test_page_sends_the_enhancer_knobs_as_typed(tmp_path):
    """Enhance from the page: the attenuation limit and dry fields (shown for enhance only) go out as
    `atten_lim_db` and `dry`, and `ready` says the stream runs with them; empty is no limit; a value the
    server refuses shows as its one-line error, and text that is no number fails Start at once."""
    from serve_support import random_enhancer

    enhancer, _ = random_enhancer(tmp_path)
    codec = Codec.from_pretrained("speech-16k")
    engines = {
        "enhance-16k": Engine("enhance-16k", enhancer, 4),
        "speech-16k": Engine("speech-16k", codec, 4),
    }
    with running_server(ServerConfig(), engines) as server:
        driver = _page(server, tmp_path)
        try:
            shown_for_codec = driver.find_element(By.ID, "atten-lim-choice").is_displayed()
            Select(driver.find_element(By.ID, "mode")).select_by_value("enhance")
            _wait(
                driver, "return document.getElementById('model').value === 'enhance-16k'", 20, "no enhancer"
            )
            shown = [driver.find_element(By.ID, i).is_displayed() for i in ("atten-lim-choice", "dry-choice")]
            readies, errors = [], []
            for limit, dry in (("12", "0.25"), ("", "0"), ("-3", "0")):
                for field, value in (("atten-lim-db", limit), ("dry", dry)):
                    driver.find_element(By.ID, field).clear()
                    driver.find_element(By.ID, field).send_keys(value)
                driver.find_element(By.ID, "start").click()
                _wait(driver, "const s = window.audiokit; return s.error || s.ready", 20, "no ready")
                state = driver.execute_script("return window.audiokit")
                readies.append(state["ready"])
                errors.append(state["error"])
                if state["ready"]:
                    driver.find_element(By.ID, "stop").click()
                _wait(driver, "return !document.getElementById('start').disabled", 20, "Start not back")
            driver.find_element(By.ID, "dry").send_keys("e")  # "0e": no number
            driver.find_element(By.ID, "start").click()
            typo = _wait(driver, "return window.audiokit.error", 10, "no error for a typo")
            status = driver.find_element(By.ID, "status").text
        finally:
            driver.quit()
    assert not shown_for_codec and shown == [True, True]
    assert (readies[0]["atten_lim_db"], readies[0]["dry"]) == (12, 0.25) and errors[0] is None
    assert (readies[1]["atten_lim_db"], readies[1]["dry"]) == (None, 0) and errors[1] is None
    assert readies[2] is None and errors[2]["code"] == 4400, errors[2]
    assert errors[2]["message"] == "atten_lim_db must be a number of dB >= 0, or null for no limit, got -3"
    assert (
        typo["message"] == "Error: the dry is not a number"
        and status == "error: Error: the dry is not a number"
    )


def test_page_offers_only_the_tasks_the_server_serves(tmp_path):
    """A server with only an enhancer: the page starts in the enhance mode with its model listed (not in
    its default, the codec, which would fail with "no model serves task 'codec'"), the codec modes are
    disabled, and Start streams through the enhancer."""
    from serve_support import random_enhancer

    enhancer, _ = random_enhancer(tmp_path)
    with running_server(ServerConfig(), {"enhance-16k": Engine("enhance-16k", enhancer, 4)}) as server:
        driver = _page(server, tmp_path)
        try:
            mode = driver.find_element(By.ID, "mode").get_attribute("value")
            models = [o.text for o in Select(driver.find_element(By.ID, "model")).options]
            disabled = driver.execute_script(
                "return [...document.getElementById('mode').options].filter((o) => o.disabled)"
                ".map((o) => o.value)"
            )
            driver.find_element(By.ID, "start").click()
            ready = _wait(driver, "const s = window.audiokit; return s.error || s.ready", 20, "no ready")
            state = driver.execute_script("return window.audiokit")
        finally:
            driver.quit()
    assert mode == "enhance" and models == ["enhance-16k"], (mode, models)
    assert disabled == ["codec"], disabled
    assert state["error"] is None and ready["sample_rate"] > 0, state["error"]


def test_page_offers_the_bitrates_the_codec_codes_at(tmp_path):
    """The codec's bitrates come from healthz: a codec of 2 codebooks of 16 entries (0.2 and 0.4 kbps)
    is offered those and streams at the highest (the page offered 1.5/3/6 kbps whatever the codec, and
    Start failed with "bitrate 6000 b/s is outside 200..400"); in the enhance mode the choice is hidden."""
    from conftest import TINY_SPEECH_CODEC
    from serve_support import random_enhancer

    torch.manual_seed(0)
    few = Codec.from_config("speech-16k", **TINY_SPEECH_CODEC, num_quantizers=2, codebook_size=16).eval()
    enhancer, _ = random_enhancer(tmp_path)
    engines = {"few-codes": Engine("few-codes", few, 4), "enhance-16k": Engine("enhance-16k", enhancer, 4)}
    with running_server(ServerConfig(), engines) as server:
        driver = _page(server, tmp_path)
        try:
            offered = [o.text for o in Select(driver.find_element(By.ID, "bitrate")).options]
            mode = Select(driver.find_element(By.ID, "mode"))
            mode.select_by_value("enhance")
            enhancing = "return document.getElementById('model').value === 'enhance-16k'"
            _wait(driver, enhancing, 20, "no enhancer")
            shown_for_enhance = driver.find_element(By.ID, "bitrate-choice").is_displayed()
            mode.select_by_value("codec")
            _wait(driver, "return document.getElementById('bitrate').options.length", 20, "no bitrates")
            chosen = driver.find_element(By.ID, "bitrate").get_attribute("value")
            shown_for_codec = driver.find_element(By.ID, "bitrate-choice").is_displayed()
            driver.find_element(By.ID, "start").click()
            ready = _wait(driver, "const s = window.audiokit; return s.error || s.ready", 20, "no ready")
            state = driver.execute_script("return window.audiokit")
        finally:
            driver.quit()
    assert offered == ["0.2 kbps", "0.4 kbps"] and chosen == "400", (offered, chosen)
    assert shown_for_codec and not shown_for_enhance
    assert state["error"] is None and ready["model"] == "few-codes", state["error"]


def test_page_says_why_an_insecure_origin_has_no_microphone(tmp_path):
    """The page under a name that is not loopback, over http: browsers give it no ``mediaDevices``, and
    Start says so (not ``TypeError: Cannot read properties of undefined``)."""
    wav_path = tmp_path / "mic.wav"
    sf.write(wav_path, speech(1.0, 0.2), 16000, subtype="PCM_16")
    with _codec_server() as server:
        rules = "--host-resolver-rules=MAP audiokit.test 127.0.0.1"
        driver = _browser(wav_path, tmp_path / "profile", rules)
        try:
            driver.get(server.http.replace("127.0.0.1", "audiokit.test") + "/")
            _wait(driver, "return document.getElementById('model').options.length", 20, "no models listed")
            assert driver.execute_script("return window.isSecureContext") is False
            driver.find_element(By.ID, "start").click()
            error = _wait(driver, "return window.audiokit.error", 10, "no error shown")
            status = driver.find_element(By.ID, "status").text
            start = driver.find_element(By.ID, "start").is_enabled()
        finally:
            driver.quit()
    assert "https" in error["message"] and "http://127.0.0.1" in status, (error, status)
    assert start


@pytest.mark.parametrize("end", ["drain", "shutdown"])
def test_page_says_so_when_the_server_ends_the_stream(tmp_path, end):
    """Streaming, no Stop: a drain (`done`, then 1000) or a server going away (uvicorn's 1012, no
    `done`) shows an error saying so, not a bare 'closed (1000)' as after Stop."""
    with _codec_server() as server:
        driver = _page(server, tmp_path)
        try:
            driver.find_element(By.ID, "start").click()
            _wait(driver, "return window.audiokit.receivedSamples > 0", 30, "no audio came back")
            if end == "drain":
                loop = next(iter(server.state.schedulers.values()))._task.get_loop()
                asyncio.run_coroutine_threadsafe(server.state.drain(), loop)
                _wait(driver, "return window.audiokit.closeCode != null", 20, "no close")
        except BaseException:
            driver.quit()
            raise
    try:  # the server is gone
        _wait(driver, "return window.audiokit.closeCode != null", 20, "no close")
        state = driver.execute_script("return window.audiokit")
        status = driver.find_element(By.ID, "status").text
    finally:
        driver.quit()
    assert state["running"] is False and state["error"] is not None, (state["error"], status)
    if end == "drain":
        assert state["done"] is not None and state["closeCode"] == 1000
        assert status.startswith("error: the server ended the stream"), status
    else:
        assert state["done"] is None and state["closeCode"] != 1000
        assert status.startswith("error: the connection to the server closed before"), status


@pytest.mark.parametrize("when", ["before Start", "while streaming"])
def test_page_checks_the_server_again_when_a_stream_fails(tmp_path, when):
    """The server stops after the page loaded: a Start that fails (the browser's words: the worklets
    were not loaded) or a stream that the server's exit ends asks healthz again, so the server line says
    the server cannot be reached (it kept saying "ok")."""
    with _codec_server() as server:
        driver = _page(server, tmp_path)
        try:
            if when == "while streaming":
                driver.find_element(By.ID, "start").click()
                _wait(driver, "return window.audiokit.receivedSamples > 0", 30, "no audio came back")
        except BaseException:
            driver.quit()
            raise
    try:  # the server is gone
        if when == "before Start":
            driver.find_element(By.ID, "start").click()
        _wait(driver, "return window.audiokit.error", 20, "no error shown")
        shown = _wait(
            driver,
            "const s = document.getElementById('server').textContent; return s !== 'ok' && s",
            10,
            "ok",
        )
    finally:
        driver.quit()
    assert shown.startswith("error: cannot reach the server ("), shown


def test_page_says_where_the_token_goes(tmp_path):
    """A server with ``--token``: the page opened without one is refused with 4401, and its status says
    how to give the token (the page has no field for it: it passes its own ``?token=`` on); opened with
    it, the page streams, also when the token has a ``+`` (base64) pasted into the address unencoded."""
    with _codec_server(token="s3+cret/=") as server:
        driver = _page(server, tmp_path)
        try:
            driver.find_element(By.ID, "start").click()
            error = _wait(driver, "return window.audiokit.error", 20, "no error shown")
            status = driver.find_element(By.ID, "status").text
            driver.get(server.http + "/?token=s3+cret/=")
            _wait(driver, "return document.getElementById('model').options.length", 20, "no models listed")
            driver.find_element(By.ID, "start").click()
            ready = _wait(driver, "const s = window.audiokit; return s.error || s.ready", 20, "no ready")
        finally:
            driver.quit()
    assert error["code"] == 4401, error
    expected = "error 4401: missing or wrong token; open this page with the server's --token in its address: "
    assert status == expected + server.http + "/?token=<token>", status
    assert ready.get("type") == "ready", ready


def test_page_works_under_a_path_prefix(tmp_path):
    """Behind a reverse proxy serving the server under ``/audiokit/`` (nothing outside it): the page
    loads its script, lists the models from healthz, loads its worklets and streams, all through the
    prefix."""
    port = free_port()
    wav_path = tmp_path / "mic.wav"
    sf.write(wav_path, speech(3.0, 0.2), 16000, subtype="PCM_16")
    with _codec_server(port), prefix_proxy(port, "/audiokit") as url:
        driver = _browser(wav_path, tmp_path / "profile")
        try:
            driver.get(url)
            _wait(driver, "return document.getElementById('model').options.length", 20, "no models listed")
            shown = driver.find_element(By.ID, "server").text
            driver.find_element(By.ID, "start").click()
            _wait(
                driver,
                "const s = window.audiokit; return s.error || (s.ready && s.receivedSamples >= s.sampleRate)",
                30,
                "1 s did not come back",
            )
            state = driver.execute_script("return window.audiokit")
        finally:
            driver.quit()
    assert shown == "ok"
    assert state["error"] is None and state["ready"]["model"] == "speech-16k", state["error"]


@pytest.mark.parametrize("fault", ["draining", "gone", "gone behind a proxy"])
def test_page_says_why_the_server_is_not_ready(tmp_path, fault):
    """healthz failing shows why on the page (not just an empty model list): a draining server's 503;
    once the server stopped, no answer at all, or a proxy's 502 page (the model list asks again when
    the mode changes)."""
    port = free_port()
    wav_path = tmp_path / "mic.wav"
    sf.write(wav_path, speech(1.0, 0.2), 16000, subtype="PCM_16")
    error = "const m = document.body.innerText.match(/^server: (error: .*)$/m); return m && m[1]"  # as seen
    driver = _browser(wav_path, tmp_path / "profile")
    try:
        with contextlib.ExitStack() as proxied:
            url = f"http://127.0.0.1:{port}/"
            if fault == "gone behind a proxy":
                url = proxied.enter_context(prefix_proxy(port, "/audiokit"))
            with _codec_server(port) as server:
                if fault == "draining":
                    loop = next(iter(server.state.schedulers.values()))._task.get_loop()
                    asyncio.run_coroutine_threadsafe(server.state.drain(), loop).result(20)
                    driver.get(url)
                    shown = _wait(driver, error, 20, "no error shown")
                else:
                    driver.get(url)
                    _wait(driver, "return document.getElementById('model').options.length", 20, "no models")
            if fault != "draining":
                # a change of mode asks healthz again (enhance is disabled: this server serves no enhancer)
                driver.execute_script("document.getElementById('mode').dispatchEvent(new Event('change'))")
                shown = _wait(driver, error, 20, "no error shown")
            models = driver.execute_script("return document.getElementById('model').options.length")
    finally:
        driver.quit()
    expected = {
        "draining": "error: the server is not ready: healthz answered HTTP 503 (draining); reload",
        "gone": "error: cannot reach the server (",
        "gone behind a proxy": "error: the server is not ready: healthz answered HTTP 502 (Bad Gateway); ",
    }
    assert shown.startswith(expected[fault]), shown
    assert models == 0
