"""Soak test of ``audiokit serve``: N connect/stream/drop cycles against a real server process on loopback,
its memory sampled; saved to ``benchmarks/results/server_soak.json``.

Usage: ``python benchmarks/server_soak.py --cycles N [--model speech-16k|enhance-16k|PATH] [--out FILE]``.
The server runs as its own process (``audiokit serve``, one torch thread). Cycle ``i`` is one client of a
rotating mix (a few at a time):

* ``normal``: ``start`` (rotating rate, format and bitrate), five 20 ms messages of real speech (the
  samples/ clips), ``end``; it must get all its audio back, ``done`` and 1000;
* ``drop``: ``start`` and some audio, then the TCP connection is dropped without a close handshake
  (right away, after the first output, or just after ``end``);
* ``junk``: invalid JSON, binary before ``start``, an odd-length ``s16le`` message, an unknown model,
  NaN samples, a second ``start``, an over-long text or binary message; it must get the JSON ``error``
  and the close code of docs/server.md;
* ``prestart``: connects, then goes (a clean close or a dropped connection) before ``start``.

The server's resident memory (VmRSS in /proc) is sampled every ``--sample-every`` cycles once the
``--warmup`` cycles have run; reported: RSS at the warm-up and at the end, its growth per 100 cycles (a
least-squares slope over the samples), open file descriptors and threads, the close codes the clients
saw and the server counted (``/metrics``), and every failure: a wrong or missing code, a normal stream
short of audio, the server dying or logging a traceback, ``/healthz`` not green with 0 live streams at
the end, close counts that do not add up to the cycles, or a server not exiting 0 on SIGTERM.
``--max-growth-kib`` makes growth over that bound a failure too. Bounded: at most ``--max-seconds`` in
all and 30 s per cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import websockets

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
KINDS = ("normal", "drop", "junk", "prestart")
MESSAGES = 5  # audio messages of a normal stream
MESSAGE_MS = 20
CYCLE_TIMEOUT_S = 30.0
MAX_MESSAGE_BYTES = 65536  # the server's default, which it runs with here
FD_SLACK, THREAD_SLACK = 8, 2
"""Open files and threads the server may hold at the end beyond those after the warm-up (a leak of
either grows with the cycles)."""
NORMAL_VARIANTS = (  # (sample rate, format, codec bitrate)
    (16000, "f32le", 6000),
    (16000, "s16le", 3000),
    (48000, "f32le", 1500),
)
DROP_VARIANTS = ("after_audio", "after_output", "after_end")
PRESTART_VARIANTS = ("close", "abort")
JUNK_VARIANTS = {  # name: (documented close code, whether a JSON error precedes the close)
    "invalid_json": (4400, True),
    "binary_before_start": (4400, True),
    "odd_length_s16le": (4400, True),
    "unknown_model": (4400, True),
    "nan_f32le": (4400, True),
    "second_start": (4400, True),
    "text_too_long": (1009, True),
    "binary_too_big": (1009, True),
}
SERVER_CODES_OF = {"normal": {"1000"}, "drop": {"1000", "1005", "1006"}, "prestart": {"1000", "1005", "1006"}}
"""Close codes the server may count for a cycle of each kind (a dropped TCP connection is 1005 in
uvicorn, 1006 when the server notices it while sending; a stream dropped just after ``end`` may have
finished first: 1000); a junk cycle's is its documented code."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def speech(rate: int) -> np.ndarray:
    """Real speech from samples/ at ``rate`` Hz (the 16 kHz clips joined, or the 48 kHz one), mono."""
    from audiokit import io

    if rate == 48000:
        return io.load(ROOT / "samples" / "speech_en_48k.wav", sample_rate=rate, channels=1)[0][0].numpy()
    clips = sorted(ROOT.glob("samples/speech_*_16k_*.flac"))
    return np.concatenate([io.load(p, sample_rate=rate, channels=1)[0][0].numpy() for p in clips])


def encode(samples: np.ndarray, fmt: str) -> bytes:
    if fmt == "s16le":
        return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
    return np.asarray(samples, "<f4").tobytes()


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (``VmRSS`` of /proc/PID/status)."""
    return int(re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)[1])


def threads(pid: int) -> int:
    return int(re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)[1])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def growth_per_100(samples: list[tuple[int, int]]) -> float | None:
    """Least-squares slope of RSS (KiB) over cycles, per 100 cycles (None with fewer than 2 samples)."""
    if len(samples) < 2:
        return None
    cycles, kib = np.array(samples, np.float64).T
    return float(100 * np.polyfit(cycles, kib, 1)[0])


def metric_by_label(text: str, name: str, label: str) -> dict[str, float]:
    """``{label value: sample}`` of metric ``name`` in Prometheus text."""
    pattern = rf'^{re.escape(name)}{{[^}}]*{label}="([^"]*)"[^}}]*}} ([0-9.e+-]+)$'
    return {m[0]: float(m[1]) for m in re.findall(pattern, text, re.M)}


@dataclass
class Tally:
    """What the clients saw."""

    kinds: Counter = field(default_factory=Counter)
    variants: Counter = field(default_factory=Counter)
    client_codes: Counter = field(default_factory=Counter)
    expected_server_codes: Counter = field(default_factory=Counter)  # the junk cycles' documented codes
    samples_read: int = 0  # input samples the server surely read (normal streams, audio before junk)
    samples_maybe: int = 0  # input samples of dropped streams (read or not)
    normal_samples: int = 0
    failures: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, url: str, model: dict, tally: Tally) -> None:
        self.url = url
        self.model = model  # the served model as /healthz lists it
        self.tally = tally
        self.audio = {rate: speech(rate) for rate in {rate for rate, _, _ in NORMAL_VARIANTS}}

    def start_message(self, rate: int = 16000, fmt: str = "f32le", bitrate: float = 6000, **change) -> str:
        start = {"type": "start", "task": self.model["task"], "model": self.model["name"]}
        start |= {"sample_rate": rate, "format": fmt}
        if self.model["task"] == "codec":
            low, high = self.model["bitrates"][0], self.model["bitrates"][-1]
            start["bitrate"] = min(max(bitrate, low), high)
        return json.dumps(start | change)

    def chunks(self, cycle: int, rate: int, count: int = MESSAGES) -> list[np.ndarray]:
        """``count`` 20 ms messages of speech at ``rate``, from an offset that moves with ``cycle``."""
        audio, step = self.audio[rate], rate * MESSAGE_MS // 1000
        start = (cycle * 7919 * step) % (audio.shape[0] - count * step)
        return [audio[start + i * step : start + (i + 1) * step] for i in range(count)]

    async def cycle(self, i: int) -> None:
        kind = KINDS[i % len(KINDS)]
        n = i // len(KINDS)
        self.tally.kinds[kind] += 1
        try:
            await asyncio.wait_for(getattr(self, kind)(i, n), CYCLE_TIMEOUT_S)
        except Exception as exc:  # every way a cycle fails is a finding
            self.tally.failures.append(f"cycle {i} ({kind}): {type(exc).__name__}: {exc}")

    async def normal(self, i: int, n: int) -> None:
        rate, fmt, bitrate = NORMAL_VARIANTS[n % len(NORMAL_VARIANTS)]
        self.tally.variants[f"normal_{rate}_{fmt}"] += 1
        chunks = self.chunks(i, rate)
        sent = sum(c.shape[0] for c in chunks)
        async with websockets.connect(self.url, max_size=None) as ws:
            await ws.send(self.start_message(rate, fmt, bitrate))
            ready = json.loads(await ws.recv())
            if ready.get("type") != "ready":
                raise AssertionError(f"expected ready, got {ready}")
            for chunk in chunks:
                await ws.send(encode(chunk, fmt))
            await ws.send(json.dumps({"type": "end"}))
            got, done = 0, None
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:
                    reply = await ws.recv()
                    if isinstance(reply, bytes):
                        got += len(reply) // (2 if fmt == "s16le" else 4)
                    else:
                        done = json.loads(reply)
            code = ws.close_code
        self.tally.client_codes[str(code)] += 1
        self.tally.samples_read += sent
        self.tally.normal_samples += sent
        if code != 1000 or done is None or done.get("type") != "done":
            raise AssertionError(f"expected done and 1000, got {done} and {code}")
        if not got == sent == done["samples_in"] == done["samples_out"]:
            raise AssertionError(f"sent {sent} samples, got {got} back, done says {done}")

    async def drop(self, i: int, n: int) -> None:
        variant = DROP_VARIANTS[n % len(DROP_VARIANTS)]
        self.tally.variants[f"drop_{variant}"] += 1
        chunks = self.chunks(i, 16000, 3 if variant == "after_audio" else MESSAGES)
        ws = await websockets.connect(self.url, max_size=None)
        try:
            await ws.send(self.start_message())
            await ws.recv()  # ready
            for chunk in chunks:
                await ws.send(encode(chunk, "f32le"))
            self.tally.samples_maybe += sum(c.shape[0] for c in chunks)
            if variant == "after_output":
                while not isinstance(await ws.recv(), bytes):
                    pass
            elif variant == "after_end":
                await ws.send(json.dumps({"type": "end"}))
                await asyncio.sleep(0.002 * (n % 8))  # land anywhere in the server's flush
        finally:
            ws.transport.abort()  # no close handshake: the client is just gone
        self.tally.client_codes["dropped"] += 1

    async def junk(self, i: int, n: int) -> None:
        variant = list(JUNK_VARIANTS)[n % len(JUNK_VARIANTS)]
        code, with_json = JUNK_VARIANTS[variant]
        self.tally.variants[f"junk_{variant}"] += 1
        self.tally.expected_server_codes[str(code)] += 1
        audio = [encode(c, "f32le") for c in self.chunks(i, 16000, 2)]
        messages: list[str | bytes] = {
            "invalid_json": ['{"type": "start", "task": '],
            "binary_before_start": audio[:1],
            "odd_length_s16le": [
                self.start_message(fmt="s16le"),
                encode(self.chunks(i, 16000, 1)[0], "s16le"),
                b"\x01\x02\x03",
            ],
            "unknown_model": [self.start_message(model="no-such-model")],
            "nan_f32le": [self.start_message(), *audio, np.full(160, np.nan, "<f4").tobytes()],
            "second_start": [self.start_message(), *audio, self.start_message()],
            "text_too_long": [" " * 5000],
            "binary_too_big": [self.start_message(), bytes(MAX_MESSAGE_BYTES + 4)],
        }[variant]
        read = {"odd_length_s16le": 320, "nan_f32le": 640, "second_start": 640}.get(variant, 0)
        error, closed = None, None
        async with websockets.connect(self.url, max_size=None) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):  # refused before all was sent
                for message in messages:
                    await ws.send(message)
            try:
                while True:
                    reply = await ws.recv()
                    if isinstance(reply, str) and json.loads(reply).get("type") == "error":
                        error = json.loads(reply)
            except websockets.ConnectionClosed as exc:
                closed = exc.rcvd.code if exc.rcvd else None
        self.tally.client_codes[str(closed)] += 1
        self.tally.samples_read += read
        if closed != code:
            raise AssertionError(f"{variant}: expected close {code}, got {closed}")
        if with_json and (error is None or error.get("code") != code or not error.get("message")):
            raise AssertionError(f"{variant}: expected a JSON error with code {code}, got {error}")

    async def prestart(self, i: int, n: int) -> None:
        variant = PRESTART_VARIANTS[n % len(PRESTART_VARIANTS)]
        self.tally.variants[f"prestart_{variant}"] += 1
        ws = await websockets.connect(self.url)
        if variant == "close":
            await ws.close()
        else:
            ws.transport.abort()
        self.tally.client_codes["left_before_start"] += 1


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_healthy(server: subprocess.Popen, base: str, log: Path) -> dict:
    deadline = time.monotonic() + 120
    while True:
        try:
            return json.loads(urllib.request.urlopen(f"{base}/healthz", timeout=1).read())
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)


def serve_spec(model: str, tmp: Path) -> str:
    """What ``audiokit serve -m`` gets: ``model``, or untrained ``enhance-16k`` weights while none are
    shipped (the same compute and memory)."""
    from audiokit.models.base import shipped_names

    if model != "enhance-16k" or model in shipped_names():
        return model
    import torch

    from audiokit.models.enhancer import Enhancer

    torch.manual_seed(0)
    return str(Enhancer.from_config("enhance-16k").eval().save_pretrained(tmp / "enhancer.safetensors"))


def run(args, spec: str, log: Path) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "audiokit", "serve", "-q", "-m", spec, "--port", str(port)]
    command += ["--max-streams-per-client", "64"]  # every client is 127.0.0.1
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    base, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/stream"
    tally = Tally()
    rss: list[tuple[int, int]] = []
    with log.open("w") as log_file:
        server = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    began = time.perf_counter()
    try:
        health = wait_healthy(server, base, log)
        served = health["models"][0]
        soak = Soak(url, served, tally)
        warm = {}
        done, deadline = 0, time.monotonic() + args.max_seconds
        cycle_began = time.perf_counter()

        async def batch(first: int, count: int) -> None:
            gate = asyncio.Semaphore(args.concurrency)

            async def one(i: int) -> None:
                async with gate:
                    await soak.cycle(i)

            await asyncio.gather(*[one(i) for i in range(first, first + count)])

        while done < args.cycles:
            if time.monotonic() > deadline:
                tally.failures.append(f"time limit: {args.max_seconds:g} s after {done} cycles")
                break
            count = min(args.sample_every, args.cycles - done)
            asyncio.run(batch(done, count))
            done += count
            if server.poll() is not None:
                tally.failures.append(f"the server died (exit {server.returncode}) by cycle {done}")
                break
            if done >= args.warmup:
                if not warm:
                    warm = {"cycle": done, "fds": open_fds(server.pid), "threads": threads(server.pid)}
                rss.append((done, rss_kib(server.pid)))
        cycle_wall = time.perf_counter() - cycle_began
        end = finish(server, base, tally, done)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    wall = time.perf_counter() - began
    return report(args, spec, served, tally, done, rss, warm, end, wall, cycle_wall, log)


def finish(server: subprocess.Popen, base: str, tally: Tally, cycles: int) -> dict:
    """The end checks: live streams back to 0, /healthz green, /metrics adding up, SIGTERM -> exit 0."""
    end: dict = {}
    if server.poll() is not None:
        return end
    deadline = time.monotonic() + 10  # dropped streams are freed asynchronously
    while True:
        status, body = get(f"{base}/healthz")
        health = json.loads(body)
        if health["live_streams"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    end |= {"fds": open_fds(server.pid), "threads": threads(server.pid), "rss_kib": rss_kib(server.pid)}
    end["healthz"] = {
        "status_code": status,
        "status": health["status"],
        "live_streams": health["live_streams"],
    }
    if status != 200 or health["status"] != "ok" or health["live_streams"] != 0:
        tally.failures.append(f"/healthz at the end: {status} {health}")
    text = get(f"{base}/metrics")[1]
    codes = {code: int(v) for code, v in metric_by_label(text, "audiokit_closes_total", "code").items()}
    live = metric_by_label(text, "audiokit_streams_live", "model")
    samples_in = sum(metric_by_label(text, "audiokit_samples_in_total", "model").values())
    samples_out = sum(metric_by_label(text, "audiokit_samples_out_total", "model").values())
    end["metrics"] = {
        "closes_total": dict(sorted(codes.items())),
        "streams_live": live,
        "samples_in_total": int(samples_in),
        "samples_out_total": int(samples_out),
    }
    if sum(codes.values()) != cycles:
        tally.failures.append(f"/metrics counts {sum(codes.values())} closes for {cycles} cycles: {codes}")
    for code, count in tally.expected_server_codes.items():
        if codes.get(code, 0) != count:
            tally.failures.append(f"/metrics counts {codes.get(code, 0)} closes {code}, expected {count}")
    others = sum(v for c, v in codes.items() if c not in tally.expected_server_codes)
    expected_others = cycles - sum(tally.expected_server_codes.values())
    allowed = set().union(*SERVER_CODES_OF.values())
    if others != expected_others or not set(codes) <= allowed | set(tally.expected_server_codes):
        tally.failures.append(f"/metrics close codes {codes} do not match the cycles' kinds")
    if codes.get("1000", 0) < tally.kinds["normal"]:
        tally.failures.append(
            f"/metrics counts {codes.get('1000', 0)} closes 1000 for {tally.kinds['normal']} normal streams"
        )
    if any(v != 0 for v in live.values()):
        tally.failures.append(f"audiokit_streams_live at the end: {live}")
    if not tally.samples_read <= samples_in <= tally.samples_read + tally.samples_maybe:
        tally.failures.append(
            f"audiokit_samples_in_total {samples_in:g}, expected {tally.samples_read}.."
            f"{tally.samples_read + tally.samples_maybe}"
        )
    if samples_out < tally.normal_samples:
        tally.failures.append(
            f"audiokit_samples_out_total {samples_out:g} < {tally.normal_samples} sent back"
        )
    server.send_signal(signal.SIGTERM)
    try:
        end["exit_code_after_sigterm"] = server.wait(60)
    except subprocess.TimeoutExpired:
        end["exit_code_after_sigterm"] = None
    if end["exit_code_after_sigterm"] != 0:
        tally.failures.append(f"exit code after SIGTERM: {end['exit_code_after_sigterm']}")
    return end


def report(args, spec, served, tally, cycles, rss, warm, end, wall, cycle_wall, log: Path) -> dict:
    from audiokit.provenance import run_info

    logged = log.read_text()
    tracebacks = logged.count("Traceback")
    if tracebacks:
        tally.failures.append(f"the server logged {tracebacks} tracebacks: {logged[-1500:]}")
    if server_errors := [line for line in logged.splitlines() if re.search(r"\bERROR\b|Exception", line)]:
        tally.failures.append(f"the server logged errors: {server_errors[:5]}")
    if warm and end.get("fds") is not None and end["fds"] > warm["fds"] + FD_SLACK:
        tally.failures.append(f"open file descriptors grew from {warm['fds']} to {end['fds']}")
    if warm and end.get("threads") is not None and end["threads"] > warm["threads"] + THREAD_SLACK:
        tally.failures.append(f"threads grew from {warm['threads']} to {end['threads']}")
    growth = growth_per_100(rss)
    if args.max_growth_kib is not None and growth is not None and growth > args.max_growth_kib:
        tally.failures.append(f"RSS grows {growth:.0f} KiB per 100 cycles (bound {args.max_growth_kib:g})")
    if cycles < args.cycles:
        tally.failures.append(f"only {cycles} of {args.cycles} cycles ran")
    result = {
        "model": served["name"] if spec == served["name"] else f"{served['name']} (untrained weights)",
        "task": served["task"],
        "cycles": cycles,
        "concurrency": args.concurrency,
        "cycles_by_kind": dict(tally.kinds),
        "cycles_by_variant": dict(sorted(tally.variants.items())),
        "wall_seconds": wall,
        "cycle_seconds": cycle_wall,
        "cycles_per_second": cycles / cycle_wall if cycle_wall else None,
        "warmup_cycles": warm.get("cycle"),
        "rss_kib": {
            "warmup": rss[0][1] if rss else None,
            "end": rss[-1][1] if rss else None,
            "max": max(k for _, k in rss) if rss else None,
            "after_drain": end.get("rss_kib"),
            "samples": rss,
        },
        "rss_growth_kib_per_100_cycles": growth,
        "max_growth_kib_per_100_cycles": args.max_growth_kib,
        "open_fds": {"warmup": warm.get("fds"), "end": end.get("fds")},
        "threads": {"warmup": warm.get("threads"), "end": end.get("threads")},
        "client_close_codes": dict(sorted(tally.client_codes.items())),
        "expected_junk_codes": dict(sorted(tally.expected_server_codes.items())),
        **{k: v for k, v in end.items() if k in ("healthz", "metrics", "exit_code_after_sigterm")},
        "failures": tally.failures[:50],
        "failure_count": len(tally.failures),
        "load_average_1min": os.getloadavg()[0],
        "setup": f"{os.cpu_count()} CPUs, server (1 torch thread) and clients on one machine (loopback)",
        **run_info(),
    }
    result["ok"] = not tally.failures
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=1000, help="client cycles (1..100000)")
    parser.add_argument("--model", default="speech-16k", help="served model (default: speech-16k)")
    parser.add_argument("--concurrency", type=int, default=4, help="clients at once (1..32)")
    parser.add_argument("--warmup", type=int, help="cycles before RSS is sampled (default: cycles / 5)")
    parser.add_argument("--sample-every", type=int, default=25, help="cycles between RSS samples")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="time limit of the whole soak")
    parser.add_argument("--max-growth-kib", type=float, help="fail over this RSS growth per 100 cycles")
    parser.add_argument("--out", type=Path, help="also write the result to this file")
    args = parser.parse_args()
    if not (1 <= args.cycles <= 100000 and 1 <= args.concurrency <= 32 and args.sample_every >= 1):
        parser.error("--cycles must be in 1..100000, --concurrency in 1..32, --sample-every >= 1")
    if args.warmup is None:
        args.warmup = args.cycles // 5
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, serve_spec(args.model, Path(tmp)), Path(tmp) / "server.log")
    if args.out:
        from audiokit.provenance import write_json

        write_json(args.out, result)
    print(json.dumps(result, indent=2))
    if not result["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
