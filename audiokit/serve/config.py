"""Server settings; the defaults are safe for a public port (the CLI binds to loopback anyway)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from audiokit.errors import UsageError


@dataclass
class ServerConfig:
    """What ``audiokit serve`` serves and the limits it enforces.

    Attributes:
        models: model names or ``.safetensors`` paths (empty: every shipped codec and enhancer).
        max_streams: live streams at once, all models and clients together.
        max_streams_per_client: live streams from one client address.
        max_message_bytes: largest message a client may send (larger: 1009).
        max_messages_per_second: a client's sustained message rate (bursts of twice that pass; over: 4429).
        idle_timeout_s: seconds without a client message before the stream is closed (4408).
        max_backlog_s: seconds of audio a stream may queue (unprocessed input or unsent output) before
            the server stops reading its socket (backpressure; TCP then slows the client).
        token: a shared secret clients must send (``Authorization: Bearer`` or ``?token=``); None: open.
        allow_origins: browser origins besides the server's own that may open streams (``*``: any).
        drain_timeout_s: on SIGTERM, how long live streams get to finish before the server exits.
        ping_interval_s, ping_timeout_s: WebSocket keepalive pings.
        threads: torch threads per process (batching, not threads, serves many streams).
        max_hops: most hops one stream advances in one batched step (a stream with a backlog catches
            up by up to this many per step; 1: one hop per step whatever the backlog).
        compile: ``"aoti"``: batched steps run as libraries compiled ahead of time
            (:mod:`audiokit.streaming.compiled`; built, or found in the cache, when the server starts;
            eager where they cannot be built); None: eager steps.
        weight_precision: ``"float16"`` / ``"int8"``: every model's matrices rounded to float16 values
            / to 255 levels per output, read in that form by compiled steps (:mod:`audiokit.nn.precision`);
            ``"float32"``: as shipped.
    """

    models: list[str] = field(default_factory=list)
    max_streams: int = 64
    max_streams_per_client: int = 8
    max_message_bytes: int = 65536
    max_messages_per_second: float = 200.0
    idle_timeout_s: float = 30.0
    max_backlog_s: float = 5.0
    token: str | None = None
    allow_origins: list[str] = field(default_factory=list)
    drain_timeout_s: float = 30.0
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 20.0
    threads: int = 1
    max_hops: int = 8
    compile: str | None = None
    weight_precision: str = "float32"

    def __post_init__(self) -> None:
        """Refuse limits no stream could live with (:class:`UsageError` naming the field), as the CLI
        refuses its options."""
        for name, lowest in (("max_streams", 1), ("max_streams_per_client", 1), ("max_message_bytes", 4)):
            self._check(name, getattr(self, name) >= lowest, f"a whole number >= {lowest}")
        self._check("threads", self.threads >= 1, "a whole number >= 1")
        self._check("max_hops", self.max_hops >= 1, "a whole number >= 1")
        for name in ("max_messages_per_second", "idle_timeout_s", "max_backlog_s", "ping_interval_s"):
            self._check(name, math.isfinite(getattr(self, name)) and getattr(self, name) > 0, "> 0")
        for name in ("drain_timeout_s", "ping_timeout_s"):
            self._check(name, math.isfinite(getattr(self, name)) and getattr(self, name) >= 0, ">= 0")

    def _check(self, name: str, ok: bool, wanted: str) -> None:
        if not ok:
            raise UsageError(f"ServerConfig.{name} must be {wanted}, got {getattr(self, name)!r}")
