"""Running the app under uvicorn, with a graceful drain on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import signal
from types import FrameType

import uvicorn

from audiokit.serve.app import ServerState, create_app
from audiokit.serve.config import ServerConfig

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

    async def startup(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._loop is None or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain()))

    async def _drain(self) -> None:
        await self.state.drain()
        self.should_exit = True


def uvicorn_config(
    app, config: ServerConfig, host: str, port: int, log_level: str = "info"
) -> uvicorn.Config:
    """uvicorn settings for ``app``: the message-size cap, keepalive pings, no server header, and no
    permessage-deflate (PCM barely compresses; deflating every message cost a third of the server's CPU
    at 64 streams)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ws="websockets-sansio",
        ws_max_size=HARD_LIMIT_FACTOR * config.max_message_bytes + 4096,
        ws_ping_interval=config.ping_interval_s,
        ws_ping_timeout=config.ping_timeout_s,
        ws_per_message_deflate=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


def serve(config: ServerConfig, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info") -> None:
    """Serve until SIGTERM/SIGINT (then drain and return)."""
    app = create_app(config)
    # the models, torch and the app live as long as the server: moved out of the collector's sight, they
    # no longer lengthen its full collections, which pause every stream (docs/server.md, Load)
    gc.collect()
    gc.freeze()
    DrainingServer(uvicorn_config(app, config, host, port, log_level), app.state.server).run()
