"""Running the app under uvicorn, with a graceful drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
from types import FrameType

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from audiokit.errors import UsageError
from audiokit.redaction import redact_token
from audiokit.serve.app import ServerState, create_app
from audiokit.serve.config import ServerConfig

logger = logging.getLogger("uvicorn.error")

HARD_LIMIT_FACTOR = 4
"""uvicorn itself refuses messages over ``HARD_LIMIT_FACTOR x max_message_bytes`` (a bare 1009, never
read into memory); between the two limits the app reads the message and answers a JSON error + 1009."""


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains (no new streams, live ones flushed and sent
    ``done``) and then exits cleanly; a second signal exits at once."""

    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        for sock in sockets or []:  # uvicorn names only the addresses it binds itself
            where = _address(*sock.getsockname()[:2])
            logger.info("Listening on http://%s (Ctrl-C or SIGTERM: drain, then exit)", where)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._loop is None or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain()))

    async def _drain(self) -> None:
        await self.state.drain()
        self.should_exit = True


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, whose connections end even when the client reads nothing.

    Closing an asyncio transport waits until its write buffer has drained, forever for a client that
    reads nothing: after its stream ended (4408) each such client kept a socket and its buffers for as
    long as it liked. Once the app is done, a connection still open after uvicorn's close timeout (10 s)
    is aborted."""

    _abort: asyncio.TimerHandle | None = None

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if not self.disconnected:
            self._abort = self.loop.call_later(self.close_timeout, self.transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._abort is not None:  # the timer would keep the connection's objects for 10 s
            self._abort.cancel()


def uvicorn_config(
    app, config: ServerConfig, host: str, port: int, log_level: str = "info"
) -> uvicorn.Config:
    """uvicorn settings for ``app``: the message-size cap, keepalive pings, no server header,
    :class:`WebSocketProtocol`, and no permessage-deflate (PCM barely compresses; deflating every
    message cost a third of the server's CPU at 64 streams); uvicorn's loggers get a filter that keeps
    ``?token=`` values out of the log, and one that leaves answered health probes out."""
    settings = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ws=WebSocketProtocol,
        ws_max_size=HARD_LIMIT_FACTOR * config.max_message_bytes + 4096,
        ws_ping_interval=config.ping_interval_s,
        ws_ping_timeout=config.ping_timeout_s,
        ws_per_message_deflate=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    for name in ("uvicorn.error", "uvicorn.access"):  # after Config, which configures uvicorn's logging
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactTokens) for f in logger.filters):
            logger.addFilter(_RedactTokens())
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _QuietHealthChecks) for f in access.filters):
        access.addFilter(_QuietHealthChecks())
    return settings


class _QuietHealthChecks(logging.Filter):
    """Drops the access-log lines of answered ``/healthz`` probes (Docker's HEALTHCHECK, a load
    balancer's: one every few seconds would bury the log); failed ones are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args  # uvicorn's: client, method, path with query, HTTP version, status
        return not (isinstance(args, tuple) and len(args) == 5 and args[2] == "/healthz" and args[4] == 200)


class _RedactTokens(logging.Filter):
    """Log records with ``?token=`` values replaced by ``***`` (uvicorn logs each WebSocket's path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = redact_token(message), None
        return True


def _address(host: str, port: int) -> str:
    """``host:port`` (``[host]:port`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to ``port`` on every address of ``host`` ("": all interfaces), as asyncio binds a
    host name; a :class:`UsageError` naming ``host:port`` and the reason when one cannot be bound (the
    port is in use, the host is unknown or not this machine's)."""
    where = _address(host, port)
    try:
        found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {where}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(found):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio binds: IPv4 addresses have their own socket
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise UsageError(f"cannot listen on {where}: {exc.strerror}") from None
    return sockets


def serve(config: ServerConfig, sockets: list[socket.socket], log_level: str = "info") -> None:
    """Serve on ``sockets`` (:func:`listen`'s; closed on return) until SIGTERM/SIGINT (then drain and
    return)."""
    try:
        app = create_app(config)
        # the models, torch and the app live as long as the server: moved out of the collector's sight,
        # they no longer lengthen its full collections, which pause every stream (docs/server.md, Load)
        gc.collect()
        gc.freeze()
        host, port = sockets[0].getsockname()[:2]
        server = DrainingServer(uvicorn_config(app, config, host, port, log_level), app.state.server)
        server.run(sockets)
    finally:
        for sock in sockets:
            sock.close()
