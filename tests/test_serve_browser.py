"""The web page in headless Chromium (Debian's chromium + chromedriver, driven by Selenium): a fake
microphone plays a speech WAV, the page streams it through the codec and plays the result; the audio
that came back must be speech (non-silent) matching the offline codec round trip of that WAV."""

from __future__ import annotations

import shutil
import time

import numpy as np
import soundfile as sf
import torch
from scipy import signal as sps
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from serve_support import running_server, speech

from audiokit import Codec, io
from audiokit.serve import ServerConfig
from audiokit.serve.engines import Engine

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _browser(wav_path, profile) -> webdriver.Chrome:
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
