"""The real prepare pipeline run on tiny .deb packages built here with dpkg-deb (no network)."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from audiokit.cli import data as data_cli
from audiokit.cli import main
from audiokit.data import prepare as prepare_module
from audiokit.data.manifest import manifest_path, read_jsonl, read_manifest
from audiokit.data.noisy_set import build_noisy_set
from audiokit.data.prepare import prepare, unit_id
from audiokit.data.sources import select
from audiokit.errors import AudiokitError, UsageError

pytestmark = pytest.mark.skipif(
    shutil.which("dpkg-deb") is None or shutil.which("ffmpeg") is None, reason="needs dpkg-deb and ffmpeg"
)

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
JUNE = "usr/share/asterisk/sounds/fr_CA_f_June"
TUX = "usr/share/tuxpaint/stamps"
ROLES, SPLITS = ["speech", "noise"], ["valid"]


def _speech(name: str) -> tuple[np.ndarray, int]:
    data, rate = soundfile.read(SAMPLES / name, dtype="float32")
    return data, rate


def _padded(data: np.ndarray, rate: int, pad_s: float = 1.0) -> np.ndarray:
    silence = np.zeros(int(pad_s * rate), dtype=np.float32)
    return np.concatenate([silence, data, silence])


def _build_deb(workdir: Path, package: str, files: dict[str, object]) -> None:
    """Build ``package``'s .deb holding ``files``: path -> (array, rate), bytes or a symlink target."""
    tree = workdir / "src" / package
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: test <t@example.org>\n"
        "Description: test audio\n"
    )
    for relative, content in files.items():
        target = tree / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            target.symlink_to(content)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        elif relative.endswith(".g722"):
            wav = workdir / "tmp.wav"
            soundfile.write(wav, content[0], content[1])
            subprocess.run(
                [
                    "ffmpeg",
                    "-loglevel",
                    "error",
                    "-y",
                    "-i",
                    str(wav),
                    "-ar",
                    "16000",
                    "-acodec",
                    "g722",
                    "-f",
                    "g722",
                    str(target),
                ],
                check=True,
            )
        else:
            soundfile.write(target, content[0], content[1])
    (workdir / "debs").mkdir(exist_ok=True)
    subprocess.run(
        [
            "dpkg-deb",
            "--root-owner-group",
            "-Zgzip",
            "-b",
            str(tree),
            str(workdir / "debs" / f"{package}_1.0-1_all.deb"),
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("debs")
    fr_a, fr_b, ca = (
        _speech("speech_fr_16k_a.flac"),
        _speech("speech_fr_16k_b.flac"),
        _speech("speech_ca_44k.flac"),
    )
    en = _speech("speech_en_48k.wav")
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32), 16000
    rain = (0.05 * rng.standard_normal(22050 * 2)).astype(np.float32), 22050
    _build_deb(
        work,
        "asterisk-core-sounds-fr-g722",
        {
            f"{JUNE}/vm-intro.g722": fr_a,
            f"{JUNE}/digits/1.g722": fr_b,
            f"{JUNE}/silence/1.g722": (np.zeros(8000, np.float32), 16000),
            f"{JUNE}/tt-monkeys.g722": (noise[0], 16000),
        },
    )
    _build_deb(
        work,
        "tuxpaint-stamps-default",
        {
            f"{TUX}/animals/zebra_desc_ca.ogg": (_padded(*ca), ca[1]),
            f"{TUX}/animals/zebra_desc_da.ogg": (_padded(*en), en[1]),
            f"{TUX}/animals/zebra_desc_ro.ogg": fr_b,  # training language: not in valid
            f"{TUX}/symbols/math/one_desc_ca.ogg": fr_a,  # spoken symbols: excluded everywhere
            f"{TUX}/animals/zebra.ogg": noise,  # an effect: training noise
        },
    )
    _build_deb(
        work,
        "alsa-utils",
        {
            "usr/share/sounds/alsa/Front_Center.wav": en,
            "usr/share/sounds/alsa/Front_Copy.wav": en,  # identical content: deduplicated
            "usr/share/sounds/alsa/Rear_Center.wav": "Front_Center.wav",  # symlink: deduplicated
            "usr/share/sounds/alsa/Noise.wav": noise,  # excluded by rule
        },
    )
    glest = "usr/share/games/megaglest/tilesets"
    _build_deb(
        work,
        "megaglest-data",
        {
            f"{glest}/forest/sounds/rain.wav": rain,
            f"{glest}/forest/sounds/wind.ogg": noise,
            f"{glest}/desert/sounds/rain.wav": "../../forest/sounds/rain.wav",
            "usr/share/games/megaglest/techs/megapack/factions/tech/units/archer/sounds/archer_ack1.wav": en,
        },
    )
    _build_deb(
        work,
        "endless-sky-data",
        {
            "usr/share/games/endless-sky/sounds/ambient/machinery.mp3": (noise[0], 16000),
            "usr/share/games/endless-sky/sounds/other.wav": noise,
        },
    )
    return work / "debs"


def _run(root: Path, debs: Path, **kwargs):
    return prepare(ROLES, SPLITS, root=root, deb_dir=debs, quiet=True, **kwargs)


def _manifests(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((root / "manifests").glob("*.jsonl"))}


@pytest.fixture(scope="module")
def prepared(debs, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _run(root, debs)
    return root


def test_manifest_rows_follow_the_allowlist(prepared):
    speech = read_jsonl(manifest_path("valid", "speech", prepared))
    sources = sorted(row["source_path"] for row in speech)
    assert sources == sorted(
        [
            f"{JUNE}/digits/1.g722",
            f"{JUNE}/vm-intro.g722",
            f"{TUX}/animals/zebra_desc_ca.ogg",
            f"{TUX}/animals/zebra_desc_da.ogg",
            "usr/share/sounds/alsa/Front_Center.wav",
        ]
    )
    noise = read_jsonl(manifest_path("valid", "noise", prepared))
    assert sorted(row["source_path"] for row in noise) == sorted(
        [
            "usr/share/games/megaglest/tilesets/forest/sounds/rain.wav",
            "usr/share/games/megaglest/tilesets/forest/sounds/wind.ogg",
            "usr/share/games/endless-sky/sounds/ambient/machinery.mp3",
        ]
    )
    assert not manifest_path("train", "speech", prepared).exists()
    by_source = {row["source_path"]: row for row in speech}
    ca = by_source[f"{TUX}/animals/zebra_desc_ca.ogg"]
    assert (ca["language"], ca["group"], ca["licence"]) == ("ca", "tuxpaint-stamps-default:desc-ca", "GPL-2")
    assert ca["native_sample_rate"] == 44100 and ca["sample_rate"] == 16000
    packages = {row["package"]: row for row in read_jsonl(prepared / "manifests" / "packages.jsonl")}
    assert set(packages) == {
        "asterisk-core-sounds-fr-g722",
        "tuxpaint-stamps-default",
        "alsa-utils",
        "megaglest-data",
        "endless-sky-data",
    }
    for row in packages.values():
        assert len(row["sha256"]) == 64


def test_clips_are_trimmed_resampled_and_hashed(prepared):
    rows = read_manifest(manifest_path("valid", "speech", prepared))
    for row in rows:
        data, rate = soundfile.read(row["path"], dtype="float32")
        assert rate == row["sample_rate"] == 16000 and data.ndim == 1
        assert abs(len(data) / rate - row["seconds"]) < 1e-3
        assert hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest() == row["sha256"]
        assert 0 < row["bandwidth_hz"] <= 8000
    ca = next(row for row in rows if row["language"] == "ca")
    original, rate = _speech("speech_ca_44k.flac")
    # 1 s of silence was added on each side: it goes (50 ms margins are kept); the clip's own quiet
    # edges may go too, its 0.2 s inner pauses stay.
    assert len(original) / rate - 0.3 <= ca["seconds"] <= len(original) / rate + 0.15
    g722 = next(row for row in rows if row["source_path"].endswith("vm-intro.g722"))
    assert abs(g722["seconds"] - 115406 / 16000) < 0.01  # asterisk prompts are not trimmed (BWE pairs)


def test_second_run_does_nothing(prepared, debs):
    before = _manifests(prepared)
    summary = _run(prepared, debs)
    assert (
        summary.units_done == 0 and summary.clips == 0 and summary.units_skipped == len(select(ROLES, SPLITS))
    )
    assert _manifests(prepared) == before


def test_interrupted_run_resumes_to_the_same_result(prepared, debs, tmp_path):
    class Stop(Exception):
        pass

    def stop(source):
        raise Stop

    with pytest.raises(Stop):
        _run(tmp_path, debs, after_unit=stop)
    assert len(list((tmp_path / "state" / "16000").glob("*.json"))) == 1
    summary = _run(tmp_path, debs)
    assert summary.units_skipped == 1
    assert _manifests(tmp_path) == _manifests(prepared)

    # Interrupted inside a rule: keep the first clip of its log, drop the done marker, rerun.
    source = select(ROLES, SPLITS)[0]
    marker = tmp_path / "state" / "16000" / f"{unit_id(source)}.json"
    rows = json.loads(marker.read_text())["rows"]
    marker.with_name(marker.stem + ".partial.jsonl").write_text(json.dumps(rows[0]) + '\n{"cut')
    marker.unlink()
    summary = _run(tmp_path, debs)
    assert (summary.units_done, summary.clips) == (1, len(rows) - 1)
    assert _manifests(tmp_path) == _manifests(prepared)


def test_a_rule_whose_clips_were_deleted_is_done_again(prepared, debs, tmp_path):
    """A done marker was trusted with its clips gone: "already done", manifests listing missing files."""
    root = tmp_path / "data"
    shutil.copytree(prepared, root)
    clip = root / read_jsonl(manifest_path("valid", "speech", root))[0]["path"]
    clip.unlink()
    summary = _run(root, debs)
    assert summary.units_done == 1 and summary.units_skipped == len(select(ROLES, SPLITS)) - 1
    assert clip.is_file() and _manifests(root) == _manifests(prepared)


def test_another_version_of_a_package_is_unpacked_again(tmp_path):
    """The unpack of an earlier .deb was reused: a later rule took that version's files while the new
    version's sha256 was recorded."""
    root, effect, speech = tmp_path / "data", f"{TUX}/animals/zebra.ogg", _speech("speech_ca_44k.flac")
    for version, seconds in (("old", 1.0), ("new", 2.0)):
        noise = np.random.default_rng(0).uniform(-0.3, 0.3, int(seconds * 16000)).astype(np.float32)
        files = {effect: (noise, 16000), f"{TUX}/animals/zebra_desc_ca.ogg": speech}
        _build_deb(tmp_path / version, "tuxpaint-stamps-default", files)
    built = tmp_path / "new" / "debs" / "tuxpaint-stamps-default_1.0-1_all.deb"
    built.rename(built.with_name("tuxpaint-stamps-default_2.0-1_all.deb"))
    only = {"packages": ["tuxpaint-stamps-default"], "root": root, "quiet": True}
    prepare(["speech"], ["valid"], deb_dir=tmp_path / "old" / "debs", **only)
    shutil.rmtree(root / "debs")  # removed to save space: the next run fetches the package anew
    prepare(["noise"], ["train"], deb_dir=tmp_path / "new" / "debs", **only)
    (row,) = read_jsonl(manifest_path("train", "noise", root))
    (record,) = read_jsonl(root / "manifests" / "packages.jsonl")
    assert row["seconds"] == 2.0 and record["version"] == "2.0-1"
    unpacked = root / "extracted" / "tuxpaint-stamps-default" / effect
    assert row["source_sha256"] == hashlib.sha256(unpacked.read_bytes()).hexdigest()


def test_a_resumed_rule_logs_its_clips_on_lines_of_their_own(debs, tmp_path, monkeypatch):
    """After a line cut short (a killed run), the next clip was appended to it: one broken line that hid
    every clip logged after it from a later resume."""
    source = select(ROLES, SPLITS)[0]
    partial = tmp_path / "state" / "16000" / f"{unit_id(source)}.partial.jsonl"
    partial.parent.mkdir(parents=True)
    partial.write_text('{"path": "corpus/16000/valid/speech/cut.fl')
    clip, made = prepare_module._clip, []

    def one_clip_then_stop(*args):
        if made:
            raise KeyboardInterrupt
        made.append(clip(*args))
        return made[-1]

    monkeypatch.setattr(prepare_module, "_clip", one_clip_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, debs)
    assert [row["path"] for row in read_jsonl(partial)] == [made[0][0]["path"]]


def test_a_second_prepare_on_the_same_directory_is_refused(tmp_path, debs):
    """Two prepares unpacking one package into the same folder broke each other (session 16)."""

    def second(source):
        with pytest.raises(UsageError, match="another `audiokit data prepare`"):
            _run(tmp_path, debs)

    _run(tmp_path, debs, after_unit=second)
    assert _manifests(tmp_path)  # the first one finished; the lock is free again
    _run(tmp_path, debs)


def test_unknown_role_and_missing_package_are_user_errors(tmp_path, debs):
    with pytest.raises(UsageError, match="unknown role"):
        prepare(["speeech"], ["valid"], root=tmp_path, deb_dir=debs, quiet=True)
    with pytest.raises(UsageError, match="hyperrogue-music"):
        prepare(["music"], ["valid"], root=tmp_path, deb_dir=debs, quiet=True)


def test_noisy_set_is_deterministic_and_hits_the_snrs(prepared, tmp_path):
    snrs = (-5.0, 0.0, 5.0, 10.0, 20.0)
    first = build_noisy_set(tmp_path / "a", snrs, seed=0, root=prepared, quiet=True)
    again = build_noisy_set(tmp_path / "b", snrs, seed=0, root=prepared, quiet=True)
    other = build_noisy_set(tmp_path / "c", snrs, seed=1, root=prepared, quiet=True)
    hashes = [(clip["clean_sha256"], clip["noisy_sha256"]) for clip in first]
    assert hashes == [(clip["clean_sha256"], clip["noisy_sha256"]) for clip in again]
    assert hashes != [(clip["clean_sha256"], clip["noisy_sha256"]) for clip in other]
    assert len(first) == 5 and sorted(clip["snr_db"] for clip in first) == sorted(snrs)
    for clip in first:
        clean, rate = soundfile.read(tmp_path / "a" / "clean" / clip["name"], dtype="float64")
        noisy, _ = soundfile.read(tmp_path / "a" / "noisy" / clip["name"], dtype="float64")
        assert rate == 16000 and clean.shape == noisy.shape
        measured = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))
        assert abs(measured - clip["snr_db"]) < 0.1, (clip["name"], measured)
        assert clip["noise_package"] in {"megaglest-data", "endless-sky-data"}
    assert read_jsonl(tmp_path / "a" / "clips.jsonl") == first


def test_noisy_set_replaces_a_folder_whole_and_only_when_forced(prepared, tmp_path):
    out = tmp_path / "mix"
    first = build_noisy_set(out, (0.0,), seed=0, root=prepared, quiet=True)
    stale = out / "clean" / "stale-package" / "old.wav"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left from an earlier set")
    with pytest.raises(UsageError, match="--force"):
        build_noisy_set(out, (10.0,), seed=1, root=prepared, quiet=True)
    assert read_jsonl(out / "clips.jsonl") == first and stale.exists()
    second = build_noisy_set(out, (10.0,), seed=1, root=prepared, quiet=True, force=True)
    assert read_jsonl(out / "clips.jsonl") == second and not stale.exists()
    written = sorted(p.relative_to(out / "noisy").as_posix() for p in (out / "noisy").rglob("*.wav"))
    assert written == sorted(clip["name"] for clip in second)
    assert [p.name for p in tmp_path.iterdir()] == ["mix"]  # no staging folder left beside it
    with pytest.raises(UsageError, match="at least one SNR"):
        build_noisy_set(tmp_path / "none", (), root=prepared, quiet=True)
    assert not (tmp_path / "none").exists()


def test_noisy_set_needs_prepared_manifests(tmp_path):
    with pytest.raises(UsageError, match=r"data prepare --split valid` first"):
        build_noisy_set(tmp_path / "out", root=tmp_path, quiet=True)
    # another rate's corpus is prepared with that rate (the hint left it out)
    with pytest.raises(
        UsageError, match=r"sr24000/valid_speech.jsonl: .* --split valid --sample-rate 24000`"
    ):
        build_noisy_set(tmp_path / "out", root=tmp_path, sample_rate=24000, quiet=True)


def test_cli_prepare_and_mix(prepared, debs, tmp_path, capsys):
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true")
    parser = argparse.ArgumentParser()
    data_cli.register(parser.add_subparsers(dest="command"), common)
    args = parser.parse_args(
        [
            "data",
            "prepare",
            "--roles",
            "speech,noise",
            "--split",
            "valid",
            "--data-dir",
            str(prepared),
            "--deb-dir",
            str(debs),
        ]
    )
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert f"already done {len(select(ROLES, SPLITS))};" in printed
    assert printed.endswith(
        f"\nmanifests in {prepared / 'manifests'}\n"
    )  # where --data-dir/$AUDIOKIT_DATA led
    listing = tmp_path / "list.jsonl"
    args = parser.parse_args(
        [
            "data",
            "mix",
            "--out",
            str(tmp_path / "mix"),
            "--snr",
            "0,10",
            "--seed",
            "3",
            "--data-dir",
            str(prepared),
            "--list",
            str(listing),
            "-q",
        ]
    )
    assert args.handler(args) == 0
    assert {row["snr_db"] for row in read_jsonl(listing)} == {0.0, 10.0}
    with pytest.raises(UsageError, match="--roles"):
        bad = parser.parse_args(["data", "prepare", "--roles", "speech,musik", "--data-dir", str(tmp_path)])
        bad.handler(bad)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--snr=nan,5", "--snr 'nan,5': expected comma-separated numbers in dB"),
        ("--snr=5,inf", "--snr '5,inf': expected comma-separated numbers in dB"),
        ("--list={tmp}", "{tmp}: is a directory"),
    ],
)
def test_cli_mix_refuses_bad_snrs_and_list_before_mixing(prepared, tmp_path, capsys, option, message):
    out = tmp_path / "mix"
    argv = ["data", "mix", "--out", str(out), "--data-dir", str(prepared), option.format(tmp=tmp_path)]
    assert main(argv) == 1
    assert not out.exists()  # refused before mixing (an infinite SNR mixed no noise in)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("audiokit data mix: error: ")
    assert message.format(tmp=tmp_path) in err


def test_cli_mix_refuses_a_negative_seed(prepared, tmp_path, capsys):
    """numpy's generators take no negative seed: it was an internal error (exit 70)."""
    out = tmp_path / "mix"
    assert main(["data", "mix", "--out", str(out), "--data-dir", str(prepared), "--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --seed: -1 is below 0" in err and not out.exists()


def test_archive_members_only_selected_ones(tmp_path):
    """0ad-data: only audio/voice, audio/{ambient,actor,resource} and audio/music are read from public.zip."""
    rng = np.random.default_rng(2)
    members = {
        "audio/voice/hellenes/civ/attack.ogg": _speech("speech_en_48k.wav"),
        "audio/ambient/rain.ogg": ((0.1 * rng.standard_normal(8000)).astype(np.float32), 16000),
        "audio/music/theme.ogg": _speech("music_mono_16k.flac"),
        "audio/interface/click.ogg": ((0.1 * rng.standard_normal(800)).astype(np.float32), 16000),
    }
    archive = tmp_path / "public.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name, (data, rate) in members.items():
            clip = tmp_path / "clip.ogg"
            soundfile.write(clip, data, rate)
            handle.write(clip, name)
    _build_deb(tmp_path, "0ad-data", {"usr/share/games/0ad/mods/public/public.zip": archive.read_bytes()})
    root = tmp_path / "data"
    prepare(
        ["speech", "noise", "music"],
        ["train"],
        root=root,
        deb_dir=tmp_path / "debs",
        quiet=True,
        packages=["0ad-data"],
    )
    speech = read_jsonl(manifest_path("train", "speech", root))
    assert [row["source_path"] for row in speech] == [
        "usr/share/games/0ad/mods/public/public.zip/audio/voice/hellenes/civ/attack.ogg"
    ]
    assert speech[0]["group"] == "0ad-data:hellenes/civ" and speech[0]["native_sample_rate"] == 48000
    assert [row["group"] for row in read_jsonl(manifest_path("train", "noise", root))] == ["0ad-data:ambient"]
    assert len(read_jsonl(manifest_path("train", "music", root))) == 1
    extracted = root / "extracted" / "0ad-data" / "usr/share/games/0ad/mods/public/public.zip.d" / "audio"
    assert sorted(path.name for path in extracted.iterdir()) == ["ambient", "music", "voice"]


def test_manifests_assemble_beside_a_rule_that_selected_nothing(tmp_path):
    """A done marker without rows (a rule whose files were all kept by another) sorts beside the others."""
    from audiokit.data.prepare import write_manifests
    from audiokit.data.sources import SOURCES

    state = tmp_path / "state" / "16000"
    state.mkdir(parents=True)
    (tmp_path / "packages").mkdir()
    empty, full = SOURCES[0], SOURCES[1]
    row = {"path": "corpus/a.flac", "split": "valid", "role": "speech", "source_sha256": "ab", "package": "p"}
    for source, rows in ((empty, []), (full, [row])):
        marker = {"unit": unit_id(source), "package": "p", "deb_sha256": "cd", "rows": rows}
        (state / f"{unit_id(source)}.json").write_text(json.dumps(marker))
    (tmp_path / "packages" / "p.json").write_text(json.dumps({"name": "p", "version": "1"}))
    tables = write_manifests(tmp_path, 16000)
    assert tables[("valid", "speech")] == [row]
    assert [r["path"] for r in read_jsonl(tmp_path / "manifests" / "valid_speech.jsonl")] == ["corpus/a.flac"]


def test_cli_data_refuses_a_rate_that_is_not_one(tmp_path, capsys):
    """``--sample-rate 0`` is an option error naming the rate (it looked for a ``manifests/sr0`` folder)."""
    out = tmp_path / "mix"
    assert main(["data", "mix", "--out", str(out), "--data-dir", str(tmp_path), "--sample-rate", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--sample-rate: 0: must be a rate in Hz" in err and not out.exists()


@pytest.mark.parametrize(
    "action",
    [
        # a local, empty package folder: without the check, no download of the whole allowlist
        [
            "prepare",
            "--packages",
            "alsa-utils",
            "--split",
            "valid",
            "--roles",
            "speech",
            "--deb-dir",
            "{tmp}",
        ],
        ["mix", "--out", "{tmp}/mix"],
        ["pack", "{tmp}/pack", "--manifest", "train_speech", "--max-mb", "1"],
    ],
)
def test_cli_data_refuses_an_empty_data_dir(tmp_path, capsys, monkeypatch, action):
    """``--data-dir "$UNSET"`` worked in the default cache (the one a training job may be reading)."""
    monkeypatch.setenv("AUDIOKIT_DATA", str(tmp_path / "cache"))
    assert main(["data", *(arg.format(tmp=tmp_path) for arg in action), "--data-dir", ""]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --data-dir: an empty path" in err
    assert list(tmp_path.iterdir()) == []


def test_the_summary_counts_only_prepared_manifests(prepared, debs, tmp_path, capsys):
    """A manifest of one's own beside the prepared ones (found by name, e.g. ``data.train: train_mine``)
    without 'seconds', which the trainer allows, made the summary an internal error (KeyError)."""
    root = tmp_path / "data"
    shutil.copytree(prepared, root)
    (root / "manifests" / "train_mine.jsonl").write_text('{"path": "mine/a.wav"}\n')
    argv = ["data", "prepare", "--roles", "speech", "--split", "valid", "--deb-dir", str(debs)]
    assert main([*argv, "--data-dir", str(root)]) == 0
    printed = capsys.readouterr().out
    assert "valid: noise" in printed and "mine" not in printed


def test_an_undecodable_file_is_a_warning_that_quiet_keeps(tmp_path, capsys):
    """The skipped files were listed on stdout with the summary, so --quiet hid them."""
    alsa = "usr/share/sounds/alsa"
    _build_deb(
        tmp_path,
        "alsa-utils",
        {f"{alsa}/Front_Center.wav": _speech("speech_en_48k.wav"), f"{alsa}/Bad.wav": b"RIFF"},
    )
    argv = ["data", "prepare", "-q", "--roles", "speech", "--split", "valid", "--packages", "alsa-utils"]
    assert main([*argv, "--deb-dir", str(tmp_path / "debs"), "--data-dir", str(tmp_path / "data")]) == 0
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.count("\n") == 1
    assert printed.err.startswith("warning: skipped ") and f"{alsa}/Bad.wav" in printed.err


def test_files_that_differ_only_in_their_suffix_get_a_clip_each(tmp_path):
    """supertux-data has sounds/grow.ogg and sounds/grow.wav: both became grow.flac, the second
    overwriting the first, whose row then named a file of other content."""
    rng = np.random.default_rng(3)
    sounds = "usr/share/games/supertux2/sounds"
    _build_deb(
        tmp_path,
        "supertux-data",
        {
            f"{sounds}/grow.ogg": ((0.1 * rng.standard_normal(16000)).astype(np.float32), 16000),
            f"{sounds}/grow.wav": ((0.2 * rng.standard_normal(8000)).astype(np.float32), 16000),
            f"{sounds}/jump.wav": ((0.1 * rng.standard_normal(4000)).astype(np.float32), 16000),
        },
    )
    root = tmp_path / "data"
    prepare(
        ["noise"], ["train"], root=root, deb_dir=tmp_path / "debs", quiet=True, packages=["supertux-data"]
    )
    rows = read_manifest(manifest_path("train", "noise", root))
    assert sorted(Path(row["path"]).name for row in rows) == ["grow.ogg.flac", "grow.wav.flac", "jump.flac"]
    for row in rows:
        assert hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest() == row["sha256"]
        assert abs(soundfile.info(row["path"]).duration - row["seconds"]) < 1e-3


def test_a_corrupt_package_is_not_kept_in_the_cache(debs, tmp_path):
    """A cut .deb stayed in debs/ (with its sha256 recorded): every later run failed on it."""
    deb = next(debs.glob("alsa-utils_*.deb"))
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / deb.name).write_bytes(deb.read_bytes()[:-2000])
    root = tmp_path / "data"
    with pytest.raises(AudiokitError, match="corrupt package, removed from the cache"):
        prepare(["speech"], ["valid"], root=root, deb_dir=cut, quiet=True, packages=["alsa-utils"])
    assert not list((root / "debs").iterdir()) and not (root / "packages").exists()
    prepare(["speech"], ["valid"], root=root, deb_dir=debs, quiet=True, packages=["alsa-utils"])
    (record,) = read_jsonl(root / "manifests" / "packages.jsonl")
    assert record["sha256"] == hashlib.sha256(deb.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"path": "corpus/x.flac", "cut', r"valid_speech.jsonl:2: not a manifest line"),
        (
            '{"path": "corpus/16000/valid/speech/p/x.flac"}',
            r"valid_speech.jsonl: the row of .* has no 'package'",
        ),
        ('{"path": "x.flac", "package": "p", "source_path": "x"}', "is not a prepared clip"),
        (  # too shallow to be below corpus/{rate}/{split}/{role}/{package}/ (was an internal error)
            '{"path": "corpus/16000/valid/speech/x.flac", "package": "p", "source_path": "x"}',
            r"is not a prepared clip \(not below corpus/\{rate\}/\{split\}/\{role\}/\{package\}/\)",
        ),
    ],
)
def test_cli_mix_names_a_bad_manifest_row(prepared, tmp_path, capsys, line, message):
    """A malformed or hand-made row was an 'internal error' (ValueError, KeyError: 'package')."""
    manifests = tmp_path / "data" / "manifests"
    manifests.mkdir(parents=True)
    shutil.copy(manifest_path("valid", "noise", prepared), manifests)
    first = manifest_path("valid", "speech", prepared).read_text().splitlines()[0]
    (manifests / "valid_speech.jsonl").write_text(f"{first}\n{line}\n")
    out = tmp_path / "mix"
    assert main(["data", "mix", "--out", str(out), "--data-dir", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("audiokit data mix: error: ")
    assert re.search(message, err) and not out.exists()


def test_mix_never_replaces_its_inputs_or_a_folder_that_is_not_a_set(prepared, tmp_path, capsys):
    """`--out` of the data folder (a slip on the documented command) replaced the corpus and manifests
    with the set, even a folder of other files went with -f, and `--list` overwrote any file, the
    input manifests included, without -f."""
    data = tmp_path / "data"
    shutil.copytree(prepared / "manifests", data / "manifests")
    shutil.copytree(prepared / "corpus" / "16000" / "valid", data / "corpus" / "16000" / "valid")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"jpeg")
    listing = tmp_path / "list.jsonl"
    listing.write_text("kept\n")
    speech = manifest_path("valid", "speech", data)
    before = speech.read_bytes()
    clip = Path(read_manifest(speech)[0]["path"])  # --list overwrote a clip the set is mixed from
    clip_bytes = clip.read_bytes()
    mix = ["data", "mix", "--data-dir", str(data), "-q"]
    for argv, message in [
        (["--out", str(data), "-f"], f"{data}: is the input "),
        (["--out", str(tmp_path), "-f"], f"{tmp_path}: is the input "),
        (["--out", str(data / "manifests"), "-f"], "is the input"),
        (["--out", str(data / "corpus" / "16000"), "-f"], "is the input"),
        (["--out", str(other), "-f"], f"{other}: a folder that holds no clean/noisy set (no clips.jsonl)"),
        (["--out", str(listing), "-f"], f"{listing}: exists and is not a folder"),
        (["--out", str(tmp_path / "mix"), "--list", str(listing)], f"{listing}: already exists"),
        (["--out", str(tmp_path / "mix"), "--list", str(speech), "-f"], "would overwrite the input"),
        (["--out", str(tmp_path / "mix"), "--list", str(clip), "-f"], f"would overwrite the input {clip}"),
    ]:
        assert main([*mix, *argv]) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert (
        speech.read_bytes() == before and clip.read_bytes() == clip_bytes and (other / "holiday.jpg").exists()
    )
    assert listing.read_text() == "kept\n" and not (tmp_path / "mix").exists()
    assert main([*mix, "--out", str(tmp_path / "mix"), "--list", str(listing), "-f"]) == 0
    assert read_jsonl(listing) == read_jsonl(tmp_path / "mix" / "clips.jsonl")


def test_mix_names_the_manifest_of_a_missing_clip_before_mixing(prepared, tmp_path, capsys):
    """A clip gone from the corpus stopped the mix when its turn came, naming only the clip."""
    root = tmp_path / "data"
    shutil.copytree(prepared, root)
    gone = root / read_jsonl(manifest_path("valid", "speech", root))[-1]["path"]
    gone.unlink()
    out = tmp_path / "mix"
    assert main(["data", "mix", "--out", str(out), "--data-dir", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not out.exists()
    assert f"valid_speech.jsonl: lists {gone}, not found; rerun `audiokit data prepare`" in err


def test_mix_with_silent_noise_stops_with_an_error(prepared, tmp_path):
    """A valid noise manifest of (nearly) silent clips redrew excerpts forever."""
    root = tmp_path / "data"
    (root / "manifests").mkdir(parents=True)
    shutil.copy(manifest_path("valid", "speech", prepared), root / "manifests")
    shutil.copytree(prepared / "corpus" / "16000" / "valid" / "speech", root / "corpus/16000/valid/speech")
    quiet = root / "corpus/16000/valid/noise/p/hum.flac"
    quiet.parent.mkdir(parents=True)
    soundfile.write(quiet, np.full(16000, 5e-4, np.float32), 16000)
    row = {"path": "corpus/16000/valid/noise/p/hum.flac", "package": "p", "source_path": "hum.wav"}
    (root / "manifests" / "valid_noise.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(UsageError, match=r"valid_noise.jsonl: no noise excerpt above -60 dBFS in 1000 draws"):
        build_noisy_set(tmp_path / "mix", root=root, quiet=True)
    assert not (tmp_path / "mix").exists()
