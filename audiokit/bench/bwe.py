"""Bandwidth-extender speed on CPU, next to sinc (soxr) upsampling in the same run
(``audiokit bench -m bwe-8to16``).

* offline: real-time factor (CPU seconds per audio second; wall-clock too) of ``model.extend`` on one
  channel of 8 kHz input;
* streaming, one stream: compute time of each ``session.push`` of one hop of 8 kHz input
  (``model.stream(1, input_rate=8000)``: the FIR upsampler, then the model; ``bwe-8to16``: 64 input
  samples for a 128-sample, 8 ms hop at 16 kHz) and of the bare ``model.step`` of one 16 kHz hop;
* many streams: ``N`` 8 kHz streams advanced together by one batched session, one hop per tick;
  real-time streams sustained = ``N * hop duration / tick time`` (one thread = one core);
* sinc: soxr HQ upsampling of the same 8 kHz input to the model's rate (``soxr.resample``, what the
  ``sinc`` baseline of ``audiokit eval`` does), its real-time factor, for the speed ratio.

Speed does not depend on the weights, so untrained (random) weights are used when none are shipped.
"""

from __future__ import annotations

from typing import Any

import soxr
import torch

from audiokit.bench import audio as speed
from audiokit.models.bwe import NARROWBAND_EDGE_HZ, BandwidthExtender
from audiokit.provenance import run_info


def bench_offline(model: BandwidthExtender, seconds: float, repeats: int) -> dict:
    """``model.extend`` and soxr (sinc) upsampling of ``seconds`` of one channel at half the model's
    rate: ``{"ours": rtf, "sinc": rtf}`` (:func:`audiokit.bench.audio.rtf`)."""
    rate = model.sample_rate // 2
    audio = speed.noise(1, int(seconds * rate))[0]
    signal = audio[0].numpy()
    with torch.inference_mode():
        ours = speed.rtf(speed.median_seconds(lambda: model.extend(audio, rate), repeats), seconds)
    sinc = speed.rtf(
        speed.median_seconds(lambda: soxr.resample(signal, rate, model.sample_rate, "HQ"), repeats), seconds
    )
    return {"ours": ours, "sinc": sinc}


def run_bwe_benchmark(model: str = "bwe-8to16", **settings: Any) -> dict:
    """Every figure of ``audiokit bench`` for a bandwidth extender as one JSON-ready dict (module
    docstring); ``settings``: the other fields of :class:`~audiokit.bench.audio.SpeedSettings`."""
    run = speed.SpeedSettings(model, **settings)
    torch.set_num_threads(run.threads)
    extender, weights = speed.model_to_time(BandwidthExtender, model)
    input_rate = extender.sample_rate // 2
    chunk = extender.hop_length * input_rate // extender.sample_rate
    offline = bench_offline(extender, run.seconds, run.repeats)
    setup = speed.StreamSetup(chunk, {"input_rate": input_rate}, {"edge_hz": NARROWBAND_EDGE_HZ})
    streams = speed.time_streams(extender, run, setup)
    cpu = {"offline": offline["ours"], **streams}
    return {
        "benchmark": "bwe_speed",
        **run_info(),
        "settings": speed.settings_of(extender, weights, run, input_rate=input_rate),
        "cpu": cpu,
        "sinc": offline["sinc"],
        "ratios": {"offline_speed_vs_sinc": offline["sinc"]["rtf"] / offline["ours"]["rtf"]},
        "targets": speed.target_checks(cpu, run.threads),
    }


def bwe_summary_lines(result: dict) -> list[str]:
    """Human-readable lines of a :func:`run_bwe_benchmark` result."""
    s, cpu, sinc = result["settings"], result["cpu"], result["sinc"]
    return [
        f"{s['model']} ({s['weights']} weights, {s['parameters'] / 1e3:.0f} k parameters, "
        f"{s['algorithmic_latency_ms']:.0f} ms latency), {s['input_rate']} Hz input, {s['threads']} CPU "
        "thread(s)",
        f"  offline: RTF {cpu['offline']['rtf']:.5f} CPU time ({cpu['offline']['realtime_x']:.0f}x real "
        f"time, {1 / cpu['offline']['wall_rtf']:.0f}x by the wall clock); sinc (soxr HQ) "
        f"{sinc['realtime_x']:.0f}x -> ours {result['ratios']['offline_speed_vs_sinc']:.3f}x sinc's speed",
        *speed.stream_lines(result),
        *speed.target_lines(result),
    ]
