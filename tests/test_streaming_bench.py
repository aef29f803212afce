"""audiokit bench: the benchmark runs end to end and reports every figure with its target."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from audiokit.bench.codec import (
    bench_arithmetic,
    bench_many_streams,
    bench_stream_frame,
    device_summary_lines,
    load_encodec_24k,
    run_device_kernel_benchmark,
    target_checks,
)
from audiokit.cli import main
from audiokit.coding import load_codec
from audiokit.errors import ToolMissingError


def test_bench_json_reports_every_figure(capsys):
    argv = ["bench", "-m", "speech-16k", "--json", "--no-encodec", "--seconds", "0.5", "--repeats", "1"]
    assert main([*argv, "--frames", "4", "--streams", "1", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"machine", "commit", "date", "settings", "cpu", "targets", "gpu"} <= set(result)
    assert result["machine"]["torch_threads"] == 1
    assert result["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # e.g. AVX2
    offline = result["cpu"]["offline"]["speech-16k"]
    assert 0 < offline["encode_rtf"] and 0 < offline["decode_rtf"]
    for mode in ("encode", "decode", "roundtrip"):
        frame = result["cpu"]["stream_frame"][mode]
        assert 0 < frame["p50_ms"] <= frame["p99_ms"]
    floor = result["cpu"]["weight_floor"]
    params = sum(p.numel() for n, p in load_codec("speech-16k")[0].named_parameters() if p.dim() >= 2)
    assert floor["ms"] > 0 and 0.9 * 4 * params / 1e6 < floor["megabytes"] <= 4 * params / 1e6
    assert floor["float16_ms"] > 0 and floor["float16_megabytes"] == floor["megabytes"] / 2
    assert floor["int8_ms"] > 0 and 3.9 < floor["megabytes"] / floor["int8_megabytes"] < 4  # + the scales
    streams = result["cpu"]["many_streams"]
    assert set(streams["by_streams"]) == {"1", "3"} and streams["streams_sustained"] > 0
    # the multiply-adds of a stream's frame against the offline coder's, counted on its own (which codes
    # a few frames more at the end); the bound is the products' throughput over a stream's need
    arithmetic, codec, frames = result["cpu"]["arithmetic"], load_codec("speech-16k")[0], 50
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        codec.decode(codec.encode(0.1 * torch.randn(1, 1, codec.hop_length * frames), 6000))
    offline = counter.get_total_flops() / 2 / frames
    assert 0.9 * offline < arithmetic["macs_per_stream_frame"] < offline
    assert arithmetic["macs_per_stream_second"] == 50 * arithmetic["macs_per_stream_frame"]
    need = arithmetic["macs_per_stream_second"] * arithmetic["streams_bound"]
    assert need == pytest.approx(arithmetic["gemm_macs_per_second"])
    assert arithmetic["fraction_of_bound"] == pytest.approx(
        arithmetic["best_streams_per_core"] / arithmetic["streams_bound"]
    )
    kernels = result["cpu"]["kernels"]  # eager against the fused C++ kernels and the AOTI steps
    fast_targets = set()
    assert kernels["streams"] == 3 and 0 < kernels["eager"]["streams_sustained"]
    for name in ("fused", "aoti", "aoti_fp16", "aoti_int8"):
        assert (name in kernels["skipped"]) != (name in kernels["speedup"])
        if name in kernels["speedup"]:
            assert set(kernels["speedup"][name]) >= {"roundtrip_p50", "streams_sustained"}
            assert 0 < kernels[name]["roundtrip_p50_ms"] <= kernels[name]["roundtrip_p99_ms"]
            fast_targets |= {f"{name}_stream_roundtrip_frame_{q}_ms" for q in ("p50", "p99")}
            fast_targets.add(f"{name}_realtime_streams_per_core")
    compiled_variants = {"aoti", "aoti_fp16", "aoti_int8"}  # a compiler is in the setup
    assert compiled_variants <= set(kernels["speedup"]), kernels["skipped"]
    expected = {"stream_roundtrip_frame_p50_ms", "realtime_streams_per_core", *fast_targets}
    assert set(result["targets"]) == expected
    assert result["settings"]["algorithmic_latency_samples"] == 640
    assert (result["gpu"] is None) == (not torch.cuda.is_available())


def test_streams_per_core_are_the_process_streams_over_its_threads(tiny_codec_file):
    """Batched streams timed on 2 torch threads are the process's: the ``realtime_streams_per_core``
    target and the arithmetic's best measured per core are those over the threads."""
    codec = load_codec(str(tiny_codec_file))[0]
    torch.set_num_threads(2)
    try:
        frame = bench_stream_frame(codec, 4)
        many = bench_many_streams(codec, [4], 10)
        arithmetic = bench_arithmetic(codec, many["streams_sustained"], 2)
    finally:
        torch.set_num_threads(1)
    cpu = {"offline": {}, "stream_frame": frame, "many_streams": many, "kernels": {}}
    sustained = many["streams_sustained"]
    assert target_checks(cpu, 2)["realtime_streams_per_core"]["value"] == sustained / 2
    assert arithmetic["best_streams_per_core"] == sustained / 2


def test_bench_without_encodec_reports_our_figures_and_the_working_install(capsys, monkeypatch):
    """The optional encodec package missing: the comparison is skipped with `pip install --no-deps
    encodec` (plain `pip install encodec` pulls a torchaudio that breaks torch), the rest reported."""
    monkeypatch.setitem(sys.modules, "encodec", None)  # `import encodec` fails as if not installed
    argv = ["bench", "-m", "speech-16k", "--seconds", "0.5", "--repeats", "1", "--frames", "2"]
    assert main([*argv, "--streams", "1", "--json"]) == 0
    offline = json.loads(capsys.readouterr().out)["cpu"]["offline"]
    assert offline["speech-16k"]["encode_rtf"] > 0 and "encodec-24k" not in offline
    assert "`pip install --no-deps encodec einops`" in offline["encodec_skipped"]
    assert main([*argv, "--streams", "1"]) == 0
    text = capsys.readouterr().out
    assert "EnCodec-24k comparison skipped" in text and "pip install --no-deps encodec einops" in text
    assert "pip install encodec" not in text


def test_encodec_without_its_einops_is_a_skipped_comparison_not_a_traceback(tmp_path, monkeypatch):
    """`pip install --no-deps encodec` alone leaves out einops, which encodec imports: the loader names
    the missing module and the install that works (an encodec-shaped package stands in for the real one,
    which `make test` does not install)."""
    (tmp_path / "encodec").mkdir()
    (tmp_path / "encodec" / "__init__.py").write_text("from einops import rearrange\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "encodec", raising=False)
    monkeypatch.setitem(sys.modules, "einops", None)  # `import einops` fails as if not installed
    with pytest.raises(ToolMissingError, match="einops is missing.*`pip install --no-deps encodec einops`"):
        load_encodec_24k()


def test_device_benchmark_rehearses_on_the_cpu(capsys):
    """`audiokit bench --device cuda`'s benchmark, run on the CPU as recipes/gpu/bench_kernels.sh's
    rehearsal does: every backend that loads, against eager; CUDA graphs only on a GPU."""
    seen = []  # what a run cut short would have kept: eager first, then one backend more each time
    result = run_device_kernel_benchmark(
        device="cpu", stream_counts=(1, 2), frames=2, measured=lambda r: seen.append(list(r["by_backend"]))
    )
    assert seen[0] == ["torch"] and seen[-1] == list(result["by_backend"]) and len(seen) == len(seen[-1])
    assert "torch" in result["by_backend"] and not any("+graphs" in n for n in result["by_backend"])
    for name, backend in result["by_backend"].items():
        assert set(backend["by_streams"]) == {"1", "2"}
        for row in backend["by_streams"].values():  # the batched step alone is part of each tick
            assert row["streams_sustained"] > 0 and 0 < row["step_ms"] < row["tick_ms"]
        assert (name != "torch") == (name in result["speedup_vs_eager"])
    text = "\n".join(device_summary_lines(result))
    assert "on cpu" in text and text.count("real-time streams") == 2 * len(result["by_backend"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine")
def test_bench_on_a_missing_device_says_so_in_one_line(capsys):
    assert main(["bench", "--device", "cuda"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no CUDA device" in err
    assert main(["bench", "--device", "cuda", "-m", "enhance-16k"]) != 0
    assert "measures codecs only" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    None in (importlib.util.find_spec("encodec"), importlib.util.find_spec("einops")),
    reason="needs encodec and einops (make bench installs them)",
)
def test_encodec_24k_architecture_loads_and_codes():
    model = load_encodec_24k()
    assert model.sample_rate == 24000
    x = torch.randn(1, 1, 2400) * 0.1
    with torch.inference_mode():
        y = model.decode(model.encode(x))
    assert y.shape[-1] >= x.shape[-1] and torch.isfinite(y).all()
