"""``audiokit encode`` / ``decode`` end to end with a (randomly initialised) saved codec."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from audiokit import io
from audiokit.models import Codec

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
# runs argv[1:] and prints its peak resident memory in KiB
PEAK_RSS = (
    "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)"
)


def audiokit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "audiokit", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return Codec.from_config("speech-16k").save_pretrained(
        tmp_path_factory.mktemp("model") / "speech-16k.safetensors"
    )


def test_round_trip_exact_length_size_and_seek(tmp_path, model_path):
    source = SAMPLES / "speech_fr_16k_a.flac"
    akc, out = tmp_path / "a.akc", tmp_path / "a.wav"
    done = audiokit("encode", str(source), str(akc), "-b", "6", "--model", str(model_path))
    assert done.returncode == 0, done.stderr
    seconds = sf.info(source).frames / 16000
    assert akc.stat().st_size <= 6000 * seconds / 8 * 1.02 + 200  # nominal 6 kbps + header
    done = audiokit("decode", str(akc), str(out), "--model", str(model_path))
    assert done.returncode == 0, done.stderr
    full, rate = io.load(out)
    assert rate == 16000 and full.shape == (1, sf.info(source).frames)
    # the decoded audio is what the Python API gives
    codec = Codec.from_pretrained(model_path)
    wav, _ = io.load(source)
    with torch.inference_mode():
        api = codec.decode(codec.encode(wav[None], 6000))[0]
    assert (full - api.clamp(-1, 1)).abs().max() <= 2 / 32768  # 16-bit WAV quantisation
    # seeking decodes the same samples as a full decode
    part = tmp_path / "part.wav"
    done = audiokit(
        "decode", str(akc), str(part), "--model", str(model_path), "--start", "3", "--duration", "2"
    )
    assert done.returncode == 0, done.stderr
    segment, _ = io.load(part)
    assert segment.shape == (1, 32000)
    assert (segment - full[:, 48000:80000]).abs().max() <= 2 / 32768


def test_stereo_44k_input_and_directories(tmp_path, model_path):
    src = tmp_path / "in" / "sub"
    src.mkdir(parents=True)
    music, _ = io.load(SAMPLES / "music_stereo_44k.flac")
    io.save(src / "m.flac", music[:, :44100], 44100)
    done = audiokit(
        "encode", str(tmp_path / "in"), str(tmp_path / "codes"), "-b", "3", "--model", str(model_path), "-q"
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "codes" / "sub" / "m.akc").is_file()
    done = audiokit(
        "decode", str(tmp_path / "codes"), str(tmp_path / "out"), "--model", str(model_path), "-q"
    )
    assert done.returncode == 0, done.stderr
    restored, rate = io.load(tmp_path / "out" / "sub" / "m.wav")  # the input's own rate and length
    assert rate == 44100 and restored.shape == (2, 44100)
    # --sample-rate overrides: the model's own rate, then the stream resampled (soxr) matches the default
    at_model = tmp_path / "m16.flac"
    done = audiokit(
        "decode",
        str(tmp_path / "codes" / "sub" / "m.akc"),
        str(at_model),
        "--model",
        str(model_path),
        "--sample-rate",
        "16000",
    )
    assert done.returncode == 0, done.stderr
    out, rate = io.load(at_model)
    assert rate == 16000 and out.shape == (2, 16000)
    expected = io.resample(out.numpy().T.copy(), 16000, 44100).T
    assert abs(restored.numpy() - expected).max() < 2e-3  # 16-bit WAV/FLAC rounding and soxr stream edges


@pytest.mark.slow
def test_encode_and_decode_run_in_constant_memory(tmp_path, model_path):
    """Peak memory for 10 minutes of audio is within 60 MiB of that for 1 minute (an offline encode
    of 10 minutes would need gigabytes of activations), decoding from --start too."""
    peaks = {}
    for minutes in (1, 10):
        wav = tmp_path / f"{minutes}.wav"
        with io.open_writer(wav, 16000, 1) as write:
            for _ in range(minutes * 6):
                write(torch.randn(1, 160000) * 0.05)
        akc = str(tmp_path / f"{minutes}.akc")
        for step, command in (
            ("encode", ["encode", str(wav), akc]),
            ("decode", ["decode", akc, str(tmp_path / f"{minutes}.out.wav")]),
            ("decode --start", ["decode", akc, str(tmp_path / f"{minutes}.rest.wav"), "--start", "1"]),
        ):
            done = subprocess.run(
                [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "audiokit", *command]
                + ["--model", str(model_path), "-q"],
                capture_output=True,
                text=True,
                timeout=1200,
            )
            assert done.returncode == 0, done.stderr
            peaks[(step, minutes)] = int(done.stdout.strip().splitlines()[-1]) / 1024
    for step in ("encode", "decode", "decode --start"):
        assert peaks[(step, 10)] - peaks[(step, 1)] < 60, peaks


def test_errors_are_one_line_and_leave_no_output(tmp_path, model_path):
    akc = tmp_path / "a.akc"
    assert (
        audiokit(
            "encode", str(SAMPLES / "speech_fr_16k_b.flac"), str(akc), "--model", str(model_path)
        ).returncode
        == 0
    )
    data = akc.read_bytes()
    cases = {
        "truncated.akc": data[: len(data) // 2],
        "flipped.akc": data[:100] + bytes([data[100] ^ 0xFF]) + data[101:],
        "empty.akc": b"",
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        out = tmp_path / f"{name}.wav"
        done = audiokit("decode", str(tmp_path / name), str(out), "--model", str(model_path))
        assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert name in done.stderr and "Traceback" not in done.stderr
        assert not out.exists()
    for bad, code in (  # a value the option never takes is a malformed option (2); past the end, 1
        (["--start", "-1"], 2),
        (["--start", "nan"], 2),
        (["--duration", "0"], 2),
        (["--duration", "-2"], 2),
        (["--start", "99"], 1),
    ):
        out = tmp_path / "bad.wav"
        done = audiokit("decode", str(akc), str(out), "--model", str(model_path), *bad)
        assert done.returncode == code and len(done.stderr.strip().splitlines()) == 1, (bad, done.stderr)
        assert bad[0] in done.stderr and not out.exists()
    # a different model's weights are refused
    torch.manual_seed(1)
    other = Codec.from_config("speech-16k").save_pretrained(tmp_path / "other.safetensors")
    done = audiokit("decode", str(akc), str(tmp_path / "x.wav"), "--model", str(other))
    assert done.returncode != 0 and "weights" in done.stderr and not (tmp_path / "x.wav").exists()
    done = audiokit(
        "encode",
        str(SAMPLES / "speech_fr_16k_b.flac"),
        str(tmp_path / "y.akc"),
        "-b",
        "0.1",
        "--model",
        str(model_path),
    )
    assert done.returncode != 0 and "kbps only" in done.stderr and not (tmp_path / "y.akc").exists()
    done = audiokit(
        "encode", str(tmp_path / "empty.akc"), str(tmp_path / "z.akc"), "--model", str(model_path)
    )
    assert done.returncode != 0 and "empty.akc" in done.stderr and not (tmp_path / "z.akc").exists()
