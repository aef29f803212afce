"""The ``/v1/stream`` wire protocol: messages, close codes and PCM formats (spec: ``docs/server.md``).

Client -> ``start`` (JSON), binary PCM, ``end``; server -> ``ready``, binary PCM, ``done`` or ``error``
followed by the close with the error's code. Nothing here does I/O.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass

import numpy as np

from audiokit.io import FLOAT_PEAK_LIMIT
from audiokit.schema import json_number

NORMAL = 1000
GOING_AWAY = 1001  # the server is draining (SIGTERM): no new streams
TOO_BIG = 1009
INTERNAL = 1011
BAD_REQUEST = 4400
UNAUTHORIZED = 4401
FORBIDDEN_ORIGIN = 4403
IDLE = 4408
FULL = 4429
TASKS = ("enhance", "codec")
FORMATS = {"f32le": 4, "s16le": 2}
"""Sample formats and their bytes per sample (mono, little-endian)."""
MIN_RATE, MAX_RATE = 4000, 192000
MAX_REASON_BYTES = 123  # RFC 6455: a close frame's payload is 125 bytes, the code takes 2
START_KEYS = ("type", "task", "model", "sample_rate", "format", "bitrate", "high_band", "atten_lim_db", "dry")
"""The keys a ``start`` message may hold; any other is refused (a misspelt knob would be ignored)."""
ENHANCE_KNOBS = ("atten_lim_db", "dry")
"""The enhancer's knobs (``audiokit enhance --atten-lim-db/--dry``), for task ``enhance`` only."""


class ProtocolError(Exception):
    """A request the server refuses: ``code`` is the close code, ``message`` says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class StartRequest:
    """A validated ``start`` message; ``sample_rate`` in Hz, ``bitrate`` in bits/s (codec only);
    ``high_band``: keep the input's band above the model's (enhance only; it matters above the model's
    rate); ``atten_lim_db`` (dB, None: no limit) and ``dry`` (0..1): the enhancer's knobs (enhance only,
    :func:`audiokit.models.enhancer.mix_factor`)."""

    task: str
    model: str
    sample_rate: int
    format: str
    bitrate: float | None = None
    high_band: bool = False
    atten_lim_db: float | None = None
    dry: float = 0.0


def parse_json(text: str) -> dict:
    """A client text message as a JSON object, else :class:`ProtocolError` 4400."""
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(BAD_REQUEST, f"invalid JSON: {exc}") from None
    except RecursionError:  # "[[[[..." deeper than the parser goes
        raise ProtocolError(BAD_REQUEST, "invalid JSON: nested too deeply") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(BAD_REQUEST, 'a text message must be a JSON object with a string "type"')
    return message


def parse_start(message: dict, default_models: dict[str, str]) -> StartRequest:
    """Validate a ``start`` message; ``default_models`` maps a task to the model used when none is named.

    A ``model`` left out or ``null`` is the task's default. Which models exist is the caller's check
    (unknown ones are also 4400). A key not in :data:`START_KEYS` is refused, and so are the enhancer's
    knobs given a value (``null`` counts as left out) for ``codec``.
    """
    unknown = [key for key in message if key not in START_KEYS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], START_KEYS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"a start message takes {', '.join(START_KEYS)}"
        raise ProtocolError(BAD_REQUEST, f"unknown key {unknown[0]!r} in the start message; {hint}")
    task = message.get("task")
    if task not in TASKS:
        raise ProtocolError(BAD_REQUEST, f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    model = message.get("model")
    if model is None:  # left out or null: the task's default
        model = default_models.get(task)
        if model is None:
            raise ProtocolError(BAD_REQUEST, f"no model serves task {task!r} here")
    if not isinstance(model, str) or not model:
        raise ProtocolError(
            BAD_REQUEST, f"model must be a served model's name, or null for the default, got {model!r}"
        )
    rate = message.get("sample_rate")
    if isinstance(rate, float) and rate.is_integer():
        rate = int(rate)
    if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
        raise ProtocolError(
            BAD_REQUEST, f"sample_rate must be an integer in {MIN_RATE}..{MAX_RATE} Hz, got {rate!r}"
        )
    fmt = message.get("format", "f32le")
    if not isinstance(fmt, str) or fmt not in FORMATS:  # a list or an object: unhashable, a TypeError
        raise ProtocolError(BAD_REQUEST, f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    bitrate = message.get("bitrate")
    if task == "codec":
        if not math.isfinite(json_number(bitrate)):
            raise ProtocolError(
                BAD_REQUEST, f"task 'codec' needs a numeric bitrate in bits/s, got {bitrate!r}"
            )
        bitrate = float(bitrate)
    else:  # ignored, as it always was: clients reuse a codec's start message for enhance
        bitrate = None
    high_band = message.get("high_band", task == "enhance")
    if not isinstance(high_band, bool):
        raise ProtocolError(BAD_REQUEST, f"high_band must be true or false, got {high_band!r}")
    if high_band and task != "enhance":
        raise ProtocolError(BAD_REQUEST, "high_band is for task 'enhance' (a codec returns its coded band)")
    if task != "enhance":
        given = [knob for knob in ENHANCE_KNOBS if message.get(knob) is not None]
        if given:
            raise ProtocolError(BAD_REQUEST, f"{given[0]} is for task 'enhance' (a codec has no such knob)")
        return StartRequest(task, model, rate, fmt, bitrate, high_band)
    limit, dry = message.get("atten_lim_db"), message.get("dry")
    if limit is not None and not json_number(limit) >= 0.0:  # NaN fails the comparison
        raise ProtocolError(
            BAD_REQUEST, f"atten_lim_db must be a number of dB >= 0, or null for no limit, got {limit!r}"
        )
    if dry is not None and not 0.0 <= json_number(dry) <= 1.0:
        raise ProtocolError(
            BAD_REQUEST, f"dry must be a number in 0..1 (the share of the input kept), got {dry!r}"
        )
    limit = None if limit is None or math.isinf(limit) else float(limit)  # Python's JSON reads Infinity
    return StartRequest(task, model, rate, fmt, bitrate, high_band, limit, 0.0 if dry is None else float(dry))


def decode_pcm(data: bytes, fmt: str) -> np.ndarray:
    """Mono PCM bytes -> float32 samples in [-1, 1]; :class:`ProtocolError` 4400 on a partial sample, or
    ``f32le`` samples that are NaN, infinite or beyond :data:`~audiokit.io.FLOAT_PEAK_LIMIT` (+36 dBFS: int16
    values sent as floats, say)."""
    width = FORMATS[fmt]
    if len(data) % width:
        raise ProtocolError(
            BAD_REQUEST, f"{fmt} message of {len(data)} bytes is not a whole number of samples"
        )
    if fmt == "s16le":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    samples = np.frombuffer(data, "<f4").astype(np.float32)
    if not np.isfinite(samples).all():
        raise ProtocolError(BAD_REQUEST, "f32le message holds NaN or infinite samples")
    peak = float(np.abs(samples).max(initial=0.0))
    if peak > FLOAT_PEAK_LIMIT:
        raise ProtocolError(
            BAD_REQUEST,
            f"f32le samples are floats in about [-1, 1]; this message peaks at {peak:.4g} "
            f"(the limit is {FLOAT_PEAK_LIMIT:g}; int16 values? send them as s16le)",
        )
    return samples


def encode_pcm(samples: np.ndarray, fmt: str) -> bytes:
    """float32 samples -> mono PCM bytes (``s16le`` clipped to [-1, 1) and rounded)."""
    if fmt == "s16le":
        return np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
    return np.asarray(samples, "<f4").tobytes()


def ready_message(
    session: str,
    request: StartRequest,
    latency_samples: int,
    high_band: bool,
    max_message_bytes: int,
    max_messages_per_second: float,
) -> str:
    """The ``ready`` message; an enhance stream's also says the knobs it runs with."""
    knobs = {"atten_lim_db": request.atten_lim_db, "dry": request.dry} if request.task == "enhance" else {}
    return json.dumps(
        {
            "type": "ready",
            "session": session,
            "task": request.task,
            "model": request.model,
            "sample_rate": request.sample_rate,
            "format": request.format,
            "latency_samples": latency_samples,
            "high_band": high_band,
            **knobs,
            "max_message_bytes": max_message_bytes,
            "max_messages_per_second": max_messages_per_second,
        }
    )


def done_message(samples_in: int, samples_out: int) -> str:
    return json.dumps({"type": "done", "samples_in": samples_in, "samples_out": samples_out})


def error_message(code: int, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


def close_reason(message: str) -> str:
    """``message`` cut to what a close frame's reason holds (123 bytes of UTF-8)."""
    return message.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
