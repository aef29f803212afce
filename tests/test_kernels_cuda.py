"""The CUDA kernels of ``kernels/cuda`` (audiokit.ops backend "cuda").

Everywhere: the ``.cu`` compiles with ``nvcc -c`` (object only) and the torch glue compiles against this
torch (syntax only), each cached by a hash of its sources and command so that only a change pays
(~2 s for nvcc, ~15-30 s for the glue on a 2-core machine). With a GPU (``gpu`` marker): the kernels
equal the torch reference within 1e-5 over streaming steps, in place state update included, also
inside a CUDA graph, and the Triton whole-block step compiled for real does too.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch
from conftest import rvq_case

from audiokit import ops
from audiokit.ops import cpp, cuda, reference

HEADERS = sorted(cuda.SOURCES.glob("*.h"))
KERNELS = ("convnext_step.cu", "rvq_encode.cu")
GLUE = ("module.cpp", "convnext_step.cpp", "rvq_encode.cpp")


def _compiled_once(name: str, command: list[str], sources: list[Path]) -> None:
    """Run ``command`` unless the same command on the same sources succeeded before (a marker file
    named by their hash in the kernels' cache); fail with the compiler's output otherwise."""
    digest = hashlib.sha256(" ".join(command).encode())
    for source in sources:
        digest.update(source.read_bytes())
    marker = cpp.cache_dir() / "compile-checks" / f"{name}-{digest.hexdigest()[:16]}.ok"
    if marker.is_file():
        return
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _nvcc_arch(nvcc: str) -> str:
    """sm_90 (H100 / H200) when this nvcc knows it, else the newest real architecture it lists."""
    listed = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True).stdout.split()
    codes = [arch.removeprefix("compute_") for arch in listed if arch.startswith("compute_")]
    return "sm_90" if "90" in codes or not codes else f"sm_{max(codes, key=int)}"


@pytest.mark.parametrize("name", KERNELS)
def test_cu_compiles_with_nvcc(name):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not on PATH")
    source = cuda.SOURCES / name
    output = cpp.cache_dir() / "compile-checks" / f"{source.stem}.o"  # a fixed path: part of the hash
    output.parent.mkdir(parents=True, exist_ok=True)
    command = [nvcc, "-c", str(source), "-o", str(output), "-std=c++17"]
    command += [f"-arch={_nvcc_arch(nvcc)}", "-O3", "-Xcompiler", "-fPIC", "-Werror", "all-warnings"]
    _compiled_once(f"nvcc-{source.stem}", command, [source, *HEADERS])


@pytest.mark.parametrize("name", GLUE)
def test_glue_compiles_against_torch(name):
    """The glue needs no CUDA header: it compiles against this (CPU) build of torch."""
    from torch.utils.cpp_extension import include_paths

    compiler = shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler on PATH")
    source = cuda.SOURCES / name
    includes = [*include_paths(), sysconfig.get_paths()["include"], str(cuda.SOURCES)]
    command = [compiler, "-fsyntax-only", "-std=c++17", "-DTORCH_EXTENSION_NAME=audiokit_kernels_cuda"]
    command += [f"-I{path}" for path in includes] + [str(source)]
    _compiled_once(f"glue-{source.stem}", command, [source, *HEADERS])


def test_without_a_gpu_the_reason_is_told():
    if torch.cuda.is_available():
        pytest.skip("a GPU machine")
    assert cuda.load() is None
    assert cuda.unavailable_reason() in (f"torch {torch.__version__} is not a CUDA build", "no CUDA device")


def _block_args(channels: int, taps: int, hidden: int, biases: bool, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    def bias(size: int) -> torch.Tensor | None:
        return randn(size) if biases else None

    return [
        randn(channels, taps), bias(channels), randn(channels), randn(channels), 1e-6,
        randn(channels, hidden, scale=channels**-0.5), bias(hidden),
        randn(hidden, channels, scale=hidden**-0.5), bias(channels),
    ]  # fmt: skip


def _on_cuda(args: list) -> list:
    return [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]


CASES = [
    (1, 1, 192, 7, 576, True, "none"),  # one stream of the shipped blocks, one frame
    (64, 1, 192, 7, 576, True, "none"),  # 64 streams
    (4, 3, 33, 3, 50, False, "none"),
    (2, 5, 16, 2, 800, True, "tanh"),
    (3, 2, 8, 1, 12, True, "none"),  # no conv history
    (2, 2, 600, 7, 40, True, "none"),  # more channels than threads in a block
]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize(("batch", "length", "channels", "taps", "hidden", "biases", "approximate"), CASES)
def test_gpu_block_step_equals_reference(backend, batch, length, channels, taps, hidden, biases, approximate):
    torch.backends.cuda.matmul.allow_tf32 = False
    if backend == "cuda" and cuda.load() is None:
        pytest.fail(f"the CUDA kernels did not build: {cuda.unavailable_reason()}")
    args = _block_args(channels, taps, hidden, biases, seed=batch * 10 + taps)
    state_ref = torch.randn(batch, channels, taps - 1).transpose(1, 2)  # channel-major, as ConvState keeps it
    state_gpu = state_ref.cuda()
    for step in range(3):  # the state carries over between steps
        x = torch.randn(batch, length + step, channels)
        expected = reference.convnext_block_step(x, state_ref, *args, approximate)
        got = ops.convnext_block_step(x.cuda(), state_gpu, *_on_cuda(args), approximate, backend=backend)
        torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(state_gpu.cpu(), state_ref, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize(("rows", "dim", "d", "k", "stages"), [(1, 128, 8, 1024, 12), (300, 16, 4, 9, 3)])
def test_gpu_rvq_encode_equals_reference(rows, dim, d, k, stages):
    """The CUDA search gives the reference's codes exactly (ties to the lower index) and its rows."""
    if cuda.load() is None:
        pytest.fail(f"the CUDA kernels did not build: {cuda.unavailable_reason()}")
    args = rvq_case(rows, dim, d, k, stages, seed=rows)
    expected_codes, expected = reference.rvq_encode(*args)
    codes, quantized = ops.rvq_encode(*_on_cuda(args), backend="cuda")
    assert torch.equal(codes.cpu(), expected_codes)
    torch.testing.assert_close(quantized.cpu(), expected, rtol=0, atol=1e-6)
    assert not bool((codes == 5).any())


@pytest.mark.gpu
def test_cuda_block_step_in_a_cuda_graph():
    """Captured once and replayed: the kernels run on torch's current stream, the state advances."""
    torch.backends.cuda.matmul.allow_tf32 = False
    args = _on_cuda(_block_args(192, 7, 576, True, seed=1))
    x, state = torch.zeros(64, 1, 192, device="cuda"), torch.zeros(64, 6, 192, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up (cuBLAS workspaces) outside the capture
        ops.convnext_block_step(x, state.clone(), *args, backend="cuda")
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ops.convnext_block_step(x, state, *args, backend="cuda")
    state_ref = torch.zeros(64, 6, 192)
    cpu_args = [a.cpu() if isinstance(a, torch.Tensor) else a for a in args]
    for _ in range(3):
        frame = torch.randn(64, 1, 192)
        x.copy_(frame)
        graph.replay()
        expected = reference.convnext_block_step(frame, state_ref, *cpu_args)
        torch.testing.assert_close(out.cpu(), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(state.cpu(), state_ref, rtol=0, atol=0)


@pytest.mark.gpu
def test_codec_streams_on_the_cuda_kernels():
    """speech-16k streaming on the CUDA block step: codes equal the offline GPU codes, audio within 1e-4."""
    from audiokit.coding import load_codec

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    codec, _ = load_codec("speech-16k")
    x = (torch.randn(4, 1, 8000, generator=torch.Generator().manual_seed(5)) * 0.3).cuda()
    gpu = codec.to("cuda")
    try:
        with ops.use_backend("cuda"), torch.inference_mode():
            codes = gpu.encode(x, 6000)
            audio = gpu.decode(codes)
            encoder = gpu.stream(4, "encode", bitrate=6000)
            roundtrip = gpu.stream(4, "roundtrip", bitrate=6000)
            assert {block.prepared().backend for block in gpu.decoder.blocks} == {"cuda"}
        streamed, decoded = [], []
        for start in range(0, 8000, 960):
            streamed.append(encoder.push(x[..., start : start + 960]))
            decoded.append(roundtrip.push(x[..., start : start + 960]))
        assert torch.equal(torch.cat([*streamed, encoder.flush()], -1), codes.codes)
        torch.testing.assert_close(torch.cat([*decoded, roundtrip.flush()], -1), audio, rtol=0, atol=1e-4)
    finally:
        codec.cpu()


def test_device_benchmark_refuses_a_missing_gpu():
    """recipes/gpu/bench_kernels.sh's benchmark stops at once, saying why, where torch sees no GPU."""
    if torch.cuda.is_available():
        pytest.skip("a GPU machine")
    from audiokit.bench.codec import run_device_kernel_benchmark
    from audiokit.errors import ModelError

    with pytest.raises(ModelError, match="no CUDA device"):
        run_device_kernel_benchmark(device="cuda")
