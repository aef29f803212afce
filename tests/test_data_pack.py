"""``audiokit data pack`` on real clips from samples/: sizes, manifest, fidelity, budget, atomicity."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from audiokit import io
from audiokit.cli import main
from audiokit.data.manifest import read_manifest
from audiokit.data.pack import MIB, pack
from audiokit.errors import AudioFormatError, ToolMissingError, UsageError
from audiokit.evaluation.metrics import mel_distance
from audiokit.train.data import read_clips

pytestmark = pytest.mark.skipif(
    shutil.which("opusenc") is None, reason="needs opusenc (apt-get install opus-tools)"
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
SPEECH = sorted(SAMPLES.glob("speech_*"))  # 16 kHz FLAC, 8 kHz WAV, 44.1 kHz FLAC, 48 kHz WAV


def _write_manifest(folder: Path, paths: list[Path | str], extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "path": str(p),
                "package": "samples",
                "licence": "CC0-1.0",
                "group": "g",
                "source_sha256": "0" * 64,
            }
        )
        for p in paths
    ]
    manifest = folder / "tiny.jsonl"
    manifest.write_text("\n".join(lines) + "\n" + extra)
    return manifest


def _timed_row(seconds: str) -> str:
    """A manifest line of a real clip whose ``seconds`` is the JSON text ``seconds``."""
    return f'{{"path": {json.dumps(str(SPEECH[0]))}, "seconds": {seconds}}}\n'


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, Path]:
    """A pack of every speech sample (one row relative to the manifest's folder), whole budget."""
    folder = tmp_path_factory.mktemp("src")
    shutil.copy(SPEECH[0], folder / SPEECH[0].name)
    manifest = _write_manifest(folder, [SPEECH[0].name, *SPEECH[1:]])
    out = folder.parent / "pack"
    pack(str(manifest), out, max_mb=4, kbps=32, seed=3, quiet=True)
    return manifest, out


def _source_of(row: dict) -> Path:
    stem = Path(row["path"]).stem.rsplit("-", 1)[0]
    return next(p for p in SPEECH if p.stem == stem)


def test_pack_holds_every_clip_with_a_relative_manifest(packed):
    manifest, out = packed
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == len(SPEECH)
    assert sorted(_source_of(r).name for r in rows) == sorted(p.name for p in SPEECH)
    info = json.loads((out / "PACK.json").read_text())
    audio_bytes = 0
    for row in rows:
        assert not Path(row["path"]).is_absolute() and row["path"].endswith(".opus")
        assert "source_sha256" not in row and row["package"] == "samples" and row["group"] == "g"
        header = io.info(out / row["path"])
        assert (header.subtype, header.sample_rate, header.channels) == ("OPUS", 16000, 1)
        source, _ = io.load(_source_of(row), sample_rate=16000, channels=1)
        assert header.frames == source.shape[-1]  # exact length after Opus's pre-skip
        assert row["seconds"] == pytest.approx(source.shape[-1] / 16000, abs=1e-4)
        audio_bytes += (out / row["path"]).stat().st_size
    files = [p for p in out.rglob("*") if p.is_file()]
    assert info["bytes"] == sum(p.stat().st_size for p in files)
    assert info["audio_bytes"] == audio_bytes
    assert info["clips"] == len(rows) and info["source_clips"] == len(SPEECH)
    assert info["hours"] == pytest.approx(sum(r["seconds"] for r in rows) / 3600, abs=1e-4)
    assert (info["codec"], info["kbps"], info["seed"], info["sample_rate"]) == ("opus", 32, 3, 16000)
    assert info["packages"] == [
        {
            "package": "samples",
            "version": None,
            "licences": ["CC0-1.0"],
            "clips": len(rows),
            "seconds": pytest.approx(info["seconds"], abs=1e-3),
        }
    ]
    # ~32 kbit/s of audio (VBR; Ogg pages and headers add a little)
    assert 20_000 < audio_bytes * 8 / info["seconds"] < 40_000


def test_decoded_audio_matches_the_source(packed):
    _, out = packed
    for line in (out / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        decoded, rate = io.load(out / row["path"])
        source, _ = io.load(_source_of(row), sample_rate=16000, channels=1)
        x, y = source[0].double().numpy(), decoded[0].double().numpy()
        snr_db = 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2))
        assert rate == 16000
        assert snr_db > 12, (row["path"], snr_db)  # measured 15.6-24.0 dB at 32 kbit/s
        assert mel_distance(source[None], decoded[None], 16000) < 0.3  # measured 0.09-0.25


def test_train_loader_reads_the_pack(packed):
    _, out = packed
    clips = read_clips(str(out / "manifest.jsonl"))
    assert len(clips) == len(SPEECH)
    for clip in clips:
        assert Path(clip.path).is_file() and Path(clip.path).is_relative_to(out)
        assert clip.seconds == pytest.approx(io.info(clip.path).duration, abs=1e-4)
    rows = read_manifest(out / "manifest.jsonl")  # the data tools resolve pack paths the same way
    assert sorted(row["path"] for row in rows) == sorted(clip.path for clip in clips)


def test_budget_is_respected_and_gives_a_prefix(packed, tmp_path):
    manifest, out = packed
    full = (out / "manifest.jsonl").read_text().splitlines()
    max_mb = 0.12  # 64 KiB is kept for PACK.json: room for about two short clips
    small = tmp_path / "small"
    summary = pack(str(manifest), small, max_mb=max_mb, kbps=32, seed=3, quiet=True)
    rows = (small / "manifest.jsonl").read_text().splitlines()
    assert 1 <= len(rows) < len(full) and summary.clips == len(rows)
    assert summary.bytes == sum(p.stat().st_size for p in small.rglob("*") if p.is_file())
    assert summary.bytes <= max_mb * MIB
    assert rows == full[: len(rows)]  # same seed: the first clips, byte-identical files
    for line in rows:
        path = json.loads(line)["path"]
        assert (small / path).read_bytes() == (out / path).read_bytes()


def test_seed_and_order(packed, tmp_path):
    manifest, out = packed
    pack(str(manifest), tmp_path / "a", max_mb=4, seed=4, quiet=True)
    pack(str(manifest), tmp_path / "b", max_mb=4, shuffle=False, max_clips=3, quiet=True)

    def order(folder: Path) -> list[str]:
        return [
            _source_of(json.loads(line)).name for line in (folder / "manifest.jsonl").read_text().splitlines()
        ]

    assert order(tmp_path / "a") != order(out)
    assert sorted(order(tmp_path / "a")) == sorted(order(out))
    assert order(tmp_path / "b") == [SPEECH[0].name, SPEECH[1].name, SPEECH[2].name]


def test_failed_pack_leaves_nothing(tmp_path):
    bad = tmp_path / "src" / "broken.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"RIFF not really a wave file")
    manifest = _write_manifest(tmp_path / "src", [SPEECH[0], bad])
    out = tmp_path / "out" / "pack"
    with pytest.raises(AudioFormatError, match="broken.wav"):
        pack(str(manifest), out, max_mb=4, shuffle=False, quiet=True)
    assert list((tmp_path / "out").iterdir()) == []  # no pack, no temporary folder


def test_existing_pack_is_kept_unless_forced(packed, tmp_path):
    manifest, _ = packed
    out = tmp_path / "pack"
    pack(str(manifest), out, max_mb=4, max_clips=1, quiet=True)
    with pytest.raises(UsageError, match="already exists"):
        pack(str(manifest), out, max_mb=4, max_clips=2, quiet=True)
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 1
    pack(str(manifest), out, max_mb=4, max_clips=2, force=True, quiet=True)
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["pack"]


@pytest.mark.parametrize(
    ("extra", "args", "message"),
    [
        ("{not json\n", [], "tiny.jsonl:7: not a manifest line"),
        ('{"seconds": 1.0}\n', [], "tiny.jsonl:7: not a manifest line: no string 'path'"),
        # after every clip was encoded: an internal error ("x"), or NaN in PACK.json's source_hours
        (_timed_row('"x"'), [], "tiny.jsonl:7: 'seconds' 'x' is not a finite number of seconds >= 0"),
        (_timed_row("NaN"), [], "tiny.jsonl:7: 'seconds' nan is not a finite number"),
        (_timed_row("-1"), [], "tiny.jsonl:7: 'seconds' -1 is not a finite number"),
        ("", ["--max-mb", "0.01"], "--max-mb 0.01: too small"),
        ("", ["--max-mb", "nan"], "argument --max-mb: nan is not a positive number"),
        ("", ["--max-mb", "inf"], "argument --max-mb: inf is not a positive number"),
        ("", ["--kbps", "2"], "argument --kbps: 2 is not an Opus bitrate (6 to 256 kbit/s)"),
        ("", ["--max-clips", "0"], "argument --max-clips: 0 is below 1"),
        ("", ["--seed", "-1"], "argument --seed: -1 is below 0"),  # was numpy's ValueError, exit 70
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, capsys, extra, args, message):
    manifest = _write_manifest(tmp_path, SPEECH, extra)
    argv = ["data", "pack", "--manifest", str(manifest), "--max-mb", "1", *args, str(tmp_path / "out")]
    assert main(argv) == (2 if "argument" in message else 1)  # a malformed option: 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("audiokit data pack: error: ") and message in err
    assert not (tmp_path / "out").exists()


def test_unknown_manifest_name_and_missing_opusenc(tmp_path, capsys, monkeypatch):
    assert (
        main(
            [
                "data",
                "pack",
                "--data-dir",
                str(tmp_path),
                "--manifest",
                "train_nothing",
                "--max-mb",
                "1",
                str(tmp_path / "out"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train_nothing" in err and "audiokit data prepare" in err
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match="apt-get install opus-tools"):
        pack(str(_write_manifest(tmp_path, SPEECH[:1])), tmp_path / "out", max_mb=1, quiet=True)


def test_pack_never_replaces_its_inputs_or_what_is_not_a_pack(packed, tmp_path, capsys):
    """`data pack -f` into the folder of its manifest (or of its clips) deleted them; onto a file it
    replaced the file with a folder; a folder of other files went too."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(SPEECH[0], source / SPEECH[0].name)
    manifest = _write_manifest(source, [SPEECH[0].name])
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"jpeg")
    for out, message in [
        (source, f"{source}: is the input "),
        (tmp_path, f"{tmp_path}: is the input "),
        (source / SPEECH[0].name, "exists and is not a folder"),
        (other, f"{other}: a folder that holds no pack (no PACK.json)"),
    ]:
        with pytest.raises(UsageError, match=re.escape(message)):
            pack(str(manifest), out, max_mb=4, force=True, quiet=True)
    assert (source / SPEECH[0].name).is_file() and manifest.is_file() and (other / "holiday.jpg").exists()
    with pytest.raises(UsageError, match=r"not a JSONL manifest \(not UTF-8 text\)"):
        pack(str(source / SPEECH[0].name), tmp_path / "out", max_mb=4, quiet=True)
    # a prepared manifest named with its extension is that manifest, not "<name>.jsonl.jsonl"
    prepared = tmp_path / "data" / "manifests" / "valid_speech.jsonl"
    prepared.parent.mkdir(parents=True)
    prepared.write_text(manifest.read_text().replace(SPEECH[0].name, str(source / SPEECH[0].name)))
    summary = pack("valid_speech.jsonl", tmp_path / "out", max_mb=4, root=tmp_path / "data", quiet=True)
    assert summary.clips == 1


def test_cli_pack_prints_a_summary(tmp_path, capsys):
    manifest = _write_manifest(tmp_path, SPEECH[:2])
    assert (
        main(["data", "pack", "-q", "--manifest", str(manifest), "--max-mb", "1", str(tmp_path / "p")]) == 0
    )
    assert capsys.readouterr().out == ""
    assert (
        main(
            [
                "data",
                "pack",
                "--manifest",
                str(manifest),
                "--max-mb",
                "1",
                "--kbps",
                "16",
                str(tmp_path / "q"),
            ]
        )
        == 0
    )
    assert "2 of 2 clips" in capsys.readouterr().out
    info = json.loads((tmp_path / "q" / "PACK.json").read_text())
    assert (
        info["kbps"] == 16 and info["bytes"] < json.loads((tmp_path / "p" / "PACK.json").read_text())["bytes"]
    )


@pytest.mark.slow
def test_gpu_recipe_script_runs_on_cpu_and_continues(packed, tmp_path):
    """recipes/gpu/train_speech16k.sh end to end with DEVICE=cpu and the tiny recipe: a first call from
    scratch, then a second one that starts from the weights the first brought back."""
    _, out = packed
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        DEVICE="cpu",
        RECIPE="recipes/codec_speech16k_tiny.yaml",
        PACK=str(out),
        VALID_PACK=str(out),
        WHEELS=str(tmp_path / "no-wheels"),
        GPU_IN=str(tmp_path / "in"),
        MAX_STEPS="2",
        BATCH="2",
        WORKERS="0",
        EVAL_FILES="2",
    )
    for call in (1, 2):
        env.update(RUN_DIR=str(tmp_path / f"run{call}"), OUT=str(tmp_path / f"out{call}"))
        done = subprocess.run(
            ["bash", str(ROOT / "recipes/gpu/train_speech16k.sh")], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        back = tmp_path / f"out{call}"
        assert sorted(p.name for p in back.iterdir()) == [
            "lineage.json",
            "logs.tar.gz",
            "model.json",
            "model.safetensors",
        ]
        lineage = json.loads((back / "lineage.json").read_text())
        assert [c["end_step"] for c in lineage["calls"]] == [2] * call and lineage["total_steps"] == 2 * call
        assert lineage["calls"][-1]["last_eval"]["step"] == 2
        shutil.copytree(back, tmp_path / "in", dirs_exist_ok=True)
    assert "starting from the weights" in done.stdout and "seed 1" in done.stdout
    assert lineage["calls"][1]["init"] == str(tmp_path / "in" / "model.safetensors")


def test_a_clip_that_cannot_be_written_says_why(tmp_path):
    """A packed clip whose write fails (a full device; here past RLIMIT_FSIZE) is one line naming the
    pack and the system's reason, and leaves nothing (was: "opusenc failed on NAME.opus (... Encoding
    aborted: close failed)", the reason lost in opusenc)."""
    manifest, out = _write_manifest(tmp_path / "src", [SPEECH[0]]), tmp_path / "out" / "pack"

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    command = [sys.executable, "-m", "audiokit", "data", "pack", "--manifest", str(manifest), "--max-mb", "4"]
    command += [str(out), "-q"]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=limited, timeout=120)
    assert (done.returncode, done.stderr) == (1, f"audiokit data pack: error: {out}: File too large\n")
    assert list((tmp_path / "out").iterdir()) == []
