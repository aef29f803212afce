"""``audiokit enhance`` and :func:`audiokit.enhancement.enhance_file`: any rate/channels in, the input's
rate, channels and exact length out; streamed files equal offline enhancement; bad inputs fail cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from file_support import (
    BAD_KINDS,
    fails_in_one_line,
    mirror_tree,
    process_clip,
    run_quietly,
    stdin_to_stdout,
    write_clip,
)

from audiokit import io
from audiokit.cli import main
from audiokit.enhancement import enhance_audio, enhance_file, load_enhancer
from audiokit.models.enhancer import Enhancer
from audiokit.processing import _output_subtype

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """An untrained enhance-16k saved as ``.safetensors`` (no shipped weights yet)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("enhancer") / "enhance.safetensors"
    return Enhancer.from_config("enhance-16k").save_pretrained(path)


def enhance(*args: object) -> int:
    return run_quietly("enhance", *args)


@pytest.mark.parametrize(("source", "seconds"), [("music_stereo_44k.flac", 3.0), ("speech_fr_8k_a.wav", 7.2)])
def test_output_keeps_rate_channels_and_exact_length(tmp_path, model_file, source, seconds):
    want, got = process_clip("enhance", tmp_path, source, seconds, "-m", model_file)
    assert (got.samplerate, got.channels, got.frames) == (want.samplerate, want.channels, want.frames)


def test_compressed_input_to_wav_is_written_as_pcm(tmp_path, model_file):
    """An MP3's sample format is not carried into a WAV (libsndfile cannot write it there): 16-bit PCM."""
    mp3 = tmp_path / "in.mp3"
    ffmpeg = ["ffmpeg", "-v", "error", "-i", str(SAMPLES / "speech_fr_16k_a.flac"), "-t", "1.5", str(mp3)]
    subprocess.run(ffmpeg, check=True)
    assert sf.info(mp3).subtype == "MPEG_LAYER_III"
    assert enhance(mp3, tmp_path / "out.wav", "-m", model_file) == 0
    out = sf.info(tmp_path / "out.wav")
    assert (out.subtype, out.samplerate, out.frames) == ("PCM_16", 16000, sf.info(mp3).frames)


def test_opus_in_ogg_is_written_back_as_opus(tmp_path, model_file):
    """An Opus stream in ``.ogg`` (opusenc's, and one ``.opus`` file) came back as Vorbis: libsndfile's
    default for Ogg. Opus stays Opus at the input's rate and exact length; Vorbis stays Vorbis, and a
    ``.opus`` target is Opus whatever the input."""
    clip = write_clip(tmp_path / "clip.wav", "speech_fr_16k_a.flac", 1.5, subtype="PCM_16")
    for name in ("in.ogg", "in.opus"):
        subprocess.run(["opusenc", "--quiet", "--bitrate", "24", str(clip), str(tmp_path / name)], check=True)
    sf.write(tmp_path / "vorbis.ogg", sf.read(clip, dtype="float32")[0], 16000, subtype="VORBIS")
    cases = [
        ("in.ogg", "out.ogg", "OPUS"),
        ("in.opus", "from-opus.ogg", "OPUS"),
        ("vorbis.ogg", "still-vorbis.ogg", "VORBIS"),
        ("vorbis.ogg", "now.opus", "OPUS"),
    ]
    for source, target, subtype in cases:
        assert enhance(tmp_path / source, tmp_path / target, "-m", model_file) == 0
        got, want = sf.info(tmp_path / target), sf.info(tmp_path / source)
        assert (got.format, got.subtype) == ("OGG", subtype), (source, target)
        assert (got.samplerate, got.frames) == (want.samplerate, want.frames) == (16000, 24000)
    # an output rate Opus does not code (none of the shipped models makes one) is written as Vorbis
    opus = io.info(tmp_path / "in.ogg")
    assert _output_subtype(opus, tmp_path / "x.ogg", 16000) == "OPUS"
    assert _output_subtype(opus, tmp_path / "x.ogg", 44100) is None
    assert _output_subtype(opus, tmp_path / "x.wav", 16000) is None  # PCM_16


def test_streamed_file_equals_offline_enhance(tmp_path, model_file, capsys):
    """A mono 16 kHz file through the command (16-bit output) and, in odd blocks, through
    :func:`enhance_file` (float output) equals ``model.enhance`` on the whole signal."""
    src = SAMPLES / "speech_fr_16k_c.flac"
    model, _ = load_enhancer(str(model_file))
    wav, _ = io.load(src)
    offline = model.enhance(wav[None])[0, 0].numpy()
    out = tmp_path / "c.flac"
    assert main(["enhance", str(src), str(out), "-m", str(model_file), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (
        summary["done"] == 1
        and summary["model"] == "enhance-16k"
        and summary["files"][0]["samples"] == len(offline)
    )
    np.testing.assert_allclose(sf.read(out, dtype="float32")[0], offline, atol=1e-4)
    float_src = tmp_path / "c-float.wav"
    sf.write(float_src, wav[0].numpy(), 16000, subtype="FLOAT")
    enhance_file(model, float_src, tmp_path / "c-out.wav", block_frames=777)
    streamed, _ = sf.read(tmp_path / "c-out.wav", dtype="float32")
    assert sf.info(tmp_path / "c-out.wav").subtype == "FLOAT"
    np.testing.assert_allclose(streamed, offline, atol=1e-5)
    enhance_file(model, float_src, tmp_path / "c-out.w64")  # Sony Wave64 keeps it too (it was 16-bit)
    assert sf.info(tmp_path / "c-out.w64").subtype == "FLOAT"


def test_resampled_blocks_equal_offline_resampling(tmp_path, model_file):
    """At 44.1 kHz, the blockwise soxr streams and model session match resampling the whole file."""
    src = write_clip(tmp_path / "in.wav", "speech_ca_44k.flac", 3.0, subtype="FLOAT")
    model, _ = load_enhancer(str(model_file))
    enhance_file(model, src, tmp_path / "out.wav", atten_lim_db=12.0, block_frames=5000)
    streamed, rate = sf.read(tmp_path / "out.wav", dtype="float32")
    wav, _ = io.load(src)
    offline = enhance_audio(model, wav, rate, atten_lim_db=12.0)[0].numpy()
    assert streamed.shape == offline.shape
    np.testing.assert_allclose(streamed, offline, atol=1e-4)


def test_dry_one_gives_the_input_back(tmp_path, model_file):
    src = SAMPLES / "speech_fr_16k_b.flac"
    out = tmp_path / "dry.wav"
    assert enhance(src, out, "-m", model_file, "--dry", "1") == 0
    np.testing.assert_allclose(sf.read(out)[0], sf.read(src)[0], atol=1e-4)


def test_levels_beyond_full_scale_stay_in_float_files_and_are_clipped_and_counted_elsewhere(
    tmp_path, model_file, capsys
):
    """A float WAV in and out keeps samples above full scale (``--dry 1``: the input itself, +8 dBFS);
    16-bit FLAC cannot hold them: clipped, counted and warned about once per file (was: clipped silently
    in both)."""
    hot = 2.5 * sf.read(SAMPLES / "speech_fr_16k_b.flac", dtype="float32")[0]
    sf.write(tmp_path / "hot.wav", hot, 16000, subtype="FLOAT")
    assert (
        main(
            [
                "enhance",
                str(tmp_path / "hot.wav"),
                str(tmp_path / "out.wav"),
                "-m",
                str(model_file),
                "--dry",
                "1",
            ]
        )
        == 0
    )
    assert "clipped" not in capsys.readouterr().err
    out, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    np.testing.assert_allclose(out, hot, atol=1e-4)
    assert (
        main(
            [
                "enhance",
                str(tmp_path / "hot.wav"),
                str(tmp_path / "out.flac"),
                "-m",
                str(model_file),
                "--dry",
                "1",
            ]
        )
        == 0
    )
    beyond = int((np.abs(hot) > 1).sum())
    assert f"out.flac: {beyond} sample(s) above full scale clipped" in capsys.readouterr().err
    assert np.abs(sf.read(tmp_path / "out.flac")[0]).max() <= 1.0


def test_directory_tree_is_mirrored(tmp_path, model_file):
    tree, out = mirror_tree("enhance", tmp_path, "speech_fr_16k_b.flac", "-m", model_file)
    for rel in ("top.flac", "a/b/deep.wav"):
        assert sf.info(out / rel).frames == sf.info(tree / rel).frames


def test_a_folder_with_a_name_that_is_not_utf8(tmp_path, model_file):
    """The mirrored output keeps the undecodable name (writing it was an internal error)."""
    name = os.fsdecode(b"caf\xe9.wav")
    (tmp_path / "in").mkdir()
    io.save(tmp_path / "in" / name, np.zeros((1, 8000), np.float32), 16000)
    assert run_quietly("enhance", tmp_path / "in", tmp_path / "out", "-m", model_file) == 0
    assert io.info(tmp_path / "out" / name).frames == 8000


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, model_file, capsys, kind):
    assert fails_in_one_line("enhance", tmp_path, kind, 16000, capsys, "-m", str(model_file))


def test_bad_options_are_one_line(tmp_path, model_file, capsys):
    src = SAMPLES / "speech_fr_16k_b.flac"
    for option in (["--dry", "1.5"], ["--atten-lim-db", "-3"], ["--atten-lim-db", "nan"]):
        assert main(["enhance", str(src), str(tmp_path / "x.wav"), "-m", str(model_file), *option]) == 2
        err = capsys.readouterr().err  # a malformed option: argparse's usage line and the error
        assert err.strip().splitlines()[-1].startswith(f"audiokit enhance: error: argument {option[0]}: ")
        assert not (tmp_path / "x.wav").exists()
    # inf is no limit, the default: the same output
    for name, option in (("default.wav", []), ("inf.wav", ["--atten-lim-db", "inf"])):
        assert main(["enhance", "-q", str(src), str(tmp_path / name), "-m", str(model_file), *option]) == 0
    assert np.array_equal(sf.read(tmp_path / "default.wav")[0], sf.read(tmp_path / "inf.wav")[0])
    capsys.readouterr()
    assert (
        main(["enhance", str(src), str(tmp_path / "x.wav"), "-m", str(SAMPLES / "nothing.safetensors")]) == 1
    )
    assert "nothing.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()


def test_a_bad_file_in_a_directory_is_one_line_and_the_rest_are_done(tmp_path, model_file, capsys):
    tree = tmp_path / "in"
    tree.mkdir()
    write_clip(tree / "good.flac", "speech_fr_16k_b.flac", 1.0)
    (tree / "bad.wav").write_text("not audio at all\n" * 20)
    out = tmp_path / "out"
    assert main(["enhance", str(tree), str(out), "-m", str(model_file), "-q"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [captured.err.strip()]
    assert captured.err.startswith(str(tree / "bad.wav")) and "1 done, 1 failed" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["good.flac"]


def test_stdin_to_stdout(tmp_path, model_file):
    """``-`` in and out: a WAV on stdout with the input's rate, channels and length; the summary goes
    to stderr."""
    src = write_clip(tmp_path / "in.flac", "music_stereo_44k.flac", 1.0)
    done = stdin_to_stdout("enhance", src, "-m", str(model_file))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out.wav"
    out.write_bytes(done.stdout)
    got, want = sf.info(out), sf.info(src)
    assert (got.format, got.samplerate, got.channels, got.frames) == ("WAV", 44100, 2, want.frames)
    assert json.loads(done.stderr)["files"][0]["input"] == "<stdin>"


@pytest.mark.slow
def test_runs_in_constant_memory(tmp_path, model_file):
    """Peak memory for 10 minutes of 44.1 kHz audio is within 60 MiB of that for 1 minute (the whole
    signal alone would take 100 MiB as float32)."""
    peak = "import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
    peak += "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)"
    peaks = {}
    for minutes in (1, 10):
        wav = tmp_path / f"{minutes}.wav"
        with io.open_writer(wav, 44100, 1) as write:
            for _ in range(minutes * 6):
                write(torch.randn(1, 441000) * 0.05)
        command = ["enhance", str(wav), str(tmp_path / f"{minutes}.out.wav"), "-m", str(model_file), "-q"]
        done = subprocess.run(
            [sys.executable, "-c", peak, sys.executable, "-m", "audiokit", *command],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert done.returncode == 0, done.stderr
        peaks[minutes] = int(done.stdout.strip().splitlines()[-1]) / 1024
        assert sf.info(tmp_path / f"{minutes}.out.wav").frames == minutes * 60 * 44100
    assert peaks[10] - peaks[1] < 60, peaks
