"""Prometheus metrics of one server (its own registry, so several servers can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STEP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
HOP_BUCKETS = (1, 2, 4, 8, 16, 32)


class Metrics:
    """Live streams, stream slots, step times, batch sizes and hops, samples, late steps, closes by code."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.live = Gauge("audiokit_streams_live", "Streams open now", ["model"], registry=r)
        self.slots_used = Gauge("audiokit_stream_slots_used", "Stream slots in use (all models)", registry=r)
        self.slots_total = Gauge("audiokit_stream_slots_total", "Stream slots (--max-streams)", registry=r)
        self.step_seconds = Histogram(
            "audiokit_step_seconds",
            "Compute time of one batched step",
            ["model"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "audiokit_step_batch_size",
            "Streams advanced by one batched step",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.step_hops = Histogram(
            "audiokit_step_hops",
            "Hops the furthest-advanced stream of one batched step moved (over 1: catching up)",
            ["model"],
            buckets=HOP_BUCKETS,
            registry=r,
        )
        self.samples_in = Counter(
            "audiokit_samples_in", "PCM samples received (client rate)", ["model"], registry=r
        )
        self.samples_out = Counter(
            "audiokit_samples_out", "PCM samples sent (client rate)", ["model"], registry=r
        )
        self.late_steps = Counter(
            "audiokit_late_steps",
            "Batched steps whose compute took longer than the audio they advanced (falling behind)",
            ["model"],
            registry=r,
        )
        self.closes = Counter(
            "audiokit_closes", "Stream connections closed, by close code", ["code"], registry=r
        )

    def text(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
