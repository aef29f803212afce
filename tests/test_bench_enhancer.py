"""``audiokit bench`` for an enhancer (:mod:`audiokit.bench.enhancer`): every figure, RNNoise beside it."""

from __future__ import annotations

import json
import math

import torch
from conftest import assert_speed_targets

from audiokit import rnnoise
from audiokit.bench import run_enhancer_benchmark
from audiokit.bench.audio import (
    StreamSetup,
    bench_many_streams,
    bench_stream_hop,
    stream_lines,
    target_checks,
)
from audiokit.bench.enhancer import bench_offline, bench_rnnoise
from audiokit.cli import main
from audiokit.models.enhancer import Enhancer


def test_benchmark_reports_every_figure_and_rnnoise():
    result = run_enhancer_benchmark(seconds=0.5, repeats=1, hops=10, stream_counts=(1, 4))
    assert result["settings"]["weights"] in ("random", "shipped")
    cpu, ref = result["cpu"], result["rnnoise"]
    values = [
        cpu["offline"]["rtf"],
        cpu["stream_hop"]["push"]["p50_ms"],
        cpu["stream_hop"]["step"]["p50_ms"],
        cpu["many_streams"]["by_streams"]["4"]["streams_sustained"],
        ref["rtf"],
        ref["frame"]["p50_ms"],
        *result["ratios"].values(),
    ]
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert_speed_targets(result)
    fast = cpu["compiled"]  # eager and AOTInductor sessions side by side (a C++ compiler is in the setup)
    assert "skipped" not in fast, fast
    assert 0 < fast["aoti"]["p50_ms"] <= fast["aoti"]["p99_ms"] and fast["chunk_ms"] == 20.0
    assert fast["speedup_p50"] == fast["eager"]["p50_ms"] / fast["aoti"]["p50_ms"]
    assert 0 < fast["aoti_fp16"]["p50_ms"] <= fast["aoti_fp16"]["p99_ms"]  # float16 weights
    assert fast["speedup_p50_fp16"] == fast["eager"]["p50_ms"] / fast["aoti_fp16"]["p50_ms"]
    one = fast["one_hop"]  # pushes of one hop: the one-hop library
    assert one["chunk_ms"] == fast["chunk_ms"] / 2 and one["aoti"]["p50_ms"] > 0
    assert one["speedup_p50"] == one["eager"]["p50_ms"] / one["aoti"]["p50_ms"]


def test_rnnoise_frames_are_whole_in_a_short_input(monkeypatch):
    """Under 1 s of input (0.1 s: 10 frames at 48 kHz), the timed RNNoise frames cycle through those it
    has: none is empty (an empty one times nothing and inflates RNNoise's streams per core)."""
    sizes = []

    class Recorded(rnnoise.RNNoiseState):
        def process(self, x):
            sizes.append(x.shape[0])
            return super().process(x)

    monkeypatch.setattr(rnnoise, "RNNoiseState", Recorded)
    bench_rnnoise(0.1, 1, 30)
    assert sizes[-40:] == [rnnoise.FRAME_SIZE] * 40, sizes[-40:]


def test_bench_command_measures_an_enhancer_file(tmp_path, capsys):
    """Also: -q silences progress, never the results (the summary is printed, the JSON written)."""
    torch.manual_seed(0)
    path = Enhancer.from_config("enhance-16k").save_pretrained(tmp_path / "e.safetensors")
    args = [
        "bench",
        "-m",
        str(path),
        "--seconds",
        "0.5",
        "--repeats",
        "1",
        "--frames",
        "10",
        "--streams",
        "2",
    ]
    out = tmp_path / "bench.json"
    out.write_text("{}")  # an earlier result: -f replaces it
    assert main([*args, "-q", "--out", str(out), "-f"]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "enhancer_speed" and result["settings"]["weights"] == "loaded"
    text = capsys.readouterr().out
    assert text.startswith(f"{path} (loaded weights") and "offline: RTF" in text and "RNNoise" in text


def test_streams_per_core_are_the_process_streams_over_its_threads():
    """Batched streams timed on 2 torch threads are the process's: the summary line names the threads
    and gives them per core (over the threads), as the ``realtime_streams_per_core`` target does."""
    torch.manual_seed(0)
    enhancer = Enhancer.from_config("enhance-16k").eval()
    torch.set_num_threads(2)
    try:
        cpu = {
            "offline": bench_offline(enhancer, 0.2, 1),
            "stream_hop": bench_stream_hop(enhancer, 10, StreamSetup()),
            "many_streams": bench_many_streams(enhancer, [4], 10, StreamSetup()),
            "compiled": {"skipped": "not timed here"},
        }
    finally:
        torch.set_num_threads(1)
    sustained = cpu["many_streams"]["streams_sustained"]
    line = stream_lines({"settings": {"threads": 2}, "cpu": cpu})[1]
    assert line.endswith(f"-> {sustained:.0f} real-time streams on 2 thread(s), {sustained / 2:.0f} per core")
    assert target_checks(cpu, 2)["realtime_streams_per_core"]["value"] == sustained / 2
