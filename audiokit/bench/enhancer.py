"""Enhancer speed on CPU, next to RNNoise's in the same run (``audiokit bench -m enhance-16k``).

* offline: real-time factor (CPU seconds per audio second; wall-clock too) of ``model.enhance`` on one
  channel;
* streaming, one stream: compute time of each one-hop ``session.push`` (p50/p99, and as a share of the
  hop), and of the bare ``model.step`` it wraps;
* many streams: ``N`` streams advanced together by one batched session (``model.stream(N)``), one hop
  per tick; real-time streams sustained = ``N * hop duration / tick time``, per core over the threads;
* RNNoise (:mod:`audiokit.rnnoise`, the C library of ``pyrnnoise``): its offline real-time factor at
  48 kHz (frames only, and with the soxr resampling a 16 kHz input needs) and its per-frame time; it
  has no batched mode, so its streams per core are ``frame duration / median frame time`` (medians
  per step on both sides, as for ours).

Speed does not depend on the weights, so untrained (random) weights are used when none are shipped.
The shared figures are :mod:`audiokit.bench.audio`'s.
"""

from __future__ import annotations

import time
from typing import Any

import soxr
import torch

from audiokit import rnnoise
from audiokit.bench.audio import (
    SpeedSettings,
    median_seconds,
    model_to_time,
    noise,
    percentiles_ms,
    rtf,
    settings_of,
    stream_lines,
    target_checks,
    target_lines,
    time_streams,
)
from audiokit.models.enhancer import Enhancer
from audiokit.provenance import run_info


def bench_offline(model: Enhancer, seconds: float, repeats: int) -> dict:
    """``model.enhance`` on ``seconds`` of one channel: median RTF in CPU time (``rtf``), how many
    times real time, and the wall-clock RTF (higher where other processes share the core)."""
    audio = noise(1, int(seconds * model.sample_rate))
    with torch.inference_mode():
        return rtf(median_seconds(lambda: model.enhance(audio), repeats), seconds)


def bench_rnnoise(seconds: float, repeats: int, frames: int, sample_rate: int = 16000) -> dict:
    """RNNoise's offline RTF at 48 kHz (frames only), with the resampling from and back to
    ``sample_rate`` (:func:`audiokit.rnnoise.denoise`), and its per-frame time (ms) on one stream; on
    the same noise, made at ``sample_rate`` Hz."""
    audio = noise(1, int(seconds * sample_rate))[0]
    x48 = soxr.resample(audio[0].numpy(), sample_rate, rnnoise.SAMPLE_RATE, quality="HQ")
    x48 = x48[: x48.shape[0] // rnnoise.FRAME_SIZE * rnnoise.FRAME_SIZE]
    state = rnnoise.RNNoiseState()
    core = rtf(median_seconds(lambda: state.process(x48), repeats), x48.shape[0] / rnnoise.SAMPLE_RATE)
    with_resampling = rtf(median_seconds(lambda: rnnoise.denoise(audio, sample_rate), repeats), seconds)
    times, cycle = [], min(100, x48.shape[0] // rnnoise.FRAME_SIZE)  # whole frames, fewer in a short input
    for i in range(frames + 10):
        frame = x48[(i % cycle) * rnnoise.FRAME_SIZE : (i % cycle + 1) * rnnoise.FRAME_SIZE]
        began = time.perf_counter()
        state.process(frame)
        if i >= 10:
            times.append(time.perf_counter() - began)
    state.close()
    frame_ms = 1e3 * rnnoise.FRAME_SIZE / rnnoise.SAMPLE_RATE
    frame = percentiles_ms(times)
    return {
        **core,
        "rtf_with_resampling": with_resampling["rtf"],
        "realtime_x_with_resampling": with_resampling["realtime_x"],
        "frame_ms": frame_ms,
        "frame": frame,
        "frame_share": frame["p50_ms"] / frame_ms,
        "streams_per_core": frame_ms / frame["p50_ms"],
    }


def run_enhancer_benchmark(model: str = "enhance-16k", **settings: Any) -> dict:
    """Every figure of ``audiokit bench`` for an enhancer as one JSON-ready dict (module docstring);
    ``settings``: the other fields of :class:`~audiokit.bench.audio.SpeedSettings`."""
    run = SpeedSettings(model, **settings)
    torch.set_num_threads(run.threads)
    enhancer, weights = model_to_time(Enhancer, model)
    cpu = {"offline": bench_offline(enhancer, run.seconds, run.repeats), **time_streams(enhancer, run)}
    ref = bench_rnnoise(run.seconds, run.repeats, run.hops, enhancer.sample_rate)
    per_core = cpu["many_streams"]["streams_sustained"] / run.threads
    ratios = {
        "offline_speed_vs_rnnoise": ref["rtf"] / cpu["offline"]["rtf"],
        "offline_speed_vs_rnnoise_with_resampling": ref["rtf_with_resampling"] / cpu["offline"]["rtf"],
        "stream_hop_share_vs_rnnoise": cpu["stream_hop"]["hop_share"] / ref["frame_share"],
        "streams_per_core_vs_rnnoise": per_core / ref["streams_per_core"],
    }
    macs = enhancer.multiply_adds_per_second()
    return {
        "benchmark": "enhancer_speed",
        **run_info(),
        "settings": settings_of(enhancer, weights, run, multiply_adds_per_second=macs),
        "cpu": cpu,
        "rnnoise": ref,
        "ratios": ratios,
        "targets": target_checks(cpu, run.threads),
    }


def enhancer_summary_lines(result: dict) -> list[str]:
    """Human-readable lines of a :func:`run_enhancer_benchmark` result."""
    s, cpu, ref, ratios = result["settings"], result["cpu"], result["rnnoise"], result["ratios"]
    return [
        f"{s['model']} ({s['weights']} weights, {s['parameters'] / 1e3:.0f} k parameters, "
        f"{s['multiply_adds_per_second'] / 1e6:.0f} M MAC/s), {s['threads']} CPU thread(s)",
        f"  offline: RTF {cpu['offline']['rtf']:.5f} CPU time ({cpu['offline']['realtime_x']:.0f}x real "
        f"time, {1 / cpu['offline']['wall_rtf']:.0f}x by the wall clock); "
        f"RNNoise {ref['realtime_x']:.0f}x ({ref['realtime_x_with_resampling']:.0f}x with resampling) "
        f"-> ours {ratios['offline_speed_vs_rnnoise']:.2f}x RNNoise's speed",
        *stream_lines(result),
        f"  RNNoise: {ref['frame']['p50_ms']:.3f} ms per {ref['frame_ms']:.0f} ms frame "
        f"({100 * ref['frame_share']:.1f} %), {ref['streams_per_core']:.0f} streams per core -> ours "
        f"{ratios['streams_per_core_vs_rnnoise']:.2f}x",
        *target_lines(result),
    ]
