"""The server soak (`benchmarks/server_soak.py`): 1,000 connect/stream/drop cycles of normal, vanishing,
junk and early-leaving clients against a real `audiokit serve` process; every junk client gets its
documented code, the server neither crashes nor leaks (RSS, files, threads, live streams) and its
metrics add up. No wall-clock limit is asserted (the machine is shared)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import urllib.request

import pytest
import websockets
from conftest import ROOT
from serve_support import running_server, speech

from audiokit import Codec, client
from audiokit.serve import ServerConfig
from audiokit.serve.engines import Engine

# RSS growth after the warm-up, per 100 cycles, that fails the soak. Measured on the 2-core dev machine
# under load 3-5 (two training jobs), 1,000 cycles, slope over 33 samples after a 200-cycle warm-up:
# 21-35 KiB per 100 cycles in 10 runs (allocator noise: ~250 KiB over 800 cycles on 427 MiB). Leaks
# injected into the server process (a sitecustomize, not committed): keeping every session's Stream (its
# wire audio, soxr resamplers, queues) gives 323-337, keeping 16 KiB per connection 360. Smaller leaks
# hide at first: the server's heap holds ~7 MiB of free but resident memory after start-up (glibc), which
# a leak fills before RSS grows (8 KiB per connection, 8 MiB over the run, did not show); a longer soak
# (--cycles 10000) is the tool for those. 150 is over 4x the noise and under half the smallest leak seen.
MAX_GROWTH_KIB_PER_100_CYCLES = 150


@pytest.fixture(scope="module")
def soak(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "server_soak.py"), "--cycles", "1000"]
    proc = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert out.exists(), proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_soak_junk_gets_documented_codes(soak):
    assert soak["cycles"] == 1000
    assert soak["cycles_by_kind"] == {"normal": 250, "drop": 250, "junk": 250, "prestart": 250}
    junk = soak["expected_junk_codes"]
    assert set(junk) == {"4400", "1009"} and sum(junk.values()) == 250
    for code, count in junk.items():  # the client saw exactly the documented code (and its JSON error)
        assert soak["client_close_codes"][code] == count, soak["failures"]
    assert soak["client_close_codes"]["1000"] == 250  # every normal stream got done and 1000
    assert soak["failures"] == [], soak["failures"]
    assert soak["ok"]


def test_soak_server_survives_and_counts_add_up(soak):
    assert soak["exit_code_after_sigterm"] == 0  # alive to the end, then drained cleanly
    assert soak["healthz"] == {"status_code": 200, "status": "ok", "live_streams": 0}
    metrics = soak["metrics"]
    assert all(live == 0 for live in metrics["streams_live"].values()), metrics
    closes = metrics["closes_total"]
    assert sum(closes.values()) == soak["cycles"]  # every connection counted once
    for code, count in soak["expected_junk_codes"].items():
        assert closes[code] == count
    # normal streams close 1000; dropped connections 1005/1006 (or 1000 if the stream had finished)
    assert set(closes) <= {"1000", "1005", "1006", "1009", "4400"}
    assert closes["1000"] >= 250


def test_soak_does_not_leak(soak):
    growth = soak["rss_growth_kib_per_100_cycles"]
    assert growth is not None and len(soak["rss_kib"]["samples"]) >= 20
    assert growth < MAX_GROWTH_KIB_PER_100_CYCLES, soak["rss_kib"]
    assert soak["open_fds"]["end"] <= soak["open_fds"]["warmup"] + 8
    assert soak["threads"]["end"] <= soak["threads"]["warmup"] + 2


START = {"type": "start", "task": "codec", "model": "speech-16k", "sample_rate": 16000, "bitrate": 6000}


def test_end_then_vanish_during_flush_keeps_live_gauge():
    """A client that sends `end` and drops the connection while its rest is processed is dropped first,
    then its final output comes back from the worker: the stream must leave the live count once
    (found by the soak: `audiokit_streams_live` ended at -8 after 1,000 cycles)."""
    codec = Codec.from_pretrained("speech-16k")
    flushing, flushed = threading.Event(), threading.Event()

    class SlowFlush(Engine):
        def close(self, stream):
            flushing.set()
            flushed.wait(10)  # held until the client is gone
            return super().close(stream)

    config = ServerConfig(max_streams=2, max_streams_per_client=2)
    with running_server(config, {"speech-16k": SlowFlush("speech-16k", codec, 2)}) as running:

        async def vanish():
            ws = await websockets.connect(running.ws)
            await ws.send(json.dumps(START))
            await ws.recv()
            await ws.send(speech(0.1).tobytes())
            await ws.send(json.dumps({"type": "end"}))
            await asyncio.to_thread(flushing.wait, 10)
            ws.transport.abort()
            while running.state.live:  # the server noticed: dropped
                await asyncio.sleep(0.01)
            flushed.set()

        asyncio.run(vanish())
        # a later stream finishing means the scheduler handled the flushed stream's output before it
        x = speech(0.2)
        assert (
            asyncio.run(client.stream(running.ws, [x], 16000, "codec", bitrate=6000)).audio.shape == x.shape
        )
        text = urllib.request.urlopen(f"{running.http}/metrics").read().decode()
        live = re.search(r'^audiokit_streams_live\{model="speech-16k"\} (\S+)$', text, re.M)
        assert float(live[1]) == 0.0
        assert running.state.live == 0
