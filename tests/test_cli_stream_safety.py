"""`audiokit stream` (the server's client) keeps the CLI's rules against a real server on loopback: no
output onto its input, no existing output replaced without -f, both refused before anything is
streamed; an interrupted stream exits 128 + the signal with one line and no output, even when a second
signal comes while the WebSocket closes (a double Ctrl-C; `timeout -s INT` signals twice)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
from conftest import SAMPLES
from file_support import one_line_error as _one_line_error
from file_support import run_cli as _run
from serve_support import free_port, random_enhancer, running_server, wait_until_serving

from audiokit import io
from audiokit.serve import ServerConfig
from audiokit.serve.engines import Engine

CLIP = SAMPLES / "speech_fr_16k_a.flac"  # 7.2 s: long enough to interrupt in real time


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model, _ = random_enhancer(tmp_path_factory.mktemp("enhancer"))
    with running_server(ServerConfig(), {"enhance-16k": Engine("enhance-16k", model, 8)}) as running:
        yield running


def _streamed(server) -> float:
    """Samples the server has received so far."""
    return (
        server.state.metrics.registry.get_sample_value("audiokit_samples_in_total", {"model": "enhance-16k"})
        or 0.0
    )


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if io.TEMP_NAME.match(p.name)]


def test_stream_onto_its_input_is_refused_before_streaming(capsys, server, tmp_path):
    victim = tmp_path / "victim.flac"
    shutil.copy(CLIP, victim)
    link = tmp_path / "link.flac"
    link.symlink_to(victim)
    before, streamed = victim.read_bytes(), _streamed(server)
    for output, force in ((victim, ()), (victim, ("-f",)), (link, ("--force",))):
        code, out, err = _run(capsys, "stream", victim, output, "--url", server.ws, *force)
        assert code == 1 and not out
        _one_line_error(err, f"{output}: the output would overwrite the input {victim}")
    assert victim.read_bytes() == before and link.is_symlink() and not _temps(tmp_path)
    assert _streamed(server) == streamed  # refused before connecting


def test_existing_output_needs_force(capsys, server, tmp_path):
    target = tmp_path / "out.wav"
    target.write_bytes(b"keep me")
    streamed = _streamed(server)
    code, out, err = _run(capsys, "stream", CLIP, target, "--url", server.ws)
    assert code == 1 and not out
    _one_line_error(err, f"{target}: already exists; pass -f/--force to overwrite")
    assert target.read_bytes() == b"keep me" and _streamed(server) == streamed
    code, out, err = _run(capsys, "stream", "-q", "-f", CLIP, target, "--url", server.ws)
    assert code == 0 and not out and not err
    info, source = sf.info(str(target)), sf.info(str(CLIP))
    assert (info.samplerate, info.frames) == (source.samplerate, source.frames)
    assert _streamed(server) == streamed + source.frames and not _temps(tmp_path)


def _health(port: int) -> dict:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read())


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    """`audiokit serve` (a random enhancer) in its own process, which a test can stop: ``(process, port)``."""
    _, weights = random_enhancer(tmp_path_factory.mktemp("served"))
    port = free_port()
    command = [sys.executable, "-m", "audiokit", "serve", "-q", "-m", str(weights), "--port", str(port)]
    served = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(served, port, 60)
        yield served, port
    finally:
        served.kill()
        served.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_second_signal_while_the_stream_closes_is_ignored(server_process, tmp_path, signum):
    """A signal mid-stream, then another while the client waits for the server to close the WebSocket
    (the server is stopped meanwhile): one line, exit 128 + the signal, no output, no asyncio
    tracebacks."""
    served, port = server_process
    output = tmp_path / "out.wav"
    command = [sys.executable, "-m", "audiokit", "stream", str(CLIP), str(output), "--realtime"]
    proc = subprocess.Popen(
        [*command, "--url", f"ws://127.0.0.1:{port}/v1/stream"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while _health(port)["live_streams"] < 1:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the stream did not start"
            time.sleep(0.05)
        served.send_signal(signal.SIGSTOP)  # the close handshake now waits for the server
        try:
            proc.send_signal(signum)
            time.sleep(1.0)
            proc.send_signal(signum)
            time.sleep(0.2)
        finally:
            served.send_signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum
    assert err == f"audiokit stream: interrupted ({signal.Signals(signum).name})\n" and not out
    assert not output.exists() and not _temps(tmp_path)


def test_the_token_can_come_from_the_environment(tmp_path, capsys, monkeypatch):
    """`--token` showed the secret in `ps` and `docker inspect`; $AUDIOKIT_TOKEN is now its default on
    both sides: a server started with it refuses a client without it, and a client with it streams."""
    _, weights = random_enhancer(tmp_path)
    port = free_port()
    command = [sys.executable, "-m", "audiokit", "serve", "-q", "-m", str(weights), "--port", str(port)]
    environment = {**os.environ, "AUDIOKIT_TOKEN": "s3"}
    served = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        wait_until_serving(served, port, 60)
        url = ["--url", f"ws://127.0.0.1:{port}/v1/stream"]
        monkeypatch.delenv("AUDIOKIT_TOKEN", raising=False)
        code, _, err = _run(capsys, "stream", "-q", CLIP, tmp_path / "a.wav", *url)
        assert code == 1 and "4401" in err and not (tmp_path / "a.wav").exists()
        monkeypatch.setenv("AUDIOKIT_TOKEN", "s3")
        code, _, err = _run(capsys, "stream", "-q", CLIP, tmp_path / "b.wav", *url)
        assert (code, err) == (0, "") and sf.info(str(tmp_path / "b.wav")).frames == sf.info(str(CLIP)).frames
    finally:
        served.kill()
        served.wait()


def test_health_probes_stay_out_of_the_access_log(tmp_path):
    """Docker's HEALTHCHECK asks /healthz every 30 s, and each probe was an access-log line; answered
    probes are now left out, other requests are logged as before."""
    _, weights = random_enhancer(tmp_path)
    port = free_port()
    command = [sys.executable, "-m", "audiokit", "serve", "-m", str(weights), "--port", str(port)]
    served = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_serving(served, port, 60)
        for _ in range(3):
            assert _health(port)["status"] == "ok"
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        served.send_signal(signal.SIGTERM)
        log, _ = served.communicate(timeout=60)
    assert '"GET /metrics HTTP/1.1" 200' in log and "/healthz" not in log, log
