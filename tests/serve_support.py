"""Helpers of the server tests: a real uvicorn server on a free loopback port, in a thread, and a
reverse proxy that serves it under a path prefix."""

from __future__ import annotations

import asyncio
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
    server: uvicorn.Server


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
def running_server(config: ServerConfig, engines=None, port: int | None = None) -> Iterator[Running]:
    """``create_app(config, engines)`` served by uvicorn on 127.0.0.1 (on ``port``, else a free one) until
    the block ends."""
    app = create_app(config, engines)
    port = port or free_port()
    server = uvicorn.Server(uvicorn_config(app, config, "127.0.0.1", port, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        ws = f"ws://127.0.0.1:{port}/v1/stream"
        yield Running(f"http://127.0.0.1:{port}", ws, app.state.server, server)
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.contextmanager
def prefix_proxy(port: int, prefix: str) -> Iterator[str]:
    """A reverse proxy on a free loopback port that serves the server on ``port`` under ``prefix`` (as
    nginx's ``location /audiokit/ { proxy_pass http://127.0.0.1:PORT/; }``): ``prefix/x`` goes to ``/x``
    with the other request headers kept (Host too; WebSocket upgrades then relayed both ways), any other
    path is a 404, and a server that does not answer a 502. Yields the page's URL, ``.../prefix/``."""
    loop = asyncio.new_event_loop()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def answer(writer: asyncio.StreamWriter, status: str) -> None:
        body = f"<html><body><h1>{status}</h1></body></html>".encode()
        head = f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):  # a connection opened ahead, unused
            writer.close()
            return
        request, *headers = head.decode("latin-1").split("\r\n")[:-2]
        method, path, version = request.split(" ")
        if not path.startswith(prefix + "/"):
            await answer(writer, "404 Not Found")
            return
        if not any(h.lower().replace(" ", "") == "upgrade:websocket" for h in headers):
            # one request per connection: each one's path is rewritten
            headers = [h for h in headers if not h.lower().startswith("connection:")] + ["Connection: close"]
        try:
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await answer(writer, "502 Bad Gateway")
            return
        request = f"{method} {path[len(prefix) :]} {version}"
        upstream.write("\r\n".join([request, *headers, "", ""]).encode("latin-1"))
        await asyncio.gather(relay(reader, upstream), relay(upstream_reader, writer))

    async def stop() -> None:
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}{prefix}/"
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


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
