"""Float16 and int8 weights (audiokit.nn.precision): the ``rows_times_half`` and ``rows_times_int8``
kernels against a float64 product, the rounded model offline and in training, and compiled steps that
read float16 or int8 weights still equal to offline within 1e-5."""

from __future__ import annotations

import zipfile

import pytest
import torch
from conftest import TINY_SPEECH_CODEC, run_stream

from audiokit.cli import build_parser
from audiokit.errors import UsageError
from audiokit.models import Codec
from audiokit.models.bwe import BandwidthExtender
from audiokit.models.enhancer import Enhancer
from audiokit.nn.precision import (
    INT8_LEVELS,
    Int8Matrix,
    rounded_weights,
    set_weight_precision,
    weight_precision,
    weight_twin,
)
from audiokit.ops import cpp
from audiokit.serve import ServerConfig
from audiokit.serve.app import load_engines
from audiokit.streaming import compiled

needs_build = pytest.mark.skipif(cpp.load() is None, reason=f"no C++ kernels: {cpp.unavailable_reason()}")


def _half_args(g: torch.Generator, outputs: int = 192, inputs: int = 482) -> tuple:
    """The float16 kernel's weight arguments and the ``(out, in)`` matrix they stand for."""
    weights = (torch.randn(outputs, inputs, generator=g) * inputs**-0.5).half()
    return (weights,), weights.double()


def _int8_args(g: torch.Generator, outputs: int = 192, inputs: int = 482) -> tuple:
    """The int8 kernel's weight arguments (values, scales) and the matrix they stand for."""
    values = torch.randint(-INT8_LEVELS, INT8_LEVELS + 1, (outputs, inputs), generator=g).to(torch.int8)
    scales = torch.rand(outputs, generator=g) * inputs**-0.5 / 64
    return (values, scales), values.double() * scales.double()[:, None]


KERNELS = [("rows_times_half", _half_args), ("rows_times_int8", _int8_args)]


@needs_build
@pytest.mark.parametrize(("op", "weights"), KERNELS)
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 9, 64])
@pytest.mark.parametrize(("outputs", "inputs"), [(576, 192), (192, 482), (7, 13), (964, 1024)])
def test_low_precision_products_equal_a_float64_product(op, weights, rows, outputs, inputs):
    g = torch.Generator().manual_seed(rows * 1000 + inputs)
    x = torch.randn(rows, inputs, generator=g)
    args, matrix = weights(g, outputs, inputs)
    b = torch.randn(outputs, generator=g)
    kernel = getattr(torch.ops.audiokit, op)
    expected = (x.double() @ matrix.t() + b.double()).float()
    torch.testing.assert_close(kernel(x, *args, b), expected, atol=2e-6, rtol=2e-6)
    no_bias = kernel(x, *args, None)
    torch.testing.assert_close(no_bias, (x.double() @ matrix.t()).float(), atol=2e-6, rtol=2e-6)


@needs_build
@pytest.mark.parametrize(("op", "weights"), KERNELS)
def test_each_row_is_rounded_the_same_whatever_the_rows(op, weights):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 482, generator=g)
    args, _ = weights(g)
    b = torch.randn(192, generator=g)
    kernel = getattr(torch.ops.audiokit, op)
    together = kernel(x, *args, b)
    for start, stop in [(0, 1), (3, 4), (1, 3), (2, 7)]:
        assert torch.equal(kernel(x[start:stop], *args, b), together[start:stop])


@needs_build
def test_rows_times_half_rejects_what_it_cannot_multiply():
    x = torch.randn(2, 16)
    with pytest.raises(RuntimeError, match="float16"):
        torch.ops.audiokit.rows_times_half(x, torch.randn(4, 16), None)
    with pytest.raises(RuntimeError, match="in = 16"):
        torch.ops.audiokit.rows_times_half(x, torch.randn(4, 15).half(), None)
    with pytest.raises(RuntimeError, match="bias"):
        torch.ops.audiokit.rows_times_half(x, torch.randn(4, 16).half(), torch.randn(5))
    values = torch.zeros(4, 16, dtype=torch.int8)
    with pytest.raises(RuntimeError, match="int8"):
        torch.ops.audiokit.rows_times_int8(x, values.float(), torch.ones(4), None)
    with pytest.raises(RuntimeError, match="scales"):
        torch.ops.audiokit.rows_times_int8(x, values, torch.ones(5), None)
    with pytest.raises(RuntimeError, match="in = 16"):
        torch.ops.audiokit.rows_times_int8(x, values[:, :15], torch.ones(4), None)


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
        twin = weight_twin(matrix)
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
    with pytest.raises(UsageError, match="bfloat16"):
        set_weight_precision(tiny_codec, "bfloat16")
    with pytest.raises(ValueError, match="beyond float16's range"):
        rounded_weights(torch.full((3, 3), 70000.0), "float16")


def _depthwise_taps(model: torch.nn.Module) -> list[torch.Tensor]:
    return [
        m.__dict__["_prepared"][1].taps
        for m in model.modules()
        if "_prepared" in m.__dict__ and getattr(m.__dict__["_prepared"][1], "taps", None) is not None
    ]


def test_int8_weights_put_each_output_on_its_own_grid_only_for_inference(tiny_codec):
    """Each product matrix's column (one output) becomes integers -127..127 times its scale, the largest
    reaching 127; depthwise taps stay float32; training is untouched."""
    x = torch.randn(1, 1, 8000, generator=torch.Generator().manual_seed(1)) * 0.3
    with torch.inference_mode():
        full = tiny_codec.decode(tiny_codec.encode(x))
    taps = [t.clone() for t in _depthwise_taps(tiny_codec)]
    tiny_codec.set_weight_precision("int8")
    assert weight_precision(tiny_codec) == "int8"
    with torch.inference_mode():
        coarse = tiny_codec.decode(tiny_codec.encode(x))
    assert len(taps) >= 2
    assert all(torch.equal(a, b) for a, b in zip(taps, _depthwise_taps(tiny_codec), strict=True))
    matrices = [m for m in _prepared_matrices(tiny_codec) if weight_twin(m) is not None]
    assert len(matrices) >= 8
    for matrix in matrices:
        twin = weight_twin(matrix)
        assert isinstance(twin, Int8Matrix) and twin.values.dtype == torch.int8
        assert torch.equal(twin.values.float() * twin.scales[:, None], matrix.t())
        assert int(twin.values.abs().amax(1).min()) == INT8_LEVELS  # every column uses its whole grid
    difference = float((coarse - full).abs().max())
    assert 0 < difference < 0.1 * float(full.abs().max())  # a nearby model, not the same one
    model = Codec.from_config("speech-16k", **TINY_SPEECH_CODEC)
    model.load_state_dict(tiny_codec.state_dict())
    model.set_weight_precision("int8").train()
    torch.manual_seed(3)
    reference = Codec.from_config("speech-16k", **TINY_SPEECH_CODEC)
    reference.load_state_dict(tiny_codec.state_dict())
    trained = model.decode(model.encode(x))
    torch.manual_seed(3)
    assert torch.equal(trained, reference.train().decode(reference.encode(x)))


def test_compiled_steps_are_keyed_by_which_blocks_read_which_precision(tiny_codec):
    """A package holds its prepared weights as constants: a model with only its decoder set to float16
    must not load the package of one set to float16 (or int8) throughout, or of the float32 one."""
    state, chunk = tiny_codec.decoder.init_state(1, torch.device("cpu"), torch.float32), torch.zeros(1, 3, 1)
    step = tiny_codec.decoder.step_t
    keys = [compiled._cache_key(tiny_codec, step, state, chunk, {})]
    set_weight_precision(tiny_codec.decoder, "float16")
    keys.append(compiled._cache_key(tiny_codec, step, state, chunk, {}))
    tiny_codec.set_weight_precision("float16")
    keys.append(compiled._cache_key(tiny_codec, step, state, chunk, {}))
    tiny_codec.set_weight_precision("int8")
    keys.append(compiled._cache_key(tiny_codec, step, state, chunk, {}))
    assert len(set(keys)) == 4


@needs_build
@pytest.mark.parametrize(
    ("precision", "kernel"), [("float16", b"rows_times_half"), ("int8", b"rows_times_int8")]
)
def test_compiled_steps_read_low_precision_weights_and_equal_offline(tiny_codec, precision, kernel):
    tiny_codec.set_weight_precision(precision)
    x = torch.randn(2, 1, 16000, generator=torch.Generator().manual_seed(1)) * 0.3
    session = tiny_codec.stream(2, "roundtrip", compile="aoti")
    assert session.compiled == {"encoder": True, "decoder": True}, compiled.unavailable_reason()
    for step in (session._encode, session._decoder_step):  # the libraries call the precision's kernel
        with zipfile.ZipFile(step.library) as package:
            assert any(kernel in package.read(name) for name in package.namelist())
    streamed = run_stream(session, x, [320, 320, 960, 320, 17])
    with torch.inference_mode():
        offline = tiny_codec.decode(tiny_codec.encode(x))
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)


def test_server_loads_its_models_with_low_precision_weights(tmp_path):
    """``audiokit serve --weights float16|int8``: the option reaches the config and every served model."""
    args = build_parser().parse_args(["serve", "-m", "x", "--weights", "int8"])
    assert args.weights == "int8"
    config = {"hidden_dim": 16, "lstm_layers": 1, "df_bins": 8, "erb_bands": 16}
    path = Enhancer.from_config("enhance-16k", **config).save_pretrained(tmp_path / "e.safetensors")
    for precision in ("float16", "int8", "float32"):
        (engine,) = load_engines(ServerConfig(models=[str(path)], weight_precision=precision)).values()
        assert weight_precision(engine.model) == precision


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():  # far from the initial state, so the comparisons see the network act
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


@pytest.mark.parametrize("precision", ["float16", "int8"])
def test_low_precision_enhancer_and_extender_stream_like_their_offline_forward(precision):
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
        model.set_weight_precision(precision)
        with torch.inference_mode():
            rounded = offline()
        if precision == "float16":  # int8 leaves depthwise taps, these models' rounded matrices, alone
            assert float((rounded - full).abs().max()) > 1e-6, name  # the rounding reaches the output
        streamed = run_stream(session(), x, [320, 160, 480, 7])
        torch.testing.assert_close(streamed, rounded, atol=1e-5, rtol=0, msg=name)
