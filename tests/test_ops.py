"""audiokit.ops: every backend of every fused op equals the torch reference (Triton through its
interpreter on the CPU), including the in-place state update, over many streaming steps; and the
choice of backend (cuda > triton > torch for CUDA tensors, torch for CPU ones, AUDIOKIT_OPS forcing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import rvq_case

from audiokit import ops
from audiokit.errors import UsageError
from audiokit.ops import cuda, reference

pytestmark = pytest.mark.skipif(not ops.triton_available(), reason="needs the triton package (dev extra)")


@pytest.fixture
def interpret(monkeypatch):
    """Triton forced on CPU tensors, run by Triton's interpreter (conftest sets it up before import)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("a GPU machine: the interpreter is off (the gpu-marked tests cover Triton there)")
    monkeypatch.setenv("AUDIOKIT_OPS", "triton")


@pytest.mark.parametrize(
    ("batch", "length", "channels", "taps", "bias"),
    [(1, 2, 192, 7, True), (3, 1, 20, 7, False), (2, 9, 33, 3, True), (2, 4, 16, 2, True)],
)
def test_triton_dwconv_layernorm_update_equals_reference(interpret, batch, length, channels, taps, bias):
    g = torch.Generator().manual_seed(batch * 100 + length)
    weight = torch.randn(channels, taps, generator=g)
    b = torch.randn(channels, generator=g) if bias else None
    norm_w, norm_b = torch.randn(channels, generator=g), torch.randn(channels, generator=g)
    state_ref = torch.randn(batch, channels, taps - 1, generator=g).transpose(1, 2)  # channel-major memory
    state_tri = state_ref.clone()
    assert ops.backend_for(state_ref) == "triton"
    for step in range(3):  # the state carries over between steps
        x = torch.randn(batch, length + step, channels, generator=g)
        expected = reference.dwconv_layernorm_update(x, state_ref, weight, b, norm_w, norm_b, 1e-6)
        got = ops.dwconv_layernorm_update(x, state_tri, weight, b, norm_w, norm_b, 1e-6)
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-5)
        torch.testing.assert_close(state_tri, state_ref, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("batch", "length", "channels", "taps", "hidden", "biases", "approximate"),
    [(1, 1, 192, 7, 576, True, "none"), (3, 2, 33, 3, 50, False, "none"), (2, 2, 8, 1, 12, True, "tanh")],
)
def test_triton_convnext_block_step_equals_reference(
    interpret, batch, length, channels, taps, hidden, biases, approximate
):
    """The whole block on Triton (conv + LayerNorm kernel, then the fused MLP kernel), within 1e-5."""
    g = torch.Generator().manual_seed(batch * 10 + taps)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    def bias(size: int) -> torch.Tensor | None:
        return randn(size) if biases else None

    args = [
        randn(channels, taps), bias(channels), randn(channels), randn(channels), 1e-6,
        randn(channels, hidden, scale=channels**-0.5), bias(hidden),
        randn(hidden, channels, scale=hidden**-0.5), bias(channels),
    ]  # fmt: skip
    state_ref = randn(batch, channels, taps - 1).transpose(1, 2)  # channel-major memory
    state_tri = state_ref.clone()
    for step in range(2):  # the state carries over between steps
        x = randn(batch, length + step, channels)
        expected = reference.convnext_block_step(x, state_ref, *args, approximate)
        got = ops.convnext_block_step(x, state_tri, *args, approximate)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(state_tri, state_ref, rtol=0, atol=0)


def test_reference_is_a_causal_conv_then_layernorm():
    """The reference against a naive loop over frames and taps."""
    g = torch.Generator().manual_seed(0)
    channels, taps = 5, 4
    weight, bias = torch.randn(channels, taps, generator=g), torch.randn(channels, generator=g)
    signal = torch.randn(1, 10, channels, generator=g)
    state = torch.zeros(1, taps - 1, channels)
    out = torch.cat(
        [
            reference.dwconv_layernorm_update(
                signal[:, i : i + 2], state, weight, bias, torch.ones(5), torch.zeros(5), 0.0
            )
            for i in range(0, 10, 2)
        ],
        1,
    )
    padded = torch.cat([torch.zeros(taps - 1, channels), signal[0]])
    for t in range(10):
        conv = bias + sum(weight[:, k] * padded[t + k] for k in range(taps))
        normed = (conv - conv.mean()) / conv.var(unbiased=False).sqrt()
        torch.testing.assert_close(out[0, t], normed, rtol=0, atol=1e-5)
    torch.testing.assert_close(state[0], signal[0, -(taps - 1) :])


def test_unknown_backend_is_refused():
    x = torch.zeros(1, 1, 4)
    with pytest.raises(ValueError, match="unknown backend"):
        ops.dwconv_layernorm_update(
            x,
            torch.zeros(1, 2, 4),
            torch.zeros(4, 3),
            None,
            torch.ones(4),
            torch.zeros(4),
            1e-6,
            "cuda-graph",
        )


def test_streaming_through_the_triton_kernel_equals_offline(interpret):
    """The speech-16k streaming step with its ConvNeXt blocks on the Triton kernel (interpreted)."""
    from audiokit.models import Codec

    torch.manual_seed(0)
    codec = Codec.from_config("speech-16k").eval()
    x = torch.randn(2, 1, 3300, generator=torch.Generator().manual_seed(1)) * 0.3
    with torch.inference_mode():
        codes = codec.encode(x, 6000)
        audio = codec.decode(codes)
    session = codec.stream(2, "roundtrip", bitrate=6000)
    pieces = [session.push(x[..., i : i + 700]) for i in range(0, 3300, 700)]
    streamed = torch.cat([*pieces, session.flush()], -1)
    torch.testing.assert_close(streamed, audio, rtol=0, atol=1e-5)


def test_backend_can_be_forced_by_the_environment(monkeypatch):
    x = torch.zeros(1, 1, 4)
    monkeypatch.delenv("AUDIOKIT_OPS", raising=False)
    assert ops.backend_for(x) == "torch"  # CPU tensors get the torch reference
    monkeypatch.setenv("AUDIOKIT_OPS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert ops.backend_for(x) == "triton"  # CPU tensors through Triton's interpreter
    monkeypatch.setenv("AUDIOKIT_OPS", "cuda-graph")
    with pytest.raises(UsageError, match="AUDIOKIT_OPS"):
        ops.backend_for(x)


def test_a_bad_audiokit_ops_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    """A value of AUDIOKIT_OPS that names no backend is the user's error (exit 1), not an internal one."""
    import soundfile as sf

    from audiokit.cli import main

    sf.write(tmp_path / "x.wav", torch.zeros(1600).numpy(), 16000)
    monkeypatch.setenv("AUDIOKIT_OPS", "bogus")
    assert main(["encode", "-q", str(tmp_path / "x.wav"), str(tmp_path / "x.akc")]) == 1
    assert capsys.readouterr().err == (
        "audiokit encode: error: AUDIOKIT_OPS='bogus': choose one of cpp, cuda, triton, torch\n"
    )


def test_triton_forced_where_it_cannot_run_is_torch(monkeypatch):
    """AUDIOKIT_OPS=triton on a CPU-only machine (no interpreter), on float64 tensors or without a
    recent triton: the torch ops, and the codec streams (it failed in Triton's driver lookup)."""
    from audiokit.models import Codec

    monkeypatch.setenv("AUDIOKIT_OPS", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert ops.backend_for(torch.zeros(1)) == "torch"
    assert ops.backend_for(_cuda_like(torch.float64)) == "torch"
    torch.manual_seed(0)
    codec = Codec.from_config("speech-16k").eval()
    session = codec.stream(1, "roundtrip", bitrate=3000)
    assert codec.encoder.blocks[0].prepared().backend == "torch"
    assert session.push(torch.zeros(1, 1, 640)).shape[-1] >= 0
    monkeypatch.setattr(ops, "triton_available", lambda: False)
    assert ops.backend_for(_cuda_like()) == "torch"


def test_triton_from_another_distribution_is_found(monkeypatch):
    """The ``triton`` module shipped by ``pytorch-triton`` (nightly torch; -rocm, -xpu): no ``triton``
    distribution to read the version of, which raised PackageNotFoundError for every CUDA tensor."""
    import importlib.metadata

    import triton

    def version(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(triton, "__version__", "3.5.0+git8a2f3c1d")
    ops.triton_available.cache_clear()
    try:
        assert ops.triton_available()
    finally:
        ops.triton_available.cache_clear()


def _cuda_like(dtype: torch.dtype = torch.float32) -> SimpleNamespace:
    """What backend_for reads of a CUDA tensor, on a machine without one."""
    return SimpleNamespace(dtype=dtype, is_cuda=True, device=SimpleNamespace(type="cuda"))


@pytest.mark.parametrize(
    ("built", "triton", "expected"), [(True, True, "cuda"), (False, True, "triton"), (False, False, "torch")]
)
def test_cuda_tensors_get_cuda_then_triton_then_torch(monkeypatch, built, triton, expected):
    monkeypatch.delenv("AUDIOKIT_OPS", raising=False)
    monkeypatch.setattr(cuda, "load", lambda: object() if built else None)
    monkeypatch.setattr(ops, "triton_available", lambda: triton)
    assert ops.backend_for(_cuda_like()) == expected
    assert ops.backend_for(_cuda_like(torch.float64)) == "torch"  # the kernels are float32
    assert ops.backend_for(torch.zeros(1)) == "torch"  # CPU tensors: torch unless forced


def test_forcing_cuda(monkeypatch):
    """AUDIOKIT_OPS=cuda / use_backend("cuda"): the CUDA kernels where they run, torch elsewhere; the
    force beats the default order (triton forced on a machine with a CUDA build)."""
    monkeypatch.setattr(cuda, "load", lambda: object())
    monkeypatch.setenv("AUDIOKIT_OPS", "cuda")
    assert ops.backend_for(_cuda_like()) == "cuda"
    assert ops.backend_for(torch.zeros(1)) == "torch"
    with ops.use_backend("triton"):
        assert ops.backend_for(_cuda_like()) == "triton"
    monkeypatch.setattr(cuda, "load", lambda: None)  # no build: torch
    assert ops.backend_for(_cuda_like()) == "torch"
    with ops.use_backend("torch"):
        monkeypatch.setattr(cuda, "load", lambda: object())
        assert ops.backend_for(_cuda_like()) == "torch"


def test_cuda_backend_without_a_build_says_why(monkeypatch):
    """Asking for the CUDA op where it cannot run names the reason (here: no GPU or a CPU torch)."""
    from audiokit.errors import ModelError

    monkeypatch.setattr(cuda, "load", lambda: None)
    monkeypatch.setattr(cuda, "unavailable_reason", lambda: "no CUDA device")
    x = torch.zeros(1, 1, 4)
    args = [torch.zeros(4, 3), None, torch.ones(4), torch.zeros(4), 1e-6]
    args += [torch.zeros(4, 8), None, torch.zeros(8, 4), None]
    with pytest.raises(ModelError, match="no CUDA device"):
        ops.convnext_block_step(x, torch.zeros(1, 2, 4), *args, backend="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize(("channels", "taps", "length"), [(16, 7, 1), (33, 3, 5), (192, 7, 2), (8, 2, 9)])
def test_compiled_triton_kernel_on_cuda_equals_reference(channels, taps, length):
    """The kernel compiled for a real GPU (where threads share rows: the state shift must not race)."""
    g = torch.Generator().manual_seed(channels + taps)
    args = [torch.randn(channels, taps, generator=g), torch.randn(channels, generator=g)]
    args += [torch.randn(channels, generator=g), torch.randn(channels, generator=g)]
    state = torch.randn(64, taps - 1, channels, generator=g)
    state_gpu = state.cuda()
    for _ in range(3):
        x = torch.randn(64, length, channels, generator=g)
        expected = reference.dwconv_layernorm_update(x, state, *args, 1e-6)
        got = ops.dwconv_layernorm_update(
            x.cuda(), state_gpu, *(a.cuda() for a in args), 1e-6, backend="triton"
        )
        torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=1e-4)
        torch.testing.assert_close(state_gpu.cpu(), state, rtol=0, atol=0)


@pytest.mark.parametrize(("rows", "dim", "d", "k", "stages"), [(2, 128, 8, 1024, 3), (40, 16, 4, 9, 3)])
def test_triton_rvq_encode_equals_reference(interpret, rows, dim, d, k, stages):
    args = rvq_case(rows, dim, d, k, stages, seed=rows)
    expected_codes, expected = reference.rvq_encode(*args)
    codes, quantized = ops.rvq_encode(*args)
    assert torch.equal(codes, expected_codes) and not bool((codes == 5).any())
    assert k > 100 or bool((codes == 3).any())  # the tie was met
    torch.testing.assert_close(quantized, expected, rtol=0, atol=1e-6)


H100_SHARED_BYTES = 227 * 1024  # the most shared memory one block may have on an H100 (sm_90)


_SHARED_MEMORY_SCRIPT = """
import json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction
from audiokit.ops import triton_kernels

kernel = JITFunction(triton_kernels._BODIES["mlp_residual"])
signature = {
    p.name: "constexpr" if p.is_constexpr else "*fp32" if p.name.endswith("_ptr") else "i32"
    for p in kernel.params
}
shared = {}
for channels in map(int, sys.argv[1:]):
    tiles = triton_kernels.mlp_tiles(channels)
    constants = {"HAS_B1": True, "HAS_B2": True, "TANH": False, "BLOCK_M": 16}
    constants.update(BLOCK_C=tiles.pop("BLOCK_C"), BLOCK_H=tiles.pop("BLOCK_H"))
    source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
    shared[channels] = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=tiles).metadata.shared
print(json.dumps(shared))
"""


def test_triton_mlp_kernel_fits_the_shared_memory_of_an_h100():
    """The MLP kernel compiled for sm_90 here (Triton's own ptxas, no GPU) with the tiles it is launched
    with asks no more shared memory than an H100 has: at 600 channels the default tiles asked 578 KiB,
    an out-of-resources error at the first launch on the GPU. Compiled in a process of its own without
    the interpreter: Triton 3.9's interpreter leaves its patches on triton.language's tensors once a
    kernel has run interpreted in the process, and code generated after that (on a cold cache) fails."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", _SHARED_MEMORY_SCRIPT, "192", "600", "1024"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shared = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(shared) == ["1024", "192", "600"]
    for channels, size in shared.items():
        assert size <= H100_SHARED_BYTES, (channels, size)
