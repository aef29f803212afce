"""Bad `audiokit bench` and `audiokit serve` options are one line on stderr and a non-zero exit, before
any benchmark runs or any model loads; a port in use or a host that is not this machine's is one line
naming host:port and the reason (exit 1); `serve --help` names what it serves by default."""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

import audiokit.cli.bench as bench_cli
from audiokit.cli import build_parser, main
from audiokit.threads import MAX_THREADS


def _one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, err)


@pytest.fixture
def no_benchmark(monkeypatch):
    """Any benchmark that starts fails the test at once (rather than running for minutes)."""

    def ran(**_):
        raise AssertionError("the benchmark ran")

    monkeypatch.setattr(bench_cli, "run_benchmark", ran)
    monkeypatch.setattr(bench_cli, "run_device_kernel_benchmark", ran)


@pytest.mark.parametrize(
    "argv",
    [
        ["--seconds", "0"],
        ["--seconds", "-1"],
        ["--seconds", "1e-9"],
        ["--seconds", "nan"],
        ["--seconds", "inf"],
        ["--repeats", "0"],
        ["--threads", "0"],
        ["--threads", str(MAX_THREADS + 1)],
        ["--frames", "0"],
        ["--streams", "0"],
        ["--streams", "16", "-4"],
        ["--device", "tpu"],
        ["--device", "cuda:x"],
    ],
)
def test_bad_bench_options_are_usage_errors(capsys, no_benchmark, argv):
    code = main(["bench", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and not out
    _one_line(err, f"audiokit bench: error: argument {argv[0]}: ", argv[-1])


@pytest.mark.parametrize("threads", ["0", "-1", str(MAX_THREADS + 1)])
def test_speed_scripts_refuse_a_bad_thread_count(threads):
    """`make bench`'s speed scripts: one usage line, exit 2 (not torch's traceback once the model loaded)."""
    script = ROOT / "benchmarks" / "bench_bwe.py"
    done = subprocess.run(
        [sys.executable, str(script), "--threads", threads, "--out", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.splitlines()[-1].startswith("bench_bwe.py: error: argument --threads: "), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "argv",
    [["--threads", "0"], ["--repeats", "0"], ["--batch", "0"], ["--seconds", "0"], ["--seconds", "nan"]],
)
def test_frontends_speed_refuses_bad_numbers(argv):
    """`make bench`'s front-end speed script: one usage line, exit 2 (not a traceback from torch,
    statistics or DiffSTFT once measuring began)."""
    script = ROOT / "benchmarks" / "frontends_speed.py"
    done = subprocess.run(
        [sys.executable, str(script), *argv, "--out", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2 and not done.stdout
    assert done.stderr.splitlines()[-1].startswith(f"frontends_speed.py: error: argument {argv[0]}: ")
    assert "Traceback" not in done.stderr


def test_the_thread_limit_has_one_home():
    """The commands and the speed scripts (which may not import the CLI) take ``MAX_THREADS`` from
    :mod:`audiokit.threads`; no other module defines its own."""
    defining = []
    for path in sorted([*(ROOT / "audiokit").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if any(isinstance(t, ast.Name) and t.id == "MAX_THREADS" for t in targets):
                defining.append(str(path.relative_to(ROOT)))
    assert defining == ["audiokit/threads.py"]


@pytest.mark.parametrize("device", ["cuda:99", "cuda"])
def test_a_gpu_torch_does_not_see_is_one_line(capsys, no_benchmark, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    assert main(["bench", "--device", device]) == 1
    _one_line(capsys.readouterr().err, f"audiokit bench: error: --device {device}: torch sees ")


def test_a_folder_as_bench_out_is_refused_before_measuring(tmp_path):
    """Found at once, not after the minutes the benchmark takes (10 min of audio: minutes of RNNoise alone,
    so the timeout stands for the check's absence)."""
    argv = [sys.executable, "-m", "audiokit", "bench", "-m", "enhance-16k", "--seconds", "600"]
    argv += ["--out", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    _one_line(done.stderr, "audiokit bench: error: ", f"{tmp_path}: is a directory")


def test_an_existing_bench_out_needs_force_and_is_refused_before_measuring(tmp_path):
    """Like every other output: an earlier result is not overwritten without -f (the same 10 minutes of
    audio as above, so the timeout stands for the check coming late)."""
    earlier = tmp_path / "result.json"
    earlier.write_text('{"earlier": true}')
    argv = [sys.executable, "-m", "audiokit", "bench", "-m", "enhance-16k", "--seconds", "600"]
    done = subprocess.run([*argv, "--out", str(earlier)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    _one_line(done.stderr, "audiokit bench: error: ", f"{earlier}: already exists; pass -f/--force")
    assert earlier.read_text() == '{"earlier": true}'


@pytest.mark.parametrize("port", ["70000", "-1", "65536"])
def test_bad_port_is_a_usage_error(capsys, port):
    code = main(["serve", "--port", port])
    out, err = capsys.readouterr()
    assert code == 2 and not out
    _one_line(err, f"audiokit serve: error: argument --port: {port} is not a TCP port (0 to 65535")


def _serve(*argv: str) -> subprocess.CompletedProcess:
    """`audiokit serve ARGV` in its own process (it must fail, not serve: 60 s at most)."""
    command = [sys.executable, "-m", "audiokit", "serve", "-m", "speech-16k", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_port_in_use_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve("--port", str(port))
    assert proc.returncode == 1 and not proc.stdout
    _one_line(proc.stderr, f"audiokit serve: error: cannot listen on 127.0.0.1:{port}: ", "in use")


@pytest.mark.parametrize("host", ["999.1.1.1", "192.0.2.1"])  # not an address; not this machine's
def test_bad_host_is_one_line(host):
    proc = _serve("--host", host, "--port", "8765")
    assert proc.returncode == 1 and not proc.stdout
    _one_line(proc.stderr, f"audiokit serve: error: cannot listen on {host}:8765: ")


def test_serve_help_names_what_is_served(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: every shipped codec and enhancer" in text
    assert not re.search(r"every shipped model\b", text)


def test_an_unknown_bench_model_is_named_like_elsewhere(capsys, no_benchmark, tmp_path):
    """Not "unknown codec config": -m takes every family's names and weights files."""
    assert main(["bench", "-m", "nosuch"]) == 1
    _one_line(
        capsys.readouterr().err,
        "audiokit bench: error: nosuch: no such model file, and not a known model name",
    )
    (tmp_path / "junk.safetensors").write_bytes(b"")
    assert main(["bench", "-m", str(tmp_path / "junk.safetensors")]) == 1
    _one_line(
        capsys.readouterr().err,
        f"audiokit bench: error: {tmp_path / 'junk.safetensors'}: no readable model config",
    )
    (tmp_path / "notes.md").write_text("not weights")  # it read "notes.json: config not found"
    assert main(["bench", "-m", str(tmp_path / "notes.md")]) == 1
    _one_line(capsys.readouterr().err, f"audiokit bench: error: {tmp_path / 'notes.md'}: not a model: ")


@pytest.mark.parametrize(
    "script, model", [("bench_codec.py", "nosuch-model"), ("bench_enhancer.py", "speech-16k")]
)
def test_speed_scripts_name_a_bad_model_in_one_line(script, model):
    """`make bench`'s speed scripts: a model that is not there (or of another family) is one error line,
    exit 1, not a ModelError traceback."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "-m", model, "--out", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1 and not done.stdout, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"{script}: error: "), done.stderr
    assert model in done.stderr
