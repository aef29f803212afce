"""The command line as a user runs it: real files, real opusenc/opusdec, exit codes and messages."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pesq as pesq_lib
import pystoi
import pytest
import soundfile as sf

from audiokit import io

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def audiokit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "audiokit", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture()
def bad_dir(tmp_path: Path) -> Path:
    good = tmp_path / "good.wav"
    io.save(good, np.zeros((1, 1600), dtype=np.float32) + 0.1, 16000)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "truncated.wav").write_bytes(good.read_bytes()[:2000])
    (tmp_path / "notes.wav").write_text("not audio\n")
    sf.write(tmp_path / "nan.wav", np.full(1600, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    return tmp_path


def test_info_json_on_real_samples():
    done = audiokit(
        "info", "--json", str(SAMPLES / "speech_fr_8k_a.wav"), str(SAMPLES / "music_stereo_44k.flac")
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    narrow, music = rows
    assert narrow["sample_rate"] == 8000 and narrow["channels"] == 1
    assert narrow["samples"] == sf.info(SAMPLES / "speech_fr_8k_a.wav").frames
    assert 3000 < narrow["bandwidth_hz"] <= 4000
    assert music["channels"] == 2 and music["codec"] == "FLAC/PCM_16"
    data, _ = sf.read(SAMPLES / "music_stereo_44k.flac")
    assert music["peak_dbfs"] == pytest.approx(20 * np.log10(np.abs(data).max()), abs=0.01)
    assert music["rms_dbfs"] == pytest.approx(10 * np.log10(np.mean(data**2)), abs=0.01)


def test_info_of_a_folder_describes_every_audio_and_akc_file_under_it(tmp_path):
    """A folder is read whole (recursively, sorted; .akc files too), each bad file one line and a count
    (was: "is a directory, not an audio file")."""
    shutil.copy(SAMPLES / "speech_fr_8k_a.wav", tmp_path / "a.wav")
    (tmp_path / "sub").mkdir()
    assert audiokit("encode", "-q", str(tmp_path / "a.wav"), str(tmp_path / "sub" / "a.akc")).returncode == 0
    (tmp_path / "sub" / "notes.wav").write_text("not audio\n")
    (tmp_path / "sub" / "readme.txt").write_text("not listed\n")
    done = audiokit("info", "--json", str(tmp_path))
    assert done.returncode == 1, done.stderr
    rows = json.loads(done.stdout)
    assert [Path(r["path"]).relative_to(tmp_path).as_posix() for r in rows] == [
        "a.wav",
        "sub/a.akc",
        "sub/notes.wav",
    ]
    assert rows[0]["sample_rate"] == 8000 and "speech-16k" in json.dumps(rows[1])
    assert "not a readable audio file" in rows[2]["error"] and "2 done, 1 failed" in done.stderr


def test_info_text_gives_the_stored_bitrate_of_an_entropy_coded_file():
    """The text form gives the bitrate the file spends beside the fixed-width one (was: only the
    nominal 6 kbps, also for an entropy-coded file that spends 5.69)."""
    golden = Path(__file__).resolve().parent / "data" / "speech16k_entropy_prior2.akc"
    done = audiokit("info", str(golden))
    assert done.returncode == 0, done.stderr
    stored = round(golden.stat().st_size * 8 / 2.5 / 1000, 3)  # 2.5 s of audio
    assert stored < 6 and f"6 kbps (12 codebooks x 1 ch; {stored:g} kbps as stored)" in done.stdout


def test_info_counts_nonfinite_samples(tmp_path):
    """`info` describes a file holding NaN or infinite samples (which the processing commands refuse)
    and counts them; its level is that of the other samples."""
    x = np.zeros(1600, dtype=np.float32)
    x[:800] = 0.25
    x[10:13], x[20] = np.nan, np.inf
    sf.write(tmp_path / "bad.wav", x, 16000, subtype="FLOAT")
    done = audiokit("info", "--json", str(tmp_path / "bad.wav"))
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["nonfinite_samples"] == 4 and row["samples"] == 1600
    assert row["peak_dbfs"] == pytest.approx(20 * np.log10(0.25), abs=0.01)
    assert row["rms_dbfs"] == pytest.approx(10 * np.log10(796 * 0.25**2 / 1600), abs=0.01)
    line = audiokit("info", str(tmp_path / "bad.wav")).stdout
    assert "4 NaN or infinite sample(s)" in line and "refuse" in line
    assert "NaN or infinite" not in audiokit("info", str(SAMPLES / "speech_fr_8k_a.wav")).stdout
    # counted per sample time, as `samples` is: a stereo file of NaN has no more bad samples than samples
    stereo = np.full((1600, 2), np.nan, dtype=np.float32)
    stereo[:100, 1] = 0.5  # the other channel is bad there
    stereo[100:200] = 0.5
    sf.write(tmp_path / "stereo.wav", stereo, 16000, subtype="FLOAT")
    row = json.loads(audiokit("info", "--json", str(tmp_path / "stereo.wav")).stdout)
    assert row["samples"] == 1600 and row["nonfinite_samples"] == 1500


@pytest.mark.parametrize(
    "name,problem",
    [
        ("empty.wav", "empty"),
        ("truncated.wav", "truncated"),
        ("notes.wav", "not a readable audio file"),
        ("nan.wav", "NaN"),
        ("absent.wav", "no such file or directory"),
    ],
)
def test_info_and_eval_on_bad_files_give_one_line(bad_dir, name, problem):
    if name != "nan.wav":  # info describes a file of NaN samples: test_info_counts_nonfinite_samples
        assert_one_line_error(audiokit("info", str(bad_dir / name)), name, problem)
    assert_one_line_error(audiokit("eval", str(bad_dir / "good.wav"), str(bad_dir / name)), name)
    csv_path = bad_dir / "out.csv"
    assert_one_line_error(
        audiokit("eval", str(bad_dir / name), "--baseline", "identity", "--csv", str(csv_path)), name
    )
    assert not csv_path.exists()


def test_info_of_a_damaged_akc_names_the_byte_as_decode_does(tmp_path):
    """An ``.akc`` whose magic is damaged is a bad .akc (info says why at which byte, as decode does),
    not "a codec stream, not audio: decode it first"."""
    junk = tmp_path / "junk.akc"
    junk.write_bytes(b"RIFF" + bytes(60))
    for done in (audiokit("info", str(junk)), audiokit("decode", str(junk), str(tmp_path / "x.wav"))):
        assert_one_line_error(done, "junk.akc", "byte 0", "not an .akc file")
    empty = tmp_path / "empty.akc"
    empty.write_bytes(b"")
    assert_one_line_error(audiokit("info", str(empty)), "empty.akc", "byte 0")
    assert_one_line_error(audiokit("info", str(tmp_path / "absent.akc")), "absent.akc", "no such file")


def test_opus_baseline_equals_direct_pesq_and_stoi(tmp_path):
    keep = tmp_path / "opus"
    done = audiokit(
        "eval",
        str(SAMPLES),
        "--glob",
        "speech_fr_16k_*",
        "--baseline",
        "opus",
        "--bitrate",
        "6",
        "--json",
        "--keep",
        str(keep),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["n"] == 3 and report["pesq_mode"] == "wb"
    for key in ("pesq", "stoi", "estoi", "si_sdr", "lsd", "mel_distance"):
        assert isinstance(report[key], float)
    pesq_scores, stoi_scores = [], []
    for ref_path in sorted(SAMPLES.glob("speech_fr_16k_*")):
        ref, rate = sf.read(ref_path)
        decoded, decoded_rate = sf.read(keep / ref_path.with_suffix(".wav").name)
        assert decoded_rate == rate == 16000 and decoded.shape == ref.shape
        pesq_scores.append(pesq_lib.pesq(16000, ref, decoded, "wb"))
        stoi_scores.append(pystoi.stoi(ref, decoded, 16000))
    assert report["pesq"] == pytest.approx(np.mean(pesq_scores), abs=0.01)
    assert report["stoi"] == pytest.approx(np.mean(stoi_scores), abs=0.01)
    # Opus at 6 kbps is clearly lossy but intelligible
    assert 1.2 < report["pesq"] < 3.5 and report["stoi"] > 0.8


def test_opus_baseline_bitrate_is_per_channel_as_the_codecs(tmp_path):
    """`eval --bitrate 6` gives a stereo reference 6 kbps per channel from Opus, as from our codec (which
    codes each channel as its own stream): Opus coded both channels in 6 kbps, half the codec's bits."""
    speech, rate = sf.read(SAMPLES / "speech_fr_16k_a.flac")
    other, _ = sf.read(SAMPLES / "noisy_speech_fr_16k_snr5.flac")
    sf.write(tmp_path / "stereo.wav", np.stack([speech, other], axis=1), rate)
    actual = {}
    for system in (["--baseline", "opus"], ["-m", "speech-16k"]):
        done = audiokit("eval", str(tmp_path / "stereo.wav"), *system, "--bitrate", "6", "--json", "-q")
        assert done.returncode == 0, done.stderr
        actual[system[-1]] = json.loads(done.stdout)["actual_bitrate_kbps"]
    assert actual["opus"] > 11 and actual["opus"] == pytest.approx(actual["speech-16k"], rel=0.15), actual


def test_opus_baseline_without_opusenc_says_how_to_install(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "audiokit", "eval", str(SAMPLES / "speech_fr_16k_b.flac")]
        + ["--baseline", "opus", "--bitrate", "6"],
        capture_output=True,
        text=True,
        env={"PATH": str(empty_bin), "HOME": str(tmp_path)},
    )
    assert_one_line_error(done, "apt-get install opus-tools")


def test_eval_directories_identity_csv_and_plot(tmp_path):
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    for name in ("speech_fr_16k_b.flac", "speech_fr_16k_c.flac"):
        shutil.copy(SAMPLES / name, test_dir / name.replace(".flac", ".wav"))  # other extension still pairs
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    for name in ("speech_fr_16k_b.flac", "speech_fr_16k_c.flac"):
        shutil.copy(SAMPLES / name, ref_dir / name)
    csv_path, png = tmp_path / "scores.csv", tmp_path / "spec.png"
    done = audiokit(
        "eval", str(ref_dir), str(test_dir), "--json", "--csv", str(csv_path), "--plot", str(png), "-q"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["n"] == 2 and report["pesq"] > 4.4 and report["stoi"] > 0.999 and report["lsd"] < 1e-3
    assert (report["ref"], report["test"]) == (str(ref_dir.resolve()), str(test_dir.resolve()))
    assert csv_path.read_text().count("\n") == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_refuses_length_rate_and_missing_pairs(tmp_path):
    ref_dir, test_dir = tmp_path / "ref", tmp_path / "test"
    ref_dir.mkdir()
    test_dir.mkdir()
    x, rate = io.load(SAMPLES / "speech_fr_16k_b.flac")
    io.save(ref_dir / "a.wav", x, rate)
    io.save(test_dir / "a.wav", x[:, :-1], rate)
    assert_one_line_error(audiokit("eval", str(ref_dir), str(test_dir)), "a.wav", "samples")
    io.save(test_dir / "a.wav", x, 22050)
    assert_one_line_error(audiokit("eval", str(ref_dir), str(test_dir)), "a.wav", "sample rate")
    io.save(ref_dir / "b.wav", x, rate)
    assert_one_line_error(audiokit("eval", str(ref_dir), str(test_dir)), "no test file", "b.wav")
    assert_one_line_error(audiokit("eval", str(ref_dir), "--baseline", "opus"), "--bitrate")


def test_sinc_baseline_is_band_limited_and_exact_length(tmp_path):
    keep = tmp_path / "sinc"
    done = audiokit(
        "eval",
        str(SAMPLES / "speech_fr_16k_b.flac"),
        "--baseline",
        "sinc",
        "--input-rate",
        "8000",
        "--json",
        "--keep",
        str(keep),
        "-q",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    out, rate = io.load(keep / "speech_fr_16k_b.wav")
    assert out.shape[1] == sf.info(SAMPLES / "speech_fr_16k_b.flac").frames
    from audiokit.dsp import estimate_bandwidth

    assert estimate_bandwidth(out, rate) <= 4100
    assert report["lsd"] > 0.5 and report["stoi"] > 0.9


def test_jobs_give_the_same_scores():
    args = [
        "eval",
        str(SAMPLES),
        "--glob",
        "speech_fr_16k_*",
        "--baseline",
        "sinc",
        "--input-rate",
        "8000",
        "--json",
        "-q",
    ]
    serial = json.loads(audiokit(*args).stdout)
    parallel = json.loads(audiokit(*args, "--jobs", "2").stdout)
    assert serial == parallel


def test_eval_keeps_pesq_wb_and_nb_apart(tmp_path):
    """A folder of 16 kHz and 8 kHz pairs gets PESQ-WB and PESQ-NB: two scales, so no mean of the two;
    each mode's mean is over its own files (checked against pesq itself)."""
    ref, test = tmp_path / "ref", tmp_path / "test"
    expected: dict[str, list[float]] = {"wb": [], "nb": []}
    rng = np.random.default_rng(0)
    for name in ("speech_fr_16k_a.flac", "speech_fr_16k_b.flac", "speech_fr_8k_a.wav"):
        clean, rate = sf.read(SAMPLES / name, dtype="float32")
        noisy = (clean + 0.02 * rng.standard_normal(clean.shape)).astype(np.float32)
        io.save(ref / Path(name).with_suffix(".wav").name, clean[None], rate)
        io.save(test / Path(name).with_suffix(".wav").name, noisy[None], rate)
        mode = "wb" if rate == 16000 else "nb"
        expected[mode].append(pesq_lib.pesq(rate, clean, noisy, mode))
    done = audiokit("eval", str(ref), str(test), "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["pesq_mode"] == "nb, wb" and report["pesq"] is None
    for mode, scores in expected.items():
        means = report["pesq_by_mode"][mode]
        assert means["count"]["pesq"] == len(scores)
        assert means["pesq"] == pytest.approx(np.mean(scores), abs=1e-4)
    text = audiokit("eval", str(ref), str(test), "--quiet")
    assert "pesq (nb)" in text.stdout and "pesq (wb)" in text.stdout and "(2 files)" in text.stdout


def test_eval_keeps_the_sinc_baselines_pesq_modes_apart_too(tmp_path):
    """A bandwidth extender on 12 and 16 kHz references: the sinc baseline's PESQ is per mode as ours is
    (its one mean averaged PESQ-NB and PESQ-WB scores together), each the mean of its files' rows."""
    ref = tmp_path / "ref"
    for name, rate in (("a", 12000), ("b", 16000), ("c", 16000)):
        clean, source_rate = sf.read(SAMPLES / f"speech_fr_16k_{'ab'[name == 'c']}.flac", dtype="float32")
        io.save(ref / f"{name}.wav", io.resample(clean[:, None], source_rate, rate).T, rate)
    csv_path = tmp_path / "rows.csv"
    done = audiokit(
        "eval", str(ref), "-m", "bwe-8to16", "--input-rate", "8000", "--csv", str(csv_path), "--json", "-q"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = list(csv.DictReader(csv_path.open()))
    assert report["sinc"]["pesq"] is None and report["vs_sinc"]["pesq"]["mean"] is None
    for mode, files in (("nb", ["a.wav"]), ("wb", ["b.wav", "c.wav"])):
        expected = np.mean([float(r["sinc_pesq"]) for r in rows if r["file"] in files])
        assert report["sinc"]["pesq_by_mode"][mode]["pesq"] == pytest.approx(expected, abs=1e-6)


def test_info_describes_a_models_weights(tmp_path):
    """A model card's numbers are checked against the weights they name: `audiokit info` on a
    .safetensors file said "not a readable audio file: Invalid data found when processing input"."""
    from audiokit.models import Enhancer

    weights = Path(__file__).resolve().parent.parent / "audiokit" / "weights"
    done = audiokit("info", str(weights / "speech-16k.safetensors"), str(weights / "enhance-16k.safetensors"))
    assert done.returncode == 0, done.stderr
    codec, enhancer = done.stdout.strip().splitlines()
    assert "codec weights, speech-16k (speech-16k@6)" in codec and "latency 40 ms" in codec
    assert "0.5-6 kbps (12 codebooks of 1024)" in codec and "16000 Hz, 1 ch, hop 320 samples" in codec
    assert "enhancer weights, enhance-16k (enhance-16k@3, step 6676)" in enhancer
    assert "339,392 parameters" in enhancer and "latency 20 ms" in enhancer

    run = Enhancer.from_config("enhance-16k").save_pretrained(tmp_path / "model", extra={"step": 7})
    row = json.loads(audiokit("info", "--json", str(run)).stdout)
    assert row["format"] == "weights" and row["step"] == 7 and row["model_version"] is None
    assert row["config"]["hop_length"] == 160 and row["latency_samples"] == 320
    (folder,) = json.loads(audiokit("info", "--json", str(run.parent)).stdout)  # a run directory: its weights
    assert folder["path"] == str(run) and folder["step"] == 7
    run.with_suffix(".json").unlink()
    assert_one_line_error(audiokit("info", str(run)), "model.json: config not found beside the weights")


def test_info_describes_weights_of_a_config_that_ships_none(tmp_path):
    """Weights of a registered config with no shipped weights (speech-16k-noncausal) were refused with
    "no shipped weights for 'speech-16k-noncausal'": the shipped-weights check looked them up."""
    from audiokit.models.base import registered_names

    model = registered_names()["speech-16k-noncausal"].from_config("speech-16k-noncausal")
    weights = model.save_pretrained(tmp_path / "run" / "model.safetensors")
    done = audiokit("info", str(weights))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{weights}: codec weights, speech-16k-noncausal (weights ")


def test_info_tells_the_other_safetensors_files_apart():
    """An entropy-coding prior said "unsupported format 'audiokit-entropy'" (the static tables' .json
    beside it), a packed training state's shard "state-00.json: config not found beside the weights"."""
    root = Path(__file__).resolve().parent.parent
    prior = root / "audiokit" / "weights" / "speech-16k.entropy.safetensors"
    shard = root / "checkpoints" / "bwe-8to16" / "state-00.safetensors"
    done = audiokit("info", str(prior), str(shard))
    assert done.returncode == 0, done.stderr
    prior_line, shard_line = done.stdout.strip().splitlines()
    expected = f"{prior}: entropy-coding prior (--entropy) of speech-16k's codes (speech-16k@"
    assert prior_line.startswith(expected)
    step = json.loads((shard.parent / "state.json").read_text())["step"]
    assert shard_line.startswith(f"{shard}: shard of a packed training state (step {step}, 1 shard(s)); ")
    assert f"`audiokit checkpoint unpack {shard.parent} RUN_DIR`" in shard_line
