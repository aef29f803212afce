"""`audiokit stream` and :mod:`audiokit.client` against real servers on loopback: long files within the
server's message limits, ordinary mistakes as one line (exit 1, or 2 for bad options), standard input
and output; ``serve`` options checked before any model loads; protocol details (text limit, null
model); the web page's favicon; :class:`UpsampledStream`'s lengths."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
import soundfile as sf
import torch
import websockets
from file_support import one_line_error
from file_support import run_cli as run
from serve_support import free_port, random_enhancer, running_server, speech, wait_until_serving

from audiokit import client
from audiokit.errors import UsageError
from audiokit.models.bwe import BandwidthExtender
from audiokit.serve import ServerConfig
from audiokit.serve.engines import Engine

TOKEN = "s3cret"
LSB = 1 / 32768  # 16-bit PCM, what a .wav output holds
# a float sample written as 16-bit PCM by libsndfile and read back is up to one LSB away (0.99988 LSB over
# a ramp of 200,001 values, small ones too: not a rounding to nearest); 1e-7 of float on top
PCM16_ERROR = 1.05 * LSB


@pytest.fixture(scope="module")
def enhancer(tmp_path_factory):
    model, _ = random_enhancer(tmp_path_factory.mktemp("enhancer"))
    return model


@pytest.fixture(scope="module")
def server(enhancer):
    """The default limits (200 messages/s, bursts of 400; 65536 bytes)."""
    with running_server(ServerConfig(), {"enhance-16k": Engine("enhance-16k", enhancer, 8)}) as running:
        yield running


@pytest.fixture(scope="module")
def guarded(enhancer):
    """A server with a token."""
    config = ServerConfig(token=TOKEN)
    with running_server(config, {"enhance-16k": Engine("enhance-16k", enhancer, 8)}) as running:
        yield running


def _offline(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.enhance(torch.from_numpy(x)[None, None])[0, 0].numpy()


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> tuple:
    """20 s of speech (1,000 messages of 20 ms): ``(path, samples)``."""
    x = np.concatenate([speech(7.0, 0.0), speech(7.0, 0.1), speech(6.0, 0.2)])
    path = tmp_path_factory.mktemp("clip") / "long.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    return path, x


def test_long_file_streams_within_the_default_limits(capsys, server, enhancer, long_clip, tmp_path):
    """Not paced in real time, a 20 s file goes in the largest messages the server takes; its output
    equals offline enhancement."""
    source, x = long_clip
    target = tmp_path / "out.wav"
    code, out, err = run(capsys, "stream", "-q", source, target, "--url", server.ws)
    assert (code, out, err) == (0, "", "")
    back, rate = sf.read(target, dtype="float32")
    assert rate == 16000 and back.shape == x.shape
    assert np.abs(back - _offline(enhancer, x)).max() <= PCM16_ERROR


def test_small_messages_are_paced_below_the_message_rate(server, enhancer, long_clip):
    """1,000 messages of 20 ms, as fast as allowed: the client keeps below 200 messages a second."""
    _, x = long_clip
    chunks = [x[i : i + 320] for i in range(0, x.shape[0], 320)]
    result = asyncio.run(client.stream(server.ws, chunks, 16000))
    assert result.ready["max_messages_per_second"] == 200
    assert len(result.sent) == len(chunks)
    assert result.sent[-1][0] >= (len(chunks) - 200) / 200  # at most its bursts beyond the rate
    assert np.abs(result.audio - _offline(enhancer, x)).max() < 1e-5


def test_chunk_ms_must_be_positive(capsys, long_clip, tmp_path):
    for value in ("0", "-5", "nan"):
        code, out, err = run(capsys, "stream", long_clip[0], tmp_path / "o.wav", "--chunk-ms", value)
        assert code == 2 and not out and not (tmp_path / "o.wav").exists()
        one_line_error(err, f"audiokit stream: error: argument --chunk-ms: {value} is not a positive number")
    with pytest.raises(client.UsageError, match="chunk_ms"):
        client.file_chunks(long_clip[0], 0)
    # a bitrate that is no number of kbps is refused here, not by the server once connected
    for value in ("0", "nan", "inf"):
        code, out, err = run(
            capsys, "stream", long_clip[0], tmp_path / "o.wav", "-b", value, "--task", "codec"
        )
        assert code == 2 and not out and not (tmp_path / "o.wav").exists()
        one_line_error(
            err, f"audiokit stream: error: argument -b/--bitrate: {value} is not a positive number"
        )
    code, out, err = run(
        capsys, "stream", long_clip[0], tmp_path / "o.wav", "--model-band-only", "--task", "codec"
    )
    assert code == 1 and not (tmp_path / "o.wav").exists()
    one_line_error(err, "--model-band-only: only for --task enhance (not codec)")


def test_samples_beyond_full_scale_sent_as_16_bit_pcm_are_a_warning(capsys, server, tmp_path):
    """16-bit PCM on the wire clips what lies beyond full scale: the file commands warn, so does this."""
    source = tmp_path / "loud.wav"
    sf.write(source, np.tile(np.float32([0.5, 1.5, -2.0]), 3200), 16000, subtype="FLOAT")
    code, _, err = run(
        capsys, "stream", source, tmp_path / "o.wav", "--url", server.ws, "--format", "s16le", "-q"
    )
    assert code == 0
    assert err.startswith(f"warning: {source}: 6400 sample(s) above full scale clipped") and "f32le" in err
    code, _, err = run(capsys, "stream", source, tmp_path / "p.wav", "--url", server.ws, "-q")
    assert code == 0 and f"warning: {source}:" not in err  # (the output's own clipping may be named)


@pytest.mark.parametrize(
    ("where", "options", "expected"),
    [
        # the server is named (the line named nothing), its token never
        ("guarded", (), "{ws}: server closed the stream with 4401: missing or wrong token"),
        ("guarded", ("--token", "wrong"), "{ws}: server closed the stream with 4401: missing or wrong token"),
        (
            "guarded",
            ("--url", "{ws}?token=wrong"),
            "{ws}?token=***: server closed the stream with 4401: missing or wrong token",
        ),
        (
            "server",
            ("--url", "http://127.0.0.1:1/v1/stream"),
            "http://127.0.0.1:1/v1/stream: not a WebSocket URL",
        ),
        ("server", ("--url", "notaurl"), "notaurl: not a WebSocket URL"),
        (
            "server",
            ("--url", "ws://127.0.0.1:99999/v1/stream"),
            "ws://127.0.0.1:99999/v1/stream: not a WebSocket URL (Port out of range",
        ),
        (
            "server",
            ("--url", "{http}/v2"),
            "cannot open a stream at ws://127.0.0.1:{port}/v2: the server answered",
        ),
        (  # the system's reason (asyncio's was "Connect call failed ('127.0.0.1', port)"), and a hint
            "server",
            ("--url", "ws://127.0.0.1:{free}/v1/stream"),
            "cannot open a stream at ws://127.0.0.1:{free}/v1/stream: Connection refused "
            "(is `audiokit serve` running there?)",
        ),
        (  # a password in the URL is never printed
            "server",
            ("--url", "ws://me:s3cret@127.0.0.1:{free}/v1/stream"),
            "cannot open a stream at ws://me:***@127.0.0.1:{free}/v1/stream: Connection refused",
        ),
    ],
)
def test_connection_mistakes_are_one_line(capsys, request, server, tmp_path, where, options, expected):
    running = request.getfixturevalue(where)
    port = running.ws.split(":")[2].split("/")[0]
    fill = {"http": f"ws://127.0.0.1:{port}", "port": port, "free": free_port(), "ws": running.ws}
    options = tuple(o.format(**fill) for o in options)
    if not any(o == "--url" for o in options):
        options = ("--url", running.ws, *options)
    target = tmp_path / "out.wav"
    code, out, err = run(capsys, "stream", speech_file(tmp_path), target, *options)
    assert code == 1 and not out and not target.exists()
    one_line_error(err, f"audiokit stream: error: {expected.format(**fill)}")


def speech_file(folder) -> str:
    path = folder / "in.wav"
    sf.write(path, speech(0.3), 16000)
    return str(path)


def test_the_api_raises_server_error_with_the_reason(guarded):
    with pytest.raises(client.ServerError) as caught:
        asyncio.run(client.stream(guarded.ws, [speech(0.1)], 16000, token="wrong"))
    assert caught.value.code == 4401 and caught.value.reason == "missing or wrong token"
    with pytest.raises(client.ConnectError, match="HTTP 403"):
        asyncio.run(client.stream(guarded.ws.replace("/v1/stream", "/v2"), [speech(0.1)], 16000))


def test_chunks_that_raise_end_the_stream_at_once(server):
    """A chunk source failing mid-stream (a microphone unplugged) raises its error now, not after the
    server's 30 s idle timeout (no `end` went, so no `done` would come)."""

    async def chunks():
        yield speech(0.1)
        raise OSError("microphone unplugged")

    began = time.monotonic()
    with pytest.raises(OSError, match="microphone unplugged"):
        asyncio.run(client.stream(server.ws, chunks(), 16000))
    assert time.monotonic() - began < 5


def test_chunks_of_several_channels_are_refused_not_flattened(server, enhancer):
    """A stereo chunk (``sf.read``'s ``(samples, 2)``) was flattened into one stream of twice the length,
    interleaved, and came back as garbage without a word; mono in any shape streams as ``(n,)``."""
    x = speech(0.3)
    stereo = np.stack([x, x], axis=1)
    with pytest.raises(UsageError, match=r"shape \(4800, 2\) holds several channels"):
        asyncio.run(client.stream(server.ws, [stereo], 16000))
    for mono in (x[:, None], x[None], x[None, None]):
        result = asyncio.run(client.stream(server.ws, [mono], 16000))
        assert np.abs(result.audio - _offline(enhancer, x)).max() < 1e-5


def test_one_array_is_the_whole_audio_not_its_samples_one_by_one(server, enhancer):
    """``client.stream(url, x, rate)`` with ``x`` an array, not a list of chunks: iterated, ``x`` went out
    one sample a message, paced below the server's message rate (0.1 s of audio took 9 s, an hour of
    audio days); ``(n, 1)`` rows likewise, and the rows of a stereo ``(n, 2)`` interleaved, as garbage."""
    x = speech(0.1)
    began = time.monotonic()
    for audio in (x, x[:, None], torch.from_numpy(x)):
        result = asyncio.run(client.stream(server.ws, audio, 16000))
        assert len(result.sent) == 1 and np.abs(result.audio - _offline(enhancer, x)).max() < 1e-5
    assert time.monotonic() - began < 5
    with pytest.raises(UsageError, match="several channels"):
        asyncio.run(client.stream(server.ws, np.stack([x, x], axis=1), 16000))


def test_numpy_scalars_are_taken_as_numbers(server, enhancer):
    """A rate from NumPy (``np.int64``) or a knob as ``np.float32`` went into ``json.dumps`` as they were:
    TypeError, "Object of type int64 is not JSON serializable"."""
    x = speech(0.3)
    result = asyncio.run(client.stream(server.ws, [x], np.int64(16000), dry=np.float32(0.5)))
    assert result.ready["sample_rate"] == 16000 and result.ready["dry"] == 0.5
    with torch.no_grad():
        expected = enhancer.enhance(torch.from_numpy(x)[None, None], None, 0.5)[0, 0].numpy()
    assert np.abs(result.audio - expected).max() < 1e-5


def test_stream_file_works_where_an_event_loop_runs(server, enhancer, tmp_path):
    """In a Jupyter notebook (an event loop runs in the caller's thread) `stream_file` raised
    "asyncio.run() cannot be called from a running event loop"."""
    x = speech(0.3)
    sf.write(tmp_path / "in.wav", x, 16000, subtype="FLOAT")

    async def notebook_cell() -> client.StreamResult:
        return client.stream_file(server.ws, tmp_path / "in.wav", tmp_path / "out.flac", chunk_ms=20)

    result = asyncio.run(notebook_cell())
    assert result.done["samples_out"] == x.shape[0]
    written, rate = sf.read(tmp_path / "out.flac", dtype="float32")
    assert rate == 16000 and np.abs(written - _offline(enhancer, x)).max() < PCM16_ERROR


def test_a_caller_that_gives_up_cancels_the_stream_at_once(server):
    """``asyncio.wait_for(client.stream(...), t)``: the cancel passes through the stream's clean-up (which
    waits for its sender without awaiting it, as Python 3.10's tasks have no ``cancelling()``)."""
    began = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(asyncio.wait_for(client.stream(server.ws, [speech(5.0)], 16000, realtime=True), 0.5))
    assert time.monotonic() - began < 5


def test_standard_input_to_standard_output(server, enhancer, tmp_path):
    """`audiokit stream - -`: the WAV on stdout, the summary on stderr."""
    x = speech(0.5)
    source = tmp_path / "in.wav"
    sf.write(source, x, 16000, subtype="FLOAT")
    command = [sys.executable, "-m", "audiokit", "stream", "-", "-", "--url", server.ws]
    with open(source, "rb") as stdin:
        proc = subprocess.run(command, stdin=stdin, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode() == f"stream: <stdin> -> -: {x.shape[0]} samples via {server.ws}\n"
    (tmp_path / "back.wav").write_bytes(proc.stdout)
    back, rate = sf.read(tmp_path / "back.wav", dtype="float32")
    assert rate == 16000 and np.abs(back - _offline(enhancer, x)).max() <= PCM16_ERROR


def _serve(*argv: str) -> subprocess.CompletedProcess:
    """`audiokit serve ARGV` with a model that does not exist: an option error must come first."""
    command = [sys.executable, "-m", "audiokit", "serve", "-m", "no-such-model", "--port", "0", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--threads", "0", "0 is below 1"),
        ("--max-streams", "0", "0 is below 1"),
        ("--max-streams-per-client", "-1", "-1 is below 1"),
        ("--max-message-bytes", "3", "3 is below 4"),
        ("--max-message-bytes", "x", "'x' is not a whole number"),
        ("--max-messages-per-second", "0", "0 is not a positive number"),
        ("--max-messages-per-second", "inf", "inf is not a positive number"),
        ("--idle-timeout", "-1", "-1 is not a positive number"),
        ("--drain-timeout", "-1", "-1 is not a non-negative number"),
        ("--allow-origin", "https://example.org/", "'https://example.org/' is not a web origin"),
        ("--allow-origin", "example.org", "'example.org' is not a web origin"),
        ("--allow-origin", "https://example.org/path", "'https://example.org/path' is not a web origin"),
    ],
)
def test_serve_options_are_checked_before_models_load(option, value, problem):
    proc = _serve(f"{option}={value}")
    assert proc.returncode == 2 and not proc.stdout
    one_line_error(proc.stderr, f"audiokit serve: error: argument {option}: {problem}")


def test_help_texts(capsys):
    text = " ".join(" ".join(run(capsys, command, "--help")[1].split()) for command in ("serve", "stream"))
    assert "built at start-up" in text and "first stream opens" not in text
    assert "(default: ws://127.0.0.1:8765/v1/stream)" in text


async def _exchange(url: str, messages: list[str]) -> list:
    """Send ``messages``; everything that came back, then the close code."""
    got = []
    async with websockets.connect(url) as ws:
        for message in messages:
            await ws.send(message)
        try:
            while True:
                reply = await asyncio.wait_for(ws.recv(), 10)
                got.append(reply if isinstance(reply, bytes) else json.loads(reply))
        except websockets.ConnectionClosed as exc:
            return [*got, exc.rcvd.code]


def test_text_limit_and_null_model(server):
    start = {"type": "start", "task": "enhance", "sample_rate": 16000}
    long = json.dumps({"type": "end", "pad": "x" * 5000})
    got = asyncio.run(_exchange(server.ws, [json.dumps(start), long]))
    message = f"text message of {len(long)} characters; the limit is 4096"
    assert got[1:] == [{"type": "error", "code": 1009, "message": message}, 1009]
    got = asyncio.run(
        _exchange(server.ws, [json.dumps({**start, "model": None}), json.dumps({"type": "end"})])
    )
    assert got[0]["type"] == "ready" and got[0]["model"] == "enhance-16k" and got[-1] == 1000


def test_page_has_an_icon(server):
    page = urllib.request.urlopen(server.http + "/").read().decode()
    assert '<link rel="icon" href="data:,">' in page


def test_upsampled_stream_lengths_follow_every_push():
    """Random chunks, whole hops (the steady state's fused step) and a row restarted midway: each row's
    pushes and flush, cut to ``session.lengths``, equal ``extend`` of what the row got since its start."""
    torch.manual_seed(0)
    model = BandwidthExtender.from_config("bwe-8to16").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    rng = np.random.default_rng(1)
    x = torch.randn(2, 1, 4000, generator=torch.Generator().manual_seed(2)) * 0.3
    session = model.stream(batch_size=2, input_rate=8000)
    hop = session.inner.hop_length // session.factor
    rows, starts, pos, restarted = [[], []], [0, 0], 0, False
    with torch.inference_mode():
        while pos < x.shape[-1]:  # whole hops first (steady after the first push), then any sizes
            size = hop * int(rng.integers(1, 4)) if pos < 1000 else int(rng.integers(1, 300))
            if not restarted and pos > 2000:
                session.reset(1)
                rows[1], starts[1], restarted = [], pos, True
            out = session.push(x[..., pos : pos + size])
            assert len(session.lengths) == 2 and all(n == out.shape[-1] for n in session.lengths)
            for r in (0, 1):
                rows[r].append(out[r, 0, : session.lengths[r]])
            pos += size
        tail = session.flush()
        for r in (0, 1):
            rows[r].append(tail[r, 0, : session.lengths[r]])
            expected = model.extend(x[r, :, starts[r] :], 8000)[0]
            torch.testing.assert_close(torch.cat(rows[r]), expected, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_compiled_server_exits_quietly():
    """`serve --compile aoti` (Inductor imports triton): SIGTERM, exit 0, and no "nanobind: leaked"
    lines from triton at interpreter exit (a minute or more: the compiled steps load at start-up)."""
    port = free_port()
    command = [sys.executable, "-m", "audiokit", "serve", "-q", "--compile", "aoti", "-m", "enhance-16k"]
    proc = subprocess.Popen([*command, "--port", str(port)], stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(proc, port, 600)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "nanobind" not in err, err


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_streams", 0),
        ("max_message_bytes", 3),
        ("max_messages_per_second", 0.0),
        ("idle_timeout_s", -1.0),
        ("threads", 0),
        ("drain_timeout_s", float("nan")),
    ],
)
def test_server_config_refuses_limits_no_stream_could_live_with(field, value):
    with pytest.raises(UsageError, match=f"ServerConfig.{field} must be"):
        ServerConfig(**{field: value})


def test_model_band_only_turns_the_high_band_off(capsys, server, tmp_path):
    """A 48 kHz file: by default the server keeps its band above 8 kHz (40 ms of latency);
    `--model-band-only` returns the model's band alone, 20 ms sooner."""
    source = tmp_path / "in48.wav"
    sf.write(source, np.random.default_rng(0).normal(0, 0.1, 4800).astype(np.float32), 48000, subtype="FLOAT")
    readies = {}
    for options in ((), ("--model-band-only",)):
        code, out, err = run(
            capsys, "stream", "--json", "-f", source, tmp_path / "o.wav", "--url", server.ws, *options
        )
        assert code == 0, err
        readies[options] = json.loads(out)["ready"]
    assert readies[()]["high_band"] is True and readies[()]["latency_samples"] == 1920
    band_only = readies[("--model-band-only",)]
    assert band_only["high_band"] is False and band_only["latency_samples"] == 960


def test_stream_warns_of_what_it_clipped(capsys, server, enhancer, tmp_path):
    """Output beyond full scale is clipped in the 16-bit file, with the same warning `enhance` gives."""
    x = np.clip(speech(1.0) * 8.0, -1.6, 1.6).astype(np.float32)  # loud speech, peaks at +4 dBFS
    source = tmp_path / "loud.wav"
    sf.write(source, x, 16000, subtype="FLOAT")
    beyond = int(np.count_nonzero(np.abs(_offline(enhancer, x)) > 1.0))
    assert beyond > 0
    code, out, err = run(capsys, "stream", "-q", source, tmp_path / "o.wav", "--url", server.ws)
    assert code == 0 and out == ""
    clipped = f"{beyond} sample(s) above full scale clipped; lower the input's level"
    assert err.strip() == f"warning: {tmp_path / 'o.wav'}: {clipped}"


def test_stream_reads_headerless_pcm(capsys, server, enhancer, tmp_path):
    """`--raw-rate/--raw-format/--raw-channels`, as the file commands take them: interleaved stereo at
    16 kHz streams as its mono mix, the same as the WAV of those samples, in either sample format (read
    as the other, the bytes would be loud garbage)."""
    x = speech(0.5)
    stereo = np.stack([x, 0.5 * x], axis=1)
    for raw_format, pcm in (
        ("s16le", np.round(stereo * 32767).astype("<i2")),
        ("f32le", stereo.astype("<f4")),
    ):
        source = tmp_path / f"in.{raw_format}"
        source.write_bytes(pcm.tobytes())
        options = ("--raw-rate", "16000", "--raw-format", raw_format, "--raw-channels", "2")
        target = tmp_path / f"o-{raw_format}.wav"
        code, _, err = run(capsys, "stream", source, target, *options, "--url", server.ws, "-q")
        assert code == 0, err
        back, rate = sf.read(target, dtype="float32")
        scale = 32768 if raw_format == "s16le" else 1
        mono = (pcm.astype(np.float32) / scale).mean(axis=1)
        assert rate == 16000 and back.shape == mono.shape
        assert np.abs(back - _offline(enhancer, mono)).max() <= PCM16_ERROR


def test_json_says_why_a_stream_failed(capsys, tmp_path):
    """`stream --json` that cannot reach its server: the summary still comes (``complete`` false, the
    error), one line on stderr, exit 1, no output file; the token stays redacted."""
    url = f"ws://127.0.0.1:{free_port()}/v1/stream?token=s3cret"
    target = tmp_path / "out.wav"
    code, out, err = run(capsys, "stream", "--json", speech_file(tmp_path), target, "--url", url)
    report = json.loads(out)
    assert code == 1 and report["complete"] is False and not target.exists()
    assert report["error"].startswith("cannot open a stream at ws://127.0.0.1:") and "s3cret" not in out
    one_line_error(err, f"audiokit stream: error: {report['error']}")


def test_a_drain_warning_counts_the_samples_the_server_took(capsys, enhancer, tmp_path):
    """Drained while a long file streams faster than real time: the stream is incomplete and the warning
    counts the samples the server took (``done``'s ``samples_in``: the output's length). Was: once the
    client had written the whole file and ``end`` to its socket (which holds megabytes), exit 0 with no
    warning and ``"complete": true`` over an output cut short; else a count of what it had written
    ("the first 127360 of 480000 samples" over an output of 127,040)."""
    x = np.tile(speech(1.0), 120)  # 7.7 MB of f32le: the socket holds far more than the server reads
    source, target = tmp_path / "long.wav", tmp_path / "out.wav"
    sf.write(source, x, 16000, subtype="FLOAT")
    engines = {"enhance-16k": Engine("enhance-16k", enhancer, 8)}
    with running_server(ServerConfig(), engines) as running:
        scheduler = running.state.schedulers["enhance-16k"]

        def drain_once_a_second_is_taken() -> None:
            deadline = time.monotonic() + 60
            while not any(stream.received_in >= 16000 for stream in list(scheduler.streams)):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.002)
            asyncio.run_coroutine_threadsafe(running.state.drain(), scheduler._task.get_loop())

        threading.Thread(target=drain_once_a_second_is_taken, daemon=True).start()
        code, out, err = run(capsys, "stream", "-q", source, target, "--url", running.ws)
    got = sf.read(target, dtype="float32")[0].shape[0]
    assert code == 0 and out == "" and 16000 <= got < x.shape[0], err
    assert err == (
        f"audiokit stream: warning: {running.ws} ended the stream early (draining): {target} holds what it "
        f"made of the first {got} of {x.shape[0]} samples\n"
    )


def test_connection_failures_name_the_reason_of_their_kind():
    """asyncio's "Connect call failed (...)" gives way to the system's reason, but a name lookup's or a
    TLS failure's errno is no system error number (os.strerror(-2) is "Unknown error -2")."""
    import errno
    import socket
    import ssl

    refused = OSError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 9)")
    assert client._connect_failure(refused) == "Connection refused (is `audiokit serve` running there?)"
    assert client._connect_failure(OSError(errno.EHOSTUNREACH, "Connect call failed")) == "No route to host"
    lookup = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert client._connect_failure(lookup) == "Name or service not known"
    tls = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert "CERTIFICATE_VERIFY_FAILED" in client._connect_failure(tls)


@pytest.mark.parametrize("rate", [3000, 200_000])
def test_a_rate_no_server_streams_is_refused_before_connecting(capsys, server, tmp_path, rate):
    """A 3 kHz or 200 kHz file reached the server, whose refusal named no file: "server closed the stream
    with 4400: sample_rate must be an integer in 4000..192000 Hz"."""
    source = tmp_path / f"r{rate}.wav"
    sf.write(source, np.zeros(rate // 10, np.float32), rate)
    code, out, err = run(capsys, "stream", source, tmp_path / "o.wav", "--url", server.ws)
    assert code == 1 and not out and not (tmp_path / "o.wav").exists()
    one_line_error(err, f"audiokit stream: error: {source}: {rate} Hz is outside the 4000..192000 Hz")
