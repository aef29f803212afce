"""Float16 weights (audiokit.nn.precision): the ``rows_times_half`` kernel against a float64 product,
the rounded model offline and in training, and compiled steps that read float16 weights still equal
to offline within 1e-5."""

from __future__ import annotations

import zipfile

import pytest
import torch
from conftest import TINY_SPEECH_CODEC, run_stream

from audiokit.cli import build_parser
from audiokit.models import Codec
from audiokit.models.bwe import BandwidthExtender
from audiokit.models.enhancer import Enhancer
from audiokit.nn.precision import half_twin, rounded_to_half, set_weight_precision, weight_precision
from audiokit.ops import cpp
from audiokit.serve import ServerConfig
from audiokit.serve.app import load_engines
from audiokit.streaming import compiled

needs_build = pytest.mark.skipif(cpp.load() is None, reason=f"no C++ kernels: {cpp.unavailable_reason()}")


@needs_build
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 9, 64])
@pytest.mark.parametrize(("outputs", "inputs"), [(576, 192), (192, 482), (7, 13), (964, 1024)])
def test_rows_times_half_equals_a_float64_product(rows, outputs, inputs):
    g = torch.Generator().manual_seed(rows * 1000 + inputs)
    x = torch.randn(rows, inputs, generator=g)
    w = (torch.randn(outputs, inputs, generator=g) * inputs**-0.5).half()
    b = torch.randn(outputs, generator=g)
    expected = (x.double() @ w.double().t() + b.double()).float()
    torch.testing.assert_close(torch.ops.audiokit.rows_times_half(x, w, b), expected, atol=2e-6, rtol=2e-6)
    no_bias = torch.ops.audiokit.rows_times_half(x, w, None)
    torch.testing.assert_close(no_bias, (x.double() @ w.double().t()).float(), atol=2e-6, rtol=2e-6)


@needs_build
def test_each_row_is_rounded_the_same_whatever_the_rows():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 482, generator=g)
    w = (torch.randn(192, 482, generator=g) * 0.05).half()
    b = torch.randn(192, generator=g)
    together = torch.ops.audiokit.rows_times_half(x, w, b)
    for start, stop in [(0, 1), (3, 4), (1, 3), (2, 7)]:
        assert torch.equal(torch.ops.audiokit.rows_times_half(x[start:stop], w, b), together[start:stop])


@needs_build
def test_rows_times_half_rejects_what_it_cannot_multiply():
    x = torch.randn(2, 16)
    with pytest.raises(RuntimeError, match="float16"):
        torch.ops.audiokit.rows_times_half(x, torch.randn(4, 16), None)
    with pytest.raises(RuntimeError, match="in = 16"):
        torch.ops.audiokit.rows_times_half(x, torch.randn(4, 15).half(), None)
    with pytest.raises(RuntimeError, match="bias"):
        torch.ops.audiokit.rows_times_half(x, torch.randn(4, 16).half(), torch.randn(5))


@pytest.fixture()
def tiny_codec() -> Codec:
    torch.manual_seed(0)
    return Codec.from_config("speech-16k", **TINY_SPEECH_CODEC).eval()


def _prepared_matrices(model: torch.nn.Module) -> list[torch.Tensor]:
    matrices = []
    for module in model.modules():
        prepared = module.__dict__.get("_prepared")
        stack = [] if prepared is None else [prepared[1]]
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                matrices += [item] if item.dim() == 2 and min(item.shape) > 1 else []
            elif isinstance(item, (tuple, list)):
                stack += list(item)
            elif hasattr(item, "__dataclass_fields__"):
                stack += [getattr(item, name) for name in item.__dataclass_fields__]
    return matrices


def test_float16_weights_round_the_prepared_matrices_only_for_inference(tiny_codec):
    x = torch.randn(1, 1, 8000, generator=torch.Generator().manual_seed(1)) * 0.3
    with torch.inference_mode():
        full = tiny_codec.decode(tiny_codec.encode(x))
    assert weight_precision(tiny_codec) == "float32"
    assert tiny_codec.set_weight_precision("float16") is tiny_codec
    assert weight_precision(tiny_codec) == "float16"
    with torch.inference_mode():
        half = tiny_codec.decode(tiny_codec.encode(x))
    matrices = _prepared_matrices(tiny_codec)
    assert len(matrices) >= 8
    for matrix in matrices:
        assert torch.equal(matrix, matrix.half().float())  # float16 values
        twin = half_twin(matrix)
        assert twin is not None and twin.dtype == torch.float16 and torch.equal(twin.float(), matrix.t())
    difference = float((half - full).abs().max())
    assert 0 < difference < 0.05 * float(full.abs().max())  # a nearby model, not the same one
    # an evaluation forward with autograd on runs the same float16-valued model, with gradients
    grad_half = tiny_codec.decode(tiny_codec.encode(x))
    assert grad_half.requires_grad and torch.equal(grad_half.detach(), half)
    # training runs the float32 model: the same loss and gradients as without the flag
    losses, grads = [], []
    for precision in ("float16", "float32"):
        model = Codec.from_config("speech-16k", **TINY_SPEECH_CODEC)
        model.load_state_dict(tiny_codec.state_dict())
        model.set_weight_precision(precision).train()
        torch.manual_seed(3)
        losses.append(model.decode(model.encode(x)).square().mean())
        losses[-1].backward()
        grads.append([p.grad for p in model.parameters() if p.grad is not None])
    assert torch.equal(losses[0], losses[1]) and len(grads[0]) > 10
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    tiny_codec.eval().set_weight_precision("float32")
    with torch.inference_mode():
        assert torch.equal(tiny_codec.decode(tiny_codec.encode(x)), full)
    with pytest.raises(ValueError, match="bfloat16"):
        set_weight_precision(tiny_codec, "bfloat16")
    with pytest.raises(ValueError, match="beyond float16's range"):
        rounded_to_half(torch.full((3, 3), 70000.0))


def test_compiled_steps_are_keyed_by_which_blocks_read_float16(tiny_codec):
    """A package holds its prepared weights as constants: a model with only its decoder set to float16
    must not load the package of one set to float16 throughout (or of the float32 one)."""
    state, chunk = tiny_codec.decoder.init_state(1, torch.device("cpu"), torch.float32), torch.zeros(1, 3, 1)
    keys = [compiled._cache_key(tiny_codec, state, chunk, {})]
    set_weight_precision(tiny_codec.decoder, "float16")
    keys.append(compiled._cache_key(tiny_codec, state, chunk, {}))
    tiny_codec.set_weight_precision("float16")
    keys.append(compiled._cache_key(tiny_codec, state, chunk, {}))
    assert len(set(keys)) == 3


@needs_build
def test_compiled_steps_read_float16_weights_and_equal_offline(tiny_codec):
    tiny_codec.set_weight_precision("float16")
    x = torch.randn(2, 1, 16000, generator=torch.Generator().manual_seed(1)) * 0.3
    session = tiny_codec.stream(2, "roundtrip", compile="aoti")
    assert session.compiled == {"encoder": True, "decoder": True}, compiled.unavailable_reason()
    for step in (session._encode, session._decoder_step):  # the libraries call the float16 kernel
        with zipfile.ZipFile(step.library) as package:
            assert any(b"rows_times_half" in package.read(name) for name in package.namelist())
    streamed = run_stream(session, x, [320, 320, 960, 320, 17])
    with torch.inference_mode():
        offline = tiny_codec.decode(tiny_codec.encode(x))
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)


def test_server_loads_its_models_with_float16_weights(tmp_path):
    """``audiokit serve --weights float16``: the option reaches the config and every served model."""
    args = build_parser().parse_args(["serve", "-m", "x", "--weights", "float16"])
    assert args.weights == "float16"
    config = {"hidden_dim": 16, "lstm_layers": 1, "df_bins": 8, "erb_bands": 16}
    path = Enhancer.from_config("enhance-16k", **config).save_pretrained(tmp_path / "e.safetensors")
    for precision in ("float16", "float32"):
        (engine,) = load_engines(ServerConfig(models=[str(path)], weight_precision=precision)).values()
        assert weight_precision(engine.model) == precision


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():  # far from the initial state, so the comparisons see the network act
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def test_float16_enhancer_and_extender_stream_like_their_offline_forward():
    """Every block that rounds its weights rounds them for the offline forward too (an LSTM, whose
    offline forward is ``nn.LSTM`` on its parameters, keeps float32: rounding its steps alone put
    streaming 2e-5 away from offline)."""
    config = {"hidden_dim": 16, "lstm_layers": 1, "df_bins": 8, "erb_bands": 16, "pitch": True}
    enhancer = _perturbed(Enhancer.from_config("enhance-16k", **config))
    extender = _perturbed(BandwidthExtender.from_config("bwe-8to16", hidden_dim=16, lstm_layers=1))
    x = torch.randn(2, 1, 8000, generator=torch.Generator().manual_seed(2)) * 0.3
    runs = {
        "enhancer": (enhancer, lambda: enhancer.enhance(x), lambda: enhancer.stream(2)),
        "extender": (extender, lambda: extender(x, 4000.0), lambda: extender.stream(2, edge_hz=4000.0)),
    }
    for name, (model, offline, session) in runs.items():
        with torch.inference_mode():
            full = offline()
        model.set_weight_precision("float16")
        with torch.inference_mode():
            half = offline()
        assert float((half - full).abs().max()) > 1e-6, name  # the rounding reaches the output
        streamed = run_stream(session(), x, [320, 160, 480, 7])
        torch.testing.assert_close(streamed, half, atol=1e-5, rtol=0, msg=name)
