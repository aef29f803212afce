"""``audiokit eval --codec``: our codec scored through real .akc files, like the Opus baseline."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pesq as pesq_lib
import pystoi
import pytest
import soundfile as sf

from audiokit.bitstream import AkcReader
from audiokit.cli import main
from audiokit.models import Codec

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def ref_dir(tmp_path_factory) -> Path:
    """Two real clips: one at the model's rate, one at 48 kHz (coded at 16 kHz, decoded back to 48)."""
    directory = tmp_path_factory.mktemp("ref")
    for name in ("speech_fr_16k_b.flac", "speech_en_48k.wav"):
        shutil.copy(SAMPLES / name, directory / name)
    return directory


def run_json(capsys, *args: str) -> dict:
    assert main(["eval", *args, "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def test_codec_scores_equal_direct_metrics_and_real_bitrate(tmp_path, capsys, tiny_codec_file, ref_dir):
    keep = tmp_path / "keep"
    args = [str(ref_dir), "--codec", str(tiny_codec_file), "--bitrate", "6"]
    report = run_json(capsys, *args, "--keep", str(keep), "--csv", str(tmp_path / "rows.csv"))
    assert report["n"] == 2 and report["codec"] == str(tiny_codec_file) and report["model"] == "speech-16k"
    assert report["bitrate_kbps"] == 6
    assert report["weights_sha256"] == Codec.from_pretrained(tiny_codec_file).weights_sha256()
    rows = {r["file"]: r for r in _read_csv(tmp_path / "rows.csv")}
    bits = seconds = 0.0
    for name in ("speech_fr_16k_b.flac", "speech_en_48k.wav"):
        ref, rate = sf.read(ref_dir / name, dtype="float32")
        akc = keep / Path(name).with_suffix(".akc")
        decoded, decoded_rate = sf.read(keep / Path(name).with_suffix(".wav"), dtype="float32")
        # decoded back at the reference rate; the .akc holds 16 kHz codes, so a 48 kHz file loses the
        # fraction of a 16 kHz sample at its end and is scored zero-padded to the reference length
        assert decoded_rate == rate and len(ref) - 3 < len(decoded) <= len(ref)
        assert len(decoded) == len(ref) or rate != 16000
        decoded = np.pad(decoded, (0, len(ref) - len(decoded)))
        with AkcReader(akc) as reader:
            assert reader.header.sample_rate == 16000 and reader.header.num_codebooks == 12
        row = rows[name]
        assert float(row["stoi"]) == pytest.approx(pystoi.stoi(ref, decoded, rate), abs=1e-6)
        assert float(row["bitrate_kbps"]) == pytest.approx(akc.stat().st_size * 8 / (len(ref) / rate) / 1000)
        if rate == 16000:
            assert float(row["pesq"]) == pytest.approx(pesq_lib.pesq(16000, ref, decoded, "wb"), abs=1e-6)
        bits += akc.stat().st_size * 8
        seconds += len(ref) / rate
    assert report["actual_bitrate_kbps"] == pytest.approx(bits / seconds / 1000, abs=1e-3)
    # payload at the nominal rate plus a header, CRCs and an index: a little above 6 kbps
    assert 6.0 < report["actual_bitrate_kbps"] < 7.5
    assert report["pesq"] == pytest.approx(np.mean([float(r["pesq"]) for r in rows.values()]), abs=1e-6)
    # --jobs 2: each worker has the model; identical scores
    assert run_json(capsys, *args, "--jobs", "2") == report


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_codec_usage_errors_are_one_line(capsys, tiny_codec_file, ref_dir):
    cases = [
        (["-m", str(tiny_codec_file), "--baseline", "opus", "--bitrate", "6"], "-m/--model or --baseline"),
        (["--codec", str(tiny_codec_file), "--bitrate", "2.2"], "0.5, 1, 1.5, 2, 2.5"),
        (["--codec", str(tiny_codec_file)], "--bitrate"),
        (["--codec", str(ref_dir / "absent"), "--bitrate", "6"], "absent"),
    ]
    for extra, needle in cases:
        assert main(["eval", str(ref_dir), *extra]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert main(["eval", str(ref_dir), str(ref_dir), "--codec", str(tiny_codec_file), "--bitrate", "6"]) == 1
    assert "TEST_DIR or -m/--model" in capsys.readouterr().err
