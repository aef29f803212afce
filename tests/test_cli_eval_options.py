"""`audiokit eval` options as a user combines them: an option that would change nothing is refused, a
file the baseline cannot take is named, and `--jobs` never changes what `--plot` draws."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest

from audiokit import io
from audiokit.cli import main

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def _error(capsys: pytest.CaptureFixture, *needles: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("audiokit eval: error: "), err
    assert all(needle in err for needle in needles), err


@pytest.fixture()
def clips(tmp_path: Path) -> Path:
    """Five 1 s speech clips, the second at 44.1 kHz and the others at 16 kHz."""
    folder = tmp_path / "ref"
    for name, sample in zip("abcde", ("16k_a", "ca_44k", "16k_b", "16k_c", "16k_a"), strict=True):
        source = SAMPLES / f"speech_{'fr_' if '16k' in sample else ''}{sample}.flac"
        wav, rate = io.load(source, channels=1)
        io.save(folder / f"{name}.wav", wav[:, rate // 2 : rate // 2 + rate], rate)
    return folder


def test_options_that_would_change_nothing_are_refused(capsys, clips, tmp_path):
    ref = str(clips)
    assert main(["eval", ref, "--baseline", "identity", "--bitrate", "6", "-q"]) == 1
    _error(capsys, "--bitrate 6", "--baseline opus")
    assert main(["eval", ref, ref, "--baseline", "gating", "--bitrate", "6", "-q"]) == 1
    _error(capsys, "--bitrate 6")
    keep = tmp_path / "kept"
    assert main(["eval", ref, ref, "--keep", str(keep), "-q"]) == 1
    _error(capsys, "--keep", "TEST_DIR")
    assert not keep.exists()


def test_a_file_the_sinc_baseline_cannot_take_is_named(capsys, clips):
    io.save(clips / "f.wav", io.load(SAMPLES / "speech_fr_8k_a.wav")[0][:, :8000], 8000)
    assert main(["eval", str(clips), "--baseline", "sinc", "--input-rate", "8000", "-q"]) == 1
    _error(capsys, str(clips / "f.wav"), "8000 Hz", "--input-rate 8000")


def test_jobs_do_not_change_the_plot(capsys, clips, tmp_path):
    """The plot shows the first 4 files at the first file's rate (a, c, d, e), with or without workers."""
    shapes = []
    for jobs in ("1", "2"):
        png = tmp_path / f"jobs{jobs}.png"
        args = ["eval", str(clips), "--baseline", "identity", "--plot", str(png), "--jobs", jobs, "-q"]
        assert main(args) == 0, capsys.readouterr().err
        shapes.append(matplotlib.image.imread(png).shape)
    assert shapes[0] == shapes[1]


def test_very_short_and_odd_inputs(capsys, tmp_path):
    """Files too short to score, more channels than Opus codes, silent noisy input to the gating
    baseline, and a folder given for --csv: each a clear line or a right number, never an internal error
    (a duration rounded to 0 divided the bitrate; a clip shorter than one frame broke --plot; gating
    returned NaN for silence; Opus named its temporary file)."""
    folder = tmp_path / "short"
    wav, rate = io.load(SAMPLES / "speech_fr_16k_a.flac", channels=1)
    io.save(folder / "one.wav", wav[:, 8000:8001], rate)
    code = main(["eval", str(folder), "-m", "speech-16k", "--bitrate", "6", "--json", "-q"])
    report = __import__("json").loads(capsys.readouterr().out)
    assert code == 0 and report["actual_bitrate_kbps"] > 0
    tiny = tmp_path / "tiny"
    io.save(tiny / "t.wav", wav[:, 8000:8100], rate)
    plot = tmp_path / "p.png"
    assert main(["eval", str(tiny), "--baseline", "identity", "--plot", str(plot), "-q"]) == 0
    assert plot.is_file()
    three = tmp_path / "three"
    io.save(three / "x.wav", wav[:, :16000].repeat(3, 1), rate)
    assert main(["eval", str(three / "x.wav"), "--baseline", "opus", "--bitrate", "6", "-q"]) == 1
    _error(capsys, str(three / "x.wav"), "mono or stereo")
    silent = tmp_path / "silent"
    io.save(silent / "s.wav", wav[:, :16000] * 0, rate)
    kept = tmp_path / "kept"
    assert main(["eval", str(silent), str(silent), "--baseline", "gating", "--keep", str(kept), "-q"]) == 0
    out, _ = io.load(kept / "s.wav")
    assert not out.isnan().any() and not out.any()
    capsys.readouterr()
    assert main(["eval", str(folder), "--baseline", "identity", "--csv", str(tmp_path / "scores") + "/"]) != 0
    _error(capsys, "--csv", "is a folder")


def test_a_mean_over_some_of_the_files_says_so(capsys, clips, tmp_path):
    """A silent test file cannot be scored by PESQ; the mean over the others says how many it covers
    (it read as the mean of all files)."""
    test = tmp_path / "test"
    for path in sorted(clips.iterdir()):
        wav, rate = io.load(path)
        io.save(test / path.name, wav * 0 if path.stem == "a" else wav, rate)
    assert main(["eval", str(clips), str(test), "--glob", "[acd]*"]) == 0
    pesq_line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("pesq"))
    assert "(2 of 3 files)" in pesq_line


def test_a_model_that_does_not_exist_is_named(capsys, clips):
    """With a TEST_DIR (an enhancer's noisy input) too, a missing -m is named as missing (it read "give
    either TEST_DIR or -m/--model, not both")."""
    for extra in ([str(clips)], ["--bitrate", "6"]):
        assert main(["eval", str(clips), *extra, "-m", "no-such-model", "-q"]) == 1
        _error(capsys, "no-such-model: no such model file")


def test_an_output_with_nan_samples_is_named_not_scored(capsys, clips, monkeypatch):
    """An enhancer's NaN output scored STOI 1.0 and dropped out of every other mean: it is an error
    naming the file."""
    from audiokit.evaluation import baselines

    def broken(wav, rate):
        out = wav.clone()
        out[:, 10] = float("nan")
        return baselines.BaselineOutput(out)

    monkeypatch.setitem(baselines.ENHANCERS, "gating", broken)
    assert main(["eval", str(clips), str(clips), "--baseline", "gating", "--glob", "a*", "-q"]) == 1
    _error(capsys, str(clips / "a.wav"), "gating", "NaN or infinite")
