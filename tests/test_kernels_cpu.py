"""The C++ kernels of ``kernels/cpu`` (audiokit.ops backend "cpp"): equal to their torch references
within 1e-5, each row rounded the same whatever the chunking (what keeps streamed codes equal to
offline codes), the shipped codec streaming exactly on them, and the fallback to torch without a build.

The first test of a run builds the extension into the cache (~30-60 s once); later runs load it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import rvq_case

from audiokit import ops
from audiokit.ops import build, cpp, reference

needs_build = pytest.mark.skipif(cpp.load() is None, reason=f"no C++ kernels: {cpp.unavailable_reason()}")


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


@needs_build
@pytest.mark.parametrize(
    ("batch", "length", "channels", "taps", "hidden", "biases", "approximate"),
    [
        (1, 1, 192, 7, 576, True, "none"),  # one stream of the shipped blocks, one frame
        (1, 2, 192, 7, 576, True, "none"),
        (4, 3, 33, 3, 50, False, "none"),
        (2, 5, 16, 2, 800, True, "tanh"),  # more than 768 hidden inputs: the second product in pieces
        (3, 2, 8, 1, 12, True, "none"),  # no conv history
    ],
)
def test_convnext_block_step_equals_reference(batch, length, channels, taps, hidden, biases, approximate):
    args = _block_args(channels, taps, hidden, biases, seed=batch * 10 + taps)
    state_ref = torch.randn(batch, channels, taps - 1).transpose(1, 2)  # channel-major, as ConvState keeps it
    state_cpp = state_ref.clone()
    for step in range(3):  # the state carries over between steps
        x = torch.randn(batch, length + step, channels)
        expected = reference.convnext_block_step(x, state_ref, *args, approximate)
        got = ops.convnext_block_step(x, state_cpp, *args, approximate, backend="cpp")
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(state_cpp, state_ref, rtol=0, atol=0)


@needs_build
@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_rows_are_the_same_whatever_the_chunking(chunk):
    """Steps of ``chunk`` frames give bit for bit the rows of one call over the whole signal: the
    property that lets the offline forward and a stream's steps agree exactly."""
    args = _block_args(192, 7, 576, True, seed=chunk)
    x = torch.randn(3, 40, 192)
    whole = ops.convnext_block_step(x, torch.zeros(3, 6, 192), *args, backend="cpp")
    state = torch.zeros(3, 6, 192)
    pieces = [
        ops.convnext_block_step(x[:, i : i + chunk], state, *args, backend="cpp") for i in range(0, 40, chunk)
    ]
    assert torch.equal(torch.cat(pieces, 1), whole)
    assert torch.equal(state, x[:, -6:])


@needs_build
def test_shipped_codec_streams_exactly_on_the_kernels():
    """speech-16k (shipped weights) on the C++ kernels: streamed codes equal offline codes bit for bit,
    audio within 1e-5, for two rows of different speech-like signals in uneven chunks."""
    from audiokit.coding import load_codec

    codec, _ = load_codec("speech-16k")
    g = torch.Generator().manual_seed(3)
    t = torch.arange(9000) / 16000
    x = torch.stack([torch.sin(2 * torch.pi * 220 * t * (1 + t)), torch.randn(9000, generator=g) * 0.2])
    x = x[:, None]
    with ops.use_backend("cpp"), torch.inference_mode():
        assert {block.prepare().backend for block in codec.decoder.blocks} == {"cpp"}
        codes = codec.encode(x, 6000)
        audio = codec.decode(codes)
        encoder, roundtrip = (
            codec.stream(2, "encode", bitrate=6000),
            codec.stream(2, "roundtrip", bitrate=6000),
        )
    streamed_codes, streamed_audio = [], []
    for start in range(0, 9000, 1234):
        streamed_codes.append(encoder.push(x[..., start : start + 1234]))
        streamed_audio.append(roundtrip.push(x[..., start : start + 1234]))
    assert torch.equal(torch.cat([*streamed_codes, encoder.flush()], -1), codes.codes)
    torch.testing.assert_close(torch.cat([*streamed_audio, roundtrip.flush()], -1), audio, rtol=0, atol=1e-5)


@needs_build
def test_weights_kept_from_another_backend_are_prepared_again(monkeypatch):
    """Blocks keep their prepared weights across sessions; a session under another forced backend
    prepares them again for its kernels (the kept torch-prepared blocks used to win, by test order)."""
    monkeypatch.delenv("AUDIOKIT_OPS", raising=False)  # None below: no forced backend at all
    from audiokit.coding import load_codec

    codec, _ = load_codec("speech-16k")
    x = torch.randn(1, 1, 4000) * 0.1
    blocks = codec.decoder.blocks
    with torch.inference_mode():
        for backend in (None, "cpp", None):
            with ops.use_backend(backend) if backend else contextlib.nullcontext():
                codec.stream(1, "roundtrip", bitrate=6000)
                assert {block.prepared().backend for block in blocks} == {backend or "torch"}
        kept = blocks[0].prepared()
        codec.stream(1, "roundtrip", bitrate=6000).push(x)
        assert blocks[0].prepared() is kept  # unchanged weights, the same backend: kept


@needs_build
@pytest.mark.parametrize(("rows", "dim", "d", "k", "stages"), [(1, 128, 8, 1024, 12), (37, 16, 4, 9, 3)])
def test_rvq_encode_equals_reference(rows, dim, d, k, stages):
    """Codes exactly, quantized rows bit for bit (float64 scores, float32 residuals in stage order)."""
    args = rvq_case(rows, dim, d, k, stages, seed=rows)
    codes, quantized = ops.rvq_encode(*args, backend="cpp")
    expected_codes, expected = reference.rvq_encode(*args)
    assert torch.equal(codes, expected_codes) and torch.equal(quantized, expected)
    assert codes.shape == (stages, rows) and codes.dtype == torch.int64
    if k < 100:  # codeword 5 repeats codeword 3 exactly: 3 is chosen, never 5
        assert bool((codes == 3).any()) and not bool((codes == 5).any())


@needs_build
def test_shipped_quantizer_codes_equal_on_the_kernel():
    """speech-16k's 12 stages on real latents: the same codes and quantized rows with and without it."""
    from audiokit.coding import load_codec

    codec, _ = load_codec("speech-16k")
    t = torch.arange(16000) / 16000
    x = (torch.sin(2 * torch.pi * 180 * t * (1 + t)) * 0.3 + torch.randn(16000) * 0.02)[None, None]
    with torch.inference_mode():
        rows = codec.encoder(x).transpose(1, 2).reshape(-1, codec.quantizer.dim).float()
        expected = codec.quantizer.encode_rows(rows, 12, quantize=True)
        with ops.use_backend("cpp"):
            lookups = codec.quantizer.prepare_lookup()
        assert lookups.backend == "cpp" and lookups.stacked is not None
        for n_q in (3, 12):
            codes, quantized = codec.quantizer.encode_rows(rows, n_q, lookups, quantize=True)
            assert torch.equal(codes, expected[0][:n_q])
        assert torch.equal(quantized, expected[1])


def test_without_a_build_everything_runs_on_torch(monkeypatch):
    """No compiler / sources / ninja: AUDIOKIT_OPS=cpp falls back to the torch reference, the codec
    still streams, and the reason is told."""
    monkeypatch.setattr(cpp, "load", lambda: None)
    monkeypatch.setenv("AUDIOKIT_OPS", "cpp")
    assert ops.backend_for(torch.zeros(1)) == "torch"
    from audiokit.models import Codec

    torch.manual_seed(0)
    codec = Codec.from_config("speech-16k").eval()
    session = codec.stream(1, "roundtrip", bitrate=3000)
    assert codec.encoder.blocks[0].prepared().backend == "torch"
    assert session.push(torch.zeros(1, 1, 640)).shape[-1] >= 0


def test_a_forced_backend_without_kernels_says_so_once(monkeypatch, capsys):
    """AUDIOKIT_OPS=cpp where the kernels cannot build: one line on stderr, once, naming the reason
    (the torch ops ran without a word); none for tensors the kernels do not take (float64)."""
    monkeypatch.setattr(cpp, "load", lambda: None)
    monkeypatch.setattr(cpp, "unavailable_reason", lambda: "no C++ compiler (c++) on PATH")
    monkeypatch.setattr(ops, "_NOTED", set())
    monkeypatch.setenv("AUDIOKIT_OPS", "cpp")
    assert ops.backend_for(torch.zeros(1, dtype=torch.float64)) == "torch"
    assert capsys.readouterr().err == ""
    assert ops.backend_for(torch.zeros(1)) == ops.backend_for(torch.zeros(1)) == "torch"
    assert capsys.readouterr().err == (
        "audiokit: the cpp kernels cannot run here (no C++ compiler (c++) on PATH): running the torch ops\n"
    )


def test_missing_tools_are_named(monkeypatch, tmp_path):
    sources = cpp.SOURCES
    monkeypatch.setattr(cpp, "SOURCES", tmp_path)
    assert "kernel sources not found" in cpp.missing_tool()
    monkeypatch.setattr(cpp, "SOURCES", sources)
    monkeypatch.setattr(cpp.shutil, "which", lambda name: None)
    assert "no C++ compiler" in cpp.missing_tool()


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AUDIOKIT_KERNELS_CACHE", str(tmp_path))
    assert cpp.cache_dir() == tmp_path / f"torch-{torch.__version__}"


def test_cpp_is_opt_in(monkeypatch):
    """CPU tensors get the torch ops unless AUDIOKIT_OPS=cpp or ops.use_backend("cpp") asks."""
    monkeypatch.delenv("AUDIOKIT_OPS", raising=False)
    x = torch.zeros(1)
    assert ops.backend_for(x) == "torch"
    with ops.use_backend("cpp"):
        assert ops.backend_for(x) == ("cpp" if cpp.load() is not None else "torch")
        assert ops.backend_for(x.double()) == "torch"  # the kernels are float32
    with pytest.raises(ValueError, match="unknown backend"):
        ops.use_backend("cuda-graph").__enter__()


TINY_MODULE = """
#include <Python.h>
static struct PyModuleDef tiny = {PyModuleDef_HEAD_INIT, "audiokit_tiny_ext", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit_audiokit_tiny_ext(void) {
    PyObject *module = PyModule_Create(&tiny);
    PyModule_AddIntConstant(module, "answer", 42);
    return module;
}
"""


def _build_tiny(source: Path, folder: Path) -> subprocess.CompletedProcess:
    """``build_extension`` of the tiny module from ``source`` into ``folder`` in a fresh process (a
    process loads one module of a name; one that crashes fails the test, not the run), which prints
    the module's answer or why there is none."""
    code = (
        "from pathlib import Path; from audiokit.ops.build import build_extension; "
        f"module, why = build_extension('audiokit_tiny_ext', [Path({str(source)!r})], "
        f"Path({str(folder)!r})); "
        "print(module.answer if module else why)"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_a_build_killed_half_way_is_not_used_and_blocks_nothing(tmp_path):
    """A killed build leaves its temporary folder, with torch's lock file (on which torch's next build
    in that folder would wait forever) and a partial library: the next build builds anew beside it, and
    removes it."""
    source, folder = tmp_path / "tiny.cpp", tmp_path / "build"
    source.write_text(TINY_MODULE)
    leftover = folder / "audiokit_tiny_ext-killed.tmp"
    leftover.mkdir(parents=True)
    (leftover / "lock").write_text("")
    (leftover / "audiokit_tiny_ext.so").write_bytes(b"\x7fELF")
    done = _build_tiny(source, folder)
    assert done.returncode == 0 and done.stdout.strip() == "42", done.stderr[-2000:]
    assert not leftover.exists()


@pytest.mark.slow  # two fresh processes, each building: 9-11 s on the busy 2-core VM
def test_a_damaged_library_is_built_again_not_loaded(tmp_path):
    """A cached library cut short (an interrupted copy, a full disk) beside an intact build log made the
    next process that loaded it die of SIGBUS in dlopen. It is now checked against the byte count and
    sha256 recorded by its build, and built again, said in one line; a same-size corruption is caught
    by the sha256."""
    source, folder = tmp_path / "tiny.cpp", tmp_path / "build"
    source.write_text(TINY_MODULE)
    assert _build_tiny(source, folder).stdout.strip() == "42"
    [library] = folder.rglob("audiokit_tiny_ext.so")
    built = library.stat()
    with library.open("r+b") as file:
        file.truncate(built.st_size // 2)
    os.utime(library, ns=(built.st_atime_ns, built.st_mtime_ns))  # as a copy keeping times leaves it
    done = _build_tiny(source, folder)
    assert done.returncode == 0 and done.stdout.strip() == "42", done.stderr[-2000:]
    [line] = [line for line in done.stderr.splitlines() if "damaged" in line]
    assert f"has {built.st_size // 2} bytes" in line and library.stat().st_size == built.st_size
    with library.open("r+b") as file:
        file.seek(built.st_size // 2)
        flipped = bytes(byte ^ 0xFF for byte in file.read(64))
        file.seek(built.st_size // 2)
        file.write(flipped)
    assert "sha256 differs" in build._damage(library.parent, "audiokit_tiny_ext")


@pytest.mark.slow  # three fresh processes, two of them building: 11-13 s on the busy 2-core VM
def test_builds_of_other_sources_live_beside_each_other(tmp_path):
    """Two checkouts (or versions) sharing one kernel cache rebuilt each other's kernels every time they
    alternated: each build now has its own folder, keyed by the sources, options, compiler and torch."""
    one, two, folder = tmp_path / "one" / "tiny.cpp", tmp_path / "two" / "tiny.cpp", tmp_path / "build"
    for source, answer in ((one, "42"), (two, "43")):
        source.parent.mkdir()
        source.write_text(TINY_MODULE.replace("42", answer))
    assert _build_tiny(one, folder).stdout.strip() == "42"
    [first] = folder.rglob("audiokit_tiny_ext.so")
    built = first.stat()
    assert _build_tiny(two, folder).stdout.strip() == "43"
    assert _build_tiny(one, folder).stdout.strip() == "42"
    again = first.stat()
    assert (again.st_ino, again.st_mtime_ns) == (built.st_ino, built.st_mtime_ns)  # loaded, not rebuilt
    assert len(list(folder.rglob("audiokit_tiny_ext.so"))) == 2


def test_the_builds_last_used_are_kept(tmp_path):
    """Every key makes a folder: all but the most recently built or used of one extension go."""
    for age in range(4):
        record = tmp_path / f"audiokit_tiny_ext-{age}" / build.RECORD
        record.parent.mkdir()
        record.write_text("{}")
        os.utime(record, ns=(0, 10**18 - age))
    (tmp_path / "audiokit_other-9").mkdir()
    build._prune(tmp_path, "audiokit_tiny_ext", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audiokit_other-9",
        "audiokit_tiny_ext-0",
        "audiokit_tiny_ext-1",
    ]


def test_a_cache_that_cannot_be_written_is_a_failed_build(tmp_path):
    """A kernel cache on a read-only file system (here: a path through a file) gives no build and says
    why, so the callers use torch or numpy; it raised an OSError out of every caller (the decoding of
    an entropy-coded .akc, which uses the kernels whenever they build, failed)."""
    from audiokit.ops.build import build_extension

    blocker = tmp_path / "file"
    blocker.write_text("")
    module, why = build_extension("audiokit_tiny_ext", [tmp_path / "tiny.cpp"], blocker / "build")
    assert module is None and why.startswith(f"the kernel cache {blocker / 'build'} is not writable")
