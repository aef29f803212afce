"""The shipped ``speech-16k`` weights: they load by name, match the registered config, code real
speech well, and stream as offline (decoding exactly, encoding up to near-ties)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_stream

import audiokit.io as aio
from audiokit.evaluation import metrics
from audiokit.models import WEIGHTS_DIR, Codec
from audiokit.models.codec import CONFIGS


@pytest.fixture(scope="module")
def shipped() -> Codec:
    return Codec.from_pretrained("speech-16k")


@pytest.fixture(scope="module")
def clip(speech_files) -> torch.Tensor:
    """(1, 1, samples) of 16 kHz prompt speech, about 2.5 s."""
    path = next(f for f in speech_files if f.name == "speech_fr_16k_c.flac")
    wav, _ = aio.load(path, sample_rate=16000, channels=1)
    return wav[None]


def test_shipped_weights_are_the_registered_config_with_a_card(shipped):
    assert shipped.config.to_dict() == CONFIGS["speech-16k"].to_dict()
    meta = json.loads((WEIGHTS_DIR / "speech-16k.json").read_text())
    assert meta["sha256"] == shipped.weights_sha256()
    card = json.loads((WEIGHTS_DIR.parent.parent / "docs" / "models" / "speech-16k.json").read_text())
    assert card["weights"]["sha256"] == meta["sha256"] and card["weights"]["shipped"] is True


def test_shipped_weights_code_speech_and_more_bits_help(shipped, clip):
    scores = {}
    with torch.inference_mode():
        for bitrate in (1500, 6000):
            decoded = shipped.decode(shipped.encode(clip, bitrate=bitrate))
            assert decoded.shape == clip.shape
            reference, test = clip[0, 0], decoded[0, 0]
            pesq = metrics.pesq(reference, test, 16000).score
            scores[bitrate] = (pesq, metrics.stoi(reference, test, 16000))
    # measured 2.36 / 0.936 at 6 kbps, 1.45 / 0.866 at 1.5 kbps; random weights score PESQ ~1.04
    assert scores[6000][0] > 1.9 and scores[6000][1] > 0.91
    assert scores[6000][0] > scores[1500][0] + 0.3 and scores[1500][1] > 0.84


def test_shipped_weights_stream_like_offline(shipped, clip):
    """Decoding streams exactly. Encoding gives the offline codes except at near-ties of the later
    codebooks (docs/streaming.md, "On identical codes"), which move the audio by a small fraction
    of the coding error."""
    with torch.inference_mode():
        for bitrate in (1500, 6000):
            codes = shipped.encode(clip, bitrate=bitrate)
            offline = shipped.decode(codes)
            decoded = run_stream(shipped.stream(1, "decode", length=clip.shape[-1]), codes.codes, [3])
            torch.testing.assert_close(decoded, offline, atol=1e-5, rtol=0)
            streamed_codes = run_stream(shipped.stream(1, "encode", bitrate=bitrate), clip, [480])
            agree = (streamed_codes[..., : codes.codes.shape[-1]] == codes.codes).float().mean().item()
            roundtrip = run_stream(shipped.stream(1, "roundtrip", bitrate=bitrate), clip, [480])
            assert roundtrip.shape == clip.shape
            # measured: all codes and 0 at 1.5 kbps; 97.9 % and 0.005 at 6 kbps
            assert agree > (0.999 if bitrate == 1500 else 0.9)
            assert (roundtrip - offline).norm() < 0.05 * (offline - clip).norm()
