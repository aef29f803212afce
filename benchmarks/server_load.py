"""Load test of ``audiokit serve``: N concurrent real-time clients on loopback, saved to
``benchmarks/results/server_load_<task>.json``.

Usage: ``python benchmarks/server_load.py --streams N --seconds S [--task enhance|codec] [--ramp R]
[--json]``. The server runs as its own process (``audiokit serve``, one torch thread); every client
streams real speech (the samples/ clips, looped, a different offset each) in 20 ms messages paced in
real time, the clients connecting one after another over ``--ramp`` seconds (default 1 s: real clients
neither connect nor hang up all in the same instant), so they also end over that time. Reported: added
latency per message (its send to the arrival of all the output it made possible, the model's
algorithmic latency excluded exactly), late messages (added latency over the 50 ms budget) and the
episodes they fall in, missing samples, server CPU (also per second of stream audio: the figure to
compare on a shared machine), the server's own late steps, batch sizes and hops per step, and every
output checked against offline processing. Untrained enhancer weights of the same architecture are
served while none are shipped (the same compute).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from audiokit import Codec, client, io
from audiokit.models.base import shipped_names
from audiokit.models.enhancer import Enhancer
from audiokit.provenance import run_info, write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BUDGET_MS = 50.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def speech_loop(seconds: float) -> np.ndarray:
    """The 16 kHz speech clips of samples/, concatenated and looped to ``seconds``."""
    clips = [
        io.load(p, sample_rate=16000, channels=1)[0][0].numpy()
        for p in sorted(ROOT.glob("samples/speech_*_16k_*.flac"))
    ]
    whole = np.concatenate(clips)
    return np.resize(whole, int(seconds * 16000)).astype(np.float32)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def added_latency_ms(result: client.StreamResult, hop: int, latency: int) -> list[tuple[float, float]]:
    """Per input message: its send time (a :func:`time.perf_counter` reading) and the milliseconds from
    then to the arrival of the output it made possible.

    After ``S`` input samples a causal model can give ``floor(S / hop) * hop - (latency - hop)``
    output samples (its algorithmic latency, ``latency``, is one hop plus its output lag), so that is
    the output the message enables; the end of the stream (flushed on ``end``) is left out.
    """
    arrivals = np.array([t for t, _ in result.received])
    totals = np.array([n for _, n in result.received])
    out = []
    for sent_at, total in result.sent:
        enabled = (total // hop) * hop - (latency - hop)
        if enabled <= 0:
            continue
        i = int(np.searchsorted(totals, enabled))
        if i == len(totals):
            continue
        out.append((result.started + sent_at, 1e3 * (arrivals[i] - sent_at)))
    return out


def late_episodes(added: np.ndarray, streams: np.ndarray, gap_s: float = 0.1) -> list[dict]:
    """Late messages grouped into episodes (late sends less than ``gap_s`` apart): when (seconds from
    the first send), how long, how many messages and streams, the worst added latency. ``added``:
    ``(messages, 2)`` send times and added latencies (ms); ``streams``: each message's stream."""
    late = np.flatnonzero(added[:, 1] > BUDGET_MS)
    late = late[np.argsort(added[late, 0])]
    episodes: list[dict] = []
    origin = float(added[:, 0].min()) if added.size else 0.0
    for group in np.split(late, np.flatnonzero(np.diff(added[late, 0]) > gap_s) + 1) if late.size else []:
        times = added[group, 0]
        episodes.append(
            {
                "at_s": round(float(times[0]) - origin, 3),
                "span_s": round(float(times[-1] - times[0]), 3),
                "messages": int(group.size),
                "streams": int(np.unique(streams[group]).size),
                "worst_ms": round(float(added[group, 1].max()), 1),
            }
        )
    return episodes


def metric(text: str, name: str) -> float:
    return sum(float(m) for m in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=8, help="concurrent clients (1..256)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per client (1..600)")
    parser.add_argument("--task", choices=("enhance", "codec"), default="enhance")
    parser.add_argument("--bitrate", type=float, default=6000.0, help="codec bitrate in b/s")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds over which the clients connect")
    parser.add_argument("-m", "--model", help="model to serve (default: enhance-16k / speech-16k)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--out", type=Path, help="result file (default: results/server_load_<task>.json)")
    args = parser.parse_args()
    if not (1 <= args.streams <= 256 and 1 <= args.seconds <= 600):
        parser.error("--streams must be in 1..256 and --seconds in 1..600")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model_spec, model = load_model(args, Path(tmp))
        result = run(args, model_spec, model)
    out = args.out or RESULTS / f"server_load_{args.task}.json"
    write_json(out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.streams} {args.task} streams x {args.seconds:g} s: added latency p50 "
            f"{result['added_latency_ms']['p50']:.1f} ms, p99 {result['added_latency_ms']['p99']:.1f} ms, "
            f"late {result['late_messages']}, missing {result['missing_samples']}, server CPU "
            f"{result['server_cpu_percent']:.0f} %, outputs equal offline: {result['all_equal_offline']}"
        )
        print(f"wrote {out}")
    if not result["ok"]:
        sys.exit(1)


def load_model(args, tmp: Path):
    """The model to serve and the same model in this process (for the offline check)."""
    if args.task == "codec":
        spec = args.model or "speech-16k"
        return spec, Codec.from_pretrained(spec)
    spec = args.model or ("enhance-16k" if "enhance-16k" in shipped_names() else None)
    if spec is None:  # no shipped weights yet: random ones, same compute
        torch.manual_seed(0)
        model = Enhancer.from_config("enhance-16k").eval()
        return str(model.save_pretrained(tmp / "enhancer.safetensors")), model
    return spec, Enhancer.from_pretrained(spec)


def run(args, spec: str, model) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "audiokit", "serve", "-q", "-m", spec, "--port", str(port)]
    command += ["--max-streams", str(args.streams), "--max-streams-per-client", str(args.streams)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(server, base)
        audio = speech_loop(args.seconds + 0.37 * args.streams)
        inputs = [audio[int(0.37 * i * 16000) :][: int(args.seconds * 16000)] for i in range(args.streams)]
        cpu_before, began = cpu_seconds(server.pid), time.perf_counter()
        # the clients keep every piece and timestamp (~10^5 objects a minute): a full collection in this
        # process stalls all of them for tens of ms, which would be blamed on the server
        gc.disable()
        try:
            results = asyncio.run(clients(f"ws://127.0.0.1:{port}/v1/stream", inputs, args))
        finally:
            gc.enable()
        wall = time.perf_counter() - began
        cpu = cpu_seconds(server.pid) - cpu_before
        metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
        server.send_signal(signal.SIGTERM)
        exit_code = server.wait(60)
    finally:
        if server.poll() is None:
            server.kill()
    hop, latency = model.hop_length, model.algorithmic_latency
    per_stream = [np.array(added_latency_ms(r, hop, latency)).reshape(-1, 2) for r in results]
    streams = np.concatenate([np.full(len(a), i) for i, a in enumerate(per_stream)])
    timed = np.concatenate(per_stream)
    added = timed[:, 1]
    errors = [
        float(np.abs(r.audio - offline(model, x, args)).max()) for r, x in zip(results, inputs, strict=True)
    ]
    missing = int(sum(x.shape[0] - r.audio.shape[0] for r, x in zip(results, inputs, strict=True)))
    late = int((added > BUDGET_MS).sum())
    steps = metric(metrics, "audiokit_step_batch_size_count")
    summary = {
        "task": args.task,
        "model": spec
        if args.model or spec in ("speech-16k", "enhance-16k")
        else "enhance-16k (untrained weights)",
        "bitrate": args.bitrate if args.task == "codec" else None,
        "streams": args.streams,
        "seconds": args.seconds,
        "ramp_s": args.ramp,
        "message_ms": 20,
        "added_latency_ms": {
            "p50": float(np.percentile(added, 50)),
            "p99": float(np.percentile(added, 99)),
            "max": float(added.max()),
        },
        "budget_ms": BUDGET_MS,
        "late_messages": late,
        "late_episodes": late_episodes(timed, streams),
        "messages": int(added.size),
        "missing_samples": missing,
        "max_abs_error_vs_offline": max(errors),
        "all_equal_offline": max(errors) < 1e-4,
        "server_cpu_percent": 100 * cpu / wall,
        "server_cpu_ms_per_stream_second": 1e3 * cpu / (args.streams * args.seconds),
        "load_average_1min": os.getloadavg()[0],
        "server_late_steps": metric(metrics, "audiokit_late_steps_total"),
        "server_steps": steps,
        "mean_batch_size": metric(metrics, "audiokit_step_batch_size_sum") / max(steps, 1),
        "mean_step_ms": 1e3 * metric(metrics, "audiokit_step_seconds_sum") / max(steps, 1),
        "mean_step_hops": metric(metrics, "audiokit_step_hops_sum") / max(steps, 1),
        "server_exit_code_after_sigterm": exit_code,
        "setup": f"{os.cpu_count()} CPUs, load generator and server on the same machine",
        **run_info(),
    }
    summary["ok"] = bool(
        summary["all_equal_offline"]
        and missing == 0
        and late == 0
        and exit_code == 0
        and summary["added_latency_ms"]["p99"] <= BUDGET_MS
    )
    return summary


def wait_healthy(server: subprocess.Popen, base: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {server.stderr.read()}") from None
            time.sleep(0.2)


async def clients(url: str, inputs: list[np.ndarray], args) -> list[client.StreamResult]:
    step = 320  # 20 ms at 16 kHz

    async def one(i: int, x: np.ndarray) -> client.StreamResult:
        await asyncio.sleep(i * args.ramp / len(inputs))
        chunks = [x[j : j + step] for j in range(0, x.shape[0], step)]
        bitrate = args.bitrate if args.task == "codec" else None
        return await client.stream(url, chunks, 16000, args.task, bitrate=bitrate, realtime=True)

    return await asyncio.gather(*[one(i, x) for i, x in enumerate(inputs)])


def offline(model, x: np.ndarray, args) -> np.ndarray:
    wav = torch.from_numpy(x)[None, None]
    with torch.no_grad():
        if args.task == "codec":
            return model.decode(model.encode(wav, args.bitrate))[0, 0].numpy()
        return model.enhance(wav)[0, 0].numpy()


if __name__ == "__main__":
    main()
