"""``audiokit serve`` (the streaming server, :mod:`audiokit.serve`) and ``audiokit stream`` (its client)."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from audiokit.argtypes import finite_number, whole_number
from audiokit.cli import Interrupted
from audiokit.cli.options import add_force_option, add_raw_options, number_in, raw_format
from audiokit.errors import AudiokitError, UsageError
from audiokit.threads import MAX_THREADS

LOOPBACK = ("127.0.0.1", "localhost", "::1")

T = TypeVar("T")


def _port(value: str) -> int:
    """``--port``: a TCP port, 0 (any free one) to 65535."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0 to 65535; 0: any free port)")
    return port


def _origin(value: str) -> str:
    """``--allow-origin``: ``*``, ``null`` or a web origin as browsers send it, ``scheme://host[:port]``
    (``https://example.org``, ``chrome-extension://ID``, ``tauri://localhost``; no path, query or
    trailing slash: the server compares origins as strings, so any other form would never match)."""
    if value in ("*", "null"):
        return value
    scheme, _, rest = value.partition("://")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) or not rest or any(c in rest for c in "/?#@ "):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a web origin: give scheme://host[:port], e.g. https://example.org:8443 "
            "(no path or trailing /), or * for any"
        )
    return value


def _token_from_environment() -> str | None:
    """``$AUDIOKIT_TOKEN``, the token's default for server and client (None when unset or empty): a secret
    on the command line shows in ``ps`` and in ``docker inspect``."""
    return os.environ.get("AUDIOKIT_TOKEN") or None


def run_serve(args: argparse.Namespace) -> int:
    from audiokit.serve import ServerConfig, listen, serve

    sockets = listen(args.host, args.port)  # first: a busy port or a bad host is one line, no model loaded
    if args.host not in LOOPBACK and args.token is None and not args.quiet:
        print(
            f"serve: listening on {args.host} without --token: anyone who reaches it can stream",
            file=sys.stderr,
        )
    config = ServerConfig(
        models=args.model or [],
        max_streams=args.max_streams,
        max_streams_per_client=args.max_streams_per_client,
        max_message_bytes=args.max_message_bytes,
        max_messages_per_second=args.max_messages_per_second,
        idle_timeout_s=args.idle_timeout,
        token=args.token,
        allow_origins=args.allow_origin or [],
        drain_timeout_s=args.drain_timeout,
        threads=args.threads,
        compile=None if args.compile == "eager" else args.compile,
        weight_precision=args.weights,
    )
    serve(config, sockets, "warning" if args.quiet else "info")
    if "triton" in sys.modules:
        # Inductor (--compile aoti) imported triton, whose nanobind modules print some 35 "leaked"
        # lines at interpreter exit: the server has drained, so end here, output flushed
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _run_until_signal(work: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(work)``, where SIGINT/SIGTERM cancel ``work`` (further ones are ignored while it
    winds down: the WebSocket closes) and, once the loop is closed, raise :class:`Interrupted`.

    Under the CLI's own handler, which raises wherever the main thread is, a second signal soon after
    the first (a double Ctrl-C; ``timeout -s INT`` signals the process, then its group) broke into
    asyncio's clean-up: tasks destroyed while pending, tracebacks."""
    received: list[int] = []

    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(work)
        if threading.current_thread() is not threading.main_thread():  # signals reach the main one only
            return await task
        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

        def cancel(signum: int) -> None:
            if not received:
                received.append(signum)
                task.cancel()

        for signum in previous:
            loop.add_signal_handler(signum, cancel, signum)
        try:
            return await task
        finally:
            for signum, handler in previous.items():
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_IGN if received else handler)  # as the CLI's clean-up

    try:
        result = asyncio.run(main())
    except asyncio.CancelledError:
        if not received:
            raise
    if received:  # cancelled, or it ended just as the signal came
        raise Interrupted(received[0])
    return result


def run_stream(args: argparse.Namespace) -> int:
    import numpy as np

    from audiokit import client, io
    from audiokit.cli.processing import warn_clipped
    from audiokit.redaction import redact_token

    for option, given in (
        ("--model-band-only", args.model_band_only),
        ("--atten-lim-db", args.atten_lim_db is not None),
        ("--dry", args.dry is not None),
    ):
        if given and args.task != "enhance":
            raise UsageError(f"{option}: only for --task enhance (not {args.task})")
    source = args.input if io.is_stdio(args.input) else Path(args.input)
    io.prepare_outputs([(source, args.output)], args.force)  # first: before reading, connecting
    name = io.shown_name(args.input)
    out = sys.stderr if io.carries_stdout(args.output) else sys.stdout  # stdout may carry the audio
    url = redact_token(args.url)  # the shared secret stays off the terminal and out of logs
    try:
        try:
            result, chunks, rate = _stream_file(args)
        except client.ServerError as exc:
            if isinstance(exc, client.ConnectionLost):  # names the URL already
                raise
            raise client.ServerError(exc.code, exc.reason, url) from None
    except AudiokitError as exc:
        if args.json:  # a script reading the summary learns what failed, as from the file commands
            failure = {"input": name, "output": args.output, "complete": False, "error": str(exc)}
            print(json.dumps(failure, indent=2), file=out)
        raise
    shown = io.shown_output(args.output)
    warn_clipped(shown, int(np.count_nonzero(np.abs(result.audio) > 1.0)), advice="")
    summary = {"input": name, "output": args.output, "complete": result.complete, **result.done}
    if args.json:
        print(json.dumps(summary | {"ready": result.ready}, indent=2), file=out)
    elif not args.quiet:
        samples = result.done.get("samples_out")
        print(f"stream: {name} -> {args.output}: {samples} samples via {url}", file=out)
    if not result.complete:
        taken = result.done.get("samples_in", 0)  # what the server took (the client may have sent more)
        total = sum(chunk.shape[0] for chunk in chunks)
        print(
            f"audiokit stream: warning: {url} ended the stream early (draining): {args.output} holds what it "
            f"made of the first {taken} of {total} samples",
            file=sys.stderr,
        )
    return 0


def _stream_file(args: argparse.Namespace) -> tuple[Any, list, int]:
    """Read ``args.input``, stream it through the server and save the result to ``args.output``: the
    client's ``StreamResult``, the chunks sent and their rate in Hz."""
    import numpy as np

    from audiokit import client, io
    from audiokit.cli.processing import warn_clipped
    from audiokit.serve.protocol import MAX_RATE, MIN_RATE

    chunks, rate = client.file_chunks(args.input, args.chunk_ms, args.realtime, raw_format(args))
    if not MIN_RATE <= rate <= MAX_RATE:  # before connecting: the server would refuse the stream
        raise UsageError(
            f"{io.shown_name(args.input)}: {rate} Hz is outside the {MIN_RATE}..{MAX_RATE} Hz a server "
            "streams; resample the file first"
        )
    io.check_output_format(args.output, rate)
    if args.format == "s16le":  # 16-bit PCM on the wire holds [-1, 1] only
        beyond = sum(int(np.count_nonzero(np.abs(chunk) > 1.0)) for chunk in chunks)
        warn_clipped(io.shown_name(args.input), beyond, advice="or send --format f32le")
    work = client.stream(
        args.url,
        chunks,
        rate,
        args.task,
        model=args.model,
        fmt=args.format,
        bitrate=None if args.task != "codec" else args.bitrate * 1000,
        token=args.token,
        realtime=args.realtime,
        high_band=False if args.model_band_only else None,
        stall_timeout=args.timeout,
        atten_lim_db=args.atten_lim_db,
        dry=args.dry,
    )
    result = _run_until_signal(work)
    io.save(args.output, result.audio[None], rate)  # atomically: a temporary file renamed
    return result, chunks, rate


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "serve",
        parents=[common],
        help="serve real-time enhancement and codec streams over WebSocket, with a web page",
        description="Serve /v1/stream (WebSocket; protocol in docs/server.md), /healthz, /metrics and a "
        "web page at /. All live streams of a model advance together in batched steps. SIGTERM drains: "
        "no new streams, live ones are finished and get 'done', then exit 0.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=_port, default=8765, help="TCP port (default: 8765; 0: any free one)")
    parser.add_argument(
        "-m",
        "--model",
        action="append",
        metavar="MODEL",
        help="model name (NAME@N: its shipped version N) or .safetensors path to serve (repeatable; "
        "default: every shipped codec and enhancer; bandwidth extenders cannot be served)",
    )
    parser.add_argument(
        "--max-streams", type=whole_number(1), default=64, help="live streams in all (default: 64)"
    )
    parser.add_argument(
        "--max-streams-per-client",
        type=whole_number(1),
        default=8,
        help="live streams per client address (default: 8)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=whole_number(4),
        default=65536,
        help="largest client message, at least one float32 sample (default: 65536)",
    )
    parser.add_argument(
        "--max-messages-per-second",
        type=finite_number(),
        default=200.0,
        help="message rate per stream, bursts of twice that (default: 200)",
    )
    parser.add_argument(
        "--idle-timeout", type=finite_number(), default=30.0, help="seconds without a message (default: 30)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=finite_number(above=False),
        default=30.0,
        help="seconds to finish streams on SIGTERM (default: 30)",
    )
    parser.add_argument(
        "--token",
        default=_token_from_environment(),
        help="shared secret clients must send (Authorization: Bearer, or ?token=); default: $AUDIOKIT_TOKEN, "
        "which keeps it out of `ps` and `docker inspect`",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        type=_origin,
        metavar="ORIGIN",
        help="another web origin allowed (repeatable; * any)",
    )
    parser.add_argument(
        "--threads",
        type=whole_number(1, MAX_THREADS),
        default=1,
        help=f"torch threads, 1-{MAX_THREADS} (default: 1; batching scales)",
    )
    parser.add_argument(
        "--compile",
        choices=("eager", "aoti"),
        default="eager",
        help="aoti: run the batched steps as libraries compiled ahead of time (cached; built at start-up, "
        "which takes minutes the first time; eager where they cannot be built)",
    )
    parser.add_argument(
        "--weights",
        choices=("float32", "float16", "int8"),  # audiokit.nn.precision.PRECISIONS (torch not imported here)
        default="float32",
        help="float16 / int8: the models' matrices rounded to float16 values / to 255 levels per output, "
        "which compiled steps read at half / a quarter of the bytes (faster for few streams; "
        "quality cost for speech-16k: kernels/README.md)",
    )
    parser.set_defaults(handler=run_serve)

    client = subparsers.add_parser(
        "stream",
        parents=[common],
        help="stream an audio file through an `audiokit serve` server",
        description="Send IN (mixed to mono, at its own rate) to a server's /v1/stream and write the "
        "processed audio to OUT at the same rate and length.",
    )
    client.add_argument("input", metavar="IN", help="audio file, or - (stdin, read whole)")
    client.add_argument(
        "output", metavar="OUT", help="audio file to write (.wav, .flac...), or - (stdout, WAV)"
    )
    client.add_argument(
        "--url",
        default="ws://127.0.0.1:8765/v1/stream",
        help="server WebSocket URL (default: ws://127.0.0.1:8765/v1/stream)",
    )
    client.add_argument(
        "--task",
        choices=("enhance", "codec"),
        default="enhance",
        help="what the server does to the audio: enhance it, or code and decode it (default: enhance)",
    )
    client.add_argument("-m", "--model", help="served model name (default: the server's for the task)")
    client.add_argument(
        "-b", "--bitrate", type=finite_number(), default=6.0, help="codec bitrate in kbps (default: 6)"
    )
    client.add_argument("--format", choices=("f32le", "s16le"), default="f32le", help="PCM on the wire")
    client.add_argument(
        "--model-band-only",
        action="store_true",
        help="enhance: return only the model's band (0-8 kHz for enhance-16k) of input at a higher rate, "
        "20 ms sooner (default: the input's band above it is kept, attenuated as the model attenuated "
        "the top of its band)",
    )
    client.add_argument(
        "--atten-lim-db",
        type=number_in(0.0, math.inf, "an attenuation limit in dB >= 0"),
        metavar="DB",
        help="enhance: remove at most this many dB of noise, as `audiokit enhance` (default: no limit; "
        "inf: no limit)",
    )
    client.add_argument(
        "--dry",
        type=number_in(0.0, 1.0, "a wet/dry mix in [0, 1] (0: fully enhanced)"),
        help="enhance: wet/dry mix in [0, 1], the share of the input kept, as `audiokit enhance` (default 0)",
    )
    client.add_argument(
        "--chunk-ms",
        type=finite_number(),
        help="message length in ms (default: 20 with --realtime, else the largest message the server takes); "
        "either way messages stay below the server's message rate",
    )
    client.add_argument("--realtime", action="store_true", help="pace sending in real time")
    client.add_argument(
        "--token", default=_token_from_environment(), help="the server's token (default: $AUDIOKIT_TOKEN)"
    )
    client.add_argument(
        "--timeout",
        type=finite_number(),
        default=30.0,  # client.STALL_TIMEOUT_S (the client module is not imported for --help)
        help="seconds to wait on a server that takes none of the audio and sends nothing before giving up "
        "(default: 30)",
    )
    client.add_argument("--json", action="store_true", help="print a JSON summary")
    add_force_option(client)
    add_raw_options(client)
    client.set_defaults(handler=run_stream)
