"""``audiokit serve``: many real-time enhancement and codec streams over WebSocket, batched per model.

* :mod:`~audiokit.serve.protocol`: the ``/v1/stream`` messages, close codes and PCM formats;
* :mod:`~audiokit.serve.engines` and :mod:`~audiokit.serve.scheduler`: per model, all live streams
  advance together in one batched step per hop, in a worker thread off the event loop;
* :mod:`~audiokit.serve.connection`: one connection's checks, limits and audio in both directions;
* :mod:`~audiokit.serve.app`: the ASGI app (``/v1/stream``, ``/healthz``, ``/metrics``, the page ``/``);
* :mod:`~audiokit.serve.server`: uvicorn on sockets bound first, with a graceful drain on SIGTERM.

The protocol is specified in ``docs/server.md``.
"""

from audiokit.serve.app import create_app, load_engines
from audiokit.serve.config import ServerConfig
from audiokit.serve.server import DrainingServer, listen, serve, uvicorn_config

__all__ = [
    "DrainingServer",
    "ServerConfig",
    "create_app",
    "listen",
    "load_engines",
    "serve",
    "uvicorn_config",
]
