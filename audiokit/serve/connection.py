"""One ``/v1/stream`` connection: checks, ``start``/``ready``, PCM both ways, ``end``/``done``, errors.

The reader (this coroutine) validates every client message and queues input on the model's
scheduler; a sender task writes the scheduler's output as soon as it exists. Any refusal is a JSON
``error`` then the close with its code (see :mod:`audiokit.serve.protocol`); only this stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from audiokit.serve import protocol as p
from audiokit.serve.scheduler import DONE, Scheduler, Stream

if TYPE_CHECKING:
    from audiokit.serve.app import ServerState

MAX_TEXT_CHARS = 4096
CLOSE_TIMEOUT_S = 2.0
"""How long the server tries to send a closing error and close frame to a client that reads nothing."""

log = logging.getLogger("audiokit.serve")


class RateLimit:
    """A token bucket: ``rate`` messages per second, bursts of ``2 * rate``."""

    def __init__(self, rate: float) -> None:
        self.rate, self.capacity = rate, 2 * rate
        self.tokens, self.last = self.capacity, time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _origin_allowed(websocket: WebSocket, allowed: list[str], token: str | None) -> bool:
    """No ``Origin`` (not a browser), one of ``allowed`` (``*``: any), or the server's own page: an origin
    equal to the ``Host`` the browser asked. Without a token, a page's own origin counts only at an IP
    address or ``localhost``: under any other name, a page could be served from the attacker's host,
    which DNS then points at this server (DNS rebinding), and so be "its own"."""
    origin = websocket.headers.get("origin")
    if origin is None or "*" in allowed or origin in allowed:
        return True
    host = websocket.headers.get("host", "")
    if urlsplit(origin).netloc != host:
        return False
    return token is not None or _is_address_or_localhost(urlsplit(f"//{host}").hostname or "")


def _is_address_or_localhost(hostname: str) -> bool:
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def _token_ok(websocket: WebSocket, token: str | None) -> bool:
    """The ``Authorization: Bearer`` header's token, else the ``?token=`` value's, is ``token``. A ``+`` in
    the URL's value counts as itself as well as a space: a base64 token (``openssl rand -base64``) pasted
    into ``?token=`` unencoded, in ``audiokit stream --url`` or the page's address (which the page passes
    on), was read as a space and refused."""
    if token is None:
        return True
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        candidates = [header[7:]]
    else:  # the last ?token=, as query_params reads it, with its + a space and kept
        query = websocket.scope.get("query_string", b"").decode("latin-1")
        raw = [
            value for key, _, value in (pair.partition("=") for pair in query.split("&")) if key == "token"
        ]
        candidates = [websocket.query_params.get("token", "")] + [unquote(raw[-1])] if raw else [""]
    return any(hmac.compare_digest(given.encode(), token.encode()) for given in candidates)


async def _close(websocket: WebSocket, state: ServerState, code: int, message: str | None = None) -> None:
    """Send ``error`` (when ``message``) and close with ``code`` (the message, cut short, as its reason),
    unless the client is gone."""
    state.metrics.closes.labels(str(code)).inc()

    async def send_and_close() -> None:
        if message is not None:
            await websocket.send_text(p.error_message(code, message))
        await websocket.close(code, p.close_reason(message) if message is not None else None)

    # the client may have vanished meanwhile, or read nothing (then its socket's buffers are full)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(send_and_close(), CLOSE_TIMEOUT_S)


def client_close_label(code: int) -> str:
    """How a close the client made counts in ``audiokit_closes_total``: its code where the WebSocket
    standard defines it (1000-2999), else ``other``. Codes 3000-4999 are the client's to pick, and each
    new one would add a time series to the server's metrics for as long as it runs."""
    return str(code) if 1000 <= code < 3000 else "other"


def settle(task: asyncio.Future) -> None:
    """Cancel ``task`` if it still runs and take what it raised, if anything: the stream has ended either
    way (a sender that failed on a client gone mid-send while the reader failed too), and an exception
    nobody takes is logged by asyncio as a traceback."""
    task.cancel()
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


async def handle_stream(websocket: WebSocket, state: ServerState) -> None:
    """Serve one connection to ``/v1/stream`` until it ends, whichever way."""
    config = state.config
    await websocket.accept()
    client = websocket.client.host if websocket.client else "?"
    stream: Stream | None = None
    scheduler: Scheduler | None = None
    sender: asyncio.Task | None = None
    try:
        if not _origin_allowed(websocket, config.allow_origins, config.token):
            raise p.ProtocolError(
                p.FORBIDDEN_ORIGIN, "origin not allowed; start the server with --allow-origin or --token"
            )
        if not _token_ok(websocket, config.token):
            raise p.ProtocolError(p.UNAUTHORIZED, "missing or wrong token")
        limit = RateLimit(config.max_messages_per_second)
        request = p.parse_start(await _next_start(websocket, state, limit), state.defaults)
        engine = state.engines.get(request.model)
        if engine is None:
            served = ", ".join(state.engines)
            raise p.ProtocolError(p.BAD_REQUEST, f"unknown model {request.model!r}; served: {served}")
        engine.check(request)
        if state.draining:
            raise p.ProtocolError(p.GOING_AWAY, "the server is shutting down")
        if state.live >= config.max_streams:
            raise p.ProtocolError(p.FULL, f"server full: {config.max_streams} streams live")
        if state.per_client[client] >= config.max_streams_per_client:
            raise p.ProtocolError(
                p.FULL, f"{config.max_streams_per_client} streams from {client} already live"
            )
        scheduler = state.schedulers[request.model]
        stream = scheduler.open(request)
        state.per_client[client] += 1
        await websocket.send_text(
            p.ready_message(
                stream.id,
                request,
                engine.latency_at(request.sample_rate) + stream.wire.extra_latency,
                stream.wire.high_band,
                config.max_message_bytes,
                config.max_messages_per_second,
            )
        )
        sender = asyncio.create_task(_send(websocket, state, stream))
        await _read(websocket, state, scheduler, stream, limit, sender)
        await sender
    except p.ProtocolError as exc:
        if sender is not None:
            sender.cancel()
        await _close(websocket, state, exc.code, exc.message)
    except WebSocketDisconnect as exc:
        state.metrics.closes.labels(client_close_label(exc.code)).inc()
    except (OSError, RuntimeError) as exc:  # the client vanished while we were sending
        log.info("stream from %s ended without a close: %s: %s", client, type(exc).__name__, exc)
        state.metrics.closes.labels("1006").inc()
    finally:
        if sender is not None:
            settle(sender)
        if stream is not None:
            scheduler.drop(stream)
            state.per_client[client] -= 1
            if not state.per_client[client]:
                del state.per_client[client]


async def _receive(websocket: WebSocket, state: ServerState, limit: RateLimit) -> dict:
    """The next client message (``{"text": ...}`` or ``{"bytes": ...}``), within the idle timeout,
    the size limit and the rate limit."""
    config = state.config
    try:
        message = await asyncio.wait_for(websocket.receive(), config.idle_timeout_s)
    except asyncio.TimeoutError:
        raise p.ProtocolError(p.IDLE, f"no message for {config.idle_timeout_s:g} s") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    data = message.get("bytes")
    text = message.get("text")
    if data is not None and len(data) > config.max_message_bytes:
        raise p.ProtocolError(
            p.TOO_BIG, f"binary message of {len(data)} bytes; the limit is {config.max_message_bytes}"
        )
    if text is not None and len(text) > MAX_TEXT_CHARS:
        raise p.ProtocolError(
            p.TOO_BIG, f"text message of {len(text)} characters; the limit is {MAX_TEXT_CHARS}"
        )
    if not limit.allow():
        raise p.ProtocolError(p.FULL, f"more than {config.max_messages_per_second:g} messages per second")
    return message


async def _next_start(websocket: WebSocket, state: ServerState, limit: RateLimit) -> dict:
    message = await _receive(websocket, state, limit)
    if message.get("text") is None:
        raise p.ProtocolError(p.BAD_REQUEST, "binary audio before start; send a start message first")
    start = p.parse_json(message["text"])
    if start["type"] != "start":
        raise p.ProtocolError(p.BAD_REQUEST, f"expected a start message, got {start['type']!r}")
    return start


async def _read(
    websocket: WebSocket,
    state: ServerState,
    scheduler: Scheduler,
    stream: Stream,
    limit: RateLimit,
    sender: asyncio.Task,
) -> None:
    """Queue the client's audio until ``end`` (or the sender finishing: done, drain, failure)."""
    max_backlog = state.config.max_backlog_s
    model_rate, client_rate = scheduler.engine.sample_rate, stream.request.sample_rate
    fmt = stream.request.format
    while not sender.done():
        receive = asyncio.ensure_future(_receive(websocket, state, limit))
        await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender.done():  # the stream ended on the server's side: whatever came meanwhile is moot
            settle(receive)
            return
        if stream.ending:  # after end (or a drain) every message is ignored: malformed, too big, too many
            with contextlib.suppress(p.ProtocolError):
                receive.result()
            continue
        message = receive.result()
        if message.get("bytes") is not None:
            samples = p.decode_pcm(message["bytes"], fmt)
            if samples.shape[0]:
                scheduler.push(stream, samples)
            while (
                stream.backlog / model_rate + stream.unsent / client_rate > max_backlog and not sender.done()
            ):
                stream.progress.clear()
                progress = asyncio.ensure_future(stream.progress.wait())
                # the sender ends too when the client goes away while output waits to be sent
                await asyncio.wait({progress, sender}, return_when=asyncio.FIRST_COMPLETED)
                progress.cancel()
            continue
        kind = p.parse_json(message["text"])["type"]
        if kind == "end":
            scheduler.end(stream)
        elif kind == "start":
            raise p.ProtocolError(p.BAD_REQUEST, "a second start on one stream")
        else:
            raise p.ProtocolError(p.BAD_REQUEST, f"unknown message type {kind!r}")


async def _send(websocket: WebSocket, state: ServerState, stream: Stream) -> None:
    """Write the stream's output as it comes (what queued meanwhile goes as one message), then
    ``done`` and close 1000 (or the failure); a message the client has not taken within the idle timeout
    ends the stream (4408)."""
    fmt, idle_timeout = stream.request.format, state.config.idle_timeout_s
    sent, finished = 0, False
    while not finished:
        pieces = [await stream.output.get()]
        while not stream.output.empty():
            pieces.append(stream.output.get_nowait())
        stream.progress.set()
        if pieces[-1] is DONE:
            pieces.pop()
            finished = True
        if pieces:
            samples = np.concatenate(pieces)
            try:  # a client that reads nothing for that long holds a stream, and its output, for nothing
                await asyncio.wait_for(websocket.send_bytes(p.encode_pcm(samples, fmt)), idle_timeout)
            except asyncio.TimeoutError:
                raise p.ProtocolError(p.IDLE, f"the client read nothing for {idle_timeout:g} s") from None
            sent += samples.shape[0]
            stream.unsent -= samples.shape[0]
    if stream.failed is not None:
        await _close(websocket, state, p.INTERNAL, stream.failed)
        return
    await websocket.send_text(p.done_message(stream.wire.samples_in, sent))
    if websocket.client_state == WebSocketState.CONNECTED:
        await _close(websocket, state, p.NORMAL)
