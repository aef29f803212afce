"""Enhancer and bandwidth-extender model cards, end to end on tiny inputs with random-weight models, and
the verdicts of condition targets on planted numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from audiokit import io
from audiokit.cli import main as audiokit_main
from audiokit.errors import UsageError
from audiokit.evaluation.bwe_card import CONDITIONS, gsm_missing, narrowband_recordings
from audiokit.evaluation.card_markdown import card_run_lines
from audiokit.evaluation.enhancer_card import SYSTEMS, spread_over_snrs
from audiokit.evaluation.targets import CardTargets, Target, condition_verdicts, load_targets, verdicts
from audiokit.models.bwe import BandwidthExtender
from audiokit.models.enhancer import Enhancer

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
MODELS = ROOT / "docs" / "models"
SNRS = (-5.0, 5.0, 20.0)


def _run_dir(tmp_path: Path) -> Path:
    """A run directory as the trainer leaves it: one 3-step session."""
    run = tmp_path / "run"
    run.mkdir()
    session = {
        "started": "2026-01-01T00:00:00+00:00",
        "start_step": 0,
        "ended": "2026-01-01T00:01:00+00:00",
        "end_step": 3,
        "command": ["audiokit", "train", "recipes/enhance_speech16k_tiny.yaml"],
        "commit": "0123abc",
        "device": "cpu",
        "hardware": "x86_64 CPU, 2 cores",
        "threads": 1,
        "world_size": 1,
        "host": "vm",
    }
    (run / "run.json").write_text(json.dumps({"seed": 0, "sessions": [session]}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 3, "speed/steps_per_second": 1.5}) + "\n")
    (run / "eval.jsonl").write_text(json.dumps({"step": 3, "enhanced": {"pesq": 1.25}}) + "\n")
    return run


def _card(args: list[str], out: Path, name: str) -> tuple[dict, str]:
    assert audiokit_main(["card", *args, "--out", str(out), "-q"]) == 0
    return json.loads((out / f"{name}.json").read_text()), (out / f"{name}.md").read_text()


def _noisy_set(root: Path) -> Path:
    """Three 1.2 s clips of the sample prompts, each with white noise at one of :data:`SNRS`."""
    rng = np.random.default_rng(0)
    clips = []
    for snr, sample in zip(SNRS, ("a", "b", "c"), strict=True):
        clean, rate = io.load(SAMPLES / f"speech_fr_16k_{sample}.flac", channels=1)
        clean = clean.numpy()[:, rate // 2 : rate // 2 + round(1.2 * rate)]
        noise = rng.standard_normal(clean.shape).astype(np.float32)
        noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr / 10))
        name = f"fr/{sample}.wav"
        io.save(root / "clean" / name, clean, rate)
        io.save(root / "noisy" / name, np.clip(clean + noise, -1, 1), rate)
        clips.append({"name": name, "snr_db": snr})
    (root / "clips.jsonl").write_text("".join(json.dumps(c) + "\n" for c in clips))
    return root


def test_enhancer_card_end_to_end(tmp_path):
    run = _run_dir(tmp_path)  # the card names it, and the weights must be the run's
    weights = Enhancer.from_config("enhance-16k").save_pretrained(run / "model.safetensors", {"step": 3})
    noisy_set = _noisy_set(tmp_path / "set")
    targets = MODELS / "enhance-16k-targets.yaml"
    args = ["-m", str(weights), "--run-dir", str(run), "--noisy-set", str(noisy_set)]
    card, markdown = _card([*args, "--targets", str(targets)], tmp_path / "out", "run")

    e = card["evaluation"]
    assert card["family"] == "enhancer" and e["files"] == 3
    assert set(e["by_snr"]) == {"-5", "5", "20"}
    for by_system in [*e["by_snr"].values(), e["conditions"]["noisy"]]:
        assert set(by_system) == set(SYSTEMS)
        for report in by_system.values():
            assert all(report[m] is not None for m in ("pesq", "stoi", "si_sdr"))
    for snr in ("-5", "5", "20", "all"):
        for label, _ in SYSTEMS.values():
            assert f"| {snr} | {label} |" in markdown
    clean = e["conditions"]["clean"]["ours"]
    assert clean["n"] == 3 and clean["pesq"] is not None
    assert e["conditions"]["silence"]["ours"]["peak_dbfs"] <= 0
    assert set(e["commands"]) == {*SYSTEMS, "clean", "silence"}
    assert "--baseline rnnoise" in e["commands"]["rnnoise"] and "--baseline rnnoise" in markdown

    verdicts_by_title = {t["target"]: t for t in card["targets"]}
    assert len(verdicts_by_title) == len(load_targets(targets).targets)
    gain = verdicts_by_title["PESQ-WB at least +0.8 over the noisy input"]
    assert gain["status"] == ("met" if gain["paired_difference"]["mean"] >= 0.8 else "not met")
    silent = verdicts_by_title["digital silence in: no output above -60 dBFS"]
    assert silent["status"] == ("met" if silent["ours"] <= -60 else "not met")
    assert f"{silent['target']}: **{silent['status']}**" in markdown
    assert card["training"]["steps"] == 3 and "0 -> 3" in markdown and "enhanced: pesq 1.250" in markdown
    assert card["command"].startswith("audiokit card -m ") and card_run_lines(card)[-1] in markdown


@pytest.mark.parametrize(
    ("line", "problem"), [('{"name": "fr/a.wav", "snr', "line 1 column"), ("{}", "no 'name'")]
)
def test_enhancer_card_names_a_damaged_clip_list(tmp_path, capsys, line, problem):
    """A cut or hand-edited clips.jsonl was an internal error (JSONDecodeError, KeyError)."""
    run = _run_dir(tmp_path)
    weights = Enhancer.from_config("enhance-16k").save_pretrained(run / "model.safetensors", {"step": 3})
    noisy_set = _noisy_set(tmp_path / "set")
    (noisy_set / "clips.jsonl").write_text(line + "\n")
    args = ["card", "-m", str(weights), "--run-dir", str(run), "--noisy-set", str(noisy_set)]
    assert audiokit_main([*args, "--out", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{noisy_set}/clips.jsonl: not a clip list of `audiokit data mix`" in err
    assert problem in err and not (tmp_path / "out").exists()


def test_bwe_card_end_to_end(tmp_path):
    run = _run_dir(tmp_path)
    weights = BandwidthExtender.from_config("bwe-8to16").save_pretrained(run / "model.safetensors")
    valid = tmp_path / "valid"
    for sample in ("b", "c"):
        wav, rate = io.load(SAMPLES / f"speech_fr_16k_{sample}.flac")
        io.save(valid / f"{sample}.wav", wav[:, : round(1.5 * rate)], rate)
    narrowband = SAMPLES / "speech_fr_8k_a.wav"
    args = ["-m", str(weights), "--run-dir", str(run), "--valid", str(valid)]
    args += ["--max-files", "2", "--narrowband", str(narrowband), "--narrowband-files", "1"]
    targets = MODELS / "bwe-8to16-targets.yaml"
    out = tmp_path / "out"
    card, markdown = _card([*args, "--targets", str(targets), "--name", "bwe-8to16"], out, "bwe-8to16")

    e = card["evaluation"]
    assert card["family"] == "bwe" and e["files"] == 2
    measured = [c for c in CONDITIONS if c not in e["skipped"]]
    assert ("gsm" in e["skipped"]) == (gsm_missing() is not None)
    for condition in measured:
        for system in ("ours", "sinc"):
            report = e["conditions"][condition][system]
            assert all(report[m] is not None for m in ("lsd", "lsd_high", "pesq", "stoi")), condition
            assert f"| {CONDITIONS[condition]} | {system} |" in markdown
    assert e["conditions"]["wideband"]["ours"]["pesq"] is not None
    (shot,) = e["spectrograms"]
    assert shot["input_rate"] == 8000 and (out / shot["png"]).is_file() and f"]({shot['png']})" in markdown
    by_title = {t["target"]: t for t in card["targets"]}
    lsd = by_title["LSD at most half of sinc's"]
    assert lsd["status"] == ("met" if lsd["ratio"] <= 0.5 else "not met")
    assert lsd["ours"] == e["conditions"]["narrowband"]["ours"]["lsd"]
    if "gsm" in e["skipped"]:
        assert by_title["GSM input: PESQ-WB above sinc"]["status"] == "not evaluated"
    assert "--input-rate 8000" in e["commands"]["narrowband"]


def test_bwe_card_names_a_bad_narrowband_manifest_line(tmp_path):
    """A bad line of a --narrowband manifest was an internal error (ValueError)."""
    manifest = tmp_path / "nb.jsonl"
    manifest.write_text('{"path": "a.wav"}\n{"path": 3}\n')
    with pytest.raises(UsageError, match=r"--narrowband .*nb.jsonl:2: not a manifest line"):
        narrowband_recordings((manifest,), 1)


def test_bwe_card_refuses_to_replace_a_narrowband_spectrogram(tmp_path, capsys):
    """The card's narrowband PNGs are <name>-narrowband-1.png ...: an existing one needs -f like the
    card itself, and is refused before anything is measured."""
    run = _run_dir(tmp_path)
    weights = BandwidthExtender.from_config("bwe-8to16").save_pretrained(run / "model.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    (out / "run-narrowband-1.png").write_bytes(b"an earlier card's figure")
    args = ["card", "-m", str(weights), "--run-dir", str(run), "--out", str(out), "-q"]
    args += ["--valid", str(SAMPLES / "speech_fr_16k_c.flac"), "--narrowband-files", "1"]
    assert audiokit_main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run-narrowband-1.png: already exists; pass -f/--force" in err
    assert [p.name for p in out.iterdir()] == ["run-narrowband-1.png"]
    assert (out / "run-narrowband-1.png").read_bytes() == b"an earlier card's figure"


def _section(ours: dict, **others: dict) -> tuple[dict, dict]:
    """Reports and per-file rows of planted per-file scores (``{metric: [per file]}``) per system."""
    systems = {"ours": ours, **others}
    rows = {
        name: [{"file": f"f{i}", **{m: v[i] for m, v in scores.items()}} for i in range(len(ours["pesq"]))]
        for name, scores in systems.items()
    }
    reports = {name: {m: float(np.mean(v)) for m, v in scores.items()} for name, scores in systems.items()}
    return {"noisy": reports}, {"noisy": rows}


def test_condition_verdicts_on_planted_numbers():
    section, rows = _section(
        {"pesq": [2.0, 2.2, 2.4], "lsd": [1.0, 1.0, 1.0]},
        noisy={"pesq": [1.2, 1.4, 1.6], "lsd": [2.0, 2.0, 2.2]},
        sinc={"pesq": [2.0, 2.3, 2.4], "lsd": [2.0, 2.0, 2.0]},
    )
    section["silence"] = {"ours": {"peak_dbfs": -59.0}}

    def judge(**entry) -> dict:
        kind = next(k for k in ("above", "no_worse_than", "at_least", "at_most") if k in entry)
        value = entry.get("by", entry.get(kind)) if kind in ("above", "no_worse_than") else entry[kind]
        target = Target(
            "t",
            kind,
            None if kind in ("above", "no_worse_than") and "by" not in entry else value,
            metric=entry["metric"],
            condition=entry.get("condition", "noisy"),
            other=entry.get("ratio_to") if kind in ("at_least", "at_most") else entry[kind],
        )
        (verdict,) = condition_verdicts(CardTargets(targets=(target,)), section, rows)
        return verdict

    assert judge(metric="pesq", above="noisy", by=0.8)["status"] == "met"  # +0.8 exactly
    assert judge(metric="pesq", above="noisy", by=0.81)["status"] == "not met"
    assert judge(metric="pesq", above="sinc")["status"] == "not met"  # -0.033
    assert judge(metric="lsd", above="noisy")["status"] == "met"  # lower is better
    assert judge(metric="lsd", no_worse_than="sinc")["status"] == "met"
    half = judge(metric="lsd", at_most=0.5, ratio_to="sinc")
    assert half["status"] == "met" and half["ratio"] == pytest.approx(0.5)
    assert judge(metric="lsd", at_most=0.49, ratio_to="sinc")["status"] == "not met"
    assert judge(metric="pesq", at_least=2.19)["status"] == "met"
    assert judge(metric="pesq", at_least=2.21)["status"] == "not met"
    assert judge(metric="peak_dbfs", at_most=-60, condition="silence")["status"] == "not met"
    missing = judge(metric="pesq", above="rnnoise")
    assert missing["status"] == "not evaluated" and "rnnoise" in missing["reason"]
    paired = judge(metric="pesq", above="noisy")["paired_difference"]
    assert paired["mean"] == pytest.approx(0.8) and paired["n"] == 3 and not math.isnan(paired["ci95"])

    # a codec target on a condition card, and a condition target on a codec card: not evaluated
    codec_target = Target("codec", "at_least", 2.5, kbps=6.0, metric="pesq")
    (verdict,) = condition_verdicts(CardTargets(targets=(codec_target,)), section, rows)
    assert verdict["status"] == "not evaluated"
    condition_target = Target("t", "at_least", 1.0, metric="pesq", condition="noisy")
    (verdict,) = verdicts(CardTargets(targets=(condition_target,)), {"codec": {}}, {}, [])
    assert verdict["status"] == "not evaluated"


def test_condition_targets_file_errors(tmp_path):
    path = tmp_path / "t.yaml"
    for entry, message in (
        ("{title: t, condition: noisy, metric: pesq, at_least: 4, by: 1}", "by goes with"),
        ("{title: t, condition: noisy, metric: pesk, above: noisy}", "metric must be one of"),
        ("{title: t, condition: noisy, metric: pesq, above: noisy, by: x}", "by must be a number"),
        ("{title: t, condition: noisy, metric: pesq, abov: noisy}", "did you mean 'above'"),
    ):
        path.write_text(f"targets:\n  - {entry}\n")
        with pytest.raises(UsageError, match=message):
            load_targets(path)


def test_max_files_spread_over_every_snr():
    snrs = {f"c{i:02d}": float(s) for i, s in enumerate([-5, 0, 5] * 4)}
    picked = spread_over_snrs(snrs, 5)
    assert len(picked) == 5 and {snrs[n] for n in picked} == {-5.0, 0.0, 5.0}
    assert spread_over_snrs(snrs, 100) == sorted(snrs)


def test_a_card_that_fails_late_leaves_no_figures(tmp_path, capsys, monkeypatch):
    """The figures are written while the card is measured, the card itself last: a failure at the end (a
    full disk, here injected at the card's write; a bad run record made it an internal error) left the
    new narrowband PNGs without their card."""
    import errno

    from audiokit.evaluation import model_card  # the card command imports it when it runs

    run = _run_dir(tmp_path)
    weights = BandwidthExtender.from_config("bwe-8to16").save_pretrained(run / "model.safetensors")
    out = tmp_path / "out"

    def disk_full(card, folder):
        assert (folder / "run-narrowband-1.png").is_file()  # written by then
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "run.json"))

    monkeypatch.setattr(model_card, "write_card", disk_full)
    args = ["card", "-m", str(weights), "--run-dir", str(run), "--out", str(out), "-q", "--max-files", "1"]
    args += ["--valid", str(SAMPLES / "speech_fr_16k_c.flac"), "--narrowband-files", "1"]
    assert audiokit_main([*args, "--narrowband", str(SAMPLES / "speech_fr_8k_a.wav")]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not list(out.glob("*.png"))
