"""Issue 19, items 2-6: whole batches, user mistakes as one line (never exit 70), the input's own rate
and length back, pipes and levels, and the smaller edges. Commands run in-process through
``audiokit.cli.main`` (the shipped speech-16k loads once per process) unless stdin is needed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiokit import io
from audiokit.bitstream import AkcHeader, write_akc
from audiokit.cli import main
from audiokit.coding import load_codec
from audiokit.streaming import CodecStream

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
V1_FIXTURE = Path(__file__).resolve().parent / "data" / "speech16k_v1.akc"  # written by the version-1 writer


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _speech(path: Path, seconds: float = 0.5, rate: int = 16000, peak: float = 0.5) -> Path:
    x, r = sf.read(SAMPLES / "speech_fr_16k_a.flac", dtype="float32")
    x = io.resample(x[16000 : 16000 + int(seconds * r), None], r, rate)[:, 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x / np.abs(x).max() * peak, rate, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("edges")
    f = {"wav": _speech(root / "a.wav"), "root": root}
    f["akc"] = root / "a.akc"
    assert main(["encode", "-q", str(f["wav"]), str(f["akc"])]) == 0
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.wav").write_text("not audio\n")
    (root / "a.pcm").write_bytes(b"\0" * 320)
    (root / "trunc.wav").write_bytes(f["wav"].read_bytes()[:20])  # was "Invalid data found" (ffmpeg's)
    (root / "existing.akc").write_bytes(b"keep")
    (root / "existing.wav").write_bytes(b"keep")
    (root / "file").write_text("a file, not a folder")
    data = f["akc"].read_bytes()
    (root / "corrupt.akc").write_bytes(data[:60] + bytes([data[60] ^ 0xFF]) + data[61:])
    middle = len(data) // 2  # a payload byte: `info` read the header and trailer only and passed it
    (root / "damaged.akc").write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    (root / "codes").mkdir()
    (root / "codes" / "a.akc").write_bytes(data)
    (root / "audio").mkdir()
    _speech(root / "audio" / "b.wav")
    return f


MISTAKES = [
    # encode
    ["encode", "{root}/missing.wav", "{root}/o.akc"],
    ["encode", "{wav}", "{root}/o.akc", "-b", "6.2"],
    ["encode", "{wav}", "{root}/o.akc", "-b", "5.9"],
    ["encode", "{wav}", "{root}/o.akc", "-b", "0"],
    ["encode", "{wav}", "{root}/o.akc", "-b", "-3"],
    ["encode", "{wav}", "{root}/o.akc", "-b", "nan"],
    ["encode", "{wav}", "{root}/o.akc", "-b", "six"],
    ["encode", "{wav}", "{root}/o.wav"],
    ["encode", "{wav}", "{root}/noextension"],
    ["encode", "{wav}", "{root}/file/under.akc"],
    ["encode", "{wav}", "/proc/audiokit-test.akc"],
    ["encode", "{wav}", "{root}/o.akc", "-m", "no-such-model"],
    ["encode", "{root}/notes.wav", "{root}/o.akc"],
    ["encode", "{root}/empty.wav", "{root}/o.akc"],
    ["encode", "{wav}", "{wav}"],
    ["encode", "{wav}", "{root}/existing.akc"],
    ["encode", "{root}/audio", "{root}/enc", "--glob", "*.nothing"],
    ["encode", "{root}/audio", "{root}/file"],
    ["encode", "{root}/audio", "{root}/out.akc"],
    ["encode", "{wav}", "{root}/o.akc", "--raw-rate", "0"],
    ["encode", "{wav}", "{root}/o.akc", "--raw-rate", "16000", "--raw-channels", "0"],
    ["encode", "{wav}", "{root}/o.akc", "--raw-format", "xyz"],
    ["encode", "{root}/a.pcm", "{root}/o.akc"],
    ["encode", "-", "{root}/folder/"],
    ["encode"],
    # decode
    ["decode", "{akc}", "{root}/o.xyz"],
    ["decode", "{akc}", "{root}/noextension"],
    ["decode", "{root}/codes", "{root}/dec", "--suffix", "xyz"],
    ["decode", "{root}/codes", "{root}/dec", "--suffix", ".akc"],
    ["decode", "{root}/codes", "{root}/dec", "--suffix", ""],
    ["decode", "{root}/codes", "{root}/dec", "--suffix", "."],
    ["decode", "{root}/codes", "{root}/dec", "--suffix", "a/b"],
    ["decode", "{akc}", "{root}/o.wav", "--sample-rate", "-5"],
    ["decode", "{akc}", "{root}/o.wav", "--sample-rate", "0"],
    ["decode", "{akc}", "{root}/o.wav", "--sample-rate", "1"],
    ["decode", "{akc}", "{root}/o.wav", "--sample-rate", "44.1"],
    ["decode", "{akc}", "{root}/o.mp3", "--sample-rate", "96000"],
    ["decode", "{akc}", "{root}/o.opus", "--sample-rate", "44100"],
    ["decode", "{akc}", "{root}/o.ogg", "--sample-rate", "384000"],
    ["decode", "{akc}", "{root}/o.wav", "--start", "-1"],
    ["decode", "{akc}", "{root}/o.wav", "--duration", "0"],
    ["decode", "{akc}", "{root}/o.wav", "--start", "99"],
    ["decode", "{akc}", "{root}/o.wav", "--start", "1e308"],
    ["decode", "{root}/corrupt.akc", "{root}/o.wav"],
    ["decode", "{wav}", "{root}/o.wav"],
    ["decode", "{root}/missing.akc", "{root}/o.wav"],
    ["decode", "{akc}", "{root}/existing.wav"],
    ["decode", "{akc}", "{root}/file/under.wav"],
    ["decode", "{root}/codes", "{root}/single.wav"],
    # an empty name was the current folder ('names a file, but the input . is a folder')
    ["bwe", "", "{root}/o.wav"],
    ["enhance", "{wav}", ""],
    ["data", "prepare", "--packages", " ", "--data-dir", "{root}/data"],
    # raw PCM options without --raw-rate were silently ignored
    ["encode", "{wav}", "{root}/o.akc", "--raw-format", "s16le"],
    ["encode", "{wav}", "{root}/o.akc", "--raw-channels", "2"],
    ["encode", "{wav}", "{root}/o.akc", "--raw-rate", "16000", "--raw-channels", "0"],
    # eval
    ["eval", "{wav}", "--baseline", "opus"],
    ["eval", "{wav}", "--baseline", "sinc"],
    ["eval", "{wav}", "--baseline", "sinc", "--input-rate", "0"],
    ["eval", "{wav}", "--baseline", "identity", "--plot", "{root}/spec.xyz"],
    ["eval", "{wav}", "--baseline", "identity", "--jobs", "0"],
    ["eval", "{wav}", "-m", "speech-16k", "--bitrate", "6.2"],
    ["eval", "{wav}"],
    # info and the command line itself
    ["info", "{root}/missing.wav"],
    ["info", "{root}/empty.wav"],
    ["info", "{root}/damaged.akc"],
    ["info", "{root}/trunc.wav"],
    ["enhance", "{root}/trunc.wav", "{root}/o.wav"],
    ["info"],
    [],
    ["frobnicate"],
]


def test_mistakes_table_one_line_exit_1_or_2_never_70(capsys, files):
    """Every wrong invocation: exit code 1 or 2, one line on stderr, no traceback, nothing written."""
    assert len(MISTAKES) >= 40
    names = {key: str(value) for key, value in files.items()}
    for argv in MISTAKES:
        args = [a.format(**names) for a in argv]
        code, _, err = run(capsys, *args)
        lines = err.strip().splitlines()
        assert code in (1, 2) and len(lines) == 1 and "Traceback" not in err, (args, code, err)
        assert "internal error" not in err, (args, err)
    assert (files["root"] / "existing.akc").read_bytes() == b"keep"
    assert not list(files["root"].glob("o.*"))
    assert not (files["root"] / "out.akc").exists() and not (files["root"] / "single.wav").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["encode", "{wav}", "{root}/o.akc", "--bitrate", "0"],
        ["encode", "{wav}", "{root}/o.akc", "--bitrate", "-3"],
        ["encode", "{wav}", "{root}/o.akc", "--bitrate", "nan"],
        ["enhance", "{wav}", "{root}/o.wav", "--dry", "1.5"],
        ["enhance", "{wav}", "{root}/o.wav", "--dry", "nan"],
        ["enhance", "{wav}", "{root}/o.wav", "--atten-lim-db", "-3"],
        ["enhance", "{wav}", "{root}/o.wav", "--atten-lim-db", "nan"],
        ["card", "-m", "speech-16k", "--run-dir", "{root}/run", "--max-files", "0"],
        ["card", "-m", "bwe-8to16", "--run-dir", "{root}/run", "--narrowband-files", "-1"],
        ["decode", "{akc}", "{root}/o.wav", "--start", "-1"],
        ["decode", "{akc}", "{root}/o.wav", "--duration", "0"],
        ["eval", "{wav}", "--baseline", "opus", "--bitrate", "-1"],
        ["demo", "--out", "{root}/o.demo", "--bitrate", "0"],
    ],
)
def test_option_values_out_of_range_are_usage_errors(capsys, files, argv):
    """A value its option cannot take is a malformed option, as README says: exit 2 (not 1), one line
    naming the option, before any model loads or file is read."""
    args = [a.format(**{key: str(value) for key, value in files.items()}) for a in argv]
    code, out, err = run(capsys, *args)
    assert code == 2 and not out, (args, code, err)
    assert err.strip() == err.strip().splitlines()[0]
    assert err.startswith(f"audiokit {argv[0]}: error: argument "), err
    assert f"{argv[-2]}: {argv[-1]} is " in err, err
    assert not list(files["root"].glob("o.*"))


@pytest.mark.parametrize("command", ["encode", "enhance", "bwe"])
def test_an_akc_under_an_audio_name_is_named_for_what_it_is(capsys, files, tmp_path, command):
    """An .akc renamed .wav read as 'not a readable audio file: Invalid data found' from ffmpeg."""
    renamed = tmp_path / "talk.wav"
    renamed.write_bytes(files["akc"].read_bytes())
    out = tmp_path / ("o.akc" if command == "encode" else "o.wav")
    code, _, err = run(capsys, command, renamed, out)
    assert code == 1 and not out.exists()
    expected = "an audiokit codec stream, not audio: decode it first (audiokit decode)"
    assert err.strip().endswith(f"{renamed}: {expected}")


def test_a_broken_link_in_a_folder_is_a_failed_file_not_skipped(capsys, files, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.wav").write_bytes(files["wav"].read_bytes())
    (folder / "broken.wav").symlink_to(tmp_path / "gone.wav")
    code, _, err = run(capsys, "encode", "-q", folder, tmp_path / "out")
    assert code == 1 and f"{folder / 'broken.wav'}: no such file or directory" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.akc"]


def test_bitrate_error_lists_the_models_rates_and_unknown_model_only_shipped(capsys, files):
    code, _, err = run(capsys, "encode", files["wav"], files["root"] / "x.akc", "-b", "6.2")
    assert code == 1 and "0.5, 1, 1.5" in err and "6 kbps" in err
    code, _, err = run(capsys, "encode", files["wav"], files["root"] / "x.akc", "-m", "nope")
    assert code == 1 and "speech-16k" in err and "noncausal" not in err and "general" not in err


def test_whole_batches_go_on_after_bad_files(capsys, tmp_path):
    mixed = tmp_path / "mixed"
    for name in ("a", "c", "e"):
        _speech(mixed / f"{name}.wav", 0.3)
    (mixed / "b.wav").write_bytes(b"")
    (mixed / "d.wav").write_text("not audio")
    code, out, err = run(capsys, "encode", "-q", mixed, tmp_path / "enc")
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["a.akc", "c.akc", "e.akc"]
    problems = err.strip().splitlines()
    assert len(problems) == 2 and problems[0].startswith(str(mixed / "b.wav") + ":")
    assert problems[1].startswith(str(mixed / "d.wav") + ":")
    assert "3 done, 2 failed" in out
    code, out, err = run(capsys, "encode", "-q", "--fail-fast", mixed, tmp_path / "ff")
    assert code == 1 and len(err.strip().splitlines()) == 1 and str(mixed / "b.wav") in err
    assert "stopped by --fail-fast: 1 of 5 done" in err
    assert sorted(p.name for p in (tmp_path / "ff").iterdir()) == ["a.akc"]
    # decoding a folder with one damaged .akc decodes the others
    enc = tmp_path / "enc"
    (enc / "c.akc").write_bytes((enc / "c.akc").read_bytes()[:-5])
    code, out, err = run(capsys, "decode", "-q", enc, tmp_path / "dec", "--json")
    report = json.loads(out)
    assert code == 1 and report["done"] == 2 and report["failed"][0]["path"] == str(enc / "c.akc")
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == ["a.wav", "e.wav"]
    assert len(err.strip().splitlines()) == 1 and "c.akc" in err
    # info reports every good file and one line per bad one
    code, out, err = run(capsys, "info", "-q", mixed / "a.wav", mixed / "b.wav", mixed / "c.wav")
    assert code == 1 and len(out.strip().splitlines()) == 2 and "a.wav" in out and "c.wav" in out
    assert err.strip().splitlines()[0].startswith(str(mixed / "b.wav"))


@pytest.mark.parametrize("samples", [44101, 44107])
def test_decode_gives_back_the_input_rate_and_exact_length(capsys, tmp_path, samples):
    x, _ = sf.read(SAMPLES / "music_stereo_44k.flac", frames=samples, dtype="float32")
    sf.write(tmp_path / "m.wav", x * 0.5, 44100, subtype="FLOAT")
    code, _, err = run(capsys, "encode", tmp_path / "m.wav", tmp_path / "m.akc")
    assert code == 0 and err.count("warning") == 1 and "kHz" in err  # the lost bandwidth, said once
    code, out, _ = run(capsys, "decode", tmp_path / "m.akc", tmp_path / "m.flac", "--json")
    assert code == 0 and json.loads(out)["files"][0]["samples"] == samples
    back = sf.info(tmp_path / "m.flac")
    assert back.samplerate == 44100 and back.frames == samples and back.channels == 2
    code, out, _ = run(capsys, "info", "--json", tmp_path / "m.akc")
    row = json.loads(out)
    assert row["original_sample_rate"] == 44100 and row["original_samples"] == samples
    assert row["model"] == "speech-16k" and row["bitrate_kbps"] == 12 and row["version"] == 2


@pytest.mark.parametrize(("rate", "samples"), [(44100, 1), (48000, 1), (48000, 2)])
def test_inputs_shorter_than_one_model_sample_come_back(capsys, tmp_path, rate, samples):
    """1 sample at 44.1 or 48 kHz is less than one 16 kHz sample: it still codes, and decodes to its own
    rate and length."""
    sf.write(tmp_path / "x.wav", np.full(samples, 0.25, dtype=np.float32), rate, subtype="FLOAT")
    assert run(capsys, "encode", tmp_path / "x.wav", tmp_path / "x.akc")[0] == 0
    assert run(capsys, "decode", tmp_path / "x.akc", tmp_path / "y.wav")[0] == 0
    back = sf.info(tmp_path / "y.wav")
    assert (back.samplerate, back.frames) == (rate, samples)


def test_seek_with_resampling_equals_the_same_span_of_a_full_decode(capsys, tmp_path):
    source = _speech(tmp_path / "s.wav", 2.0, rate=44100)
    run(capsys, "encode", source, tmp_path / "s.akc")
    for rate in ("44100", "22050"):
        full, part = tmp_path / f"full{rate}.wav", tmp_path / f"part{rate}.wav"
        assert run(capsys, "decode", tmp_path / "s.akc", full, "--sample-rate", rate)[0] == 0
        code, _, err = run(
            capsys,
            "decode",
            tmp_path / "s.akc",
            part,
            "--sample-rate",
            rate,
            "--start",
            "0.5",
            "--duration",
            "0.7",
        )
        assert code == 0, err
        whole, _ = sf.read(full)
        span, _ = sf.read(part)
        first = round(0.5 * int(rate))
        assert span.shape[0] == round(0.7 * int(rate))
        assert np.abs(span - whole[first : first + span.shape[0]]).max() <= 2 / 32768
        tail = tmp_path / f"tail{rate}.wav"  # a span that reaches the end
        assert (
            run(capsys, "decode", tmp_path / "s.akc", tail, "--sample-rate", rate, "--start", "1.5")[0] == 0
        )
        end, _ = sf.read(tail)
        assert np.abs(end - whole[round(1.5 * int(rate)) :]).max() <= 2 / 32768
        near = tmp_path / f"near{rate}.wav"  # a span whose margins reach both ends: all its chunks
        assert (
            run(capsys, "decode", tmp_path / "s.akc", near, "--sample-rate", rate, "--start", "0.05")[0] == 0
        )
        most, _ = sf.read(near)
        assert np.abs(most - whole[round(0.05 * int(rate)) :]).max() <= 2 / 32768


@pytest.mark.parametrize("rate", ["16000", "44100"])
def test_a_time_range_decodes_one_chunk_at_a_time(capsys, tmp_path, monkeypatch, rate):
    """`decode --start` streams the range through the decoder a chunk (one second) at a time, as a whole
    decode does: memory stays constant however long the rest of the file is (the range was decoded at
    once: `--start 1` on 10 minutes of stereo took 1.6 GB, a whole decode 0.5 GB)."""
    source = _speech(tmp_path / "s.wav", 3.0, rate=44100)
    assert run(capsys, "encode", source, tmp_path / "s.akc", "--entropy")[0] == 0
    whole = tmp_path / "whole.wav"
    assert run(capsys, "decode", tmp_path / "s.akc", whole, "--sample-rate", rate)[0] == 0
    pushed = []
    push = CodecStream.push
    monkeypatch.setattr(CodecStream, "push", lambda self, x: pushed.append(x.shape[-1]) or push(self, x))
    part = tmp_path / "part.wav"
    code, _, err = run(capsys, "decode", tmp_path / "s.akc", part, "--start", "0.9", "--sample-rate", rate)
    assert code == 0, err
    assert pushed and max(pushed) <= 50  # frames: one chunk of speech-16k's 50 Hz frames
    span, _ = sf.read(part)
    assert np.abs(span - sf.read(whole)[0][round(0.9 * int(rate)) :]).max() <= 2 / 32768


def test_version_1_files_still_decode(capsys, tmp_path):
    code, out, _ = run(capsys, "info", "--json", V1_FIXTURE)
    row = json.loads(out)
    assert code == 0 and row["version"] == 1 and row["original_sample_rate"] == 16000
    code, _, err = run(capsys, "decode", V1_FIXTURE, tmp_path / "v1.wav")
    assert code == 0, err
    info = sf.info(tmp_path / "v1.wav")
    assert info.samplerate == 16000 and info.frames == row["samples"] == 4801


def test_pipes_and_full_scale(tmp_path):
    loud = _speech(tmp_path / "loud.wav", 0.5, peak=2.0)
    python = [sys.executable, "-m", "audiokit"]
    with open(loud, "rb") as stdin:
        enc = subprocess.run([*python, "encode", "-", "-"], stdin=stdin, capture_output=True, timeout=600)
    assert enc.returncode == 0, enc.stderr
    assert enc.stdout[:4] == b"AKC\0" and b"above full scale" in enc.stderr and b"--rescale" in enc.stderr
    dec = subprocess.run([*python, "decode", "-", "-"], input=enc.stdout, capture_output=True, timeout=600)
    assert dec.returncode == 0, dec.stderr
    (tmp_path / "out.wav").write_bytes(dec.stdout)
    assert sf.info(tmp_path / "out.wav").frames == sf.info(loud).frames
    assert b"1 done, 0 failed" in dec.stderr  # results go to stderr when stdout carries the audio
    assert b"warning: <stdout>: " in dec.stderr and b"clipped" in dec.stderr  # was "warning: -: "


def test_rescale_scales_input_above_full_scale(capsys, tmp_path):
    loud = _speech(tmp_path / "loud.wav", 0.5, peak=2.0)
    code, _, err = run(capsys, "encode", "--rescale", loud, tmp_path / "r.akc")
    assert code == 0 and "full scale" not in err
    run(capsys, "decode", tmp_path / "r.akc", tmp_path / "r.wav")
    assert np.abs(sf.read(tmp_path / "r.wav")[0]).max() < 1.0


def test_decode_rescale_scales_an_output_that_would_clip(capsys, tmp_path):
    source = _speech(tmp_path / "hot.wav", 1.0, peak=4.0)
    x, rate = sf.read(source, dtype="float32")
    sf.write(source, np.clip(x, -0.99, 0.99), rate, subtype="FLOAT")  # hard-clipped speech: decodes past 1
    run(capsys, "encode", source, tmp_path / "hot.akc")
    code, _, err = run(capsys, "decode", tmp_path / "hot.akc", tmp_path / "plain.wav")
    assert code == 0 and "clipped at full scale" in err and "--rescale" in err
    code, out, err = run(
        capsys, "decode", "--rescale", "--json", tmp_path / "hot.akc", tmp_path / "scaled.wav"
    )
    assert code == 0 and "clipped" not in err
    scale = json.loads(out)["files"][0]["scale"]
    plain, scaled = sf.read(tmp_path / "plain.wav")[0], sf.read(tmp_path / "scaled.wav")[0]
    assert 0.5 < scale < 1.0 and np.abs(scaled).max() <= 0.99 + 1 / 32768
    inside = np.abs(plain) < 0.98  # where the plain decode did not clip, the scaled one is it times scale
    np.testing.assert_allclose(scaled[inside], plain[inside] * scale, atol=2 / 32768)


def test_more_channels_than_an_akc_holds_is_one_failed_file(capsys, tmp_path):
    """65 channels (an .akc holds 1-64) was an "internal error" (exit 70) that stopped a folder's run
    before its other files: it is that file's one-line failure, and the rest are encoded."""
    folder = tmp_path / "in"
    folder.mkdir()
    noise = 0.1 * np.random.default_rng(0).standard_normal((1600, 65)).astype(np.float32)
    sf.write(folder / "a65.wav", noise, 16000, subtype="FLOAT")
    _speech(folder / "b.wav")
    code, out, err = run(capsys, "encode", "--json", folder, tmp_path / "out/")
    report = json.loads(out)
    assert code == 1 and report["done"] == 1 and len(report["failed"]) == 1
    assert report["failed"][0]["error"] == f"{folder / 'a65.wav'}: 65 channels: an .akc holds 1 to 64"
    assert (tmp_path / "out" / "b.akc").is_file() and not (tmp_path / "out" / "a65.akc").exists()


def test_an_upper_case_akc_output_is_an_akc_output(capsys, tmp_path):
    """Inputs match extensions in any case; `encode A.WAV A.AKC` was refused as not naming an .akc."""
    source = _speech(tmp_path / "A.WAV")
    assert run(capsys, "encode", "-q", source, tmp_path / "A.AKC")[0] == 0
    assert run(capsys, "decode", "-q", tmp_path / "A.AKC", tmp_path / "B.WAV")[0] == 0
    assert sf.info(tmp_path / "B.WAV").frames == sf.info(source).frames


def test_integer_values_stored_as_floats_are_refused_unless_rescaled(capsys, tmp_path):
    """A float file holding int16-scaled values (or +500 dBFS) was coded to garbage or silence with only
    a clipping warning: it is one line naming the file and its peak; `encode --rescale` still codes it
    (scaled down), and `info` still describes it."""
    x = 0.5 * np.sin(np.arange(16000) * 0.05).astype(np.float32)
    for peak, name in ((32767.0, "int16.wav"), (1e25, "huge.wav")):
        sf.write(tmp_path / name, x * peak, 16000, subtype="FLOAT")
        for command, out in (("encode", "o.akc"), ("enhance", "o.wav")):
            code, _, err = run(capsys, command, tmp_path / name, tmp_path / out)
            assert code == 1 and not (tmp_path / out).exists()
            assert f"{tmp_path / name}: samples up to " in err and "integer values stored as floats" in err
        assert run(capsys, "encode", "-q", "--rescale", tmp_path / name, tmp_path / "r.akc", "-f")[0] == 0
        assert run(capsys, "decode", "-q", tmp_path / "r.akc", tmp_path / "r.wav", "-f")[0] == 0
        back = sf.read(tmp_path / "r.wav")[0]
        assert 0.3 < np.abs(back).max() <= 1.0
        code, out, _ = run(capsys, "info", tmp_path / name)
        assert code == 0 and "dBFS" in out


def test_smaller_edges(capsys, files, tmp_path):
    # -q silences progress, never results
    code, out, _ = run(capsys, "eval", "-q", files["wav"], "--baseline", "identity")
    assert code == 0 and "pesq" in out
    # decode prints a summary and takes --json
    code, out, _ = run(capsys, "decode", files["akc"], tmp_path / "d.wav")
    assert code == 0 and "1 done, 0 failed" in out
    # a trailing / is a folder
    code, _, _ = run(capsys, "encode", files["wav"], f"{tmp_path}/newdir/")
    assert code == 0 and (tmp_path / "newdir" / "a.akc").is_file()
    # a missing reference is named as missing, whatever else is (not) given
    code, _, err = run(capsys, "eval", tmp_path / "nowhere")
    missing = tmp_path / "nowhere"
    assert code == 1 and err.strip() == f"audiokit eval: error: {missing}: no such file or directory"
    # an unknown option is the error of the command it was given to
    code, _, err = run(capsys, "decode", files["akc"], tmp_path / "u.wav", "--bogus")
    assert code == 2 and err.startswith("audiokit decode: error: unrecognized arguments: --bogus")
    # info --json lists the files in the order given, a failed one where it was named
    code, out, _ = run(capsys, "info", "--json", files["root"] / "empty.wav", files["wav"])
    rows = json.loads(out)
    assert code == 1 and [r["path"] for r in rows] == [str(files["root"] / "empty.wav"), str(files["wav"])]
    assert "error" in rows[0] and rows[1]["sample_rate"] == 16000
    # a system refusal names the output, not a temporary file or nothing
    for target, reason in (("/dev/full", "No space left on device"), ("/proc/x.wav", "")):
        code, _, err = run(capsys, "decode", files["akc"], target, "-f")
        assert code == 1 and err.startswith(f"audiokit decode: error: {target}: {reason}"), err
    # a folder cannot go to standard output (not into a folder named -)
    for command, folder in (("encode", files["wav"].parent), ("decode", tmp_path / "newdir")):
        code, out, err = run(capsys, command, folder, "-")
        assert code == 1 and "give an output folder, not -" in err and not Path("-").exists()
    # --plot writes the format its extension names
    code, _, err = run(
        capsys, "eval", "-q", files["wav"], "--baseline", "identity", "--plot", tmp_path / "p.svg"
    )
    assert code == 0, err
    assert b"<svg" in (tmp_path / "p.svg").read_bytes()[:500]
    # too short for a metric: skipped, with the reason
    short = tmp_path / "short.wav"
    sf.write(short, np.full(160, 0.1, dtype=np.float32), 16000)
    code, out, err = run(capsys, "eval", short, "--baseline", "identity", "--json")
    report = json.loads(out)
    assert code == 0, err
    assert "stoi" in report["skipped"]["short.wav"] and "too short" in report["skipped"]["short.wav"]
    # a silent reference: the metrics relative to it are undefined, not -120 dB or 0
    (tmp_path / "ref").mkdir()
    (tmp_path / "test").mkdir()
    sf.write(tmp_path / "ref" / "quiet.wav", np.zeros(16000, dtype=np.float32), 16000)
    noise = np.random.default_rng(0).normal(0, 0.01, 16000).astype(np.float32)
    sf.write(tmp_path / "test" / "quiet.wav", noise, 16000)
    code, out, err = run(capsys, "eval", tmp_path / "ref", tmp_path / "test", "--json")
    report = json.loads(out)
    assert code == 0, err
    assert [report[name] for name in ("pesq", "stoi", "estoi", "si_sdr", "stft_distance")] == [None] * 5
    assert report["lsd"] > 1 and "digital silence" in report["skipped"]["quiet.wav"]


def test_help_texts_render_cleanly(capsys):
    commands = ["encode", "decode", "info", "eval", "train", "checkpoint", "bench", "demo", "card"]
    for command in commands:
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and out, command
        assert "%%" not in out and "``" not in out and not re.search(r":[a-z]+:`", out), (command, out)


def test_a_fifo_or_dev_stdin_is_read_whole(capsys, tmp_path):
    import os
    import threading

    source = _speech(tmp_path / "s.wav", 0.3)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(source.read_bytes()))
    feeder.start()
    code, _, err = run(capsys, "encode", fifo, tmp_path / "p.akc")
    feeder.join()
    assert code == 0, err
    code, out, _ = run(capsys, "info", "--json", tmp_path / "p.akc")
    assert json.loads(out)["original_samples"] == sf.info(source).frames


@pytest.mark.parametrize("rate", [7, 50, 500_000])
def test_inputs_at_rates_audiokit_cannot_process_are_one_line(capsys, tmp_path, rate):
    """Every processing command refuses an input below 1 kHz or above 384 kHz with one line naming the
    file and its rate (no .akc that decode would refuse, no internal error, no option the user never
    gave); a folder goes on past it; `info` describes it."""
    source = tmp_path / "odd" / "odd.wav"
    source.parent.mkdir()
    sf.write(source, np.random.default_rng(0).normal(0, 0.1, max(rate // 10, 20)).astype(np.float32), rate)
    expected = f"{source}: sample rate {rate} Hz is outside 1000..384000 Hz, the rates audiokit processes"
    for command, out in (("encode", "o.akc"), ("enhance", "o.wav"), ("bwe", "o.wav"), ("stream", "o.wav")):
        code, _, err = run(capsys, command, source, tmp_path / out)
        assert code == 1 and err.strip() == f"audiokit {command}: error: {expected}", err
        assert not (tmp_path / out).exists()
    _speech(source.parent / "good.wav")
    code, _, err = run(capsys, "encode", source.parent, tmp_path / "codes")
    assert code == 1 and expected in err and (tmp_path / "codes" / "good.akc").is_file()
    code, out, _ = run(capsys, "info", source)
    assert code == 0 and f"{rate} Hz" in out


def test_info_reads_standard_input(tmp_path):
    """`info -` describes audio or an .akc piped in, as every other command takes `-`."""
    source = _speech(tmp_path / "s.wav", 0.3)
    command = [sys.executable, "-m", "audiokit", "info", "--json", "-"]
    done = subprocess.run(command, input=source.read_bytes(), capture_output=True, check=True)
    row = json.loads(done.stdout)
    assert row["path"] == "<stdin>" and row["samples"] == sf.info(source).frames
    bad = subprocess.run(command[:-2] + ["-"], input=b"xx", capture_output=True)
    assert bad.returncode == 1 and bad.stderr.decode().strip().startswith("audiokit info: error: <stdin>: ")


@pytest.mark.parametrize("command", ["encode", "decode", "enhance", "bwe", "info"])
def test_json_names_the_failure_of_a_single_file(capsys, tmp_path, command):
    """One bad file with `--json`: exit 1, its one line on stderr, and the JSON summary on stdout still
    says what failed (a script reading it gets a summary, not an empty stdout); no output is written."""
    bad = tmp_path / ("bad.akc" if command == "decode" else "bad.wav")
    bad.write_text("not audio")
    target = tmp_path / ("out.akc" if command == "encode" else "out.wav")
    args = [command, "-q", "--json", bad] + ([] if command == "info" else [target])
    code, out, err = run(capsys, *args)
    report = json.loads(out)
    failure = report if command == "info" else report["failed"][0]
    assert code == 1 and failure["path"] == str(bad) and failure["error"].startswith(f"{bad}: ")
    assert len(err.strip().splitlines()) == 1 and err.strip().endswith(failure["error"])
    if command != "info":
        assert report["done"] == 0 and not target.exists()


@pytest.mark.parametrize("command", ["encode", "enhance", "info"])
def test_a_failed_standard_input_is_named_stdin(tmp_path, command):
    """`-` that cannot be processed is `<stdin>` in the JSON summary and the line, as a good one is (it
    was `-` in encode's and info's, with a doubled prefix `-: <stdin>: ...`)."""
    output = [] if command == "info" else [str(tmp_path / ("o.akc" if command == "encode" else "o.wav"))]
    argv = [sys.executable, "-m", "audiokit", command, "-q", "--json", "-", *output]
    done = subprocess.run(argv, input=b"not audio at all", capture_output=True)
    report = json.loads(done.stdout)
    failure = report if command == "info" else report["failed"][0]
    assert done.returncode == 1 and failure["path"] == "<stdin>"
    assert failure["error"].startswith("<stdin>: not a readable audio file")
    assert done.stderr.decode().strip() == failure["error"]


@pytest.mark.parametrize("command", ["encode", "decode", "enhance", "bwe"])
def test_file_commands_run_on_the_threads_asked(capsys, tmp_path, command):
    """`--threads N` (default 1, as bench and serve): with torch's default of every core, a run
    beside busy cores was 250x slower than on one thread; 0 is a usage error."""
    import torch

    source = _speech(tmp_path / "in.wav", 0.2)
    if command == "decode":
        assert run(capsys, "encode", "-q", source, tmp_path / "in.akc")[0] == 0
        source = tmp_path / "in.akc"
    target = tmp_path / ("o.akc" if command == "encode" else "o.wav")
    before = torch.get_num_threads()
    try:
        for asked, expected in (((), 1), (("--threads", "3"), 3)):
            torch.set_num_threads(2)
            code, _, err = run(capsys, command, "-q", "-f", source, target, *asked)
            assert code == 0 and torch.get_num_threads() == expected, err
        for bad in ("0", "99999999999"):  # torch overflowed on the second (internal error, exit 70)
            code, _, err = run(capsys, command, "-q", "-f", source, target, "--threads", bad)
            assert code == 2 and "--threads" in err
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", ["encode", "enhance"])
def test_fail_fast_with_json_still_prints_the_summary(capsys, tmp_path, command):
    """`--fail-fast --json` stops at the first bad file and still prints the JSON summary: what was done,
    the failure, how many files were not tried (it raised, so there was no JSON at all)."""
    folder = tmp_path / "in"
    for name in ("a", "c", "d"):
        _speech(folder / f"{name}.wav", 0.2)
    (folder / "b.wav").write_text("not audio")
    code, out, err = run(capsys, command, "-q", "--json", "--fail-fast", folder, tmp_path / "out")
    report = json.loads(out)
    assert code == 1 and report["done"] == 1 and report["not_tried"] == 2
    assert [f["path"] for f in report["failed"]] == [str(folder / "b.wav")]
    assert err.strip().endswith("(stopped by --fail-fast: 1 of 4 done)")
    assert len(list((tmp_path / "out").iterdir())) == 1
    # one file: the summary names it, and the line has no count of a run that was one file
    single = tmp_path / ("o.akc" if command == "encode" else "o.wav")
    code, out, err = run(capsys, command, "-q", "--json", "--fail-fast", folder / "b.wav", single)
    assert code == 1 and json.loads(out)["failed"][0]["path"] == str(folder / "b.wav")
    assert "fail-fast" not in err and json.loads(out)["not_tried"] == 0


def test_a_bad_decode_model_is_the_commands_error_not_the_files(capsys, tmp_path):
    """`decode -m NAME` that names no model is one line and no JSON (a mistake in the command), not a
    failure of each file in the summary."""
    source = _speech(tmp_path / "in.wav", 0.2)
    assert run(capsys, "encode", "-q", source, tmp_path / "in.akc")[0] == 0
    code, out, err = run(
        capsys, "decode", "-q", "--json", "-m", "nosuchmodel", tmp_path / "in.akc", tmp_path / "o.wav"
    )
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert "nosuchmodel" in err and "in.akc" not in err and not (tmp_path / "o.wav").exists()


def _crafted_akc(path: Path, frames: int, **fields: object) -> Path:
    """A well-formed ``.akc`` naming the shipped speech-16k whose header ``fields`` may not fit that model:
    by default ``frames`` frames of random 6 kbps codes for 15,680 samples (what 50 frames decode to)."""
    codec, weights_hash = load_codec("speech-16k")
    defaults = {
        "model_name": "speech-16k",
        "weights_hash": weights_hash,
        "sample_rate": 16000,
        "channels": 1,
        "num_codebooks": 12,
        "codebook_size": codec.codebook_size,
        "frame_rate": Fraction(50),
        "num_samples": 15680,
        "source_rate": 16000,
        "source_samples": 15680,
    }
    header = AkcHeader(**{**defaults, **fields})
    codes = np.random.default_rng(0).integers(0, header.codebook_size, (1, header.num_codebooks, frames))
    write_akc(path, codes, header)
    return path


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"frame_rate": 25}, "frame rate 25 Hz"),
        ({"frame_rate": 100, "num_samples": 7680, "source_samples": 7680}, "frame rate 100 Hz"),
        ({"num_codebooks": 13}, "13 codebooks"),
        ({"num_samples": 16000, "source_samples": 16000}, "16000 samples"),
    ],
)
@pytest.mark.parametrize("seek", [[], ["--start", "0.5"]])
def test_a_stream_the_model_cannot_decode_is_one_line_naming_the_file(
    capsys, tmp_path, fields, problem, seek
):
    """A well-formed file whose frame rate, codebook count or frame count does not fit the model is
    refused in one line naming it, before anything is decoded (not garbage, not an internal error)."""
    akc = _crafted_akc(tmp_path / "x.akc", 50, **fields)
    code, _, err = run(capsys, "decode", akc, tmp_path / "x.wav", *seek)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert str(akc) in err and problem in err and not (tmp_path / "x.wav").exists()
    assert run(capsys, "decode", _crafted_akc(tmp_path / "ok.akc", 50), tmp_path / "ok.wav", *seek)[0] == 0


def test_a_stream_shorter_than_one_output_sample_decodes_to_an_empty_file(capsys, tmp_path):
    """1 sample at 16 kHz lasts half a sample at 8 kHz, and a stream may hold no samples at all: both
    decode to an empty file of the right rate and channels (not "--start None s is past the end");
    a --start is still past their end."""
    sf.write(tmp_path / "one.wav", np.full(1, 0.25, dtype=np.float32), 16000, subtype="FLOAT")
    assert run(capsys, "encode", tmp_path / "one.wav", tmp_path / "one.akc")[0] == 0
    empty = _crafted_akc(tmp_path / "empty.akc", 1, num_samples=0, source_samples=0)
    for akc, rate in ((tmp_path / "one.akc", "8000"), (empty, "16000"), (empty, "44100")):
        out = tmp_path / "out.wav"
        code, _, err = run(capsys, "decode", "-f", akc, out, "--sample-rate", rate)
        assert code == 0, err
        back = sf.info(out)
        assert (back.frames, back.samplerate, back.channels) == (0, int(rate), 1)
        code, _, err = run(capsys, "decode", "-f", akc, out, "--start", "0", "--sample-rate", rate)
        assert code == 1 and "--start 0.0 s is past the end" in err


def test_a_stream_encoded_from_a_rate_audiokit_cannot_write_names_the_file(capsys, tmp_path):
    """A stream whose source rate (the header allows 1 Hz) is below what audiokit writes is refused in
    one line naming the file, not as a --sample-rate that was never given; --sample-rate decodes it."""
    akc = _crafted_akc(tmp_path / "low.akc", 50, source_rate=999, source_samples=979)
    code, _, err = run(capsys, "decode", akc, tmp_path / "o.wav")
    assert code == 1 and len(err.strip().splitlines()) == 1 and not (tmp_path / "o.wav").exists()
    assert str(akc) in err and "999 Hz" in err and "pass --sample-rate" in err, err
    assert run(capsys, "decode", akc, tmp_path / "o.wav", "--sample-rate", "8000")[0] == 0


def test_a_sample_rate_option_the_format_cannot_hold_asks_for_another(capsys, files, tmp_path):
    """`decode x.akc o.opus --sample-rate 44100` advised "pass --sample-rate", which was passed."""
    code, _, err = run(capsys, "decode", files["akc"], tmp_path / "o.opus", "--sample-rate", "44100")
    assert code == 1 and not (tmp_path / "o.opus").exists()
    assert err.strip().endswith(
        "opus cannot hold 44100 Hz audio (8000, 12000, 16000, 24000, 48000 Hz); choose another --sample-rate"
    ), err


def test_a_huge_duration_decodes_to_the_end(capsys, files, tmp_path):
    """--duration 1e308 (beyond a float's range once in samples) is the rest of the stream, at the
    model's rate and at another."""
    for rate in ("16000", "44100"):
        out = tmp_path / f"{rate}.wav"
        code, _, err = run(
            capsys,
            "decode",
            files["akc"],
            out,
            "--start",
            "0.1",
            "--duration",
            "1e308",
            "--sample-rate",
            rate,
        )
        assert code == 0, err
        assert sf.info(out).frames == round(0.4 * int(rate))


@pytest.mark.parametrize(
    "command, option",
    [
        (("encode", "IN.wav", "OUT.akc"), ("--glob", "*.flac")),
        (("enhance", "IN.wav", "OUT.wav"), ("--glob", "speech*")),
        (("enhance", "IN.wav", "OUT.wav"), ("--suffix", ".flac")),
        (("bwe", "IN.wav", "OUT.wav"), ("--suffix", "flac")),
        (("decode", "IN.akc", "OUT.wav"), ("--suffix", ".flac")),
    ],
)
def test_folder_options_with_one_file_are_refused_not_ignored(tmp_path, capsys, command, option):
    """``--glob`` picks files in a folder input and ``--suffix`` names a folder run's outputs: with one
    input file and an output named by the user, each was silently ignored (OUT.wav written as WAV)."""
    source = _speech(tmp_path / "IN.wav")
    if command[0] == "decode":
        assert run(capsys, "encode", source, tmp_path / "IN.akc")[0] == 0
    args = [str(tmp_path / a) if "." in a else a for a in command]
    code, _, err = run(capsys, *args, *option)
    assert code == 1, err
    assert option[0] in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "OUT.wav").exists() and not (tmp_path / "OUT.akc").exists()


def test_suffix_still_names_one_file_written_into_a_folder(tmp_path, capsys):
    source = _speech(tmp_path / "IN.wav")
    (tmp_path / "out").mkdir()
    code, _, err = run(capsys, "enhance", source, tmp_path / "out", "--suffix", ".flac")
    assert code == 0, err
    assert sf.info(tmp_path / "out" / "IN.flac").format == "FLAC"


def test_folder_option_errors_name_stdout_and_a_missing_input(tmp_path, capsys):
    source = _speech(tmp_path / "IN.wav")
    code, _, err = run(capsys, "enhance", source, "-", "--suffix", ".flac")
    assert code == 1 and "<stdout> is named already" in err, err
    code, _, err = run(capsys, "encode", tmp_path / "mydirr", tmp_path / "out", "--glob", "*.flac")
    assert code == 1 and "no such file or directory" in err, err
