"""Python client of the ``audiokit serve`` protocol (``/v1/stream``; spec in ``docs/server.md``).

:func:`stream` sends mono float32 chunks and returns the processed audio with timings;
:func:`stream_file` does it for an audio file (mixed to mono, sent at its own rate) into another.
Sending is paced in real time (``realtime=True``: each chunk leaves when its audio would have been
captured) or as fast as the server takes it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field

import numpy as np
import websockets

from audiokit import io
from audiokit.errors import AudiokitError

FORMATS = {"f32le": "<f4", "s16le": "<i2"}


class ServerError(AudiokitError):
    """The server refused or ended a stream: ``code`` is the close code, the message its reason."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"server closed the stream with {code}: {message}")
        self.code = code
        self.reason = message


@dataclass
class StreamResult:
    """What came back: ``audio`` (float32 ``(n,)`` at the client's rate), the ``ready`` and ``done``
    messages, and timelines of ``(seconds since start, cumulative samples)`` sent and received; the start
    is ``started``, a :func:`time.perf_counter` reading (to line several streams up)."""

    audio: np.ndarray
    ready: dict
    done: dict
    started: float = 0.0
    sent: list[tuple[float, int]] = field(default_factory=list)
    received: list[tuple[float, int]] = field(default_factory=list)


def _encode(samples: np.ndarray, fmt: str) -> bytes:
    if fmt == "s16le":
        return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
    return np.asarray(samples, "<f4").tobytes()


def _decode(data: bytes, fmt: str) -> np.ndarray:
    samples = np.frombuffer(data, FORMATS[fmt]).astype(np.float32)
    return samples / 32768.0 if fmt == "s16le" else samples


async def _chunks(source: Iterable[np.ndarray] | AsyncIterable[np.ndarray]):
    if isinstance(source, AsyncIterable):
        async for chunk in source:
            yield chunk
    else:
        for chunk in source:
            yield chunk


async def stream(
    url: str,
    chunks: Iterable[np.ndarray] | AsyncIterable[np.ndarray],
    sample_rate: int,
    task: str = "enhance",
    model: str | None = None,
    fmt: str = "f32le",
    bitrate: float | None = None,
    token: str | None = None,
    realtime: bool = False,
) -> StreamResult:
    """Stream mono ``chunks`` (float32 ``(n,)`` at ``sample_rate`` Hz) through the server at ``url``
    (``ws://host:port/v1/stream``) and return the processed audio; :class:`ServerError` on an error.

    ``bitrate`` (bits/s) is for ``task="codec"``; ``token`` goes in an ``Authorization`` header.
    """
    start = {"type": "start", "task": task, "sample_rate": sample_rate, "format": fmt}
    if model is not None:
        start["model"] = model
    if bitrate is not None:
        start["bitrate"] = bitrate
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        await ws.send(json.dumps(start))
        ready = _expect(await ws.recv(), "ready")
        began = time.perf_counter()
        result = StreamResult(np.zeros(0, np.float32), ready, {}, began)
        largest = int(ready["max_message_bytes"]) // (4 if fmt == "f32le" else 2)
        sender = asyncio.create_task(_send(ws, chunks, sample_rate, fmt, realtime, began, result, largest))
        try:
            pieces = await _receive(ws, fmt, began, result)
        finally:
            if not sender.done():
                sender.cancel()
        await sender
        result.audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return result


async def _send(
    ws, chunks, sample_rate: int, fmt: str, realtime: bool, began: float, result: StreamResult, largest: int
) -> None:
    """Send every chunk (split to at most ``largest`` samples a message), then ``end``; stops quietly
    when the server ends the stream first (a drain)."""
    sent = 0
    try:
        async for whole in _chunks(chunks):
            whole = np.asarray(whole, np.float32).reshape(-1)
            for i in range(0, whole.shape[0], largest):
                chunk = whole[i : i + largest]
                if realtime:
                    due = began + (sent + chunk.shape[0]) / sample_rate
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                await ws.send(_encode(chunk, fmt))
                sent += chunk.shape[0]
                result.sent.append((time.perf_counter() - began, sent))
        await ws.send(json.dumps({"type": "end"}))
    except websockets.ConnectionClosed:
        pass


async def _receive(ws, fmt: str, began: float, result: StreamResult) -> list[np.ndarray]:
    pieces, total = [], 0
    while True:
        try:
            message = await ws.recv()
        except websockets.ConnectionClosed as exc:
            raise ServerError(exc.rcvd.code if exc.rcvd else 1006, "connection closed without done") from None
        if isinstance(message, bytes):
            piece = _decode(message, fmt)
            pieces.append(piece)
            total += piece.shape[0]
            result.received.append((time.perf_counter() - began, total))
            continue
        result.done = _expect(message, "done")
        return pieces


def _expect(message: str | bytes, kind: str) -> dict:
    if isinstance(message, bytes):
        raise ServerError(1002, f"expected {kind}, got binary data")
    data = json.loads(message)
    if data.get("type") == "error":
        raise ServerError(int(data.get("code", 0)), str(data.get("message", "")))
    if data.get("type") != kind:
        raise ServerError(1002, f"expected {kind}, got {data.get('type')!r}")
    return data


def file_chunks(source: io.PathLike, chunk_ms: float) -> tuple[list[np.ndarray], int]:
    """``source`` mixed to mono at its own rate, cut into ``chunk_ms`` messages (the last may be
    shorter), and that rate in Hz."""
    wav, rate = io.load(source, channels=1)
    samples = wav[0].numpy()
    step = max(1, round(rate * chunk_ms / 1000))
    return [samples[i : i + step] for i in range(0, samples.shape[0], step)], rate


def stream_file(
    url: str,
    source: io.PathLike,
    target: io.PathLike,
    task: str = "enhance",
    chunk_ms: float = 20.0,
    **options,
) -> StreamResult:
    """Stream ``source`` (mixed to mono, at its own rate) in ``chunk_ms`` messages and save the result
    to ``target`` at that rate; ``options`` as in :func:`stream`."""
    chunks, rate = file_chunks(source, chunk_ms)
    result = asyncio.run(stream(url, chunks, rate, task, **options))
    io.save(target, result.audio[None], rate)
    return result
