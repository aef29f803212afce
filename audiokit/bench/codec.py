"""Codec speed on CPU (and GPU when present), measured side by side in one run (``audiokit bench``).

* offline encode and decode real-time factors (compute seconds per second of audio) of a codec and of
  EnCodec-24k's architecture (the ``encodec`` package's model class with random weights, 6 kbps;
  skipped, with the install that works, when that optional package is missing);
* the streaming cost per 20 ms frame of one stream (encode, decode, round trip; p50/p99 of the
  per-step compute times the session records);
* the floor of that cost at batch 1: one-row products with every weight matrix, nothing else (a step
  of one stream must read all the weights), to tell arithmetic from per-operation overhead;
* how many real-time round-trip streams the process sustains, advancing N streams together with a
  :class:`~audiokit.streaming.MultiStreamBatcher`, and so one core (the process's over its torch
  threads, each thread on a core of its own);
* the arithmetic behind that: multiply-adds of one stream's frame in matrix products, a core's float32
  matrix-product throughput, and so the most streams the products alone would let one core run;
* the streaming figures again with the fused C++ kernels (:mod:`audiokit.ops`, ``kernels/``), with
  whole steps compiled ahead of time, and with those compiled steps reading float16 weights
  (:mod:`audiokit.nn.precision`), against the eager torch ops, interleaved in the same run, with the
  speed-ups (skipped, saying why, where they cannot be built);
* the same offline and batched figures on the GPU when ``torch.cuda.is_available()``;
* :func:`run_device_kernel_benchmark` (``recipes/gpu/bench_kernels.sh``): batched real-time streams
  and step times on one device per :mod:`audiokit.ops` backend (on a GPU: CUDA and Triton kernels
  against the eager cuDNN / cuBLAS ops).

Speed does not depend on the weights, so untrained (random) weights are used when none are shipped.
"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable

import torch

from audiokit import ops
from audiokit.coding import load_codec
from audiokit.errors import ModelError, ToolMissingError
from audiokit.models import Codec, is_shipped
from audiokit.nn.precision import rounded_weights, weight_twin
from audiokit.nn.streaming import MIN_ROWS
from audiokit.provenance import run_info
from audiokit.streaming.graphs import graph_report

ENCODEC_INSTALL = "pip install --no-deps encodec einops"
"""The install of the optional ``encodec`` package that keeps torch working (plain ``pip install encodec``
pulls a ``torchaudio`` that breaks beside the installed torch), with the one dependency it imports."""

TARGETS = {
    "encodec_vs_ours_offline": 3.0,
    "stream_roundtrip_frame_p50_ms": 1.0,
    "realtime_streams_per_core": 50,
    "fused_stream_roundtrip_frame_p50_ms": 1.0,
    "fused_stream_roundtrip_frame_p99_ms": 2.0,
    "fused_realtime_streams_per_core": 150,
    "aoti_stream_roundtrip_frame_p50_ms": 1.0,
    "aoti_stream_roundtrip_frame_p99_ms": 2.0,
    "aoti_realtime_streams_per_core": 150,
    "aoti_fp16_stream_roundtrip_frame_p50_ms": 1.0,
    "aoti_fp16_stream_roundtrip_frame_p99_ms": 2.0,
    "aoti_fp16_realtime_streams_per_core": 150,
    "aoti_int8_stream_roundtrip_frame_p50_ms": 1.0,
    "aoti_int8_stream_roundtrip_frame_p99_ms": 2.0,
    "aoti_int8_realtime_streams_per_core": 150,
}


KERNEL_VARIANTS = {
    "fused": "fused C++ kernels",
    "aoti": "steps compiled ahead of time (AOTInductor)",
    "aoti_fp16": "compiled steps reading float16 weights",
    "aoti_int8": "compiled steps reading int8 weights",
}


def codec_to_time(name: str) -> tuple[Codec, str]:
    """The codec ``name`` and ``"shipped"`` (or a path's weights: ``"loaded"``), else, for a registered
    config without weights, an untrained one and ``"random"`` (same architecture, same speed)."""
    try:
        codec, _ = load_codec(name)
        return codec, "shipped" if is_shipped(name) else "loaded"
    except ModelError:
        torch.manual_seed(0)
        return Codec.from_config(name).eval(), "random"


def load_encodec_24k() -> torch.nn.Module:
    """EnCodec's 24 kHz model class with random weights (no download), at 6 kbps.

    ``encodec`` imports ``torchaudio`` at module level but its model class does not use it; when
    ``torchaudio`` is missing or does not match the installed torch, a placeholder module stands in.
    """
    try:
        encodec = importlib.import_module("encodec")
    except (ImportError, OSError) as exc:
        if "torchaudio" not in str(exc):
            missing = (getattr(exc, "name", None) or "").split(".")[0] or exc
            raise ToolMissingError(
                f"the EnCodec comparison needs the encodec package and einops ({missing} is missing):"
                f" `{ENCODEC_INSTALL}`"
            ) from None
        for name in [m for m in sys.modules if m.split(".")[0] in ("encodec", "torchaudio")]:
            del sys.modules[name]
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
        encodec = importlib.import_module("encodec")
    torch.manual_seed(0)
    with warnings.catch_warnings():  # encodec's own use of the deprecated torch.nn.utils.weight_norm
        warnings.filterwarnings("ignore", "`torch.nn.utils.weight_norm` is deprecated", FutureWarning)
        model = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    model.set_target_bandwidth(6.0)
    return model.eval()


def _median_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def offline_rtf(encode, decode, audio: torch.Tensor, sample_rate: int, repeats: int, device: str) -> dict:
    """Real-time factors (compute seconds per audio second) of ``encode(audio)`` and ``decode(codes)``."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    seconds = audio.shape[-1] / sample_rate
    with torch.inference_mode():
        codes = encode(audio)
        enc = _median_seconds(lambda: encode(audio), repeats, sync)
        dec = _median_seconds(lambda: decode(codes), repeats, sync)
    return {"encode_rtf": enc / seconds, "decode_rtf": dec / seconds, "total_rtf": (enc + dec) / seconds}


def _noise(channels: int, samples: int, device: str) -> torch.Tensor:
    return 0.1 * torch.randn(1, channels, samples, generator=torch.Generator().manual_seed(0)).to(device)


def bench_offline(codec: Codec, seconds: float, repeats: int, device: str, encodec_too: bool) -> dict:
    """Offline RTFs of ``codec`` and (if asked) EnCodec-24k, on ``seconds`` of noise, on ``device``.

    Without the ``encodec`` package the comparison is skipped: ``encodec_skipped`` says why and how to
    install it.
    """
    codec = codec.to(device)
    audio = _noise(codec.channels, int(seconds * codec.sample_rate), device)
    result = {codec.name: offline_rtf(codec.encode, codec.decode, audio, codec.sample_rate, repeats, device)}
    if encodec_too:
        try:
            encodec = load_encodec_24k().to(device)
        except ToolMissingError as exc:
            result["encodec_skipped"] = str(exc)
        else:
            audio = _noise(encodec.channels, int(seconds * encodec.sample_rate), device)
            result["encodec-24k"] = offline_rtf(
                encodec.encode, encodec.decode, audio, encodec.sample_rate, repeats, device
            )
            result["encodec_vs_ours"] = result["encodec-24k"]["total_rtf"] / result[codec.name]["total_rtf"]
    codec.cpu()
    return result


def bench_stream_frame(codec: Codec, frames: int, compile: bool | str = False) -> dict:
    """Per-frame compute time (ms, p50/p99) of one stream pushing one frame at a time, per mode
    (``compile``: as :class:`~audiokit.streaming.codec.CodecStream`'s)."""
    hop = codec.hop_length
    audio = _noise(codec.channels, hop * (frames + 10), "cpu")
    with torch.inference_mode():
        codes = codec.encode(audio).codes
    result = {}
    for mode in ("encode", "decode", "roundtrip"):
        session = codec.stream(1, mode, compile=compile)
        for i in range(frames + 10):
            if i == 10:
                session.timer.clear()
            session.push(codes[..., i : i + 1] if mode == "decode" else audio[..., i * hop : (i + 1) * hop])
        summary = session.timer.summary()
        result[mode] = {k: summary[k] for k in ("p50_ms", "p99_ms", "mean_ms")}
    result["frame_ms"] = 1e3 * hop / codec.sample_rate
    return result


def bench_weight_floor(codec: Codec, repeats: int = 50) -> dict:
    """The floor of a one-stream step: a one-row product with every weight matrix of the model, once.

    A step of one stream reads every weight once; the rest of its time is the overhead of its many
    small operations. Returns the median time (ms) and the megabytes of weights read, and where the C++
    kernels build, the same with float16 and int8 weights (``float16_ms``, ``float16_megabytes``,
    ``int8_ms``, ``int8_megabytes``).
    """
    from audiokit.ops import cpp

    matrices = [
        p.detach().reshape(p.shape[0], -1).t().contiguous()
        for name, p in codec.named_parameters()
        if p.dim() >= 2 and not name.startswith("quantizer.")
    ]
    rows = [torch.randn(1, m.shape[0]) for m in matrices]

    def products() -> None:
        for row, matrix in zip(rows, matrices, strict=True):
            torch.mm(row, matrix)

    with torch.inference_mode():
        seconds = _median_seconds(products, repeats)
    result = {"ms": 1e3 * seconds, "megabytes": sum(4 * m.numel() for m in matrices) / 1e6}
    if cpp.load() is not None:
        halves = [m.t().contiguous().half() for m in matrices]

        def half_products() -> None:
            for row, matrix in zip(rows, halves, strict=True):
                torch.ops.audiokit.rows_times_half(row, matrix, None)

        twins = [weight_twin(rounded_weights(m, "int8")) for m in matrices]

        def int8_products() -> None:
            for row, twin in zip(rows, twins, strict=True):
                torch.ops.audiokit.rows_times_int8(row, twin.values, twin.scales, None)

        with torch.inference_mode():
            result["float16_ms"] = 1e3 * _median_seconds(half_products, repeats)
            result["int8_ms"] = 1e3 * _median_seconds(int8_products, repeats)
        result["float16_megabytes"] = result["megabytes"] / 2
        result["int8_megabytes"] = sum(t.values.numel() + 4 * t.scales.numel() for t in twins) / 1e6
    return result


def stream_frame_macs(codec: Codec, frames: int = 10) -> float:
    """Multiply-adds in the matrix products (``mm``, ``addmm``, ``bmm``, convolutions) of one stream's
    round-trip step per frame, counted over ``frames`` eager steps of :data:`MIN_ROWS` streams after a
    warm-up (fewer rows would count the rows an eager step pads its products to)."""
    from torch.utils.flop_counter import FlopCounterMode

    hop, streams = codec.hop_length, MIN_ROWS
    audio = _noise(codec.channels, hop * (frames + 8), "cpu").expand(streams, -1, -1)
    session = codec.stream(streams, "roundtrip")
    with torch.inference_mode():
        for i in range(8):
            session.push(audio[..., i * hop : (i + 1) * hop])
        with FlopCounterMode(display=False) as counter:
            for i in range(8, frames + 8):
                session.push(audio[..., i * hop : (i + 1) * hop])
    return counter.get_total_flops() / 2 / frames / streams


def bench_gemm_throughput(rows: int = 256, size: int = 1024, repeats: int = 20) -> float:
    """This core's float32 matrix-product throughput in multiply-adds per second: ``(rows, size) @ (size,
    size)``, the shape class of a batched step's products (rows = streams x sub-frames)."""
    a, b = torch.randn(rows, size), torch.randn(size, size)
    with torch.inference_mode():
        seconds = _median_seconds(lambda: torch.mm(a, b), repeats)
    return rows * size * size / seconds


def bench_arithmetic(codec: Codec, best_streams: float, threads: int) -> dict:
    """What the products alone allow: one stream's multiply-adds per frame, a core's float32 product
    throughput (that of ``threads`` torch threads over ``threads``), the real-time streams per core at
    that throughput with nothing else to do (``streams_bound``), and how close the best measured,
    ``best_streams`` on ``threads`` threads (``best_streams_per_core``: over ``threads``), came to it."""
    macs = stream_frame_macs(codec)
    frames_per_second = codec.sample_rate / codec.hop_length
    throughput = bench_gemm_throughput() / threads
    bound = throughput / (macs * frames_per_second)
    best_streams_per_core = best_streams / threads
    return {
        "macs_per_stream_frame": macs,
        "macs_per_stream_second": macs * frames_per_second,
        "gemm_macs_per_second": throughput,
        "streams_bound": bound,
        "best_streams_per_core": best_streams_per_core,
        "fraction_of_bound": best_streams_per_core / bound,
    }


def bench_many_streams(
    codec: Codec, counts: list[int], frames: int, device: str = "cpu", compile: bool | str = False
) -> dict:
    """Real-time round-trip streams sustained: N streams each push one frame per tick into a
    :class:`MultiStreamBatcher`, which advances them in one batched step; capacity is
    ``N * frame duration / wall time per tick``. The frames come from host memory, as a server's do
    (on a GPU each push copies its frame over); ``step_ms``/``step_p99_ms`` time the batched step
    alone (synchronised before and after), so that the per-stream host work of pushes and pulls
    shows as the difference."""
    from audiokit.streaming import MultiStreamBatcher

    codec = codec.to(device)
    hop = codec.hop_length
    frame_s = hop / codec.sample_rate
    sync = (lambda: torch.cuda.synchronize(device)) if device.startswith("cuda") else (lambda: None)
    per_count = {}
    for count in counts:
        batcher = MultiStreamBatcher(codec, count, "roundtrip", compile=compile)
        ids = [batcher.open() for _ in range(count)]
        chunk = _noise(codec.channels, hop, "cpu")[0]
        ticks, steps = [], []
        for tick in range(frames + 3):
            began = time.perf_counter()
            for stream in ids:
                batcher.push(stream, chunk)
            sync()
            step_began = time.perf_counter()
            batcher.step()
            sync()
            step_s = time.perf_counter() - step_began
            for stream in ids:
                batcher.pull(stream)
            sync()
            if tick >= 3:
                ticks.append(time.perf_counter() - began)
                steps.append(step_s)
        tick_s = statistics.median(ticks)
        per_count[str(count)] = {
            "tick_ms": 1e3 * tick_s,
            "tick_p99_ms": 1e3 * _p99(ticks),
            "step_ms": 1e3 * statistics.median(steps),
            "step_p99_ms": 1e3 * _p99(steps),
            "streams_sustained": count * frame_s / tick_s,
        }
        graphs = graph_report(batcher.session._encode, batcher.session._decoder_step)
        if graphs is not None:  # whether the steps really ran from CUDA graphs
            per_count[str(count)]["graphs"] = graphs
    codec.cpu()
    best = max(per_count.values(), key=lambda r: r["streams_sustained"])
    return {"by_streams": per_count, "streams_sustained": best["streams_sustained"]}


def _p99(times: list[float]) -> float:
    """The 99th percentile of ``times`` (the one time when there is only one)."""
    return statistics.quantiles(times, n=100)[98] if len(times) > 1 else times[0]


def bench_kernels(codec: Codec, frames: int, streams: int, rounds: int = 3) -> dict:
    """One stream's per-frame step (p50/p99 per mode) and ``streams`` batched round-trip streams with
    the eager torch ops (``"eager"``), the fused C++ kernels (``"fused"``) and the whole steps compiled
    ahead of time (``"aoti"``, :mod:`audiokit.streaming.compiled`), interleaved ``rounds`` times
    (medians over rounds), and the same compiled steps of the model with float16 and int8 weights
    (``"aoti_fp16"``, ``"aoti_int8"``, :mod:`audiokit.nn.precision`); each one's speed-ups over eager;
    ``skipped`` says which could not run."""
    from audiokit.ops import cpp
    from audiokit.streaming import compiled

    lower = {p: codec.copy_with_weight_precision(p) for p in ("float16", "int8")}
    variants = {"eager": ("torch", False, codec)}
    skipped = {}
    if cpp.load() is not None:
        variants["fused"] = ("cpp", False, codec)
    else:
        skipped["fused"] = cpp.unavailable_reason()
    for name, model in (("aoti", codec), ("aoti_fp16", lower["float16"]), ("aoti_int8", lower["int8"])):
        with ops.use_backend("torch"):
            built = model.stream(1, "roundtrip", compile="aoti").compiled  # builds (or loads) the libraries
        if all(built.values()):
            variants[name] = ("torch", "aoti", model)
        else:
            skipped[name] = compiled.unavailable_reason()
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name in [*[v for v in variants if v != "eager"], "eager"]:  # eager last: it prepares the default
            backend, compile, model = variants[name]
            with ops.use_backend(backend):
                frame = bench_stream_frame(model, frames, compile)
                many = bench_many_streams(model, [streams], max(10, frames // 4), compile=compile)
            runs[name].append({"frame": frame, "many": many["by_streams"][str(streams)]})
    result: dict = {"streams": streams, "rounds": rounds, "skipped": skipped}
    for name, measured in runs.items():
        figures = {
            f"{mode}_{stat}": statistics.median(run["frame"][mode][stat] for run in measured)
            for mode in ("encode", "decode", "roundtrip")
            for stat in ("p50_ms", "p99_ms")
        }
        figures["tick_ms"] = statistics.median(run["many"]["tick_ms"] for run in measured)
        figures["streams_sustained"] = statistics.median(run["many"]["streams_sustained"] for run in measured)
        result[name] = figures
    eager = result["eager"]
    result["speedup"] = {
        name: {
            "roundtrip_p50": eager["roundtrip_p50_ms"] / result[name]["roundtrip_p50_ms"],
            "roundtrip_p99": eager["roundtrip_p99_ms"] / result[name]["roundtrip_p99_ms"],
            "streams_sustained": result[name]["streams_sustained"] / eager["streams_sustained"],
        }
        for name in variants
        if name != "eager"
    }
    return result


def device_backends(device: str) -> dict[str, str | None]:
    """The :mod:`audiokit.ops` backends to time on ``device``: name -> ``None`` when it runs there, else
    why not (``torch``, the eager ops, always runs; built now where need be)."""
    from audiokit.ops import cpp, cuda

    if device == "cpu":
        return {"cpp": None if cpp.load() is not None else cpp.unavailable_reason(), "torch": None}
    return {
        "cuda": None if cuda.load() is not None else cuda.unavailable_reason(),
        "triton": None if ops.triton_available() else "triton (>= 3.5) is not installed",
        "torch": None,
    }


def run_device_kernel_benchmark(
    model: str = "speech-16k",
    device: str = "cuda",
    stream_counts: tuple[int, ...] = (1, 64, 256, 1024),
    frames: int = 50,
    p99_target_ms: float = 10.0,
    measured: Callable[[dict], None] = lambda result: None,
) -> dict:
    """Round-trip streams advanced together on ``device`` (:func:`bench_many_streams`: one 20 ms frame
    each per tick, p50/p99 tick time, real-time streams sustained) per :mod:`audiokit.ops` backend, on
    a GPU each also with its steps replayed from CUDA graphs (``"<backend>+graphs"``, sessions with
    ``compile="cuda_graph"``), all against ``torch`` (eager, timed first), and the most streams whose
    p99 tick stays within ``p99_target_ms``. TF32 is off, as in the exactness tests. ``measured`` gets
    the result so far after each backend (a run cut short by its deadline keeps what it measured)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r}: torch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    codec, weights = codec_to_time(model)
    began = time.perf_counter()
    backends = device_backends(device)
    result: dict = {
        "benchmark": "codec_kernels_device",
        **run_info(),
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "settings": {
            "model": model,
            "weights": weights,
            "stream_counts": list(stream_counts),
            "frames": frames,
            "p99_target_ms": p99_target_ms,
            "tf32": False,
        },
        "backends_load_s": time.perf_counter() - began,
        "skipped": {name: why for name, why in backends.items() if why is not None},
        "by_backend": {},
    }
    graphs = (False, "cuda_graph") if device.startswith("cuda") else (False,)
    for name in sorted((name for name, why in backends.items() if why is None), key=lambda n: n != "torch"):
        for compile in graphs:
            with ops.use_backend(name):
                many = bench_many_streams(codec, list(stream_counts), frames, device, compile)["by_streams"]
            within = [int(count) for count, row in many.items() if row["tick_p99_ms"] <= p99_target_ms]
            result["by_backend"][name + ("+graphs" if compile else "")] = {
                "by_streams": many,
                "max_streams_in_p99_target": max(within, default=0),
            }
            result["speedup_vs_eager"] = _speedups(result["by_backend"])
            measured(result)
    return result


def _speedups(by_backend: dict) -> dict:
    """``{backend: {stream count: eager tick time / its tick time}}`` of every backend but ``torch``."""
    eager = by_backend["torch"]["by_streams"]
    return {
        name: {count: eager[count]["tick_ms"] / row["tick_ms"] for count, row in fused["by_streams"].items()}
        for name, fused in by_backend.items()
        if name != "torch"
    }


def run_benchmark(
    model: str = "speech-16k",
    seconds: float = 10.0,
    repeats: int = 3,
    threads: int = 1,
    frames: int = 100,
    stream_counts: tuple[int, ...] = (1, 16, 64),
    encodec: bool = True,
) -> dict:
    """Every figure of ``audiokit bench`` as one JSON-ready dict (see the module docstring)."""
    torch.set_num_threads(threads)
    codec, weights = codec_to_time(model)
    cpu = {
        "offline": bench_offline(codec, seconds, repeats, "cpu", encodec),
        "stream_frame": bench_stream_frame(codec, frames),
        "weight_floor": bench_weight_floor(codec),
        "many_streams": bench_many_streams(codec, list(stream_counts), max(10, frames // 4)),
        "kernels": bench_kernels(codec, frames, max(stream_counts)),
    }
    best = max(
        [cpu["many_streams"]["streams_sustained"]]
        + [cpu["kernels"][name]["streams_sustained"] for name in KERNEL_VARIANTS if name in cpu["kernels"]]
    )
    cpu["arithmetic"] = bench_arithmetic(codec, best, threads)
    result = {
        "benchmark": "codec_speed",
        **run_info(),
        "settings": {
            "model": model,
            "weights": weights,
            "threads": threads,
            "seconds": seconds,
            "repeats": repeats,
            "stream_frames": frames,
            "stream_counts": list(stream_counts),
            "algorithmic_latency_samples": codec.algorithmic_latency,
            "algorithmic_latency_ms": 1e3 * codec.algorithmic_latency / codec.sample_rate,
        },
        "cpu": cpu,
    }
    result["targets"] = target_checks(cpu, threads)
    if torch.cuda.is_available():
        result["gpu"] = {
            "device": torch.cuda.get_device_name(),
            "offline": bench_offline(codec, seconds, repeats, "cuda", encodec),
            "many_streams": bench_many_streams(codec, [64, 256, 1024], max(10, frames // 4), "cuda"),
        }
    else:
        result["gpu"] = None
    return result


def target_checks(cpu: dict, threads: int) -> dict:
    """:data:`TARGETS` against the figures of ``cpu`` that :func:`run_benchmark` measured on ``threads``
    torch threads (the streams sustained per core are those over ``threads``; a kernel variant's only
    where it ran): ``{name: {"value", "target", "met"}}``."""
    checks = {
        "stream_roundtrip_frame_p50_ms": cpu["stream_frame"]["roundtrip"]["p50_ms"],
        "realtime_streams_per_core": cpu["many_streams"]["streams_sustained"] / threads,
    }
    for name in KERNEL_VARIANTS:
        if name in cpu["kernels"]:
            figures = cpu["kernels"][name]
            checks[f"{name}_stream_roundtrip_frame_p50_ms"] = figures["roundtrip_p50_ms"]
            checks[f"{name}_stream_roundtrip_frame_p99_ms"] = figures["roundtrip_p99_ms"]
            checks[f"{name}_realtime_streams_per_core"] = figures["streams_sustained"] / threads
    if "encodec_vs_ours" in cpu["offline"]:
        checks["encodec_vs_ours_offline"] = cpu["offline"]["encodec_vs_ours"]
    return {
        name: {
            "value": value,
            "target": TARGETS[name],
            "met": value <= TARGETS[name] if name.endswith("_ms") else value >= TARGETS[name],
        }
        for name, value in checks.items()
    }


def device_summary_lines(result: dict) -> list[str]:
    """Human-readable lines of a :func:`run_device_kernel_benchmark` result."""
    settings = result["settings"]
    lines = [f"{settings['model']} ({settings['weights']} weights) on {result['device']}, TF32 off"]
    lines += [f"  {name}: skipped ({why})" for name, why in result["skipped"].items()]
    for name, backend in result["by_backend"].items():
        lines.append(
            f"  {name}: at most {backend['max_streams_in_p99_target']} streams with the p99 tick "
            f"<= {settings['p99_target_ms']:g} ms"
        )
        for count, row in backend["by_streams"].items():
            speedup = result["speedup_vs_eager"].get(name, {}).get(count)
            lines.append(
                f"    {count:>5} streams: {row['tick_ms']:.2f} ms p50, {row['tick_p99_ms']:.2f} ms p99 per "
                f"tick (the batched step {row['step_ms']:.2f} / {row['step_p99_ms']:.2f} ms) -> "
                f"{row['streams_sustained']:.0f} real-time streams"
                + ("" if speedup is None else f" ({speedup:.2f}x eager)")
            )
    return lines


def summary_lines(result: dict) -> list[str]:
    """Human-readable lines of a :func:`run_benchmark` result."""
    cpu, model = result["cpu"], result["settings"]["model"]
    lines = [
        f"{model} ({result['settings']['weights']} weights), {result['settings']['threads']} CPU thread(s)"
    ]
    for name, rtf in cpu["offline"].items():
        if isinstance(rtf, dict):
            lines.append(
                f"  offline {name:>12}: encode RTF {rtf['encode_rtf']:.4f}, "
                f"decode RTF {rtf['decode_rtf']:.4f} ({1 / rtf['total_rtf']:.1f}x real time for both)"
            )
    if "encodec_skipped" in cpu["offline"]:
        lines.append(f"  EnCodec-24k comparison skipped: {cpu['offline']['encodec_skipped']}")
    frame = cpu["stream_frame"]
    for mode in ("encode", "decode", "roundtrip"):
        lines.append(
            f"  streaming {mode:>9}: {frame[mode]['p50_ms']:.3f} ms p50, {frame[mode]['p99_ms']:.3f} ms p99 "
            f"per {frame['frame_ms']:.0f} ms frame"
        )
    floor = cpu["weight_floor"]
    lines.append(
        f"  floor at batch 1: one-row products with every weight ({floor['megabytes']:.1f} MB) "
        f"take {floor['ms']:.3f} ms"
        + (
            f"; with float16 weights {floor['float16_ms']:.3f} ms, int8 {floor['int8_ms']:.3f} ms"
            if "float16_ms" in floor
            else ""
        )
    )
    for count, row in cpu["many_streams"]["by_streams"].items():
        lines.append(
            f"  {count:>4} streams: {row['tick_ms']:.2f} ms per tick "
            f"-> {row['streams_sustained']:.1f} real-time streams"
        )
    if "arithmetic" in cpu:
        work = cpu["arithmetic"]
        lines.append(
            f"  arithmetic: {work['macs_per_stream_frame'] / 1e6:.1f} M multiply-adds per stream and frame; "
            f"a core's float32 products run {work['gemm_macs_per_second'] / 1e9:.1f} G/s, so the "
            f"products alone allow {work['streams_bound']:.0f} real-time streams per core; the best "
            f"measured, {work['best_streams_per_core']:.0f} per core, is "
            f"{100 * work['fraction_of_bound']:.0f} %"
        )
    kernels = cpu["kernels"]
    for name, why in kernels["skipped"].items():
        lines.append(f"  {KERNEL_VARIANTS[name]}: skipped ({why})")
    eager = kernels["eager"]
    for name, speedup in kernels["speedup"].items():
        fast = kernels[name]
        rounds = kernels["rounds"]
        lines.append(f"  eager vs {KERNEL_VARIANTS[name]} (medians of {rounds} interleaved rounds):")
        for mode in ("encode", "decode", "roundtrip"):
            p50, p99 = f"{mode}_p50_ms", f"{mode}_p99_ms"
            lines.append(
                f"    streaming {mode:>9}: p50 {eager[p50]:.3f} -> {fast[p50]:.3f} ms "
                f"({eager[p50] / fast[p50]:.2f}x), p99 {eager[p99]:.3f} -> {fast[p99]:.3f} ms"
            )
        lines.append(
            f"    {kernels['streams']} streams: {eager['streams_sustained']:.1f} -> "
            f"{fast['streams_sustained']:.1f} real-time streams ({speedup['streams_sustained']:.2f}x)"
        )
    for name, check in result["targets"].items():
        verdict = "met" if check["met"] else "NOT met"
        lines.append(f"  target {name}: {check['value']:.3f} (target {check['target']}) {verdict}")
    lines.append("  gpu: " + ("none" if result["gpu"] is None else result["gpu"]["device"]))
    return lines
