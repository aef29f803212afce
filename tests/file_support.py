"""Helpers of the file-command tests (``audiokit enhance``, ``audiokit bwe``): sample clips, a tree to
mirror, bad inputs, and a run from standard input to standard output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import SAMPLES

from audiokit.cli import main

BAD_KINDS = ("empty", "truncated", "text", "nan")


def write_clip(path: Path, source: str, seconds: float, subtype: str | None = None) -> Path:
    """The first ``seconds`` of a sample clip, written to ``path``."""
    data, rate = sf.read(SAMPLES / source, dtype="float32")
    sf.write(path, data[: int(seconds * rate)], rate, subtype=subtype)
    return path


def mirror_tree(command: str, folder: Path, top_source: str, *options: object) -> tuple[Path, Path]:
    """Run ``audiokit COMMAND`` on a tree under ``folder`` (``top.flac``: 1 s of ``top_source``,
    ``a/b/deep.wav``: 48 kHz speech, and a text file that is no audio): the audio files come out at the
    same relative paths, a second run is refused (outputs exist) and one with ``-f`` is done. Returns the
    tree and the output folder."""
    tree, out = folder / "in", folder / "out"
    (tree / "a" / "b").mkdir(parents=True)
    write_clip(tree / "top.flac", top_source, 1.0)
    write_clip(tree / "a" / "b" / "deep.wav", "speech_en_48k.wav", 1.0)
    (tree / "notes.txt").write_text("not audio")
    assert run_quietly(command, tree, out, *options) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a/b/deep.wav",
        "top.flac",
    ]
    assert run_quietly(command, tree, out, *options) == 1
    assert run_quietly(command, tree, out, *options, "-f") == 0
    return tree, out


def fails_in_one_line(command: str, folder: Path, kind: str, rate: int, capsys, *options: str) -> bool:
    """A file of ``kind`` (:data:`BAD_KINDS`) at ``rate`` Hz, next to a good one-second ``good.wav`` in
    ``folder``, through ``audiokit COMMAND`` into ``folder/out``: exit 1, one error line naming the file,
    and nothing written."""
    good, bad, out_dir = folder / "good.wav", folder / f"{kind}.wav", folder / "out"
    sf.write(good, np.zeros(rate, np.float32), rate)
    if kind == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    elif kind == "nan":
        sf.write(bad, np.full(rate, np.nan, np.float32), rate, subtype="FLOAT")
    else:
        bad.write_text("" if kind == "empty" else "this is not audio\n" * 50)
    out_dir.mkdir()
    code = main([command, str(bad), str(out_dir / "x.wav"), *options])
    err = capsys.readouterr().err.strip()
    one_line = len(err.splitlines()) == 1 and err.startswith(f"audiokit {command}: error:")
    return code == 1 and one_line and bad.name in err and not any(out_dir.iterdir())


def stdin_to_stdout(command: str, source: Path, *options: str) -> subprocess.CompletedProcess:
    """``python -m audiokit COMMAND - - options --json`` with ``source`` on standard input."""
    with open(source, "rb") as stdin:
        return subprocess.run(
            [sys.executable, "-m", "audiokit", command, "-", "-", *options, "--json"],
            stdin=stdin,
            capture_output=True,
            timeout=300,
        )


def run_quietly(command: str, *args: object) -> int:
    """``audiokit COMMAND args --quiet``'s exit code."""
    return main([command, *map(str, args), "--quiet"])


def process_clip(command: str, folder: Path, source: str, seconds: float, *options: object) -> tuple:
    """The first ``seconds`` of the sample ``source`` through ``audiokit COMMAND``: ``sf.info`` of the
    input and of the output."""
    src = write_clip(folder / source, source, seconds)
    out = folder / f"out-{source}"
    assert run_quietly(command, src, out, *options) == 0
    return sf.info(src), sf.info(out)


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    """``audiokit ARGV`` in this process: exit code, stdout, stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *needles: str) -> None:
    """``err`` is one line, no traceback, holding every needle."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, err)
