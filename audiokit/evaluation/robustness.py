"""Edge-case checks of a codec: silence, full-scale and clipped input, tiny and odd lengths.

What a user must be able to rely on whatever the audio: no NaN or infinity, no click or DC drift
out of digital silence, no blow-up on full-scale input, and exactly as many samples out as in.
:func:`robustness_report` measures each at one bitrate, with its pass threshold, for model cards
and tests.
"""

from __future__ import annotations

import math

import torch

from audiokit.models import Codec

SILENCE_MAX_RMS_DBFS = -50.0  # decoded digital silence: at most this loud on average...
SILENCE_MAX_PEAK_DBFS = -30.0  # ...and no click above this
MAX_DC = 1e-3  # |mean| of decoded silence, first and last second
FULL_SCALE_MAX_PEAK = 2.0  # full-scale input must not come back more than 6 dB hotter
LENGTHS = (1, 2, 159, 160, 161, 319, 320, 321, 641, 4799)
ROBUSTNESS_TITLES = {
    "silence_rms_dbfs": "silence out, RMS dBFS",
    "silence_peak_dbfs": "silence out, peak dBFS",
    "silence_dc": "silence out, DC",
    "full_scale_peak": "full-scale in, peak out",
    "finite": "finite",
    "exact_lengths": "exact lengths",
}
"""The checks of :func:`robustness_report` and how a card titles them."""


def _dbfs(value: float) -> float:
    return 20 * math.log10(max(value, 1e-12))


def _round_trip(codec: Codec, wav: torch.Tensor, bitrate: float) -> torch.Tensor:
    with torch.inference_mode():
        return codec.decode(codec.encode(wav, bitrate))


def robustness_report(codec: Codec, bitrate: float, seconds: float = 5.0) -> dict:
    """Measurements and verdicts at ``bitrate`` bits/s; every entry has ``value``, ``limit`` and ``ok``.

    * ``silence_rms_dbfs`` / ``silence_peak_dbfs``: ``seconds`` of zeros, decoded level (dB full scale).
    * ``silence_dc``: the larger ``|mean|`` of the first and last second of that output.
    * ``full_scale_peak``: peak of a +-1 square wave (125 Hz) and of white noise (x3) clipped at +-1.
    * ``finite``: no NaN or infinity in any output.
    * ``exact_lengths``: decoded length equals input length for each of :data:`LENGTHS` samples.
    """
    rate = codec.sample_rate
    generator = torch.Generator().manual_seed(0)
    silence = _round_trip(codec, torch.zeros(1, 1, int(seconds * rate)), bitrate)
    t = torch.arange(int(seconds * rate)) / rate
    square = torch.sign(torch.sin(2 * math.pi * 125 * t)).view(1, 1, -1)
    clipped = (3 * torch.randn(1, 1, int(seconds * rate), generator=generator)).clamp(-1, 1)
    loud = [_round_trip(codec, x, bitrate) for x in (square, clipped)]
    short = {n: _round_trip(codec, 0.1 * torch.randn(1, 1, n, generator=generator), bitrate) for n in LENGTHS}
    outputs = [silence, *loud, *short.values()]
    second = min(rate, silence.shape[-1])
    dc = max(abs(float(silence[..., :second].mean())), abs(float(silence[..., -second:].mean())))
    rms = float(silence.square().mean().sqrt())
    peak = float(silence.abs().max())
    loud_peak = max(float(y.abs().max()) for y in loud)
    lengths_ok = all(y.shape[-1] == n for n, y in short.items())
    finite = all(bool(torch.isfinite(y).all()) for y in outputs)
    return {
        "bitrate": bitrate,
        "silence_rms_dbfs": {
            "value": _dbfs(rms),
            "limit": SILENCE_MAX_RMS_DBFS,
            "ok": _dbfs(rms) <= SILENCE_MAX_RMS_DBFS,
        },
        "silence_peak_dbfs": {
            "value": _dbfs(peak),
            "limit": SILENCE_MAX_PEAK_DBFS,
            "ok": _dbfs(peak) <= SILENCE_MAX_PEAK_DBFS,
        },
        "silence_dc": {"value": dc, "limit": MAX_DC, "ok": dc <= MAX_DC},
        "full_scale_peak": {
            "value": loud_peak,
            "limit": FULL_SCALE_MAX_PEAK,
            "ok": loud_peak <= FULL_SCALE_MAX_PEAK,
        },
        "finite": {"value": finite, "limit": True, "ok": finite},
        "exact_lengths": {"value": lengths_ok, "limit": True, "ok": lengths_ok},
    }
