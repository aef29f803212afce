"""audiokit.evaluation.robustness: edge-case measurements equal direct computations, fail when they should."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_SPEECH_CODEC

from audiokit.evaluation.robustness import LENGTHS, robustness_report
from audiokit.models import Codec


@pytest.fixture(scope="module")
def tiny() -> Codec:
    torch.manual_seed(0)
    return Codec.from_config("speech-16k", **TINY_SPEECH_CODEC).eval()


def test_silence_figures_equal_a_direct_round_trip(tiny):
    report = robustness_report(tiny, 3000, seconds=2.0)
    with torch.inference_mode():
        out = tiny.decode(tiny.encode(torch.zeros(1, 1, 32000), 3000))
    rms = 20 * math.log10(float(out.square().mean().sqrt()))
    assert report["silence_rms_dbfs"]["value"] == pytest.approx(rms, abs=1e-4)
    dc = max(abs(float(out[..., :16000].mean())), abs(float(out[..., -16000:].mean())))
    assert report["silence_dc"]["value"] == pytest.approx(dc, abs=1e-7)
    assert report["finite"]["ok"] and report["exact_lengths"]["ok"] and LENGTHS[0] == 1
    for entry in report.values():
        if isinstance(entry, dict) and isinstance(entry["value"], float):
            assert entry["ok"] == (entry["value"] <= entry["limit"])  # every numeric check is an upper limit


def test_a_codec_with_a_dc_offset_fails_the_dc_and_silence_checks(tiny):
    broken = Codec.from_config("speech-16k", **TINY_SPEECH_CODEC).eval()
    broken.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        broken.decoder.head.proj.bias[0] += 5.0  # bin 0 (DC) log-magnitude up: a constant offset out
    report = robustness_report(broken, 3000, seconds=1.0)
    assert not report["silence_dc"]["ok"] and not report["silence_rms_dbfs"]["ok"]


def test_a_codec_that_amplifies_fails_the_full_scale_check(tiny):
    loud = Codec.from_config("speech-16k", **TINY_SPEECH_CODEC).eval()
    loud.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        loud.decoder.head.proj.bias[: loud.decoder.head.n_bins] += 6.0  # every bin's log-magnitude x e^6
    report = robustness_report(loud, 6000, seconds=1.0)
    assert not report["full_scale_peak"]["ok"] and report["full_scale_peak"]["value"] > 2.0
