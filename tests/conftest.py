"""Shared fixtures: real sample clips and markers."""

from __future__ import annotations

import importlib.util
import json
import os
import types
from pathlib import Path

# Without a GPU, Triton kernels can only run in Triton's interpreter; the switch is read when Triton
# is imported (its standard library is compiled then), so it is set before anything imports it.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

# Compiled steps (audiokit.streaming.compiled) built without timing every product at build time: the
# same steps, built about twice as fast; a slow test in tests/test_compiled_steps.py builds one autotuned.
os.environ.setdefault("AUDIOKIT_AOTI_AUTOTUNE", "0")

# CI and dev machines have 2 cores shared by several processes: one thread per test process is
# several times faster than oversubscribing.
torch.set_num_threads(1)


def check_shipped_with_card(model: torch.nn.Module, configs: dict) -> None:
    """Shipped weights ``model`` (loaded by name): its registered config, the sha256 its JSON beside
    the weights records, and a model card (``docs/models/<name>.json``) naming those weights as shipped."""
    from audiokit.models import WEIGHTS_DIR

    name = model.config.name
    assert model.config.to_dict() == configs[name].to_dict()
    meta = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    # the weights' own sha256: the file's, unless some tensors are stored as float16
    assert meta.get("weights_sha256", meta["sha256"]) == model.weights_sha256()
    card = json.loads((ROOT / "docs" / "models" / f"{name}.json").read_text())
    assert card["weights"]["sha256"] == model.weights_sha256() and card["weights"]["shipped"] is True


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def speech_files() -> list[Path]:
    """Real wideband speech clips shipped in samples/ (see samples/LICENSES.md)."""
    files = sorted(SAMPLES.glob("speech_*_16k*.flac"))
    if not files:
        pytest.fail("samples/ holds no speech_*_16k*.flac clips: the repository is incomplete")
    return files


def load_benchmark(name: str) -> types.ModuleType:
    """The script ``benchmarks/<name>.py`` as a module (benchmarks/ is no package), to test its functions."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_stream(session, source: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """Push ``source`` in ``chunks`` (cycled until it is used up), flush, and join the outputs."""
    outs, start, i = [], 0, 0
    while start < source.shape[-1]:
        size = chunks[i % len(chunks)]
        outs.append(session.push(source[..., start : start + size]))
        start, i = start + size, i + 1
    outs.append(session.flush())
    return torch.cat(outs, -1)


# speech-16k's frame rate and bitrates (50 Hz x 10 bits x 1..12 codebooks) with tiny layers (overrides
# merge key by key into speech-16k's config: the keys not named here keep its values)
TINY_SPEECH_CODEC = {
    "encoder": {"hidden_dim": 16, "intermediate_dim": 32, "n_blocks": 1},
    "decoder": {"hidden_dim": 16, "intermediate_dim": 32, "n_blocks": 1, "head_hidden_dim": 0},
    "latent_dim": 16,
    "codebook_dim": 4,
    "rate_decoders": (),  # one decoder for every rate (tests/test_rate_decoders.py adds their own)
}


@pytest.fixture(scope="session")
def tiny_codec_file(tmp_path_factory) -> Path:
    """A saved tiny speech-16k-shaped codec (random weights): its ``.safetensors`` path."""
    from audiokit.models import Codec

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-codec") / "model.safetensors"
    Codec.from_config("speech-16k", **TINY_SPEECH_CODEC).save_pretrained(path)
    return path


def assert_speed_targets(result: dict) -> None:
    """An audio model's speed result (``audiokit.bench.audio``) checks every target, the compiled push's
    share of the hop being the compiled one-hop push over the hop."""
    assert set(result["targets"]) == {
        "offline_realtime_x",
        "stream_hop_share",
        "aoti_stream_hop_share",
        "realtime_streams_per_core",
    }
    one_hop = result["cpu"]["compiled"]["one_hop"]
    share = result["targets"]["aoti_stream_hop_share"]["value"]
    assert share == one_hop["aoti"]["p50_ms"] / one_hop["chunk_ms"]


def assert_refuses_bad_audio(module: torch.nn.Module, x: torch.Tensor, call: str, push: str) -> None:
    """``module`` and its 2-row stream's ``push`` refuse integer PCM, numpy arrays and 1-D or 3-D input
    made from ``x (2, samples)`` with UsageErrors matching ``call`` and ``push``, and a push of 3 rows."""
    from audiokit.errors import UsageError

    for bad in ((x * 32767).short(), x.numpy(), x[0], x[None]):
        with pytest.raises(UsageError, match=call):
            module(bad)
        with pytest.raises(UsageError, match=push):
            module.stream(2).push(bad)
    with pytest.raises(UsageError, match=rf"\(2, samples\), got float32 of shape \(3, {x.shape[-1]}\)"):
        module.stream(2).push(torch.randn(3, x.shape[-1]))


def assert_same_tensors(a: dict, b: dict, where: str = "") -> None:
    """Nested dicts of tensors (state dicts, checkpoints) equal bit for bit, key by key."""
    assert a.keys() == b.keys(), where
    for key in a:
        if isinstance(a[key], dict):
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f"{where}.{key} differs"


def rvq_case(rows: int, dim: int, d: int, k: int, stages: int, seed: int) -> list[torch.Tensor]:
    """Random arguments of :func:`audiokit.ops.rvq_encode` whose codeword 5 repeats codeword 3 exactly
    (a tie the lower index must win)."""
    g = torch.Generator().manual_seed(seed)
    codebooks = torch.randn(stages, k, d, generator=g, dtype=torch.float64)
    codebooks[:, 5] = codebooks[:, 3]
    return [
        torch.randn(rows, dim, generator=g),
        torch.randn(stages, dim, d, generator=g, dtype=torch.float64) * dim**-0.5,
        torch.randn(stages, d, generator=g, dtype=torch.float64) * 0.1,
        codebooks,
        codebooks.square().sum(-1),
        torch.randn(stages, k, dim, generator=g) * 0.3,
    ]
