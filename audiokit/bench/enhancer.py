"""Enhancer speed on CPU, next to RNNoise's in the same run (``audiokit bench -m enhance-16k``).

* offline: real-time factor (CPU seconds per audio second; wall-clock too) of ``model.enhance`` on one
  channel;
* streaming, one stream: compute time of each one-hop ``session.push`` (p50/p99, and as a share of the
  hop), and of the bare ``model.step`` it wraps;
* many streams: ``N`` streams advanced together by one batched session (``model.stream(N)``), one hop
  per tick; real-time streams sustained = ``N * hop duration / tick time`` (one thread = one core);
* RNNoise (:mod:`audiokit.rnnoise`, the C library of ``pyrnnoise``): its offline real-time factor at
  48 kHz (frames only, and with the soxr resampling a 16 kHz input needs) and its per-frame time; it
  has no batched mode, so its streams per core are ``frame duration / median frame time`` (medians
  per step on both sides, as for ours).

Speed does not depend on the weights, so untrained (random) weights are used when none are shipped.
"""

from __future__ import annotations

import statistics
import time

import soxr
import torch

from audiokit import rnnoise
from audiokit.enhancement import load_enhancer
from audiokit.errors import ModelError
from audiokit.models import is_shipped
from audiokit.models.enhancer import Enhancer
from audiokit.provenance import run_info

TARGETS = {"offline_realtime_x": 200.0, "stream_hop_share": 0.10, "realtime_streams_per_core": 100.0}
"""DESIGN.md's speed bars (one thread): offline >= 200x real time, one stream's per-hop step <= 10 % of
the hop, >= 100 real-time streams per core batched."""


def enhancer_to_time(name: str) -> tuple[Enhancer, str]:
    """The enhancer ``name`` and ``"shipped"`` (a path's weights: ``"loaded"``), else, for a registered
    config without weights, an untrained one and ``"random"`` (same architecture, same speed)."""
    try:
        return load_enhancer(name)[0], "shipped" if is_shipped(name) else "loaded"
    except ModelError:
        if name not in Enhancer.configs:
            raise
        torch.manual_seed(0)
        return Enhancer.from_config(name).eval(), "random"


def _noise(rows: int, samples: int) -> torch.Tensor:
    return 0.1 * torch.randn(rows, 1, samples, generator=torch.Generator().manual_seed(0))


def _median_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU (process) seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        began, began_cpu = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - began_cpu)
        wall.append(time.perf_counter() - began)
    return statistics.median(wall), statistics.median(cpu)


def _percentiles_ms(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "p50_ms": 1e3 * statistics.median(ordered),
        "p99_ms": 1e3 * ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "mean_ms": 1e3 * statistics.fmean(ordered),
    }


def _rtf(wall_cpu: tuple[float, float], seconds: float) -> dict:
    wall, cpu = wall_cpu
    return {"rtf": cpu / seconds, "realtime_x": seconds / cpu, "wall_rtf": wall / seconds}


def bench_offline(model: Enhancer, seconds: float, repeats: int) -> dict:
    """``model.enhance`` on ``seconds`` of one channel: median RTF in CPU time (``rtf``), how many
    times real time, and the wall-clock RTF (higher where other processes share the core)."""
    audio = _noise(1, int(seconds * model.sample_rate))
    with torch.inference_mode():
        return _rtf(_median_seconds(lambda: model.enhance(audio), repeats), seconds)


def bench_stream_hop(model: Enhancer, hops: int, warmup: int = 10) -> dict:
    """Per-hop compute time of one stream pushing one hop at a time: the session's ``push`` and the bare
    ``model.step`` (ms, p50/p99/mean), and the p50 push as a share of the hop's duration."""
    hop = model.hop_length
    audio = _noise(1, hop * (hops + warmup))
    session = model.stream(1)
    state = model.init_state(1)
    push_times, step_times = [], []
    with torch.inference_mode():
        for i in range(hops + warmup):
            chunk = audio[..., i * hop : (i + 1) * hop]
            began = time.perf_counter()
            session.push(chunk)
            pushed = time.perf_counter()
            model.step(chunk, state)
            stepped = time.perf_counter()
            if i >= warmup:
                push_times.append(pushed - began)
                step_times.append(stepped - pushed)
    hop_ms = 1e3 * hop / model.sample_rate
    push, step = _percentiles_ms(push_times), _percentiles_ms(step_times)
    return {"hop_ms": hop_ms, "push": push, "step": step, "hop_share": push["p50_ms"] / hop_ms}


def bench_many_streams(model: Enhancer, counts: list[int], ticks: int, warmup: int = 3) -> dict:
    """Real-time streams sustained when ``N`` streams advance together, one hop per tick, through one
    batched session; capacity is ``N * hop duration / median tick time``."""
    hop = model.hop_length
    hop_s = hop / model.sample_rate
    by_streams = {}
    for count in counts:
        session = model.stream(count)
        chunk = _noise(count, hop)
        times = []
        for tick in range(ticks + warmup):
            began = time.perf_counter()
            session.push(chunk)
            if tick >= warmup:
                times.append(time.perf_counter() - began)
        tick_s = statistics.median(times)
        by_streams[str(count)] = {"tick_ms": 1e3 * tick_s, "streams_sustained": count * hop_s / tick_s}
    best = max(by_streams.values(), key=lambda r: r["streams_sustained"])
    return {"by_streams": by_streams, "streams_sustained": best["streams_sustained"]}


def bench_rnnoise(seconds: float, repeats: int, frames: int, sample_rate: int = 16000) -> dict:
    """RNNoise's offline RTF at 48 kHz (frames only), with the resampling from and back to
    ``sample_rate`` (:func:`audiokit.rnnoise.denoise`), and its per-frame time (ms) on one stream; on
    the same noise, made at ``sample_rate`` Hz."""
    audio = _noise(1, int(seconds * sample_rate))[0]
    x48 = soxr.resample(audio[0].numpy(), sample_rate, rnnoise.SAMPLE_RATE, quality="HQ")
    x48 = x48[: x48.shape[0] // rnnoise.FRAME_SIZE * rnnoise.FRAME_SIZE]
    state = rnnoise.RNNoiseState()
    core = _rtf(_median_seconds(lambda: state.process(x48), repeats), x48.shape[0] / rnnoise.SAMPLE_RATE)
    with_resampling = _rtf(_median_seconds(lambda: rnnoise.denoise(audio, sample_rate), repeats), seconds)
    times = []
    for i in range(frames + 10):
        frame = x48[(i % 100) * rnnoise.FRAME_SIZE : (i % 100 + 1) * rnnoise.FRAME_SIZE]
        began = time.perf_counter()
        state.process(frame)
        if i >= 10:
            times.append(time.perf_counter() - began)
    state.close()
    frame_ms = 1e3 * rnnoise.FRAME_SIZE / rnnoise.SAMPLE_RATE
    frame = _percentiles_ms(times)
    return {
        **core,
        "rtf_with_resampling": with_resampling["rtf"],
        "realtime_x_with_resampling": with_resampling["realtime_x"],
        "frame_ms": frame_ms,
        "frame": frame,
        "frame_share": frame["p50_ms"] / frame_ms,
        "streams_per_core": frame_ms / frame["p50_ms"],
    }


def run_enhancer_benchmark(
    model: str = "enhance-16k",
    seconds: float = 10.0,
    repeats: int = 3,
    threads: int = 1,
    hops: int = 200,
    stream_counts: tuple[int, ...] = (1, 16, 64),
) -> dict:
    """Every figure of ``audiokit bench`` for an enhancer as one JSON-ready dict (module docstring)."""
    torch.set_num_threads(threads)
    enhancer, weights = enhancer_to_time(model)
    cpu = {
        "offline": bench_offline(enhancer, seconds, repeats),
        "stream_hop": bench_stream_hop(enhancer, hops),
        "many_streams": bench_many_streams(enhancer, list(stream_counts), max(10, hops // 4)),
    }
    ref = bench_rnnoise(seconds, repeats, hops, enhancer.sample_rate)
    ratios = {
        "offline_speed_vs_rnnoise": ref["rtf"] / cpu["offline"]["rtf"],
        "offline_speed_vs_rnnoise_with_resampling": ref["rtf_with_resampling"] / cpu["offline"]["rtf"],
        "stream_hop_share_vs_rnnoise": cpu["stream_hop"]["hop_share"] / ref["frame_share"],
        "streams_per_core_vs_rnnoise": cpu["many_streams"]["streams_sustained"] / ref["streams_per_core"],
    }
    checks = {
        "offline_realtime_x": cpu["offline"]["realtime_x"],
        "stream_hop_share": cpu["stream_hop"]["hop_share"],
        "realtime_streams_per_core": cpu["many_streams"]["streams_sustained"],
    }
    return {
        "benchmark": "enhancer_speed",
        **run_info(),
        "settings": {
            "model": model,
            "weights": weights,
            "threads": threads,
            "seconds": seconds,
            "repeats": repeats,
            "stream_hops": hops,
            "stream_counts": list(stream_counts),
            "hop_length": enhancer.hop_length,
            "algorithmic_latency_ms": 1e3 * enhancer.algorithmic_latency / enhancer.sample_rate,
            "parameters": sum(p.numel() for p in enhancer.parameters()),
            "multiply_adds_per_second": enhancer.multiply_adds_per_second(),
        },
        "cpu": cpu,
        "rnnoise": ref,
        "ratios": ratios,
        "targets": {
            name: {
                "value": value,
                "target": TARGETS[name],
                "met": value <= TARGETS[name] if name == "stream_hop_share" else value >= TARGETS[name],
            }
            for name, value in checks.items()
        },
    }


def enhancer_summary_lines(result: dict) -> list[str]:
    """Human-readable lines of a :func:`run_enhancer_benchmark` result."""
    s, cpu, ref, ratios = result["settings"], result["cpu"], result["rnnoise"], result["ratios"]
    hop = cpu["stream_hop"]
    lines = [
        f"{s['model']} ({s['weights']} weights, {s['parameters'] / 1e3:.0f} k parameters, "
        f"{s['multiply_adds_per_second'] / 1e6:.0f} M MAC/s), {s['threads']} CPU thread(s)",
        f"  offline: RTF {cpu['offline']['rtf']:.5f} CPU time ({cpu['offline']['realtime_x']:.0f}x real "
        f"time, {1 / cpu['offline']['wall_rtf']:.0f}x by the wall clock); "
        f"RNNoise {ref['realtime_x']:.0f}x ({ref['realtime_x_with_resampling']:.0f}x with resampling) "
        f"-> ours {ratios['offline_speed_vs_rnnoise']:.2f}x RNNoise's speed",
        f"  one stream: push {hop['push']['p50_ms']:.3f} ms p50 ({hop['push']['p99_ms']:.3f} p99), "
        f"model.step {hop['step']['p50_ms']:.3f} ms, per {hop['hop_ms']:.0f} ms hop "
        f"({100 * hop['hop_share']:.1f} %); RNNoise {ref['frame']['p50_ms']:.3f} ms per "
        f"{ref['frame_ms']:.0f} ms frame ({100 * ref['frame_share']:.1f} %)",
    ]
    for count, row in cpu["many_streams"]["by_streams"].items():
        lines.append(
            f"  {count:>4} streams: {row['tick_ms']:.2f} ms per tick -> {row['streams_sustained']:.0f} "
            "real-time streams per core"
        )
    lines.append(
        f"  RNNoise: {ref['streams_per_core']:.0f} streams per core -> ours "
        f"{ratios['streams_per_core_vs_rnnoise']:.2f}x"
    )
    for name, check in result["targets"].items():
        verdict = "met" if check["met"] else "NOT met"
        lines.append(f"  target {name}: {check['value']:.3f} (target {check['target']:g}) {verdict}")
    return lines
