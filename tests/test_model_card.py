"""Model cards from a real (2-step) training run and real clips: numbers, targets, provenance, commands."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import soundfile as sf

from audiokit.cli import main as audiokit_main
from audiokit.errors import UsageError
from audiokit.evaluation import targets as card_targets
from audiokit.evaluation import training_record as records
from audiokit.evaluation.card_markdown import (
    card_run_lines,
    portable_command,
    session_table,
    training_commands,
    training_lines,
)
from audiokit.evaluation.codec_card import entropy_section
from audiokit.evaluation.model_card import weights_info
from audiokit.evaluation.robustness import ROBUSTNESS_TITLES
from audiokit.train.recipe import load_recipe
from audiokit.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
TINY = ROOT / "recipes" / "codec_speech16k_tiny.yaml"
TARGETS = ROOT / "docs" / "models" / "speech-16k-targets.yaml"


def _manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_card_from_a_training_run(tmp_path, monkeypatch):
    # training data: the French sample prompts, with their real provenance (a *validation* package)
    clips = sorted(SAMPLES.glob("speech_fr_16k_*.flac"))
    train = _manifest(
        tmp_path / "train.jsonl",
        [
            {
                "path": str(p),
                "seconds": 2.0,
                "package": "asterisk-core-sounds-fr-g722",
                "licence": "CC-BY-SA-3.0",
            }
            for p in clips
        ],
    )
    run = tmp_path / "run"
    command = [
        "audiokit",
        "train",
        "recipes/codec_speech16k_tiny.yaml",
        "--run-dir",
        str(run),
        "--max-steps",
        "2",
    ]
    monkeypatch.setattr(sys, "argv", command)
    overrides = [
        f"data.train={train}",
        f"data.valid={SAMPLES}",
        "model.options.num_quantizers=12",  # 0.5 .. 6 kbps, so every target can be checked
        "model.options.codebook_size=1024",
        "eval.bitrates=[6000]",
        "eval.every_steps=2",
        "run.max_steps=2",
        "run.log_every=1",
        "run.tensorboard=false",
    ]
    trainer = Trainer(load_recipe(TINY, overrides), run, quiet=True)
    trainer.fit()
    trainer.close()

    valid = tmp_path / "valid"
    valid.mkdir()
    for name in ("speech_fr_16k_b.flac", "speech_fr_16k_c.flac"):
        shutil.copy(SAMPLES / name, valid / name)
    out = tmp_path / "cards"
    argv = [
        "card",
        "-m",
        str(run),
        "--run-dir",
        str(run),
        "--valid",
        str(valid),
        "--bitrates",
        "1.5",
        "3",
        "6",
        "--targets",
        str(TARGETS),
        "--opus-kbps",
        "8",
    ]
    assert audiokit_main([*argv, "--out", str(out), "-q"]) == 0
    # not the shipped weights: named after the run directory, never over a shipped card
    card = json.loads((out / "run.json").read_text())
    markdown = (out / "run.md").read_text()

    # measurements: ours at each bitrate, Opus only at 6 (its minimum), real kbps above nominal
    e = card["evaluation"]
    assert set(e["codec"]) == {"1.5", "3", "6"} and e["opus"]["1.5"] is None and e["opus"]["3"] is None
    for kbps in ("1.5", "3", "6"):
        assert e["codec"][kbps]["n"] == 2 and float(kbps) < e["codec"][kbps][
            "actual_bitrate_kbps"
        ] < 1.5 * float(kbps)
    assert "| Opus | 1.5 | n/a |" in markdown and "| Opus | 6 |" in markdown
    # Opus for context at 8 kbps: a real row, above Opus 6 kbps's size
    assert e["opus"]["8"]["actual_bitrate_kbps"] > e["opus"]["6"]["actual_bitrate_kbps"]
    assert "| Opus | 8 |" in markdown and "--opus-kbps 8" in card["command"]
    # no entropy-coding model ships with these weights; the spectrogram figure is written beside the card
    assert card["entropy"] is None and "### Entropy coding" not in markdown
    figure = card["spectrograms"]
    assert figure["png"] == "run-spectrograms.png" and (out / figure["png"]).read_bytes()[:4] == b"\x89PNG"
    assert figure["titles"] == [
        "reference",
        *(f"speech-16k {k} kbps" for k in ("1.5", "3", "6")),
        "Opus 6 kbps",
    ]
    assert "![spectrograms](run-spectrograms.png)" in markdown
    # the card's command for ours at 6 kbps reproduces its numbers
    words = shlex.split(e["commands"]["ours@6"])
    assert words[0] == "audiokit"
    reproduced = _run_eval(words[1:])
    assert reproduced == e["codec"]["6"]

    # targets: paired differences (no NaN scores here, so = difference of means) decide met / not met
    targets = {t["target"]: t for t in card["targets"]}
    for title, ours_key, metric in (
        ("6 kbps: PESQ-WB above Opus 6 kbps", "6", "pesq"),
        ("3 kbps: STOI above Opus 6 kbps (issue 23)", "3", "stoi"),
    ):
        target = targets[title]
        difference = e["codec"][ours_key][metric] - e["opus"]["6"][metric]
        assert target["paired_difference"]["mean"] == pytest.approx(difference, abs=1e-5)
        assert target["status"] == ("met" if difference > 0 else "not met")
        assert f"{title}: **{target['status']}**" in markdown
    assert targets["6 kbps: PESQ-WB >= 2.5 (issue 23)"]["status"] == "not met"  # two steps of training
    stoi = e["codec"]["6"]["stoi"]
    assert targets["6 kbps: STOI >= 0.95 (issue 23)"]["status"] == ("met" if stoi >= 0.95 else "not met")
    edge = [t for t in card["targets"] if t["target"].startswith("no NaN")]
    assert len(edge) == 1 and [r["bitrate"] for r in card["robustness"]] == [1500, 3000, 6000]
    all_ok = all(r[k]["ok"] for r in card["robustness"] for k in r if k != "bitrate")
    assert edge[0]["status"] == ("met" if all_ok else "not met") and "## Edge cases" in markdown

    # training record, from what the trainer wrote
    t = card["training"]
    info = json.loads((run / "run.json").read_text())
    assert t["steps"] == 2 and t["seed"] == 0 and t["commits"] == [info["sessions"][0]["commit"]]
    session = info["sessions"][0]  # the trainer records the end of each session
    assert (
        session["end_step"] == 2
        and session["stopped"] == "max_steps"
        and session["ended"] >= session["started"]
    )
    assert t["sessions"][0]["hardware"] == session["hardware"] and "CPU" in session["hardware"]
    assert f"| {session['started']} | {session['ended']} | 0 -> 2 |" in markdown
    assert t["session_wall_seconds"] is not None and t["session_wall_seconds"] >= 0
    assert t["recipe_path"] == "recipes/codec_speech16k_tiny.yaml"
    assert t["recipe_yaml"] == (run / "recipe.yaml").read_text() and "num_quantizers: 12" in markdown
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert t["loop_wall_seconds"] == pytest.approx(
        sum(1 / r["speed/steps_per_second"] for r in logged), abs=0.1
    )
    assert card["weights"]["step"] == 2 and card["weights"]["shipped"] is False
    assert "not a shipped model" in markdown and "G.722" in markdown  # the caveat of the targets file
    assert "## Targets (issues 5 and 23)" in markdown and card["targets_file"] == str(TARGETS)
    # the card names the one command that regenerates it
    assert card["command"].startswith("audiokit card ") and f"--targets {TARGETS}" in card["command"]
    assert card["command"].endswith(" -f")  # the card is there once made: rerunning replaces it
    # as a clone runs it: the run directory under runs/
    assert card_run_lines(card) == [card["command"].replace(str(run), "runs/run")]
    assert card_run_lines(card)[0] in markdown
    (package,) = card["training_data"][0]["packages"]
    assert package["package"] == "asterisk-core-sounds-fr-g722" and package["clips"] == len(clips)
    assert package["training_package"] is False  # a validation package used for training is flagged
    assert "not a training package of the allowlist" in markdown


def test_entropy_section_is_the_size_of_the_files_encode_writes(tmp_path):
    """The card's real kbps with and without entropy coding are those of `audiokit encode [--entropy]`
    on the same folder; the entropy-coded files are smaller."""
    valid = tmp_path / "valid"
    valid.mkdir()
    for name in ("speech_fr_16k_b.flac", "speech_fr_16k_c.flac"):
        shutil.copy(SAMPLES / name, valid / name)
    section = entropy_section("speech-16k", valid, "*", [3.0])
    (row,) = section["rows"]
    seconds = sum(sf.info(path).duration for path in valid.iterdir())
    for key, extra in (("fixed_kbps", []), ("entropy_kbps", ["--entropy"])):
        out = tmp_path / key
        assert audiokit_main(["encode", str(valid), f"{out}/", "--bitrate", "3", "-q", *extra]) == 0
        size = sum(path.stat().st_size for path in out.iterdir())
        assert row[key] == pytest.approx(size * 8 / seconds / 1000, rel=1e-3)
    assert row["entropy_kbps"] < row["fixed_kbps"] and row["saving"] == pytest.approx(
        1 - row["entropy_kbps"] / row["fixed_kbps"]
    )
    assert section["files"] == 2 and section["model"] == "speech-16k.entropy.safetensors"


def _run_eval(args: list[str]) -> dict:
    buffer = StringIO()
    with redirect_stdout(buffer):
        assert audiokit_main([*args, "--quiet"]) == 0
    report = json.loads(buffer.getvalue())
    return {key: value for key, value in report.items() if key not in ("ref", "test", "glob")}


def test_training_packages_and_licences_follow_the_allowlist(tmp_path):
    manifest = _manifest(
        tmp_path / "train_speech.jsonl",
        [
            {"path": "a.flac", "seconds": 1800.0, "package": "klettres-data", "licence": "GPL-2+"},
            {"path": "b.flac", "seconds": 1800.0, "package": "klettres-data", "licence": "GPL-2+"},
            {"path": "c.flac", "seconds": 360.0, "package": "gcin-voice", "licence": "CC-BY-3.0"},
        ],
    )
    recipe = f"data:\n  train: {manifest}\n  noise: {tmp_path}\n  noise_probability: 0.5\n"
    train, noise = records.training_data(recipe)
    assert train["packages"] == [
        {
            "package": "gcin-voice",
            "clips": 1,
            "hours": 0.1,
            "licences": ["CC-BY-3.0"],
            "allowlist_licences": ["CC-BY-3.0", "GPL-3/LGPL-3"],
            "training_package": True,
        },
        {
            "package": "klettres-data",
            "clips": 2,
            "hours": 1.0,
            "licences": ["GPL-2+"],
            "allowlist_licences": ["GPL-2+"],
            "training_package": True,
        },
    ]
    assert noise["key"] == "data.noise" and noise["packages"] == [] and noise["files"] == 0


def test_an_enhancers_recorded_noise_and_music_are_training_data(tmp_path):
    """An enhancer mixes data.noise and data.music in by mixture.noise_weights (its data.noise_probability
    is 0): the card names their packages and licences too, and leaves out a source a zero weight skips."""
    noise = _manifest(
        tmp_path / "train_noise.jsonl",
        [{"path": "n.flac", "seconds": 360.0, "package": "sound-icons", "licence": "GPL-2+"}],
    )
    music = _manifest(tmp_path / "train_music.jsonl", [{"path": "m.flac", "seconds": 36.0, "package": "x"}])
    recipe = (
        "task: enhance\nmodel: {config: enhance-16k}\n"
        f"data:\n  train: {tmp_path}\n  noise: {noise}\n  music: {music}\n"
        "mixture:\n  noise_weights: {recorded: 0.5, music: 0.1, white: 0.4}\n"
    )
    train, recorded, tracks = records.training_data(recipe)
    assert [train["key"], recorded["key"], tracks["key"]] == ["data.train", "data.noise", "data.music"]
    assert [p["package"] for p in recorded["packages"]] == ["sound-icons"]
    assert [p["package"] for p in tracks["packages"]] == ["x"]
    only_white = recipe.replace("recorded: 0.5, music: 0.1", "recorded: 0.0, music: 0.0")
    assert [e["key"] for e in records.training_data(only_white)] == ["data.train"]


def test_loop_time_sums_every_session_window():
    # session 1 logs steps 2, 4, 6 (checkpoint at 4); session 2 resumes at 4 and logs 6, 8
    speeds = [1.0, 2.0, 4.0, 0.5, 0.25]
    rows = [{"step": s, "speed/steps_per_second": v} for s, v in zip((2, 4, 6, 6, 8), speeds, strict=True)]
    expected = 2 / 1.0 + 2 / 2.0 + 2 / 4.0 + 2 / 0.5 + 2 / 0.25
    assert records._loop_seconds(rows, [0, 4]) == pytest.approx(expected)


def test_training_record_follows_init_to_the_card_of_those_weights(tmp_path):
    session = {
        "started": "2026-11-25T14:00:00+00:00",
        "ended": "2026-11-25T16:00:00+00:00",
        "start_step": 0,
        "end_step": 100,
        "device": "cpu",
        "world_size": 1,
        "threads": 2,
        "hardware": "x86_64 CPU, 2 cores",
        "host": "vm",
        "command": "audiokit train recipes/codec_speech16k.yaml --run-dir runs/old",
    }
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "model.safetensors").write_bytes(b"")  # only its path and model.json are read
    (earlier / "model.json").write_text(json.dumps({"sha256": "aa" * 32}))
    old_training = {"run_dir": "runs/old", "steps": 100, "commits": ["c1"], "sessions": [session]}
    old_card = {"weights": {"sha256": "aa" * 32}, "training": old_training}
    (earlier / "card.json").write_text(json.dumps(old_card))
    run = tmp_path / "run"
    run.mkdir()
    init = str(earlier / "model.safetensors")
    command = ["audiokit", "train", "recipes/codec_speech16k.yaml", "--init", init]
    (run / "run.json").write_text(
        json.dumps({"seed": 0, "sessions": [{"start_step": 0, "init": init, "command": command}]})
    )
    (run / "metrics.jsonl").write_text(json.dumps({"step": 50, "speed/steps_per_second": 1.0}) + "\n")

    record = records.training_record(run)
    assert record["steps"] == 50 and record["total_steps"] == 150
    assert record["previous"]["steps"] == 100 and record["previous"]["weights"] == init
    chain = records.lineage(record)
    assert [r["steps"] for r in chain] == [100, 50]
    table = "\n".join(session_table(chain[0]["sessions"]))
    assert "| 2026-11-25T14:00:00+00:00 | 2026-11-25T16:00:00+00:00 | 0 -> 100 |" in table

    # a session stopped between two log lines: its recorded end step counts
    info = json.loads((run / "run.json").read_text())
    info["sessions"][0]["end_step"] = 73
    (run / "run.json").write_text(json.dumps(info))
    assert records.training_record(run)["total_steps"] == 173
    del info["sessions"][0]["end_step"]
    (run / "run.json").write_text(json.dumps(info))

    # the recipe named is the latest session's (whose resolved recipe.yaml the run holds)
    later = {"start_step": 50, "command": ["audiokit", "train", "recipes/b.yaml", "--resume"]}
    (run / "run.json").write_text(json.dumps({**info, "sessions": [*info["sessions"], later]}))
    assert records.training_record(run)["recipe_path"] == "recipes/b.yaml"
    (run / "run.json").write_text(json.dumps(info))

    # the run's own weights copied over the ones it started from, with their card: not its origin
    (run / "model.json").write_text(json.dumps({"sha256": "aa" * 32}))
    assert records.training_record(run)["previous"] is None
    (run / "model.json").unlink()

    # a card beside the init path that describes other weights is not the run's origin
    (earlier / "model.json").write_text(json.dumps({"sha256": "bb" * 32}))
    record = records.training_record(run)
    assert record["previous"] is None and record["total_steps"] == 50


def test_init_card_links_an_origin_whose_weights_were_replaced(tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    init = str(folder / "model.safetensors")
    (folder / "model.safetensors").write_bytes(b"")
    # the run's own result now lies where it started from, with its own card
    (folder / "model.json").write_text(json.dumps({"sha256": "cc" * 32}))
    own_card = {"weights": {"sha256": "cc" * 32}, "training": {"steps": 7}}
    (folder / "card.json").write_text(json.dumps(own_card))
    run = tmp_path / "run"
    run.mkdir()
    session = {"start_step": 0, "init": init, "init_sha256": "aa" * 32, "command": ["audiokit", "train"]}
    (run / "run.json").write_text(json.dumps({"seed": 0, "sessions": [session]}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 50, "speed/steps_per_second": 1.0}) + "\n")
    assert records.training_record(run)["previous"] is None

    old = tmp_path / "old-card.json"  # e.g. from `git show REV:checkpoint/card.json`
    old.write_text(json.dumps({"weights": {"sha256": "aa" * 32}, "training": {"steps": 100}}))
    record = records.training_record(run, init_card=old)
    assert record["previous"]["steps"] == 100 and record["total_steps"] == 150

    with pytest.raises(UsageError, match=r"old-card.json: describes weights cccc"):
        old.write_text(json.dumps(own_card))
        records.training_record(run, init_card=old)
    with pytest.raises(UsageError, match="missing.json: no such file"):
        records.training_record(run, init_card=tmp_path / "missing.json")

    # a run from before the trainer recorded init_sha256: the named card is taken, unless it is the
    # card of the run's own weights
    session.pop("init_sha256")
    (run / "run.json").write_text(json.dumps({"seed": 0, "sessions": [session]}))
    old.write_text(json.dumps({"weights": {"sha256": "aa" * 32}, "training": {"steps": 100}}))
    assert records.training_record(run, init_card=old)["total_steps"] == 150
    (run / "model.json").write_text(json.dumps({"sha256": "aa" * 32}))
    with pytest.raises(UsageError, match="the run wrote these very weights"):
        records.training_record(run, init_card=old)


def test_run_records_cut_short_or_corrupt(tmp_path):
    """A run killed while appending a metrics line, or a damaged run.json/model.json, made the card an
    'internal error' (JSONDecodeError) naming no file."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"seed": 0, "sessions": [{"start_step": 0}]}))
    step = json.dumps({"step": 50, "speed/steps_per_second": 1.0})
    (run / "metrics.jsonl").write_text(step + '\n{"step": 51, "spe')
    assert records.training_record(run)["steps"] == 50  # the trainer drops the cut line too
    (run / "metrics.jsonl").write_text('{"step": 51, "spe\n' + step + "\n")
    with pytest.raises(UsageError, match=r"metrics.jsonl:1: not a JSON line"):
        records.training_record(run)
    (run / "metrics.jsonl").write_text(step + "\n")
    (run / "model.json").write_text("{")
    with pytest.raises(UsageError, match=r"run/model.json: not readable JSON"):
        records.training_record(run)
    (run / "run.json").write_text('{"sessions": [')
    with pytest.raises(UsageError, match=r"run/run.json: not readable JSON"):
        records.training_record(run)


def test_card_of_weights_with_a_damaged_config_names_it(tmp_path, capsys):
    """It read 'cards are made for codecs, enhancers and bwe models, not None'."""
    (tmp_path / "model.safetensors").write_bytes(b"")
    config = tmp_path / "model.json"
    config.write_text("{")
    assert audiokit_main(["card", "-m", str(tmp_path), "--run-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no readable model config beside the weights ({config})" in err


def test_session_table_shows_where_a_killed_session_was_continued():
    keys = ("started", "ended", "device", "world_size", "threads", "hardware", "host", "command")
    base = dict.fromkeys(keys, "x")
    sessions = [
        base | {"start_step": 0, "end_step": 100},
        base | {"start_step": 100, "end_step": None, "ended": None},
        base | {"start_step": 150, "end_step": None, "ended": None},
    ]
    rows = session_table(sessions)[2:]
    assert "| 0 -> 100 |" in rows[0]
    assert "| 100 -> ? (next resumed at 150) |" in rows[1] and "not recorded" in rows[1]
    assert "| 150 -> ? |" in rows[2]


def test_targets_file_is_checked_and_decides_verdicts(tmp_path):
    loaded = card_targets.load_targets(TARGETS)
    kinds = ["above_opus"] * 2 + ["at_least"] * 2 + ["above_opus"] * 2 + ["at_least", "edge_cases"]
    assert [t.kind for t in loaded.targets] == kinds
    assert loaded.opus_rates() == {6.0} and "G.722" in loaded.caveat
    bad = tmp_path / "targets.yaml"
    bad.write_text("targets:\n  - {title: t, kbps: 6, metric: pesq, abov_opus: 6}\n")
    with pytest.raises(UsageError, match=r"targets\[0\]: unknown key 'abov_opus'; did you mean 'above_opus'"):
        card_targets.load_targets(bad)
    bad.write_text("title: x\ntarget: []\n")
    with pytest.raises(UsageError, match="did you mean 'targets'"):
        card_targets.load_targets(bad)

    # ours beats Opus on one file and loses on the other: the paired mean decides
    rows = {
        "ours@6": [{"file": "a", "pesq": 3.0}, {"file": "b", "pesq": 2.0}],
        "opus@6": [{"file": "a", "pesq": 2.0}, {"file": "b", "pesq": 2.5}],
    }
    section = {"codec": {"6": {"pesq": 2.5}}, "opus": {"6": {"pesq": 2.25}}}
    ok = {"value": 0, "limit": 0, "ok": True}
    robustness = [{"bitrate": 6000} | dict.fromkeys(ROBUSTNESS_TITLES, ok)]
    targets = card_targets.CardTargets(
        "T",
        (
            card_targets.Target("above", "above_opus", 6.0, 6.0, "pesq"),
            card_targets.Target("aim", "at_least", 2.6, 6.0, "pesq"),
            card_targets.Target("low", "at_least", 2.0, 3.0, "pesq"),
            card_targets.Target("edges", "edge_cases"),
        ),
    )
    verdicts = {v["target"]: v for v in card_targets.verdicts(targets, section, rows, robustness)}
    assert verdicts["above"]["status"] == "met" and verdicts["above"]["paired_difference"]["mean"] == 0.25
    assert verdicts["above"]["significant"] is False  # +1.0 and -0.5 over two files
    assert verdicts["aim"]["status"] == "not met" and verdicts["low"]["status"] == "not evaluated"
    assert verdicts["edges"]["status"] == "met"


def test_a_bitrate_the_codec_lacks_is_named_by_the_cards_option():
    with pytest.raises(UsageError, match=r"^--bitrates 7: speech-16k codes at .* kbps only"):
        weights_info("speech-16k", (6.0, 7.0))


def test_reproduce_commands_name_recipes_and_runs_inside_a_clone():
    """The cards showed a recipe of a deleted worktree (/work/code/s31b/recipes/...) and private run
    folders; a reader's clone has recipes/ and runs/."""
    recorded = (
        "audiokit train /work/code/s31b/recipes/enhance_speech16k.yaml --run-dir /work/runs/s31-abl/normlow "
        "--resume --set 'mixture.snr_db=[-10.0, 20.0]'"
    )
    assert portable_command(recorded) == (
        "audiokit train recipes/enhance_speech16k.yaml --run-dir runs/normlow --resume "
        "--set 'mixture.snr_db=[-10.0, 20.0]'"
    )
    relative = "audiokit train recipes/bwe_8to16.yaml --run-dir runs/bwe --set run.threads=1"
    assert portable_command(relative) == relative
    own = "audiokit train /work/runs/s46/fork-nf/recipe.yaml --run-dir /work/runs/s46/fork-nf --resume"
    assert portable_command(own) == "audiokit train runs/fork-nf/recipe.yaml --run-dir runs/fork-nf --resume"


def test_opus_targets_on_a_distance_count_lower_as_better():
    """`above_opus` on LSD (lower is better) read a higher LSD than Opus's as met."""
    rows = {
        "ours@6": [{"file": "a", "lsd": 1.0}, {"file": "b", "lsd": 1.2}],
        "opus@6": [{"file": "a", "lsd": 1.5}, {"file": "b", "lsd": 1.6}],
    }
    section = {"codec": {"6": {"lsd": 1.1}}, "opus": {"6": {"lsd": 1.55}}}
    targets = card_targets.CardTargets(
        "T",
        (
            card_targets.Target("lower", "above_opus", 6.0, 6.0, "lsd"),
            card_targets.Target("tie", "no_worse_than_opus", 6.0, 6.0, "lsd"),
        ),
    )
    verdicts = {v["target"]: v for v in card_targets.verdicts(targets, section, rows, [])}
    assert verdicts["lower"]["status"] == "met" and verdicts["tie"]["status"] == "met"
    assert verdicts["lower"]["paired_difference"]["mean"] == pytest.approx(-0.45)
    swapped = {"ours@6": rows["opus@6"], "opus@6": rows["ours@6"]}
    verdicts = {v["target"]: v for v in card_targets.verdicts(targets, section, swapped, [])}
    assert verdicts["lower"]["status"] == "not met" and verdicts["tie"]["status"] == "not met"


def test_a_card_cell_over_some_of_the_files_says_so():
    """A card's text says "N files, mean over files" while STOI's mean held 394 of 400 (clips too short
    for it): the cell says so, as `audiokit eval` prints it."""
    from audiokit.evaluation.card_markdown import value_cell

    report = {"n": 400, "stoi": 0.8321, "pesq": 1.5, "ci95": {"stoi": 0.009, "pesq": 0.02}}
    report["count"] = {"stoi": 394, "pesq": 400}
    assert value_cell(report, "stoi") == "0.832 ± 0.009 (394 of 400 files)"
    assert value_cell(report, "pesq") == "1.500 ± 0.020"
    assert value_cell(None, "pesq") == "n/a"


def test_codebook_health_names_the_codebooks_own_size():
    """A codec with 16 codewords per codebook: uniform use is a perplexity of 16 (the card said 1,024
    whatever the size); an old card's section without the size reads as speech-16k's 1,024."""
    from audiokit.evaluation.card_markdown import codebook_lines

    stage = {"stage": 1, "perplexity": 9.5, "used": 14, "dead": 2, "frames": 100}
    stage |= {"duplicates_cosine": 0, "duplicates_euclidean": 0, "min_distance": 0.5}
    health = {"files": 2, "cosine": 0.9999, "distance": 0.01, "stages": [stage], "command": "x"}
    assert "1024 is uniform use of 1,024 codewords" in "\n".join(codebook_lines(health))
    text = "\n".join(codebook_lines({**health, "codebook_size": 16}))
    assert "16 is uniform use of 16 codewords" in text and "1,024" not in text


def _session(command: str, start: int, end: int | None) -> dict:
    keys = ("started", "ended", "device", "world_size", "threads", "hardware", "host")
    return dict.fromkeys(keys, "x") | {"start_step": start, "end_step": end, "command": command}


def test_reproduce_commands_copy_a_run_that_went_on_in_another_folder():
    """The cards' training lines resumed `runs/s31-enh-normlow` right after two sessions in
    `runs/normlow`: run as written, the third command stopped at 'nothing to resume'. Its origin's
    `--init speech-16k` also loaded today's weights, not the version the run started from."""
    train = "audiokit train recipes/enhance_speech16k.yaml --run-dir"
    v1 = "02129b818b3081e532ec71097e00e6a969536c28406bd1a2f0175db03dd9a31f"  # speech-16k@1 (ARCHIVE.json)
    origin = {
        "run_dir": "runs/first",
        "steps": 20,
        "sessions": [_session(f"{train} runs/first --resume", 10, 20)],
        "weights": "speech-16k",
        "weights_sha256": v1,
    }
    training = {
        "run_dir": "/work/runs/s31-enh-normlow",
        "steps": 300,
        "previous": origin,
        "sessions": [
            _session(
                ".venv/bin/audiokit train recipes/enhance_speech16k.yaml --run-dir /w/a --init speech-16k",
                0,
                100,
            ),
            _session(f"{train} /w/a --resume", 100, 100),
            _session(f"{train} /w/b --resume", 100, None),
            _session(f"{train} /w/a --resume", 150, 200),
            _session(f"{train} /w/c --init /work/runs/s42/enh-base", 0, 300),
        ],
    }
    assert training_commands(training) == [
        "# runs/first's steps before 10 (where its record starts, with a --resume) are not in its run.json",
        f"{train} runs/first --resume",
        f"{train} runs/a --init speech-16k@1",
        f"{train} runs/a --resume",
        "cp -r runs/a runs/b   # the run went on in a copy, resumed there at step 100",
        f"{train} runs/b --resume",
        "rm -r runs/a && cp -r runs/b runs/a   # the run went on in a copy, resumed there at step 150",
        f"{train} runs/a --resume",
        f"{train} runs/c --init runs/enh-base",
    ]


def test_reproduce_commands_init_from_the_run_before_by_its_directory():
    """enhance-16k version 3's card began each run of its lineage with `--init runs/enh-base` and
    `--init runs/ref`: folders of the machine that trained, which no command before made. Weights that
    were the previous run's last are that run's directory; weights from inside a run are left alone."""
    train = "audiokit train recipes/enhance_speech16k.yaml --run-dir"
    first = {"run_dir": "/r/lineage/s33", "steps": 26599, "sessions": [_session(f"{train} /w/s33", 0, 26599)]}
    middle = {
        "run_dir": "/r/lineage/s42",
        "steps": 11046,
        "previous": first | {"weights": "/w/enh-base", "weights_step": 26599},
        "sessions": [_session(f"{train} /w/s42 --init /w/enh-base", 0, 11046)],
    }
    last = {
        "run_dir": "/w/v3",
        "steps": 6676,
        "previous": middle | {"weights": "/w/ref", "weights_step": 11046},
        "sessions": [
            _session(f"{train} /w/nf --init /w/ref", 0, 6676),
            _session(f"{train} /w/nf --resume", 6676, 7000),
        ],
    }
    assert training_commands(last) == [
        f"{train} runs/s33",
        f"{train} runs/s42 --init runs/s33",
        f"{train} runs/nf --init runs/s42",
        f"{train} runs/nf --resume",
    ]
    inside = last | {"previous": middle | {"weights": "/w/ref", "weights_step": 9000}}
    assert training_commands(inside)[2] == f"{train} runs/nf --init runs/ref"


def test_steps_in_all_count_to_the_weights_a_run_started_from(tmp_path):
    """speech-16k's card said 219,773 steps in all: it counted all 44,561 steps of the run its
    `--init` weights came from, though those weights (version 3) were that run's step 44,500."""
    run = tmp_path / "run"
    run.mkdir()
    session = {
        "start_step": 0,
        "init": "speech-16k",
        "init_sha256": "aa" * 32,
        "command": ["audiokit", "train"],
    }
    (run / "run.json").write_text(json.dumps({"seed": 0, "sessions": [session]}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 50, "speed/steps_per_second": 1.0}) + "\n")
    old = tmp_path / "old-card.json"  # a run of 100 steps after 1,000 earlier ones; its weights at 90
    old_session = _session("audiokit train recipes/codec_speech16k.yaml --run-dir runs/old --resume", 0, 100)
    old_training = {
        "run_dir": "runs/old",
        "steps": 100,
        "total_steps": 1100,
        "commits": [],
        "sessions": [old_session],
    }
    old.write_text(json.dumps({"weights": {"sha256": "aa" * 32, "step": 90}, "training": old_training}))
    record = records.training_record(run, init_card=old)
    assert record["total_steps"] == 50 + 1000 + 90 and record["previous"]["weights_step"] == 90
    card = {"weights": {"step": 40}, "training": record | {"recipe_path": None, "last_eval": None}}
    card["training_data"] = []
    text = "\n".join(training_lines(card))
    # the card's own weights from step 40 of its 50: 1,090 + 40 in all
    assert "50 steps (**the weights are from step 40**) after 1090 earlier ones (1130 in all)" in text
    assert "trained for 90 steps in `runs/old` (which went on to 100) (commits not recorded)" in text
    record["previous"]["loop_wall_seconds"] = 5400.0  # the card said how long only its own run took
    text = "\n".join(training_lines(card | {"training": record | {"recipe_path": None, "last_eval": None}}))
    assert "(which went on to 100) (training-loop wall time 1.50 h; commits not recorded)" in text


def test_reproduce_ends_with_a_card_command_that_reads_the_trained_run():
    """enhance-16k's card command read `--run-dir /work/runs/enh-20565`, a folder neither a clone nor
    the training lines (which end in runs/s33-fork-group05) make."""
    train = "audiokit train recipes/enhance_speech16k.yaml --run-dir /work/runs/s33-fork-group05 --resume"
    data = '--noisy-set "$AUDIOKIT_DATA/valid_noisy_16k"'
    card = {
        "command": f"audiokit card -m enhance-16k --run-dir /work/runs/enh-20565 {data} --max-files 400",
        "training": {"sessions": [_session(train, 0, 10)]},
    }
    assert card_run_lines(card) == [
        "cp -r runs/s33-fork-group05 runs/enh-20565   # the run directory the card read: a copy of the last "
        "session's",
        f"audiokit card -m enhance-16k --run-dir runs/enh-20565 {data} --max-files 400",
    ]
    card["command"] = card["command"].replace("/work/runs/enh-20565", "/x/s33-fork-group05")
    assert card_run_lines(card) == [card["command"].replace("/x/", "runs/")]
    # bwe-8to16's run began in runs/bwe-8to16 and ended in runs/bwe-fir64; its card read runs/bwe-8to16,
    # which the training lines had made, so a plain cp -r put bwe-fir64 inside it
    first = "audiokit train recipes/bwe_8to16.yaml --run-dir /w/runs/bwe-8to16"
    last = "audiokit train recipes/bwe_8to16.yaml --run-dir /w/runs/bwe-fir64 --resume"
    card = {
        "command": "audiokit card -m bwe-8to16 --run-dir runs/bwe-8to16",
        "training": {"sessions": [_session(first, 0, 10), _session(last, 10, 20)]},
    }
    assert card_run_lines(card)[0].startswith(
        "rm -r runs/bwe-8to16 && cp -r runs/bwe-fir64 runs/bwe-8to16   #"
    )


def test_models_are_named_with_the_right_article():
    """'runs/x (a enhance-16k model)': the article follows the name's first letter."""
    from audiokit.models.base import model_label

    assert model_label("runs/x", "enhance-16k") == "runs/x (an enhance-16k model)"
    assert model_label("runs/x", "speech-16k") == "runs/x (a speech-16k model)"
    assert model_label("runs/x", "bwe-8to16") == "runs/x (a bwe-8to16 model)"


def test_a_run_record_without_sessions_is_one_line(tmp_path):
    """A run.json listing no session (hand-edited, or a run that never started) made `audiokit card` an
    internal error (ValueError from zip in the sessions table)."""
    (tmp_path / "run.json").write_text(json.dumps({"seed": 0, "sessions": []}))
    with pytest.raises(UsageError, match=r"run\.json: records no training session"):
        records.training_record(tmp_path)
