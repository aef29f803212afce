"""The wider front door: m4a and webm (made here by ffmpeg from samples/) and raw PCM through
``audiokit info``/``encode``, one-line errors, and progress lines in logs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiokit import io
from audiokit.cli import main

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SPEECH = SAMPLES / "speech_fr_16k_b.flac"

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (make system-tools)")


def _ffmpeg(source: Path, target: Path, *codec: str) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), *codec, str(target)], check=True)
    return target


@pytest.fixture(scope="module")
def browser_files(tmp_path_factory) -> dict[str, Path]:
    """What users have: AAC in m4a (phones) and Opus in webm (browsers), both made from SPEECH."""
    folder = tmp_path_factory.mktemp("formats")
    return {
        "m4a": _ffmpeg(SPEECH, folder / "talk.m4a", "-c:a", "aac", "-b:a", "64k"),
        "webm": _ffmpeg(SPEECH, folder / "talk.webm", "-c:a", "libopus", "-b:a", "32k"),
    }


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_json_reads_m4a_and_webm(browser_files, capsys):
    code, out, err = _run(capsys, "info", "--json", str(browser_files["m4a"]), str(browser_files["webm"]))
    assert code == 0, err
    m4a, webm = json.loads(out)
    seconds = sf.info(SPEECH).duration
    assert m4a["codec"] == "M4A/AAC" and m4a["sample_rate"] == 16000 and m4a["channels"] == 1
    assert webm["codec"] == "WEBM/OPUS" and webm["sample_rate"] == 48000 and webm["channels"] == 1
    for row in (m4a, webm):  # AAC adds up to two frames of priming/padding
        assert seconds - 0.01 < row["duration_s"] < seconds + 0.15 and row["peak_dbfs"] < 0
    # a log or pipe gets one line per file, no bar; --quiet none
    assert err.splitlines() == [f"info 1/2: {browser_files['m4a']}", f"info 2/2: {browser_files['webm']}"]
    assert _run(capsys, "info", "-q", str(browser_files["m4a"]), str(browser_files["webm"]))[2] == ""


def test_ffmpeg_decoding_equals_block_reading_and_is_close_to_the_source(browser_files):
    source, _ = io.load(SPEECH)
    for path in browser_files.values():
        whole, rate = io.load(path, sample_rate=16000)
        blocks = np.concatenate([b.numpy() for b in io.iter_blocks(path, 4096, sample_rate=16000)], axis=1)
        np.testing.assert_allclose(blocks, whole.numpy(), atol=1e-5)
        assert io.info(path).channels == 1 and rate == 16000
        # lossy but the same speech: strongly correlated at the best lag of the codec's delay
        n = source.shape[1]
        best = max(
            float(np.corrcoef(source[0, : n - 2048].numpy(), whole[0, lag : lag + n - 2048].numpy())[0, 1])
            for lag in range(0, 2048, 8)
        )
        assert best > 0.9


def test_encode_of_an_m4a_decodes_to_its_length(browser_files, tmp_path, capsys, tiny_codec_file):
    akc, wav = tmp_path / "talk.akc", tmp_path / "talk.wav"
    model = ["-m", str(tiny_codec_file), "-q"]
    assert _run(capsys, "encode", str(browser_files["m4a"]), str(akc), *model)[0] == 0
    assert _run(capsys, "decode", str(akc), str(wav), *model)[0] == 0
    decoded, rate = io.load(wav)
    expected, _ = io.load(browser_files["m4a"], sample_rate=rate)
    assert decoded.shape == expected.shape


def _probes(monkeypatch) -> list[list[str]]:
    """The ffprobe commands run from now on (recorded; each still runs)."""
    run, probes = subprocess.run, []

    def recorded(command, *args, **kwargs):
        if Path(command[0]).name == "ffprobe":
            probes.append(command)
        return run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", recorded)
    return probes


@pytest.mark.parametrize("command", ["enhance", "bwe"])
def test_an_ffmpeg_input_is_probed_once_per_file(browser_files, tmp_path, capsys, monkeypatch, command):
    """Its header, its samples (and for bwe a first pass measuring its band) each opened the file, and
    each opening ran ffprobe (some 60 ms): two of three subprocesses per m4a clip of an enhance folder
    run, four of six for bwe."""
    talk = shutil.copy(browser_files["m4a"], tmp_path / "talk.m4a")  # a file no test probed before
    probes = _probes(monkeypatch)
    assert _run(capsys, command, "-q", str(talk), str(tmp_path / "out.wav"))[0] == 0
    assert len(probes) == 1


def test_a_file_changed_since_its_probe_is_probed_again(browser_files, tmp_path):
    talk = shutil.copy(browser_files["m4a"], tmp_path / "talk.m4a")
    assert (io.info(talk).sample_rate, io.info(talk).channels) == (16000, 1)
    wide = _ffmpeg(SAMPLES / "music_stereo_44k.flac", tmp_path / "music.m4a", "-c:a", "aac", "-t", "1")
    shutil.copyfile(wide, talk)  # rewritten in place: the same inode
    assert (io.info(talk).sample_rate, io.info(talk).channels) == (44100, 2)
    shutil.copy(browser_files["webm"], tmp_path / "other.webm")
    os.replace(tmp_path / "other.webm", talk)  # replaced: another inode
    assert io.info(talk).subtype == "OPUS"


@pytest.mark.parametrize("sample_format,dtype", [("s16le", "<i2"), ("f32le", "<f4")])
def test_raw_pcm_round_trip(tmp_path, capsys, sample_format, dtype):
    wav, rate = io.load(SAMPLES / "music_stereo_44k.flac")
    data = wav.numpy().T  # (frames, channels), interleaved when written
    raw = (data * 32767).round().astype(dtype) if dtype == "<i2" else data.astype(dtype)
    path = tmp_path / "music.pcm"
    path.write_bytes(raw.tobytes())
    options = ["--raw-rate", str(rate), "--raw-format", sample_format, "--raw-channels", "2"]
    code, out, err = _run(capsys, "info", "--json", str(path), *options)
    assert code == 0, err
    row = json.loads(out)
    assert (row["sample_rate"], row["channels"], row["samples"]) == (rate, 2, data.shape[0])
    loaded, _ = io.load(path, raw=io.RawFormat(rate, sample_format, 2))
    scale = 32768 if dtype == "<i2" else 1
    np.testing.assert_array_equal(loaded.numpy(), raw.T.astype(np.float32) / scale)


def test_bad_input_gives_one_line(tmp_path, browser_files, capsys):
    (tmp_path / "notes.m4a").write_text("not audio\n")
    truncated = tmp_path / "cut.webm"
    truncated.write_bytes(browser_files["webm"].read_bytes()[:3000])
    odd = tmp_path / "odd.pcm"
    odd.write_bytes(b"\0" * 1001)
    cases = [
        (["info", str(tmp_path / "notes.m4a")], "notes.m4a: not a readable audio file"),
        (["info", str(truncated)], "cut.webm: truncated"),
        (["info", str(odd)], "odd.pcm: headerless PCM: give --raw-rate"),
        (["info", str(odd), "--raw-rate", "16000"], "odd.pcm: raw s16le x 1 channel(s): 1001 bytes"),
        (["info", str(odd), "--raw-rate", "0"], "--raw-rate 0"),
        # a WAV's 44-byte header was read as 22 samples (a click, the audio after it shifted)
        (
            ["info", str(SAMPLES / "speech_fr_8k_a.wav"), "--raw-rate", "8000"],
            "speech_fr_8k_a.wav: a WAV file, not headerless PCM: drop --raw-rate",
        ),
        (
            ["encode", str(SAMPLES / "speech_fr_16k_a.flac"), str(tmp_path / "x.akc"), "--raw-rate", "16000"],
            "speech_fr_16k_a.flac: a FLAC file, not headerless PCM",
        ),
    ]
    clash = tmp_path / "clash"
    clash.mkdir()
    for path in browser_files.values():  # talk.m4a and talk.webm: both would become talk.akc
        shutil.copy(path, clash / path.name)
    cases.append((["encode", str(clash), str(tmp_path / "out")], "would both be written to"))
    for argv, needle in cases:
        code, _, err = _run(capsys, *argv)
        assert code == 1 and len(err.strip().splitlines()) == 1 and needle in err, (argv, err)


def test_missing_ffmpeg_says_how_to_install(browser_files, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "audiokit", "info", str(browser_files["m4a"])],
        capture_output=True,
        text=True,
        env={"PATH": str(empty), "HOME": str(tmp_path)},
    )
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "talk.m4a: reading .m4a needs ffmpeg" in done.stderr and "apt-get install ffmpeg" in done.stderr
