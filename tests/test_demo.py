"""``audiokit demo``: our codec next to Opus on real clips; printed numbers equal direct metric calls."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pesq as pesq_lib
import pystoi
import pytest
import soundfile as sf
import torch
from conftest import TINY_SPEECH_CODEC

from audiokit.cli import main
from audiokit.models import Codec

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
CLIPS = ("speech_fr_16k_c.flac", "speech_en_48k.wav")


def _table(stdout: str) -> dict[tuple[str, float], list[float]]:
    """``{(clip, kbps): [seconds, kbps, real kbps, input KiB, .akc KiB, .opus KiB, RTF, PESQ ours, PESQ
    Opus, STOI ours, STOI Opus]}`` from the printed tables."""
    rows = {}
    for line in stdout.splitlines():
        tokens = line.split()
        if len(tokens) >= 14 and tokens[-2] == "/" and tokens[-5] == "/":
            numbers = [float(t) for t in tokens[-13:] if t != "/"]
            rows[(" ".join(tokens[:-13]), numbers[1])] = numbers
    return rows


def test_demo_prints_what_direct_metrics_give_and_draws(tmp_path, capsys, tiny_codec_file):
    torch.manual_seed(0)
    model = tiny_codec_file
    samples, out = tmp_path / "samples", tmp_path / "out"
    samples.mkdir()
    for name in CLIPS:
        shutil.copy(SAMPLES / name, samples / name)
    argv = [
        "demo",
        "--model",
        str(model),
        "--samples",
        str(samples),
        "--bitrate",
        "1.5",
        "6",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "is not a shipped model" in stdout.splitlines()[0]
    table = _table(stdout)
    assert len(table) == 6  # 2 clips + the mean, at 2 bitrates
    for kbps in (1.5, 6.0):
        png = out / f"spectrograms-{kbps:g}kbps.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pesq_ours, stoi_ours = [], []
        for name in CLIPS:
            stem = Path(name).stem
            ref, rate = sf.read(out / f"{stem}.input.wav", dtype="float32")
            ours, ours_rate = sf.read(out / f"{stem}.ours-{kbps:g}kbps.wav", dtype="float32")
            opus, _ = sf.read(out / f"{stem}.opus-6kbps.wav", dtype="float32")  # Opus 6 below 6 kbps
            assert rate == ours_rate == 16000 and ref.shape == ours.shape == opus.shape
            row = table[(name, kbps)]
            seconds = len(ref) / rate
            akc_bytes = (out / f"{stem}.ours-{kbps:g}kbps.akc").stat().st_size
            assert row[2] == pytest.approx(akc_bytes * 8 / seconds / 1000, abs=0.006)
            assert row[4] == pytest.approx(akc_bytes / 1024, abs=0.006)
            assert row[5] == pytest.approx((out / f"{stem}.opus-6kbps.opus").stat().st_size / 1024, abs=0.006)
            assert row[6] > 0  # real-time factor
            pesq_ours.append(pesq_lib.pesq(16000, ref, ours, "wb"))
            stoi_ours.append(pystoi.stoi(ref, ours, 16000))
            assert row[7] == pytest.approx(pesq_ours[-1], abs=6e-4)
            assert row[8] == pytest.approx(pesq_lib.pesq(16000, ref, opus, "wb"), abs=6e-4)
            assert row[9] == pytest.approx(stoi_ours[-1], abs=6e-4)
            assert row[10] == pytest.approx(pystoi.stoi(ref, opus, 16000), abs=6e-4)
        mean = table[("all 2", kbps)]
        assert mean[7] == pytest.approx(sum(pesq_ours) / 2, abs=6e-4)
        assert mean[9] == pytest.approx(sum(stoi_ours) / 2, abs=6e-4)
    summary = json.loads((out / "demo.json").read_text())
    assert summary["shipped"] is False and len(summary["clips"]) == 4 and len(summary["means"]) == 2


@pytest.mark.parametrize(
    "extra,needle",
    [(["--samples", "/nonexistent/clips"], "/nonexistent/clips"), (["--bitrate", "2.2"], "2.2")],
)
def test_demo_bad_arguments_give_one_line(tmp_path, capsys, extra, needle, tiny_codec_file):
    model = tiny_codec_file
    argv = ["demo", "--model", str(model), "--samples", str(SAMPLES), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    if needle == "2.2":  # the model as the user named it, not the config it was built from
        assert f"{model} (a speech-16k model) codes at" in err[0], err
    assert not (tmp_path / "o").exists()


def test_demo_quiet_prints_the_means_and_a_model_lacking_the_defaults_uses_its_own(tmp_path, capsys):
    """A model without 1.5/3/6 kbps is demonstrated at its own bitrates, not refused; ``-q`` drops the
    note and the per-clip rows, never the means."""
    torch.manual_seed(0)
    model = tmp_path / "few-codes.safetensors"
    few_codes = Codec.from_config("speech-16k", **TINY_SPEECH_CODEC, num_quantizers=2, codebook_size=16)
    few_codes.save_pretrained(model)
    samples = tmp_path / "samples"
    samples.mkdir()
    shutil.copy(SAMPLES / CLIPS[0], samples / CLIPS[0])
    argv = ["demo", "-q", "--model", str(model), "--samples", str(samples), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "not a shipped model" not in stdout and f"model {model} (a speech-16k model)" in stdout
    table = _table(stdout)
    assert sorted(kbps for _, kbps in table) == [0.2, 0.4]  # 2 stages of 4 bits at 50 frames/s
    assert {clip for clip, _ in table} == {"all 1"}


def test_a_rerun_replaces_the_output_folder_only_with_force(tmp_path, capsys, tiny_codec_file):
    """`--out` is made whole (staged) on one thread: an existing folder is refused in one line, and with
    ``-f`` replaced, so no file of an earlier demo is left beside the new `demo.json`."""
    samples, out = tmp_path / "samples", tmp_path / "out"
    samples.mkdir()
    shutil.copy(SAMPLES / CLIPS[0], samples / CLIPS[0])
    argv = ["demo", "-q", "--model", str(tiny_codec_file), "--samples", str(samples), "--out", str(out)]
    argv += ["--bitrate", "6"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "on 1 thread(s)" in stdout.splitlines()[0]
    assert f"spectrograms: {out / 'spectrograms-6kbps.png'}" in stdout
    (out / "earlier.opus").write_bytes(b"from an earlier demo")
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and (out / "earlier.opus").exists()
    assert main([*argv, "-f"]) == 0
    assert not (out / "earlier.opus").exists() and (out / "spectrograms-6kbps.png").exists()
    # an output folder inside --samples: its files (speech_*.input.wav...) are not clips of the next run
    inside = [*argv[:-4], "--out", str(samples / "demo-out"), "--bitrate", "6"]
    assert main(inside) == 0 and main([*inside, "-f"]) == 0
    capsys.readouterr()
    assert len(json.loads((samples / "demo-out" / "demo.json").read_text())["clips"]) == 1
    assert json.loads((out / "demo.json").read_text())["figures"] == {"6": "spectrograms-6kbps.png"}


def test_force_never_replaces_the_samples_a_file_or_a_folder_that_is_not_a_demo(tmp_path, capsys):
    """`demo --out X -f` replaced whatever X was: the samples it read (deleted from the checkout), a
    file (README.md became a folder), any folder. Refused before the model loads."""
    samples = tmp_path / "samples"
    samples.mkdir()
    shutil.copy(SAMPLES / CLIPS[0], samples / CLIPS[0])
    notes, photos = tmp_path / "notes.md", tmp_path / "photos"
    notes.write_text("mine\n")
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"jpeg")
    for out, message in [
        (samples, f"{samples}: is the input "),
        (tmp_path, f"{tmp_path}: is the input "),
        (notes, f"{notes}: exists and is not a folder"),
        (photos, f"{photos}: a folder that holds no demo output (no demo.json)"),
    ]:
        argv = ["demo", "-q", "-m", "no-such-model", "--samples", str(samples), "--out", str(out), "-f"]
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert (samples / CLIPS[0]).is_file() and notes.read_text() == "mine\n" and (photos / "a.jpg").exists()
    assert main(["demo", "--samples", str(samples), "--out", str(tmp_path / "o"), "--bitrate", "0"]) == 2
