"""Speed figures every streaming audio-to-audio model shares (enhancer, bandwidth extender): offline
real-time factor, one stream's per-hop cost, batched streams per core, and DESIGN.md's bars for them.
A figure per core is the process's over its torch threads (each thread on a core of its own).

Times are medians; real-time factors are in CPU (process) time, with the wall clock beside them (on a
shared machine it includes time spent waiting for a core).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch

from audiokit.errors import ModelError
from audiokit.models import is_shipped
from audiokit.models.base import AudioModel
from audiokit.processing import load_model

Model = TypeVar("Model", bound=AudioModel)

TARGETS = {
    "offline_realtime_x": 200.0,
    "stream_hop_share": 0.10,
    "aoti_stream_hop_share": 0.10,
    "realtime_streams_per_core": 100.0,
}
"""DESIGN.md's speed bars (one thread): offline >= 200x real time, one stream's per-hop step <= 10 % of
the hop, >= 100 real-time streams per core batched."""


@dataclass(frozen=True)
class SpeedSettings:
    """What a speed run times: ``model`` (shipped name, path, or a registered config, untrained),
    ``seconds`` of audio offline (median of ``repeats``), on ``threads`` CPU threads, ``hops`` pushed one
    at a time on one stream, and ``stream_counts`` streams batched."""

    model: str
    seconds: float = 10.0
    repeats: int = 3
    threads: int = 1
    hops: int = 200
    stream_counts: tuple[int, ...] = (1, 16, 64)


@dataclass(frozen=True)
class StreamSetup:
    """How a model's sessions are timed: ``chunk`` input samples per hop (default ``hop_length``), the
    options of ``model.stream`` and of ``model.step_options`` (for the bare ``model.step``)."""

    chunk: int | None = None
    stream_options: dict = field(default_factory=dict)
    step_options: dict = field(default_factory=dict)


def model_to_time(cls: type[Model], name: str) -> tuple[Model, str]:
    """The ``cls`` model ``name`` and ``"shipped"`` (a path's weights: ``"loaded"``), else, for a
    registered config without weights, an untrained one and ``"random"`` (same architecture, same speed)."""
    try:
        return load_model(cls, name)[0], "shipped" if is_shipped(name) else "loaded"
    except ModelError:
        if name not in cls.configs:
            raise
        torch.manual_seed(0)
        return cls.from_config(name).eval(), "random"


def noise(rows: int, samples: int) -> torch.Tensor:
    """Seeded white noise ``(rows, 1, samples)`` at -20 dBFS RMS."""
    return 0.1 * torch.randn(rows, 1, samples, generator=torch.Generator().manual_seed(0))


def median_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median wall and CPU (process) seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        began, began_cpu = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - began_cpu)
        wall.append(time.perf_counter() - began)
    return statistics.median(wall), statistics.median(cpu)


def percentiles_ms(times: list[float]) -> dict:
    """``p50_ms``, ``p99_ms`` and ``mean_ms`` of ``times`` (seconds)."""
    ordered = sorted(times)
    return {
        "p50_ms": 1e3 * statistics.median(ordered),
        "p99_ms": 1e3 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "mean_ms": 1e3 * statistics.fmean(ordered),
    }


def rtf(wall_cpu: tuple[float, float], seconds: float) -> dict:
    """Real-time factor of processing ``seconds`` of audio in :func:`median_seconds`' time: ``rtf`` (CPU
    time per audio second), ``realtime_x`` (its inverse) and ``wall_rtf``."""
    wall, cpu = wall_cpu
    return {"rtf": cpu / seconds, "realtime_x": seconds / cpu, "wall_rtf": wall / seconds}


def bench_stream_hop(model: AudioModel, hops: int, setup: StreamSetup, warmup: int = 10) -> dict:
    """Per-hop compute time of one stream pushing one hop at a time: the session's ``push`` of
    ``setup.chunk`` input samples and the bare ``model.step`` of one hop, in ms (p50/p99/mean), and the
    p50 push as a share of the hop's duration."""
    hop = model.hop_length
    chunk = setup.chunk or hop
    audio = noise(1, chunk * (hops + warmup))
    session = model.stream(1, **setup.stream_options)
    state = model.init_state(1)
    options = model.step_options(**setup.step_options) if setup.step_options else {}
    step_input = noise(1, hop)
    push_times, step_times = [], []
    with torch.inference_mode():
        for i in range(hops + warmup):
            began = time.perf_counter()
            session.push(audio[..., i * chunk : (i + 1) * chunk])
            pushed = time.perf_counter()
            model.step(step_input, state, **options)
            stepped = time.perf_counter()
            if i >= warmup:
                push_times.append(pushed - began)
                step_times.append(stepped - pushed)
    hop_ms = 1e3 * hop / model.sample_rate
    push, step = percentiles_ms(push_times), percentiles_ms(step_times)
    return {"hop_ms": hop_ms, "push": push, "step": step, "hop_share": push["p50_ms"] / hop_ms}


def bench_many_streams(
    model: AudioModel, counts: list[int], ticks: int, setup: StreamSetup, warmup: int = 3
) -> dict:
    """Real-time streams sustained when ``N`` streams advance together, one hop (``setup.chunk`` input
    samples) per tick, through one batched session; capacity is ``N * hop duration / median tick``."""
    hop_s = model.hop_length / model.sample_rate
    by_streams = {}
    for count in counts:
        session = model.stream(count, **setup.stream_options)
        block = noise(count, setup.chunk or model.hop_length)
        times = []
        for tick in range(ticks + warmup):
            began = time.perf_counter()
            session.push(block)
            if tick >= warmup:
                times.append(time.perf_counter() - began)
        tick_s = statistics.median(times)
        by_streams[str(count)] = {"tick_ms": 1e3 * tick_s, "streams_sustained": count * hop_s / tick_s}
    best = max(by_streams.values(), key=lambda r: r["streams_sustained"])
    return {"by_streams": by_streams, "streams_sustained": best["streams_sustained"]}


def bench_compiled(model: AudioModel, hops: int, setup: StreamSetup, warmup: int = 10) -> dict:
    """One stream pushing two hops at a time (one call of the two-hop library of
    :class:`~audiokit.streaming.compiled.HopwiseSteps`) through an eager session, a ``compile="aoti"``
    one and a compiled one of the model with float16 weights (``"aoti_fp16"``,
    :mod:`audiokit.nn.precision`), pushes interleaved; per-push ms (p50/p99/mean) of each and the p50
    speed-ups over eager, and the same for pushes of one hop (``"one_hop"``: the one-hop library);
    ``{"skipped": why}`` where the compiled steps do not build, ``"aoti_fp16_skipped"`` where only the
    float16 ones do not."""
    from audiokit.streaming import compiled

    fast = model.stream(1, compile="aoti", **setup.stream_options)
    if not getattr(fast, "inner", fast).compiled:
        return {"skipped": compiled.unavailable_reason()}
    sessions = {"aoti": fast}
    half = model.copy_with_weight_precision("float16")
    half_session = half.stream(1, compile="aoti", **setup.stream_options)
    skipped = {}
    if getattr(half_session, "inner", half_session).compiled:
        sessions["aoti_fp16"] = half_session
    else:
        skipped["aoti_fp16_skipped"] = compiled.unavailable_reason()
    sessions["eager"] = model.stream(1, **setup.stream_options)
    hop_ms = 1e3 * model.hop_length / model.sample_rate
    result = _interleaved(sessions, 2 * (setup.chunk or model.hop_length), hops, warmup, 2 * hop_ms)
    result["one_hop"] = _interleaved(sessions, setup.chunk or model.hop_length, hops, warmup, hop_ms)
    return {**result, **skipped}


def _interleaved(sessions: dict, chunk: int, pushes: int, warmup: int, chunk_ms: float) -> dict:
    """Per-push ms (p50/p99/mean) of ``sessions`` (``eager``, ``aoti`` and maybe ``aoti_fp16``) pushing
    ``chunk`` samples each, interleaved, and the p50 speed-ups over eager."""
    audio = noise(1, chunk * (pushes + warmup))
    times: dict[str, list[float]] = {name: [] for name in sessions}
    with torch.inference_mode():
        for i in range(pushes + warmup):
            piece = audio[..., i * chunk : (i + 1) * chunk]
            for name, session in sessions.items():
                began = time.perf_counter()
                session.push(piece)
                if i >= warmup:
                    times[name].append(time.perf_counter() - began)
    result = {name: percentiles_ms(measured) for name, measured in times.items()}
    result["chunk_ms"] = chunk_ms
    result["speedup_p50"] = result["eager"]["p50_ms"] / result["aoti"]["p50_ms"]
    if "aoti_fp16" in result:
        result["speedup_p50_fp16"] = result["eager"]["p50_ms"] / result["aoti_fp16"]["p50_ms"]
    return result


def target_checks(cpu: dict, threads: int) -> dict:
    """:data:`TARGETS` against the ``offline``, ``stream_hop`` and ``many_streams`` figures of ``cpu``
    (measured on ``threads`` torch threads: the streams sustained per core are those over ``threads``),
    and the compiled one-hop push as a share of the hop (``aoti_stream_hop_share``, where the compiled
    steps built): ``{name: {"value", "target", "met"}}``."""
    values = {
        "offline_realtime_x": cpu["offline"]["realtime_x"],
        "stream_hop_share": cpu["stream_hop"]["hop_share"],
        "realtime_streams_per_core": cpu["many_streams"]["streams_sustained"] / threads,
    }
    one_hop = cpu.get("compiled", {}).get("one_hop")
    if one_hop is not None:
        values["aoti_stream_hop_share"] = one_hop["aoti"]["p50_ms"] / one_hop["chunk_ms"]
    return {
        name: {
            "value": value,
            "target": TARGETS[name],
            "met": value <= TARGETS[name] if name.endswith("hop_share") else value >= TARGETS[name],
        }
        for name, value in values.items()
    }


def time_streams(model: AudioModel, run: SpeedSettings, setup: StreamSetup | None = None) -> dict:
    """``{"stream_hop": ..., "many_streams": ..., "compiled": ...}``: :func:`bench_stream_hop` over
    ``run.hops`` hops, :func:`bench_many_streams` of ``run.stream_counts`` streams (``run.hops // 4``
    ticks, at least 10) and :func:`bench_compiled` over ``run.hops // 2`` pushes."""
    setup = setup or StreamSetup()
    ticks = max(10, run.hops // 4)
    return {
        "stream_hop": bench_stream_hop(model, run.hops, setup),
        "many_streams": bench_many_streams(model, list(run.stream_counts), ticks, setup),
        "compiled": bench_compiled(model, max(10, run.hops // 2), setup),
    }


def settings_of(model: AudioModel, weights: str, run: SpeedSettings, **extra: Any) -> dict:
    """The ``settings`` block of a result: ``run``, ``extra``, the weights and the model's hop, latency
    and size."""
    return {
        **asdict(run),
        "stream_counts": list(run.stream_counts),
        **extra,
        "weights": weights,
        "hop_length": model.hop_length,
        "algorithmic_latency_ms": 1e3 * model.algorithmic_latency / model.sample_rate,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def stream_lines(result: dict) -> list[str]:
    """Summary lines of one stream's hop and of the batched streams (all of them, and per core)."""
    hop, threads = result["cpu"]["stream_hop"], result["settings"]["threads"]
    lines = [
        f"  one stream: push {hop['push']['p50_ms']:.3f} ms p50 ({hop['push']['p99_ms']:.3f} p99), "
        f"model.step {hop['step']['p50_ms']:.3f} ms, per {hop['hop_ms']:.0f} ms hop "
        f"({100 * hop['hop_share']:.1f} %)"
    ]
    for count, row in result["cpu"]["many_streams"]["by_streams"].items():
        sustained = row["streams_sustained"]
        lines.append(
            f"  {count:>4} streams: {row['tick_ms']:.2f} ms per tick -> {sustained:.0f} real-time streams "
            f"on {threads} thread(s), {sustained / threads:.0f} per core"
        )
    fast = result["cpu"]["compiled"]
    if "skipped" in fast:
        lines.append(f"  compiled ahead of time (AOTInductor): skipped ({fast['skipped']})")
    else:
        for pushes in (fast, fast["one_hop"]):
            lines.append(
                f"  one stream, {pushes['chunk_ms']:.0f} ms pushes: eager {pushes['eager']['p50_ms']:.3f} ms "
                f"p50, compiled ahead of time {pushes['aoti']['p50_ms']:.3f} ms "
                f"({pushes['speedup_p50']:.2f}x), "
                + (
                    f"with float16 weights {pushes['aoti_fp16']['p50_ms']:.3f} ms "
                    f"({pushes['speedup_p50_fp16']:.2f}x)"
                    if "aoti_fp16" in pushes
                    else f"float16 weights skipped ({fast['aoti_fp16_skipped']})"
                )
            )
    return lines


def target_lines(result: dict) -> list[str]:
    """One summary line per target: value, target, met or not."""
    return [
        f"  target {name}: {check['value']:.3f} (target {check['target']:g}) "
        + ("met" if check["met"] else "NOT met")
        for name, check in result["targets"].items()
    ]
