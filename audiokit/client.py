"""Python client of the ``audiokit serve`` protocol (``/v1/stream``; spec in ``docs/server.md``).

:func:`stream` sends mono float32 chunks and returns the processed audio with timings;
:func:`stream_file` does it for an audio file (mixed to mono, sent at its own rate) into another.
Sending is paced in real time (``realtime=True``: each chunk leaves when its audio would have been
captured) or as fast as the server takes it; either way the client keeps below the server's message
rate (``ready``'s ``max_messages_per_second``) and splits chunks over its message size.
"""

from __future__ import annotations

import asyncio
import errno
import json
import math
import os
import socket
import ssl
import time
from collections.abc import AsyncIterable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import websockets
from websockets.uri import parse_uri

from audiokit import io
from audiokit.errors import AudiokitError, UsageError
from audiokit.redaction import redact_token

T = TypeVar("T")
FORMATS = {"f32le": "<f4", "s16le": "<i2"}
SERVER_MESSAGES_PER_SECOND = 200.0
"""The message rate assumed when ``ready`` does not name one (``audiokit serve``'s default)."""
PACE = 0.9
"""Share of the server's message rate the client uses (bursts: half of the server's)."""
REALTIME_CHUNK_MS = 20.0
""":func:`stream_file`'s message length when paced in real time and none is given."""
STALL_TIMEOUT_S = 30.0
"""Seconds :func:`stream` waits on a server that neither takes its audio nor answers (as long as the
server waits on a client that reads nothing: ``--idle-timeout``'s default)."""


class ServerError(AudiokitError):
    """The server refused or ended a stream: ``code`` is the close code, the message its reason (after
    the server's ``url``, given with its token redacted, where one is given)."""

    def __init__(self, code: int, message: str, url: str | None = None) -> None:
        where = f"{url}: " if url else ""
        super().__init__(f"{where}server closed the stream with {code}: {message}")
        self.code = code
        self.reason = message


class ConnectionLost(ServerError):
    """The stream at ``url`` ended without the server closing it (``code`` 1006): the server exited or
    the network failed, or the server stopped answering (stopped, hung, overloaded for longer than the
    client waits)."""

    def __init__(self, url: str, problem: str) -> None:
        AudiokitError.__init__(self, f"{redact_token(url)}: {problem}")
        self.code = 1006
        self.reason = problem
        self.url = url


class ConnectError(AudiokitError):
    """No stream could be opened at ``url``: nothing listens there, it is not a WebSocket server, or it
    refused the handshake (an HTTP status: a wrong path, say)."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"cannot open a stream at {redact_token(url)}: {problem}")
        self.url = url


@dataclass
class StreamResult:
    """What came back: ``audio`` (float32 ``(n,)`` at the client's rate), the ``ready`` and ``done``
    messages, and timelines of ``(seconds since start, cumulative samples)`` sent and received; the start
    is ``started``, a :func:`time.perf_counter` reading (to line several streams up). ``complete`` is
    False when the server ended the stream before it took all the input (a drain), whether or not the
    client had sent it all: ``audio`` is then what it made of the input it took (``done["samples_in"]``;
    ``sent`` also counts what it did not read)."""

    audio: np.ndarray
    ready: dict
    done: dict
    started: float = 0.0
    sent: list[tuple[float, int]] = field(default_factory=list)
    received: list[tuple[float, int]] = field(default_factory=list)
    complete: bool = True


class _Watch:
    """Whether a stream waits on its server (a message the server has not taken yet, or ``done`` after
    ``end``) and when the server last made progress, taking a message or sending one
    (:func:`time.perf_counter` seconds)."""

    def __init__(self) -> None:
        self.sending = False
        self.ended = False
        self.heard = time.perf_counter()

    def progress(self) -> None:
        self.heard = time.perf_counter()

    def stalled(self, timeout: float) -> str | None:
        """What the stream has waited for longer than ``timeout`` seconds without progress, else None."""
        if time.perf_counter() - self.heard <= timeout:
            return None
        if self.sending:
            return f"it took none of the audio for {timeout:g} s"
        if self.ended:
            return f"nothing came back for {timeout:g} s after the end of the audio"
        return None


class _Pacer:
    """A token bucket: at most ``rate`` messages a second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.last = burst, time.perf_counter()

    def delay(self) -> float:
        """Takes the next message's token: the seconds to wait before sending it."""
        now = time.perf_counter()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate) - 1
        self.last = now
        return max(0.0, -self.tokens / self.rate)


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


async def _connect(url: str, headers: dict | None):
    """An open WebSocket to ``url``; :class:`UsageError` for a URL that is not ``ws://`` or ``wss://``,
    :class:`ConnectError` when no WebSocket server accepts it there."""
    try:
        parse_uri(url)
    except (websockets.InvalidURI, ValueError) as exc:
        shown = redact_token(url)
        raise UsageError(f"{shown}: not a WebSocket URL ({exc}); give ws://HOST:PORT/v1/stream") from None
    try:
        return await websockets.connect(url, additional_headers=headers, max_size=None)
    except websockets.InvalidStatus as exc:
        status = exc.response.status_code
        hint = " (the stream's path is /v1/stream)" if status in (403, 404) else ""
        raise ConnectError(
            url, f"the server answered HTTP {status} {exc.response.reason_phrase}{hint}"
        ) from None
    except websockets.InvalidHandshake as exc:
        raise ConnectError(url, f"not a WebSocket server ({exc})") from None
    except asyncio.TimeoutError:  # not TimeoutError before Python 3.11 (websockets raises asyncio's there)
        raise ConnectError(url, "no answer in time") from None
    except OSError as exc:
        raise ConnectError(url, _connect_failure(exc)) from None


def _connect_failure(exc: OSError) -> str:
    """Why a connection failed: the system's reason for a socket error (asyncio's own text is "Connect
    call failed ('127.0.0.1', 8765)"), with a hint when nothing listens; a name lookup's or TLS's own
    message otherwise (their errno is no system error number)."""
    if isinstance(exc, (socket.gaierror, ssl.SSLError)) or not exc.errno or exc.errno < 0:
        return exc.strerror or str(exc)
    hint = " (is `audiokit serve` running there?)" if exc.errno == errno.ECONNREFUSED else ""
    return os.strerror(exc.errno) + hint


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
    high_band: bool | None = None,
    stall_timeout: float = STALL_TIMEOUT_S,
    atten_lim_db: float | None = None,
    dry: float | None = None,
) -> StreamResult:
    """Stream mono ``chunks`` (float32 ``(n,)``, or ``(1, n)``/``(n, 1)``, at ``sample_rate`` Hz; several
    channels are a :class:`UsageError`; one array is the whole audio, one chunk) through the server at ``url``
    (``ws://host:port/v1/stream``) and return the processed audio.

    Each chunk is a message (split where it exceeds the server's message size), sent below the server's
    message rate. ``bitrate`` (bits/s) is for ``task="codec"``; ``high_band`` (enhance; None: the server's
    default, on) keeps the input's band above the model's at rates above the model's; ``atten_lim_db`` (dB
    >= 0; None or ``math.inf``: no limit) and ``dry`` (0..1; None: the server's 0) are the enhancer's
    knobs (enhance, as :meth:`audiokit.models.Enhancer.enhance` takes them); ``token`` goes in an
    ``Authorization`` header. :class:`ServerError` when the server refuses or ends the stream
    (:class:`ConnectionLost` when the connection ends without its close, or the server has taken no
    message and sent none for ``stall_timeout`` seconds while the stream waits on it),
    :class:`ConnectError` when none answers at ``url``, :class:`UsageError` for a URL that is not a
    WebSocket one.
    """
    if hasattr(chunks, "ndim"):  # one array (NumPy, torch): the audio itself, not an iterable of chunks
        chunks = [chunks]  # iterated, a 1-D array went out one sample a message: 83 minutes a minute
    start = {"type": "start", "task": task, "sample_rate": sample_rate, "format": fmt}
    if model is not None:
        start["model"] = model
    if bitrate is not None:
        start["bitrate"] = bitrate
    if high_band is not None:
        start["high_band"] = high_band
    if atten_lim_db is not None and atten_lim_db != math.inf:  # no limit: left out (JSON has no infinity)
        start["atten_lim_db"] = atten_lim_db
    if dry is not None:
        start["dry"] = dry
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with await _connect(url, headers) as ws:
        try:
            await ws.send(json.dumps(start, default=_plain))
        except websockets.ConnectionClosed:
            pass  # refused at once (a wrong token): its error and close code come next
        try:
            ready = _expect(await asyncio.wait_for(_recv(ws, "ready", url), stall_timeout), "ready")
        except asyncio.TimeoutError:  # wait_for's: not TimeoutError before Python 3.11
            ws.transport.abort()  # nothing to say to it: a close would wait for it too
            problem = f"no ready for {stall_timeout:g} s after the start message"
            raise ConnectionLost(url, f"the server stopped answering: {problem}") from None
        began = time.perf_counter()
        result = StreamResult(np.zeros(0, np.float32), ready, {}, began)
        largest = int(ready.get("max_message_bytes", 65536)) // (4 if fmt == "f32le" else 2)
        rate = float(ready.get("max_messages_per_second", SERVER_MESSAGES_PER_SECOND))
        pacer = _Pacer(PACE * rate, rate)
        watch = _Watch()
        sender = asyncio.create_task(
            _send(ws, chunks, sample_rate, fmt, realtime, result, largest, pacer, watch)
        )
        receiver = asyncio.create_task(_receive(ws, fmt, began, result, watch, url))
        try:
            while not receiver.done():
                running = {task for task in (sender, receiver) if not task.done()}
                await asyncio.wait(
                    running, timeout=min(1.0, stall_timeout / 4), return_when=asyncio.FIRST_COMPLETED
                )
                if not receiver.done() and sender.done() and sender.exception() is not None:
                    await sender  # the chunks raised: no `end` goes, so no `done` would come; raise it now
                if not receiver.done() and (problem := watch.stalled(stall_timeout)) is not None:
                    ws.transport.abort()  # its socket buffers are full: a close would wait for it too
                    raise ConnectionLost(url, f"the server stopped answering: {problem}")
            pieces = await receiver
        finally:
            receiver.cancel()
            if not sender.done():  # the server ended the stream first (a drain) or failed
                result.complete = False
                sender.cancel()
            # its end, without awaiting it (its cancel would raise here; Task.cancelling(), which told that
            # from this task's own cancel, is Python 3.11's): a cancel of this task itself still raises here
            await asyncio.wait({sender})
            if not sender.cancelled() and sender.exception() is not None:
                raise sender.exception()
        sent = result.sent[-1][1] if result.sent else 0
        if result.done.get("samples_in", sent) < sent:  # a drain took the rest of what had gone
            result.complete = False
        result.audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return result


async def _send(
    ws,
    chunks,
    sample_rate: int,
    fmt: str,
    realtime: bool,
    result: StreamResult,
    largest: int,
    pacer: _Pacer,
    watch: _Watch,
) -> None:
    """Send every chunk (split to at most ``largest`` samples a message), then ``end``, each message when
    ``pacer`` allows (and, ``realtime``, not before its audio would have been captured), telling ``watch``
    while a message waits for the server to take it; stops quietly when the server ends the stream first
    (a drain)."""

    async def put(message: bytes | str) -> None:
        watch.sending = True
        watch.progress()
        try:
            await ws.send(message)
        finally:
            watch.sending = False
        watch.progress()

    sent = 0
    try:
        async for whole in _chunks(chunks):
            whole = _mono(whole)
            for i in range(0, whole.shape[0], largest):
                chunk = whole[i : i + largest]
                if realtime:
                    due = result.started + (sent + chunk.shape[0]) / sample_rate
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                if wait := pacer.delay():
                    await asyncio.sleep(wait)
                await put(_encode(chunk, fmt))
                sent += chunk.shape[0]
                result.sent.append((time.perf_counter() - result.started, sent))
        if wait := pacer.delay():
            await asyncio.sleep(wait)
        await put(json.dumps({"type": "end"}))
        watch.ended = True
    except websockets.ConnectionClosed:
        pass


def _plain(value: object) -> object:
    """A NumPy scalar (a rate read as ``np.int64``, a knob as ``np.float32``) as the Python number JSON
    takes; ``json.dumps`` raised TypeError on them."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _mono(chunk) -> np.ndarray:
    """``chunk`` as float32 ``(n,)``; any shape with at most one axis longer than 1 (``(n,)``, ``(1, n)``,
    ``(n, 1)``, ``(1, 1, n)``) is mono. :class:`UsageError` for several channels: flattened, they would
    go out interleaved or one after the other, as twice the audio, and come back as garbage."""
    samples = np.asarray(chunk, np.float32)
    if sum(size > 1 for size in samples.shape) > 1:
        raise UsageError(
            f"a chunk of shape {samples.shape} holds several channels; a stream is mono: mix them to one "
            "channel first (e.g. x.mean(axis=1) for (samples, channels))"
        )
    return samples.reshape(-1)


async def _recv(ws, expected: str, url: str) -> str | bytes:
    """The next message; :class:`ServerError` with the close code and reason if the server closed the
    stream, :class:`ConnectionLost` if the connection ended without its close."""
    try:
        return await ws.recv()
    except websockets.ConnectionClosed as exc:
        if exc.rcvd is not None:
            raise ServerError(
                exc.rcvd.code, exc.rcvd.reason or f"connection closed before {expected}"
            ) from None
        if exc.sent is not None and exc.sent.reason == "keepalive ping timeout":  # websockets' own close
            problem = (
                f"the server stopped answering before {expected}: no reply to a ping in {ws.ping_timeout:g} s"
            )
        else:
            problem = f"the connection was lost before {expected} (the server exited, or the network failed)"
        raise ConnectionLost(url, problem) from None


async def _receive(
    ws, fmt: str, began: float, result: StreamResult, watch: _Watch, url: str
) -> list[np.ndarray]:
    pieces, total = [], 0
    while True:
        message = await _recv(ws, "done", url)
        watch.progress()
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
    try:
        data = json.loads(message)
    except ValueError:
        raise ServerError(1002, f"expected {kind}, got text that is not JSON") from None
    if not isinstance(data, dict):
        raise ServerError(1002, f"expected {kind}, got {type(data).__name__}")
    if data.get("type") == "error":
        raise ServerError(int(data.get("code", 0)), str(data.get("message", "")))
    if data.get("type") != kind:
        raise ServerError(1002, f"expected {kind}, got {data.get('type')!r}")
    return data


def file_chunks(
    source: io.PathLike,
    chunk_ms: float | None = None,
    realtime: bool = False,
    raw: io.RawFormat | None = None,
) -> tuple[list[np.ndarray], int]:
    """``source`` (a file, or ``-``: standard input, read whole; ``raw``: headerless PCM of that format)
    mixed to mono at its own rate and cut into ``chunk_ms`` messages (the last may be shorter; None:
    :data:`REALTIME_CHUNK_MS` for a stream paced in real time, else one chunk, which :func:`stream`
    sends in the largest messages the server takes), and that rate in Hz."""
    if chunk_ms is None and realtime:
        chunk_ms = REALTIME_CHUNK_MS
    if chunk_ms is not None and not (math.isfinite(chunk_ms) and chunk_ms > 0):
        raise UsageError(f"chunk_ms must be a positive number of milliseconds, got {chunk_ms}")
    with io.readable_path(source) as path:
        wav, rate = io.load(path, channels=1, raw=raw)
        io.check_input_rate(path, rate)  # inside: an error about standard input's copy names <stdin>
    samples = wav[0].numpy()
    if chunk_ms is None:
        return [samples], rate
    step = max(1, round(rate * chunk_ms / 1000))
    return [samples[i : i + step] for i in range(0, samples.shape[0], step)], rate


def _run(work: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(work)``, also where this thread already runs an event loop (a Jupyter notebook, an
    async app calling :func:`stream_file`), in which ``asyncio.run`` raises RuntimeError: ``work`` then
    runs on a loop of its own in another thread while this one waits."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with ThreadPoolExecutor(1, thread_name_prefix="audiokit-stream") as pool:
        return pool.submit(asyncio.run, work).result()


def stream_file(
    url: str,
    source: io.PathLike,
    target: io.PathLike,
    task: str = "enhance",
    chunk_ms: float | None = None,
    realtime: bool = False,
    raw: io.RawFormat | None = None,
    **options,
) -> StreamResult:
    """Stream ``source`` (mixed to mono, at its own rate; ``raw``: headerless PCM of that format) in
    ``chunk_ms`` messages and save the result to ``target`` at that rate; ``chunk_ms`` None: 20 ms
    paced in real time, else the largest messages the server takes. ``options`` as in :func:`stream`.
    Works where an event loop already runs (a Jupyter notebook): the stream then runs in a thread."""
    chunks, rate = file_chunks(source, chunk_ms, realtime, raw)
    result = _run(stream(url, chunks, rate, task, realtime=realtime, **options))
    io.save(target, result.audio[None], rate)
    return result
