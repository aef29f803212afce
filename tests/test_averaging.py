"""``audiokit checkpoint average``: the mean of weights, and cards that trace it to its run."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from audiokit.cli import main
from audiokit.errors import ModelError, UsageError
from audiokit.evaluation.card_common import model_weights
from audiokit.evaluation.card_markdown import header_lines
from audiokit.evaluation.training_record import check_run_weights
from audiokit.models import AudioModel
from audiokit.models.base import round_to_float16
from audiokit.models.enhancer import Enhancer, EnhancerConfig
from audiokit.provenance import run_info
from audiokit.train.averaging import average_weights
from audiokit.train.recipe import load_recipe
from audiokit.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "recipes" / "enhance_speech16k_tiny.yaml"
SMALL = EnhancerConfig(name="tiny", sample_rate=16000, hidden_dim=16, lstm_layers=1, df_bins=8)


def _saved(folder: Path, seed: int, config: EnhancerConfig = SMALL) -> Path:
    torch.manual_seed(seed)
    return Enhancer(config).save_pretrained(folder / "model.safetensors", extra={"step": seed})


def _state(path: Path) -> dict[str, np.ndarray]:
    return {k: v.double().numpy() for k, v in AudioModel.from_pretrained(path).state_dict().items()}


def test_average_is_the_mean_of_every_tensor(tmp_path):
    paths = [_saved(tmp_path / str(seed), seed) for seed in (1, 2, 3)]
    out = average_weights([str(p) for p in paths], tmp_path / "soup")
    states = [_state(p) for p in paths]
    soup = _state(out)
    for name, value in soup.items():
        np.testing.assert_allclose(value, np.mean([s[name] for s in states], 0), rtol=1e-6, atol=1e-7)
    assert not np.array_equal(soup["df_head.weight"], states[0]["df_head.weight"])
    meta = json.loads(out.with_suffix(".json").read_text())
    assert [i["step"] for i in meta["averaged_from"]] == [1, 2, 3]
    assert [i["sha256"] for i in meta["averaged_from"]] == [
        json.loads(p.with_suffix(".json").read_text())["sha256"] for p in paths
    ]
    assert "step" not in meta


def test_only_some_tensors_are_averaged_through_the_cli(tmp_path, capsys):
    first, second = _saved(tmp_path / "a", 1), _saved(tmp_path / "b", 2)
    assert (
        main(["checkpoint", "average", str(tmp_path / "soup"), str(first), str(second), "--only", "df_head."])
        == 0
    )
    assert "the mean of 2 weights" in capsys.readouterr().out
    a, b, soup = _state(first), _state(second), _state(tmp_path / "soup" / "model.safetensors")
    np.testing.assert_allclose(
        soup["df_head.weight"], (a["df_head.weight"] + b["df_head.weight"]) / 2, rtol=1e-6
    )
    for name in soup:
        if not name.startswith("df_head."):
            np.testing.assert_array_equal(soup[name], a[name])
    meta = json.loads((tmp_path / "soup" / "model.json").read_text())
    assert meta["averaged_tensors"] == ["df_head."]


def test_training_only_fields_may_differ_and_the_first_config_is_kept(tmp_path):
    first = _saved(tmp_path / "a", 1, replace(SMALL, dropout=0.1))
    out = average_weights([str(first), str(_saved(tmp_path / "b", 2))], tmp_path / "soup")
    assert AudioModel.from_pretrained(out).config.dropout == 0.1


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("one", "at least two"),
        ("architecture", "another architecture"),
        ("prefix", "no parameter"),
        ("exists", "exists"),
    ],
)
def test_bad_averages_are_one_line_errors(tmp_path, capsys, case, message):
    first, second = _saved(tmp_path / "a", 1), _saved(tmp_path / "b", 2)
    out = tmp_path / "soup"
    args = [str(out), str(first), str(second)]
    if case == "one":
        args = [str(out), str(first)]
    elif case == "architecture":
        args[2] = str(_saved(tmp_path / "c", 3, replace(SMALL, hidden_dim=24)))
    elif case == "prefix":
        args += ["--only", "no_such_layer."]
    else:
        average_weights([str(first), str(second)], out)
    before = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert main(["checkpoint", "average", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else []) == before


def test_a_card_accepts_an_average_of_its_runs_weights_only(tmp_path):
    run = tmp_path / "run"
    Trainer(load_recipe(TINY, ["run.max_steps=2"]), run, quiet=True).fit()
    early = tmp_path / "early"
    early.mkdir()
    for name in ("model.safetensors", "model.json"):
        shutil.copy(run / name, early / name)
    Trainer(load_recipe(TINY, ["run.max_steps=4"]), run, resume=True, quiet=True).fit()
    soup = average_weights([str(run), str(early)], tmp_path / "soup")
    check_run_weights(str(soup), run)  # both ingredients are the run's saves
    foreign = _saved(tmp_path / "foreign", 7, AudioModel.from_pretrained(run).config)
    with pytest.raises(UsageError, match="nor an average of those"):
        check_run_weights(str(average_weights([str(run), str(foreign)], tmp_path / "mixed")), run)


def test_float16_storage_halves_the_bytes_and_loads_the_same_model(tmp_path):
    first, second = _saved(tmp_path / "a", 1), _saved(tmp_path / "b", 2)
    plain = average_weights([str(first), str(second)], tmp_path / "plain")
    half = average_weights([str(first), str(second)], tmp_path / "half", float16=["lstm.", "df_head."])
    stored = safetensors.torch.load_file(half)
    assert (
        stored["df_head.weight"].dtype == torch.float16 and stored["input_proj.weight"].dtype == torch.float32
    )
    assert half.stat().st_size < plain.stat().st_size
    assert json.loads(half.with_suffix(".json").read_text())["float16_tensors"] == ["lstm.", "df_head."]
    mean, loaded = _state(plain), AudioModel.from_pretrained(half)
    for name, value in loaded.state_dict().items():
        expected = mean[name]
        if name.startswith(("lstm.", "df_head.")) and value.is_floating_point():
            expected = torch.from_numpy(expected).float().half().double().numpy()  # the mean rounded
        assert value.dtype == AudioModel.from_pretrained(plain).state_dict()[name].dtype
        np.testing.assert_allclose(value.double().numpy(), expected, rtol=1e-6, atol=1e-7)
    meta = json.loads(half.with_suffix(".json").read_text())
    assert meta["weights_sha256"] == loaded.weights_sha256() != meta["sha256"]  # the weights', not the file's
    meta["weights_sha256"] = "0" * 64
    half.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="weights_sha256"):
        AudioModel.from_pretrained(half)


def test_only_rounded_values_are_stored_as_float16(tmp_path):
    model = AudioModel.from_pretrained(_saved(tmp_path / "a", 1))
    with pytest.raises(ModelError, match="not float16 values"):
        model.save_pretrained(tmp_path / "b" / "model.safetensors", float16=["df_head."])
    round_to_float16(model, ["df_head."])
    path = model.save_pretrained(tmp_path / "b" / "model.safetensors", float16=["df_head."])
    meta = json.loads(path.with_suffix(".json").read_text())
    meta.pop("float16_tensors")  # an undeclared float16 tensor is refused, as before
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="is float16 but"):
        AudioModel.from_pretrained(path)


def test_a_card_header_says_what_was_averaged_and_stored_as_float16(tmp_path):
    first, second = _saved(tmp_path / "a", 1), _saved(tmp_path / "b", 2)
    out = average_weights([str(first), str(second)], tmp_path / "soup", only=["df_head."], float16=["lstm."])
    model = AudioModel.from_pretrained(out)
    weights = model_weights(str(out), model, model.weights_sha256())
    card = {"weights": weights, "generated": run_info()}
    header = header_lines(card)[2]
    assert "the mean of the weights of step 1" in header and "step 2" in header
    assert "`df_head.*`" in header and "`lstm.*` stored as float16" in header
