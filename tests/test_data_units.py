"""Pieces of the data pipeline: QTBL parsing, archive members, energy VAD, SNR mixing, ffmpeg checks."""

from __future__ import annotations

import itertools
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from audiokit.data import debs
from audiokit.data.archives import extract_members, list_members, read_queen_table
from audiokit.data.decode import decode
from audiokit.data.manifest import package_totals, read_jsonl, read_manifest, write_jsonl_atomic
from audiokit.data.mixing import loop_excerpt, mix_at_snr, snr_db
from audiokit.data.prepare import resolve_in_tree
from audiokit.data.sources import SOURCES
from audiokit.data.vad import trim_silence
from audiokit.errors import AudioFormatError, ToolMissingError


def _queen_file(path: Path, entries: list[tuple[str, bytes]]) -> None:
    header = b"QTBL" + b"v1.0\0\0" + b"\0\0" + b"\x01" + struct.pack(">H", len(entries))
    offset = len(header) + 21 * len(entries)
    table, blobs = b"", b""
    for name, blob in entries:
        table += struct.pack(">12sBII", name.encode(), 1, offset + len(blobs), len(blob))
        blobs += blob
    path.write_bytes(header + table + blobs)


def test_queen_table_is_parsed_and_members_extracted(tmp_path):
    archive = tmp_path / "queen.1c"
    _queen_file(archive, [("ROOM.DAT", b"x" * 7), ("020001P2.SB", b"\xff\xe3abc"), ("B.SB", b"zz")])
    entries = read_queen_table(archive)
    assert [(entry.name, entry.size) for entry in entries] == [
        ("ROOM.DAT", 7),
        ("020001P2.SB", 5),
        ("B.SB", 2),
    ]
    written = extract_members(archive, ["020001P2.SB"], tmp_path / "out")
    assert written["020001P2.SB"].name == "020001P2.SB.mp3"
    assert written["020001P2.SB"].read_bytes() == b"\xff\xe3abc"


def test_queen_table_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.1c"
    bad.write_bytes(b"NOPE" + bytes(20))
    with pytest.raises(AudioFormatError, match="QTBL"):
        read_queen_table(bad)
    short = tmp_path / "short.1c"
    _queen_file(short, [("A.SB", b"abcdef")])
    short.write_bytes(short.read_bytes()[:-3])
    with pytest.raises(AudioFormatError, match="past the end"):
        read_queen_table(short)


def test_zip_members_extracted_selectively(tmp_path):
    archive = tmp_path / "public.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("audio/voice/a.ogg", b"voice")
        handle.writestr("art/big.dds", b"x" * 1000)
    assert sorted(list_members(archive)) == ["art/big.dds", "audio/voice/a.ogg"]
    written = extract_members(archive, ["audio/voice/a.ogg"], tmp_path / "public.zip.d")
    assert written["audio/voice/a.ogg"].read_bytes() == b"voice"
    assert not (tmp_path / "public.zip.d" / "art").exists()


def test_corrupt_zip_archives_name_the_archive(tmp_path):
    """A corrupt public.zip or member was an internal error (BadZipFile) naming no file."""
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"PK\x03\x04 not a zip" * 10)
    with pytest.raises(AudioFormatError, match="garbage.zip: corrupt zip archive"):
        list_members(garbage)
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w") as handle:
        handle.writestr("audio/voice/a.ogg", b"voice" * 100)
    data = damaged.read_bytes()
    at = data.index(b"voice")
    damaged.write_bytes(data[:at] + b"V" + data[at + 1 :])  # bad CRC-32
    with pytest.raises(AudioFormatError, match="damaged.zip: corrupt zip archive"):
        extract_members(damaged, ["audio/voice/a.ogg"], tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.ogg"))


def test_zip_members_cannot_escape_the_extraction_folder(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("audio/music/../../../../escaped.ogg", b"x")
        handle.writestr("/abs/escaped.ogg", b"x")
    for name in list_members(archive):
        with pytest.raises(AudioFormatError, match="outside the extraction folder"):
            extract_members(archive, [name], tmp_path / "deep" / "evil.zip.d")
    assert not list(tmp_path.rglob("escaped.ogg"))


def test_trim_silence_against_known_edges():
    rate = 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
    gap = np.zeros(rate)
    wav = np.concatenate([gap, tone, np.zeros(2 * rate), tone, gap])[None].astype(np.float32)
    kept = trim_silence(wav, rate, margin_ms=50)
    # edges: 1 s removed each side minus 50 ms margins (frames are 20 ms = 320 samples, aligned here)
    assert kept.shape[-1] == 4 * rate + 2 * 800
    shortened = trim_silence(wav, rate, margin_ms=50, max_gap_ms=500)
    assert abs(shortened.shape[-1] - (2 * rate + 0.5 * rate + 2 * 800)) <= 320
    assert trim_silence(np.zeros((1, rate), np.float32), rate).shape == (1, 0)


def test_mix_at_snr_matches_definition():
    rng = np.random.default_rng(1)
    clean = rng.standard_normal((1, 8000)).astype(np.float32) * 0.1
    noise = rng.standard_normal((1, 8000)).astype(np.float32)
    for target in (-5.0, 0.0, 20.0):
        clean_out, noisy = mix_at_snr(clean, noise, target)
        assert abs(snr_db(clean_out, noisy - clean_out) - target) < 1e-3
        assert np.abs(noisy).max() <= 0.99 + 1e-6
    looped = loop_excerpt(np.arange(5, dtype=np.float32)[None], 7, 3)
    np.testing.assert_array_equal(looped, [[3, 4, 0, 1, 2, 3, 4]])


def test_g722_without_ffmpeg_says_how_to_install(tmp_path, monkeypatch):
    clip = tmp_path / "x.g722"
    clip.write_bytes(bytes(800))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissingError, match="apt-get install ffmpeg"):
        decode(clip)


def test_an_interrupted_copy_from_the_deb_dir_leaves_nothing(tmp_path, monkeypatch):
    """The copy went to a .copy-XXXX file that an interruption left in debs/ (1.8 GB for 0ad-data)."""
    local = tmp_path / "local"
    local.mkdir()
    (local / "alsa-utils_1.0_all.deb").write_bytes(b"x" * 1000)

    def interrupted(source, target):
        Path(target).write_bytes(b"x" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(debs.shutil, "copyfile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        debs.fetch_package("alsa-utils", tmp_path / "debs", local)
    assert list((tmp_path / "debs").iterdir()) == []
    monkeypatch.undo()
    copied = debs.fetch_package("alsa-utils", tmp_path / "debs", local)
    assert [p.name for p in (tmp_path / "debs").iterdir()] == [copied.name] and copied.stat().st_size == 1000


def test_an_interrupted_unpack_leaves_nothing(tmp_path, monkeypatch):
    """An interrupted dpkg-deb -x left extracted/NAME.partial (gigabytes for 0ad-data) until a rerun."""
    deb = tmp_path / "alsa-utils_1.0_all.deb"
    deb.write_bytes(b"x")

    def interrupted(command, **kwargs):
        (Path(command[-1]) / "usr").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(debs, "_tool", lambda name, install: name)
    monkeypatch.setattr(debs.subprocess, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        debs.extract_package(deb, tmp_path / "extracted" / "alsa-utils")
    assert list((tmp_path / "extracted").iterdir()) == [] and deb.exists()


def test_symlinks_resolve_inside_the_package(tmp_path):
    (tmp_path / "usr/share/a").mkdir(parents=True)
    (tmp_path / "usr/share/a/x.wav").write_bytes(b"1")
    (tmp_path / "usr/share/b").symlink_to("/usr/share/a")  # absolute: taken relative to the package
    (tmp_path / "usr/share/c.wav").symlink_to("a/x.wav")
    (tmp_path / "usr/share/d.wav").symlink_to("missing.wav")
    real = (tmp_path / "usr/share/a/x.wav").resolve()
    assert resolve_in_tree(tmp_path, "usr/share/c.wav") == real
    assert resolve_in_tree(tmp_path, "usr/share/d.wav") is None


def test_allowlist_rules():
    def matching(path):
        return [(s.package, s.role, s.split) for s in SOURCES if s.match(path) is not None]

    tux = "usr/share/tuxpaint/stamps/"
    assert matching(tux + "animals/cat_desc_ca.ogg") == [("tuxpaint-stamps-default", "speech", "valid")]
    assert matching(tux + "animals/cat_desc_fr.ogg") == [("tuxpaint-stamps-default", "speech", "train")]
    assert matching(tux + "animals/cat_desc.ogg") == [("tuxpaint-stamps-default", "speech", "train")]
    assert matching(tux + "animals/cat.ogg") == [("tuxpaint-stamps-default", "noise", "train")]
    for skipped in (
        "animals/cat_desc_bg.ogg",
        "animals/cat_desc_el.ogg",
        "symbols/math/one_desc_fr.ogg",
        "symbols/alphabets/a_desc.ogg",
        "symbols/money/coin.ogg",
        "animals/cat_desc_pt_BR.wav",  # spoken, not an effect (was training noise)
        "town/monuments/inukshuk-photo_desc_da.ogg.ogg",  # a Danish validation voice
        "animals/mammals/bovines/cow_white.ogg",  # megaglest's validation noise mudchute_cow_1.ogg
    ):
        assert matching(tux + skipped) == [], skipped
    assert matching("usr/share/klettres/da/alpha/a.ogg") == []
    assert matching("usr/share/ktuberling/sounds/ca/hat.ogg") == []
    assert matching("usr/share/games/lugaru/Sounds/Music1.ogg") == []
    assert matching("usr/share/sounds/alsa/Noise.wav") == []
    assert matching("usr/share/asterisk/sounds/fr_CA_f_June/silence/3.g722") == []
    assert matching("audio/voice/athen/civ/x.ogg") == [("0ad-data", "speech", "train")]
    assert matching("audio/ambient/rain.ogg") == [("0ad-data", "noise", "train")]
    assert matching("audio/interface/click.ogg") == []


def test_package_totals_sum_clips_seconds_and_licences_per_package():
    rows = [
        {"package": "b-pkg", "seconds": 1.25, "licence": "GPL-2"},
        {"package": "a-pkg", "seconds": 2.0, "licence": "CC-BY-4.0"},
        {"package": "b-pkg", "seconds": 0.5, "licence": "LGPL-2.1"},
        {"package": "b-pkg", "seconds": 0.25, "licence": "GPL-2"},
        {"seconds": 3.0},
    ]
    assert package_totals(rows, unnamed="(none)") == [
        {"package": "(none)", "clips": 1, "seconds": 3.0, "licences": []},
        {"package": "a-pkg", "clips": 1, "seconds": 2.0, "licences": ["CC-BY-4.0"]},
        {"package": "b-pkg", "clips": 3, "seconds": 2.0, "licences": ["GPL-2", "LGPL-2.1"]},
    ]


def test_manifests_keep_unicode_line_separators_inside_their_strings(tmp_path):
    """JSON written with ensure_ascii=False keeps U+0085/U+2028/U+2029 unescaped: only newlines end a
    manifest line (str.splitlines() cut such a row in two: "not a manifest line")."""
    path = tmp_path / "m.jsonl"
    rows = [{"path": "corpus/a.flac", "title": "Song\x85Name\u2028of\u2029it"}, {"path": "corpus/b.flac"}]
    write_jsonl_atomic(path, rows)
    assert read_jsonl(path) == rows
    assert [row["title"] for row in read_manifest(path, tmp_path)[:1]] == [rows[0]["title"]]
    path.write_text('{"path": "a"}\r\n{"path": "b', encoding="utf-8")  # CRLF, a last line cut short
    assert read_jsonl(path, cut_end=True) == [{"path": "a"}]
    path.write_text('{"path": "a"}\n', encoding="utf-8-sig")  # a byte-order mark, as some editors save
    assert read_jsonl(path) == [{"path": "a"}]
    assert [row["path"] for row in read_manifest(path, tmp_path)] == [str(tmp_path / "a")]


VERSIONS = ["1.0", "1.0~rc1", "1.0~", "1.0-1", "1.0-1.1", "1.0-2", "1.0-1ubuntu1", "1.0-1+b1", "1.9",
            "1.10", "1.0.1", "1.0a", "1.0+dfsg", "1:0.1", "0.0.26-1", "0.0.26~b-1", "2.0-1~bpo1", "2.0-1",
            "0.9.8-1.2"]


def test_debian_version_order_matches_dpkg():
    """Versions order as `dpkg --compare-versions` orders them (the independent reference)."""
    for a, b in itertools.combinations(VERSIONS, 2):
        key_a, key_b = debs.debian_version_key(a), debs.debian_version_key(b)
        relation = "lt" if key_a < key_b else "gt" if key_a > key_b else "eq"
        dpkg = subprocess.run(["dpkg", "--compare-versions", a, relation, b])
        assert dpkg.returncode == 0, (a, relation, b)


def test_the_newest_deb_of_a_folder_is_taken_in_debian_order(tmp_path):
    """A name sort took alsa-utils_1.9 over 1.10 from a local folder holding both."""
    local = tmp_path / "local"
    local.mkdir()
    for version in ("1.9-1", "1.10-1", "1.10~rc1-1"):
        (local / f"alsa-utils_{version}_all.deb").write_bytes(b"x")
    assert debs.fetch_package("alsa-utils", tmp_path / "debs", local).name == "alsa-utils_1.10-1_all.deb"
