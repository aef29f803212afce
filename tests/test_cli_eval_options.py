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
