"""The ASGI application: ``/v1/stream`` (WebSocket), ``/healthz``, ``/metrics`` and the web page ``/``."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from pathlib import Path

import torch
from fastapi import FastAPI, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST

from audiokit import ops
from audiokit.errors import UsageError
from audiokit.models import AudioModel, registered_names
from audiokit.models.base import resolve_weights, shipped_names
from audiokit.serve.config import ServerConfig
from audiokit.serve.connection import handle_stream
from audiokit.serve.engines import Engine
from audiokit.serve.metrics import Metrics
from audiokit.serve.scheduler import Scheduler
from audiokit.streaming.compiled import unavailable_reason

STATIC = Path(__file__).parent / "static"


def load_engines(config: ServerConfig) -> dict[str, Engine]:
    """One engine per model of ``config.models`` (default: every shipped codec and enhancer), by name."""
    ops.forced_backend()  # a bad AUDIOKIT_OPS is an error now, not in every stream
    specs = config.models or [
        n for n in shipped_names() if registered_names()[n].family in ("codec", "enhancer")
    ]
    if not specs:
        raise UsageError("no model to serve: none is shipped; name one with -m")
    engines: dict[str, Engine] = {}
    for spec in specs:
        model = AudioModel.from_pretrained(spec).eval().set_weight_precision(config.weight_precision)
        name = served_name(spec)
        if name in engines:
            raise UsageError(f"two served models are both named {name!r}; serve one of them")
        engines[name] = Engine(name, model, config.max_streams, config.compile)
        if config.compile and not engines[name].compiled:
            reason = unavailable_reason()
            print(f"serve: {name}: compiled steps unavailable, running eagerly ({reason})", file=sys.stderr)
    return engines


def served_name(spec: str) -> str:
    """The name a model given as ``spec`` is served by: a shipped name or ``name@version`` as it is; a path
    by its run folder's name (``dec36`` for ``runs/dec36``) or its file's stem (``x`` for
    ``x.safetensors``), not after the config it shares with a shipped model (so a candidate can be served
    beside it), and not the whole path (which /healthz would publish)."""
    if spec in registered_names() or ("@" in spec and not Path(spec).exists()):
        return spec
    weights = resolve_weights(spec)
    return weights.parent.name if weights.name == "model.safetensors" else weights.stem


class ServerState:
    """Everything the routes share: engines and their schedulers, limits, metrics, live counts."""

    def __init__(self, config: ServerConfig, engines: dict[str, Engine]) -> None:
        self.config = config
        self.metrics = Metrics()
        self.metrics.slots_total.set(config.max_streams)
        self.engines = engines
        self.schedulers: dict[str, Scheduler] = {}
        self.per_client: Counter[str] = Counter()
        self.draining = False
        self.drained = asyncio.Event()
        self.defaults = {}
        for name, engine in engines.items():
            self.defaults.setdefault(engine.task, name)

    @property
    def live(self) -> int:
        return sum(len(s.streams) for s in self.schedulers.values())

    async def start(self) -> None:
        torch.set_num_threads(self.config.threads)
        for name, engine in self.engines.items():
            self.schedulers[name] = Scheduler(engine, self.metrics, self.config.max_hops)
            self.schedulers[name].start()

    async def stop(self) -> None:
        for scheduler in self.schedulers.values():
            await scheduler.stop()

    async def drain(self) -> None:
        """Refuse new streams, end the live ones (flushed, ``done``), and wait until each has sent its
        output and closed (bounded)."""
        self.draining = True
        for scheduler in self.schedulers.values():
            for stream in list(scheduler.streams):
                scheduler.end(stream)

        async def emptied() -> None:
            # per_client counts streams until their connection ends, not only until their rest is
            # computed: a client slow to read it would otherwise lose its tail and `done` at the exit
            while self.per_client:
                await asyncio.sleep(0.05)

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(emptied(), self.config.drain_timeout_s)
        self.drained.set()

    def health(self) -> dict:
        models = []
        for name, engine in self.engines.items():
            info = {
                "name": name,
                "task": engine.task,
                "sample_rate": engine.sample_rate,
                "latency_samples": engine.latency,
                "live_streams": len(self.schedulers[name].streams) if name in self.schedulers else 0,
            }
            if engine.task == "codec":
                info["bitrates"] = [round(bps) for bps in engine.model.bitrates]  # bits/s
            models.append(info)
        return {
            "status": "draining" if self.draining else "ok",
            "models": models,
            "live_streams": self.live,
            "max_streams": self.config.max_streams,
        }


def create_app(config: ServerConfig, engines: dict[str, Engine] | None = None) -> FastAPI:
    """The server's ASGI app (``engines``: already loaded ones, else :func:`load_engines`)."""
    state = ServerState(config, engines if engines is not None else load_engines(config))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.start()
        yield
        await state.stop()

    app = FastAPI(title="audiokit", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    if config.allow_origins:
        app.add_middleware(CORSMiddleware, allow_origins=config.allow_origins, allow_methods=["GET"])

    @app.api_route("/healthz", methods=["GET", "HEAD"])  # HEAD: probes that want the status alone
    async def healthz() -> JSONResponse:
        return JSONResponse(state.health(), status_code=503 if state.draining else 200)

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def metrics() -> Response:
        state.metrics.slots_used.set(state.live)
        return Response(state.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.api_route("/", methods=["GET", "HEAD"])  # HEAD: uptime monitors and `curl -I` (it was 405)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.websocket("/v1/stream")
    async def stream(websocket: WebSocket) -> None:
        await handle_stream(websocket, state)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
