"""audiokit.ops: every backend of every fused op equals the torch reference (Triton through its
interpreter on the CPU), including the in-place state update, over many streaming steps."""

from __future__ import annotations

import os

import pytest
import torch

from audiokit import ops
from audiokit.ops import reference

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
    assert ops.backend_for(x) == "triton"
    monkeypatch.setenv("AUDIOKIT_OPS", "cuda")
    with pytest.raises(ValueError, match="AUDIOKIT_OPS"):
        ops.backend_for(x)


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
