"""The shipped ``speech-16k`` weights: they load by name, match the registered config, code real
speech well, and stream exactly as offline: identical codes, audio within 1e-5, on real speech with
random chunkings (hypothesis, a new seed every run)."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT, SAMPLES, check_shipped_with_card, run_stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import audiokit.io as aio
from audiokit.bitstream import read_akc
from audiokit.cli import main
from audiokit.evaluation import metrics
from audiokit.models import WEIGHTS_DIR, Codec, Codes
from audiokit.models.archive import archive_entries, model_version
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
    check_shipped_with_card(shipped, CONFIGS)


def test_weights_archive_records_what_each_installed_version_codes():
    """Every installed shipped codec version's ``codes`` in the archive is its weights' codes hash (what
    lets a later version with the same codes decode its files), and the package's own weights are listed."""
    entries = archive_entries()
    installed = [e for e in entries.values() if e["path"].is_file() and e["model"] in CONFIGS]
    assert any(entry["path"] == WEIGHTS_DIR / "speech-16k.safetensors" for entry in installed)
    for entry in installed:
        assert entry["codes"] == Codec.from_pretrained(entry["path"]).codes_sha256(), entry["file"]


@pytest.mark.parametrize("name", ["speech16k_v1.akc", "speech16k_entropy.akc", "speech16k_entropy_prior.akc"])
def test_files_of_the_first_shipped_weights_decode_with_the_package(shipped, name, tmp_path, capsys):
    """Files written by `speech-16k@1` (format versions 1 and 3, entropy-coded with the static tables and
    with a superseded prior) decode without `--model`: with those weights or, when a later version that
    writes the same codes replaced them, with that version, as `info` says."""
    path = ROOT / "tests" / "data" / name
    header, codes, _ = read_akc(path)
    assert model_version(header.model_name, header.weights_hash) == "speech-16k@1"
    assert main(["decode", str(path), str(tmp_path / "out.wav"), "-q", "--sample-rate", "16000"]) == 0
    decoded, rate = aio.load(tmp_path / "out.wav")
    with torch.inference_mode():
        expected = shipped.decode(Codes(codes, header.num_samples))[0]
    assert rate == 16000 and decoded.shape == expected.shape
    assert (decoded - expected).abs().max() < 1e-4  # 16-bit output of a streamed decode
    assert main(["info", str(path)]) == 0
    version = model_version("speech-16k", shipped.weights_sha256())  # the package's own version
    line = capsys.readouterr().out
    assert "(speech-16k@1" in line
    if version != "speech-16k@1":  # replaced by a version of the same codes: the line names it
        assert f"decodes with {version}, which writes the same codes" in line


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


SPEECH = (
    "speech_fr_16k_a.flac",
    "speech_fr_16k_b.flac",
    "speech_fr_16k_c.flac",
    "speech_ca_44k.flac",
    "speech_en_48k.wav",
    "noisy_speech_fr_16k_snr5.flac",
)


@pytest.fixture(scope="module")
def speech() -> dict[str, torch.Tensor]:
    """Every real speech clip of ``samples/`` at 16 kHz mono, ``(samples,)``."""
    return {name: aio.load(SAMPLES / name, sample_rate=16000, channels=1)[0][0] for name in SPEECH}


def _stream_exactly(codec: Codec, x: torch.Tensor, chunks: list[int], bitrate: int) -> None:
    """Streamed codes equal offline codes; streamed audio (round trip and decode) within 1e-5."""
    with torch.inference_mode():
        codes = codec.encode(x, bitrate)
        audio = codec.decode(codes)
    streamed = run_stream(codec.stream(x.shape[0], "encode", bitrate=bitrate), x, chunks)
    assert torch.equal(streamed, codes.codes), f"{int((streamed != codes.codes).sum())} codes differ"
    roundtrip = run_stream(codec.stream(x.shape[0], "roundtrip", bitrate=bitrate), x, chunks)
    torch.testing.assert_close(roundtrip, audio, rtol=0, atol=1e-5)
    frames = [1 + c % 7 for c in chunks]
    decoded = run_stream(codec.stream(x.shape[0], "decode", length=x.shape[-1]), codes.codes, frames)
    torch.testing.assert_close(decoded, audio, rtol=0, atol=1e-5)


def _segments(speech, names, starts, length):
    """``(len(names), 1, length)``: each clip from ``start`` (a fraction of what is left), looped."""
    rows = []
    for name, start in zip(names, starts, strict=True):
        clip = speech[name]
        first = int(start * max(clip.shape[0] - length, 0))
        rows.append(clip.repeat(1 + length // clip.shape[0])[first : first + length])
    return torch.stack(rows)[:, None]


SHIPPED_PROPERTY = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@settings(max_examples=6, **SHIPPED_PROPERTY)
@given(
    names=st.lists(st.sampled_from(SPEECH), min_size=1, max_size=2),
    starts=st.lists(st.floats(0, 1), min_size=2, max_size=2),
    length=st.integers(1, 24000),
    chunks=st.lists(st.integers(40, 4000), min_size=1, max_size=6),
    bitrate=st.sampled_from([1500, 3000, 6000]),
)
def test_shipped_weights_stream_exactly_like_offline(shipped, speech, names, starts, length, chunks, bitrate):
    _stream_exactly(shipped, _segments(speech, names, starts[: len(names)], length), chunks, bitrate)


@pytest.mark.slow
@settings(max_examples=40, **SHIPPED_PROPERTY)
@given(
    names=st.lists(st.sampled_from(SPEECH), min_size=1, max_size=4),
    starts=st.lists(st.floats(0, 1), min_size=4, max_size=4),
    length=st.integers(1, 80000),
    chunks=st.lists(st.integers(1, 8000), min_size=1, max_size=12).filter(lambda c: max(c) >= 40),
    bitrate=st.sampled_from([1500, 3000, 6000]),
)
def test_shipped_weights_stream_exactly_like_offline_long(
    shipped, speech, names, starts, length, chunks, bitrate
):
    _stream_exactly(shipped, _segments(speech, names, starts[: len(names)], length), chunks, bitrate)


@pytest.mark.slow
def test_shipped_weights_stream_whole_clips_exactly(shipped, speech):
    """Every clip whole, in 20 ms pushes, at every bitrate (the check a new user would make)."""
    for name in SPEECH[:3]:
        for bitrate in (1500, 3000, 6000):
            _stream_exactly(shipped, speech[name][None, None], [320], bitrate)
