"""Helpers of the server tests: a real uvicorn server on a free loopback port, in a thread."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import uvicorn
from conftest import SAMPLES

from audiokit import io
from audiokit.models.enhancer import Enhancer
from audiokit.serve import ServerConfig, create_app, uvicorn_config
from audiokit.serve.app import ServerState


@dataclass
class Running:
    http: str
    ws: str
    state: ServerState


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(process: subprocess.Popen, port: int, seconds: float) -> None:
    """Wait until the ``audiokit serve`` subprocess ``process`` answers ``/healthz`` on ``port``; fail
    (with its output) if it exits first or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()  # still starting after `seconds`: its output is all there is to show
                raise AssertionError(f"the server never answered /healthz: {process.communicate()}") from None
            time.sleep(0.2)


@contextlib.contextmanager
def running_server(config: ServerConfig, engines=None) -> Iterator[Running]:
    """``create_app(config, engines)`` served by uvicorn on 127.0.0.1 until the block ends."""
    app = create_app(config, engines)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, config, "127.0.0.1", port, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield Running(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/stream", app.state.server)
    finally:
        server.should_exit = True
        thread.join(30)


def random_enhancer(folder, seed: int = 0):
    """An untrained ``enhance-16k`` saved with ``save_pretrained``: ``(model, path)``."""
    torch.manual_seed(seed)
    model = Enhancer.from_config("enhance-16k").eval()
    return model, model.save_pretrained(folder / "enhancer.safetensors")


def speech(seconds: float, offset: float = 0.0, name: str = "speech_fr_16k_a.flac") -> np.ndarray:
    """Mono float32 speech at 16 kHz from samples/."""
    wav, rate = io.load(SAMPLES / name, sample_rate=16000, channels=1)
    start = int(offset * rate)
    return wav[0, start : start + int(seconds * rate)].numpy().copy()


def random_chunks(x: np.ndarray, rng: np.random.Generator, largest: int = 2000) -> list[np.ndarray]:
    """``x`` cut at random points into pieces of 1..``largest`` samples."""
    cuts, i = [], 0
    while i < x.shape[0]:
        n = int(rng.integers(1, largest + 1))
        cuts.append(x[i : i + n])
        i += n
    return cuts
