"""``audiokit bwe``, :mod:`audiokit.bandwidth_extension`, the 8 kHz streaming session, bandwidth extension
in ``audiokit eval`` (next to sinc) and its speed in ``audiokit bench``."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import file_support as support
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SAMPLES, assert_speed_targets
from hypothesis import given, settings
from hypothesis import strategies as st

from audiokit import io
from audiokit.bandwidth_extension import extend_audio, extend_file, load_extender
from audiokit.bench import run_bwe_benchmark
from audiokit.cli import main
from audiokit.models.bwe import NARROWBAND_EDGE_HZ, BandwidthExtender


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A random bwe-8to16 saved as ``.safetensors`` (no shipped weights yet), moved far enough from its
    initial state that the network acts."""
    torch.manual_seed(0)
    model = BandwidthExtender.from_config("bwe-8to16")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.save_pretrained(tmp_path_factory.mktemp("bwe") / "bwe.safetensors")


def bwe(*args: object) -> int:
    return support.run_quietly("bwe", *args)


@pytest.mark.parametrize("source", ["speech_fr_8k_a.wav", "music_stereo_44k.flac"])
def test_output_is_16k_with_exact_length(tmp_path, model_file, source):
    """8 kHz mono and 44.1 kHz stereo: 16 kHz out, ``round(frames * 16000 / rate)`` per channel."""
    want, got = support.process_clip("bwe", tmp_path, source, 2.3, "-m", model_file)
    expected = round(want.frames * 16000 / want.samplerate)
    assert (got.samplerate, got.channels, got.frames) == (16000, want.channels, expected)


def test_opus_in_ogg_comes_out_as_opus_at_the_output_rate(tmp_path, model_file):
    """8 kHz Opus in ``.ogg`` (opusenc's) extended to a 16 kHz ``.ogg`` is Opus, not Vorbis."""
    clip = support.write_clip(tmp_path / "phone.wav", "speech_fr_8k_a.wav", 1.0, subtype="PCM_16")
    subprocess.run(["opusenc", "--quiet", str(clip), str(tmp_path / "phone.ogg")], check=True)
    assert (sf.info(tmp_path / "phone.ogg").subtype, sf.info(tmp_path / "phone.ogg").samplerate) == (
        "OPUS",
        8000,
    )
    assert bwe(tmp_path / "phone.ogg", tmp_path / "wide.ogg", "-m", model_file) == 0
    got = sf.info(tmp_path / "wide.ogg")
    assert (got.format, got.subtype, got.samplerate, got.frames) == ("OGG", "OPUS", 16000, 16000)


def test_content_above_the_output_band_is_warned_about_once(tmp_path, model_file, capsys):
    """20 kHz music at 44.1 kHz comes out at 16 kHz: one warning says what is not kept; narrowband
    speech gets none."""
    (tmp_path / "in").mkdir()
    music = support.write_clip(tmp_path / "in" / "m.wav", "music_stereo_44k.flac", 1.0)
    support.write_clip(tmp_path / "in" / "n.wav", "music_stereo_44k.flac", 1.0)
    assert main(["bwe", str(tmp_path / "in"), str(tmp_path / "out"), "-m", str(model_file), "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and f"{music} has content up to ~" in err and "up to 8 kHz" in err
    phone = support.write_clip(tmp_path / "p.wav", "speech_fr_8k_a.wav", 1.0)
    assert main(["bwe", str(phone), str(tmp_path / "p16.wav"), "-m", str(model_file), "-q"]) == 0
    assert "warning" not in capsys.readouterr().err
    # 16 kHz speech upsampled to 44.1 kHz by ffmpeg (its resampler leaks to ~8.5 kHz): nothing is lost
    wide = tmp_path / "up44.wav"
    upsample = ["ffmpeg", "-v", "error", "-i", str(support.SAMPLES / "speech_fr_16k_a.flac"), "-ar", "44100"]
    subprocess.run([*upsample, str(wide)], check=True)
    assert main(["bwe", str(wide), str(tmp_path / "up16.wav"), "-m", str(model_file), "-q"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_file_equals_model_extend(tmp_path, model_file, capsys):
    """An 8 kHz mono file through the command (16-bit output) equals ``model.extend`` within 1e-4; a
    band-limited 16 kHz file streamed in odd blocks (edge measured in a first pass) equals it within
    1e-5; a 44.1 kHz file equals the in-memory :func:`extend_audio`."""
    src = support.write_clip(tmp_path / "in8.wav", "speech_fr_8k_a.wav", 3.0, subtype="FLOAT")
    model, _ = load_extender(str(model_file))
    wav, _ = io.load(src)
    offline = model.extend(wav, 8000)[0].numpy()
    out = tmp_path / "out.wav"
    assert main(["bwe", str(src), str(out), "-m", str(model_file), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["done"] == 1 and summary["files"][0]["samples"] == len(offline) == 2 * wav.shape[-1]
    np.testing.assert_allclose(sf.read(out, dtype="float32")[0], offline, atol=1e-4)

    low = torch.from_numpy(io.resample(io.load(SAMPLES / "speech_fr_16k_a.flac")[0].numpy().T, 16000, 11025))
    narrow16 = torch.from_numpy(io.resample(low.numpy(), 11025, 16000).T.copy())[:, :40000]
    sf.write(tmp_path / "n16.wav", narrow16[0].numpy(), 16000, subtype="FLOAT")
    done = extend_file(model, tmp_path / "n16.wav", tmp_path / "n16-out.wav", block_frames=777)
    assert 4000 < done["edge_hz"] < 6000  # measured: the content stops near 5.5 kHz
    streamed, _ = sf.read(tmp_path / "n16-out.wav", dtype="float32")
    np.testing.assert_allclose(streamed, model.extend(narrow16, 16000)[0].numpy(), atol=1e-5)

    src44 = support.write_clip(tmp_path / "in44.wav", "speech_ca_44k.flac", 2.0, subtype="FLOAT")
    extend_file(model, src44, tmp_path / "out44.wav", block_frames=5000)
    streamed, _ = sf.read(tmp_path / "out44.wav", dtype="float32")
    np.testing.assert_allclose(streamed, extend_audio(model, io.load(src44)[0], 44100)[0].numpy(), atol=1e-4)


def test_input_rate_takes_the_narrowband_path(tmp_path, model_file, capsys):
    """``--input-rate 8000`` on a 16 kHz file: resampled to 8 kHz, then the model's upsampler."""
    src = support.write_clip(tmp_path / "in.flac", "speech_fr_16k_b.flac", 1.0)
    out = tmp_path / "out.wav"
    assert main(["bwe", str(src), str(out), "-m", str(model_file), "--input-rate", "8000", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["input_rate"] == 8000 and summary["files"][0]["edge_hz"] == NARROWBAND_EDGE_HZ
    assert sf.info(out).frames == sf.info(src).frames


@settings(max_examples=8, deadline=None)
@given(
    length=st.integers(1, 1500),
    chunks=st.lists(st.integers(0, 300), max_size=6),
    reset_at=st.integers(0, 1500),
    reset_rows=st.sampled_from([[1], [0, 1]]),
    seed=st.integers(0, 2**16),
)
def test_8k_stream_equals_extend(model_file, length, chunks, reset_at, reset_rows, seed):
    """``model.stream(input_rate=8000)`` (FIR upsampler + session) equals ``model.extend`` within 1e-5
    for any chunking, with exact lengths, also for rows reset part-way."""
    model, _ = load_extender(str(model_file))
    x = torch.randn(1, 2, length, generator=torch.Generator().manual_seed(seed)) * 0.3
    session = model.stream(1, input_rate=8000, channels=2)
    outs, pos, reset, after = [], 0, reset_at % length, 0
    for size in [*chunks, length]:
        size = min(size, length - pos)
        if pos <= reset < pos + size:  # restart ``reset_rows`` at ``reset``
            outs.append(session.push(x[..., pos:reset]))
            session.reset(reset_rows)
            after = len(outs)
            outs.append(session.push(x[..., reset : pos + size]))
        else:
            outs.append(session.push(x[..., pos : pos + size]))
        pos += size
    last = session.flush()
    for c in range(2):
        start = (after, reset) if c in reset_rows else (0, 0)
        kept = torch.cat([o[0, c] for o in outs[start[0] :]] + [last[0, c, : session.lengths[c]]])
        want = model.extend(x[:, c : c + 1, start[1] :], 8000)[0, 0]
        torch.testing.assert_close(kept, want, atol=1e-5, rtol=0)


def test_directory_tree_is_mirrored(tmp_path, model_file):
    tree, out = support.mirror_tree("bwe", tmp_path, "speech_fr_8k_a.wav", "-m", model_file)
    for rel in ("top.flac", "a/b/deep.wav"):
        want = sf.info(tree / rel)
        assert sf.info(out / rel).frames == round(want.frames * 16000 / want.samplerate)


@pytest.mark.parametrize("kind", support.BAD_KINDS)
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, model_file, capsys, kind):
    """A bad file, a bad ``--input-rate`` and a missing model: one line each, no output."""
    assert support.fails_in_one_line("bwe", tmp_path, kind, 8000, capsys, "-m", str(model_file))
    out = tmp_path / "out" / "x.wav"
    for option in (["--input-rate", "0"], ["-m", str(tmp_path / "nothing.safetensors")]):
        assert main(["bwe", str(tmp_path / "good.wav"), str(out), "-m", str(model_file), *option]) == 1
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()


def test_stdin_to_stdout(tmp_path, model_file):
    """``-`` in and out: a 16 kHz WAV on stdout of exactly twice the 8 kHz input's length."""
    src = support.write_clip(tmp_path / "in.flac", "speech_fr_8k_a.wav", 1.0)
    done = support.stdin_to_stdout("bwe", src, "-m", str(model_file))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out.wav"
    out.write_bytes(done.stdout)
    got = sf.info(out)
    assert (got.format, got.samplerate, got.frames) == ("WAV", 16000, 2 * sf.info(src).frames)
    assert json.loads(done.stderr)["files"][0]["input"] == "<stdin>"


def test_eval_reports_the_model_and_sinc(tmp_path, model_file, capsys):
    """``eval -m BWE --input-rate 8000``: ours, sinc and the paired differences in one report, with the
    high-band LSD; the sinc column equals a ``--baseline sinc`` run."""
    ref = tmp_path / "ref"
    ref.mkdir()
    for name in ("speech_fr_16k_a.flac", "speech_fr_16k_b.flac"):
        support.write_clip(ref / name, name, 2.0)
    csv = tmp_path / "rows.csv"
    args = ["eval", str(ref), "--input-rate", "8000", "--json"]
    assert main([*args, "-m", str(model_file), "--csv", str(csv)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "bwe-8to16" and report["n"] == 2 and report["input_rate"] == 8000
    for name in ("lsd", "lsd_high", "pesq", "stoi"):
        assert math.isfinite(report[name]) and math.isfinite(report["sinc"][name])
        assert report["vs_sinc"][name]["mean"] == pytest.approx(report[name] - report["sinc"][name], abs=3e-6)
    assert report["lsd_high"] > report["lsd"] * 0.5 and "sinc_lsd_high" in csv.read_text()
    assert main([*args, "--baseline", "sinc"]) == 0
    sinc = json.loads(capsys.readouterr().out)
    for name in ("lsd", "lsd_high", "pesq"):
        assert sinc[name] == pytest.approx(report["sinc"][name])
    assert main([*args, "-m", str(model_file), "--baseline", "sinc"]) == 1
    assert main(["eval", str(ref), "-m", str(model_file)]) == 1
    assert "--input-rate" in capsys.readouterr().err


def test_bench_figures_are_finite(model_file, capsys):
    result = run_bwe_benchmark(seconds=0.5, repeats=1, hops=10, stream_counts=(1, 4))
    cpu = result["cpu"]
    values = [
        cpu["offline"]["rtf"],
        cpu["stream_hop"]["push"]["p50_ms"],
        cpu["stream_hop"]["step"]["p50_ms"],
        cpu["many_streams"]["by_streams"]["4"]["streams_sustained"],
        result["sinc"]["rtf"],
        result["ratios"]["offline_speed_vs_sinc"],
    ]
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert cpu["stream_hop"]["hop_ms"] == 8.0 and result["settings"]["input_rate"] == 8000
    assert "skipped" not in cpu["compiled"] and cpu["compiled"]["aoti"]["p50_ms"] > 0  # AOTInductor
    assert cpu["compiled"]["aoti_fp16"]["p50_ms"] > 0  # compiled with float16 weights
    assert_speed_targets(result)
    args = ["bench", "-m", str(model_file), "--seconds", "0.5", "--repeats", "1", "--frames", "10"]
    assert main([*args, "--streams", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "bwe_speed" and result["settings"]["weights"] == "loaded"
