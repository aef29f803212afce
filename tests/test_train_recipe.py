"""Recipe schema: YAML onto dataclasses, unknown keys with suggestions, type and value errors."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from audiokit.errors import RecipeError
from audiokit.models import CONFIGS
from audiokit.train.adversarial import build_discriminator
from audiokit.train.narrowband import DegradationConfig
from audiokit.train.recipe import dump_recipe, load_recipe, recipe_from_dict
from audiokit.train.task import build_model

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def test_misspelt_key_names_the_key_and_the_closest_valid_one(tmp_path):
    path = _write(tmp_path, "optim:\n  lerning_rate: 1.0e-4\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: unknown key 'optim.lerning_rate'; did you mean 'learning_rate'?"


def test_misspelt_section_and_override():
    with pytest.raises(RecipeError, match=r"unknown key 'discrimnator'; did you mean 'discriminator'\?"):
        recipe_from_dict({"discrimnator": {}})
    with pytest.raises(RecipeError, match=r"unknown key 'run.max_step'; did you mean 'max_steps'\?"):
        load_recipe(ROOT / "recipes" / "codec_speech16k_tiny.yaml", ["run.max_step=3"])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"optim": {"learning_rate": "fast"}}, "'optim.learning_rate' must be float, got 'fast'"),
        ({"run": {"max_steps": 2.5}}, "'run.max_steps' must be int, got 2.5"),
        ({"run": {"bf16": 1}}, "'run.bf16' must be bool, got 1"),
        ({"data": {"gain_db": 3}}, "'data.gain_db' must be a list, got 3"),
        ({"data": "x"}, "'data' must be a mapping of keys"),
        ({"data": {"gain_db": [6, -6]}}, "'data.gain_db' must be \\[low, high\\]"),
        ({"schedule": {"decay": "linear"}}, "'schedule.decay' must be cosine, exponential or constant"),
        ({"schedule": {"warmup_steps": 10, "cooldown_start": 5}}, "'schedule.cooldown_start' must be >= "),
        ({"schedule": {"cooldown_steps": 0}}, "'schedule.cooldown_steps' must be >= 1"),
        ({"losses": {"phase_exponent": -1.0}}, "'losses.phase_exponent' must be >= 0"),
        ({"discriminator": {"warmup_steps": -1}}, "'discriminator.warmup_steps' must be >= 0"),
        ({"losses": {"complex_exponent": 0.0}}, "'losses.complex_exponent' must be in \\(0, 1\\]"),
        ({"discriminator": {"kinds": ["msd"]}}, "unknown 'msd'"),
        ({"data": {"noise_probability": 0.5}}, "needs 'data.noise'"),
        ({"data": {"num_workers": -1}}, "'data.num_workers' must be >= 0"),
        ({"losses": {"mel": 0.0, "stft": 0.0, "waveform": 0.0}}, "must be > 0"),
        # rates that went negative and trained uphill
        ({"schedule": {"min_lr_ratio": -2.0}}, "'schedule.min_lr_ratio' must be in \\[0, 1\\]"),
        ({"schedule": {"decay": "exponential", "gamma": -1.0}}, "'schedule.gamma' must be in \\(0, 1\\]"),
    ],
)
def test_wrong_types_and_values(values, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(values, "r.yaml")


def test_music_noise_needs_a_music_source():
    values = {"task": "enhance", "model": {"config": "enhance-16k"}, "data": {"noise": "noise.jsonl"}}
    values["mixture"] = {"noise_weights": {"recorded": 1.0, "music": 0.5}}
    with pytest.raises(RecipeError, match="'mixture.noise_weights.music' > 0 needs 'data.music'"):
        recipe_from_dict(values, "r.yaml")
    values["data"]["music"] = "music.jsonl"
    assert recipe_from_dict(values, "r.yaml").data.music == "music.jsonl"


TASK_BASES = {
    "codec": {},
    "bwe": {"task": "bwe", "model": {"config": "bwe-8to16"}},
    "enhance": {"task": "enhance", "model": {"config": "enhance-16k"}, "data": {"noise": "noise.jsonl"}},
}


@pytest.mark.parametrize("task", ["codec", "bwe", "enhance"])
@pytest.mark.parametrize(
    ("losses", "message"),
    [
        # a hop of 0 or a window longer than n_fft failed in torch.stft at the first step, after the run
        # directory was written, as an internal error
        ({"stft_resolutions": [[512, 0, 512]]}, "'losses.stft_resolutions\\[0\\]' must be .* hop >= 1"),
        ({"stft_resolutions": [[512, 128, 1024]]}, "'losses.stft_resolutions\\[0\\]' must be .* <= n_fft"),
        ({"stft_resolutions": [[512, 128]]}, "'losses.stft_resolutions\\[0\\]' must be an .* triple"),
        ({"stft_resolutions": []}, "'losses.stft_resolutions' is empty while 'losses\\.\\w+' is on"),
    ],
)
def test_stft_resolutions_are_checked_when_the_recipe_loads(task, losses, message):
    values = {**TASK_BASES[task], "losses": losses}
    with pytest.raises(RecipeError, match="^r.yaml: " + message):
        recipe_from_dict(values, "r.yaml")


@pytest.mark.parametrize("task", ["codec", "bwe"])
@pytest.mark.parametrize(
    ("losses", "message"),
    [
        # 0 bands made the mel loss NaN at every step without a word (a mean over no bands); a window of
        # 0 samples divided by zero
        ({"mel_window_lengths": [512, 1024], "mel_bins": [0, 80]}, "'losses.mel_bins\\[0\\]' must be >= 1"),
        (
            {"mel_window_lengths": [0, 1024], "mel_bins": [20, 80]},
            "'losses.mel_window_lengths\\[0\\]' must be >= 4",
        ),
        (
            {"mel_window_lengths": [], "mel_bins": []},
            "'losses.mel_window_lengths' is empty while 'losses.mel' is on",
        ),
        (
            {"mel_window_lengths": [512], "mel_bins": [20, 80]},
            "'losses.mel_window_lengths' and 'losses.mel_bins' must have the same length",
        ),
    ],
)
def test_mel_scales_are_checked_when_the_recipe_loads(task, losses, message):
    values = {**TASK_BASES[task], "losses": losses}
    with pytest.raises(RecipeError, match="^r.yaml: " + message):
        recipe_from_dict(values, "r.yaml")


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        # the values of a typed mapping went unchecked: a string weight was an internal TypeError
        ({"white": "loud"}, "'mixture.noise_weights.white' must be float, got 'loud'"),
        ({"white": [1.0]}, "'mixture.noise_weights.white' must be float, got \\[1.0\\]"),
        ({1: 1.0}, "'mixture.noise_weights' keys must be str, got 1"),
    ],
)
def test_values_of_a_typed_mapping_are_checked(weights, message):
    values = {**TASK_BASES["enhance"], "mixture": {"noise_weights": weights}}
    with pytest.raises(RecipeError, match="^r.yaml: " + message):
        recipe_from_dict(values, "r.yaml")
    whole = recipe_from_dict({**TASK_BASES["enhance"], "mixture": {"noise_weights": {"white": 1}}}, "r.yaml")
    assert whole.mixture.noise_weights == {"white": 1.0} and isinstance(
        whole.mixture.noise_weights["white"], float
    )


@pytest.mark.parametrize(
    ("degradation", "message"),
    [
        # decimated to 8 kHz, a telephone band up to 5 kHz folded 4-5 kHz into the input without a word
        (
            {"telephone_cutoff_hz": [3400.0, 5000.0]},
            "'degradation.telephone_cutoff_hz' must lie in \\(0, 4000\\]",
        ),
        ({"telephone_cutoff_hz": [0.0, 3400.0]}, "'degradation.telephone_cutoff_hz' must lie in"),
        # at or above 8 kHz scipy refused the filter at the first step that drew it (an internal error)
        (
            {"wideband_cutoff_hz": [3500.0, 8000.0]},
            "'degradation.wideband_cutoff_hz' must lie in \\(0, 8000\\)",
        ),
    ],
)
def test_band_limits_of_the_bwe_degradation_fit_the_models_rate(degradation, message):
    with pytest.raises(RecipeError, match="^r.yaml: " + message):
        recipe_from_dict({**TASK_BASES["bwe"], "degradation": degradation}, "r.yaml")
    edges = {"telephone_cutoff_hz": [3400.0, 4000.0], "wideband_cutoff_hz": [3500.0, 7999.0]}
    assert recipe_from_dict({**TASK_BASES["bwe"], "degradation": edges}, "r.yaml").degradation == (
        DegradationConfig(**edges)
    )


def test_unused_loss_resolutions_may_be_empty_and_the_balancer_decay_is_checked():
    from audiokit.train.runtime import Runtime
    from audiokit.train.task import task_class

    off = {"complex": 0.0, "magnitude": 0.0, "si_sdr": 1.0, "stft_resolutions": []}
    recipe = recipe_from_dict({**TASK_BASES["enhance"], "losses": off}, "r.yaml")
    task_class("enhance")(recipe, build_model(recipe.model), Runtime(torch.device("cpu")))  # builds
    for decay in (-0.5, 1.5):
        with pytest.raises(RecipeError, match="'losses.balancer_ema_decay' must be in \\[0, 1\\]"):
            recipe_from_dict({"losses": {"balancer_ema_decay": decay}}, "r.yaml")


@pytest.mark.parametrize("task", ["bwe", "enhance"])
def test_loss_weights_of_the_spectral_tasks_are_checked(task):
    off = {"bwe": ("magnitude", "mel", "complex"), "enhance": ("complex", "magnitude", "si_sdr")}[task]
    base = {"task": task, "model": {"config": {"bwe": "bwe-8to16", "enhance": "enhance-16k"}[task]}}
    if task == "enhance":
        base["data"] = {"noise": "noise.jsonl"}
    with pytest.raises(RecipeError, match="r.yaml: every loss weight is 0"):
        recipe_from_dict({**base, "losses": dict.fromkeys(off, 0.0)}, "r.yaml")
    with pytest.raises(RecipeError, match="'losses.excess_weight' must be > 0, got 0.0"):
        recipe_from_dict({**base, "losses": {"excess_weight": 0.0}}, "r.yaml")
    alone = {**base, "losses": {**dict.fromkeys(off, 0.0), "compressed_magnitude": 1.0}}
    assert recipe_from_dict(alone, "r.yaml").losses.compressed_magnitude == 1.0


def test_overrides_and_yaml_numbers(tmp_path):
    path = _write(tmp_path, "optim:\n  learning_rate: 1e-4\nrun:\n  max_steps: 10\n")
    recipe = load_recipe(path, ["run.max_steps=20", "data.gain_db=[-3, 3]", "model.options.latent_dim=32"])
    assert recipe.task == "codec" and type(recipe).__name__ == "CodecRecipe"  # the default task
    assert recipe.optim.learning_rate == 1e-4  # PyYAML reads 1e-4 as a string: accepted as a float
    assert recipe.run.max_steps == 20
    assert recipe.data.gain_db == [-3.0, 3.0]
    assert recipe.model.options == {"latent_dim": 32}
    with pytest.raises(RecipeError, match="expected key=value"):
        load_recipe(path, ["run.max_steps"])


@pytest.mark.parametrize("value", ["1e400", "nan", "-inf", "inf"])
def test_a_number_yaml_reads_as_a_string_must_be_finite(value):
    """PyYAML reads ``1e400``, ``nan`` and ``inf`` (no dot) as strings, which a float field takes as
    numbers: under ``model.options`` the recipe's check of ``.inf`` and ``.nan`` never saw them, and the
    model trained with an infinite or NaN setting (``frontend_lr_scale=1e400`` left NaN weights)."""
    with pytest.raises(
        RecipeError, match=f"'model.options.dead_code_threshold' must be a finite number, got '{value}'"
    ):
        load_recipe(
            ROOT / "recipes" / "codec_speech16k_tiny.yaml", [f"model.options.dead_code_threshold={value}"]
        )


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe(ROOT / "recipes" / "codec_speech16k_tiny.yaml")
    path = _write(tmp_path, dump_recipe(recipe))
    assert load_recipe(path) == recipe


@pytest.mark.parametrize("name", ["codec_speech16k.yaml", "codec_speech16k_tiny.yaml"])
def test_shipped_recipes_load_and_build_their_model(name):
    recipe = load_recipe(ROOT / "recipes" / name)
    model = build_model(recipe.model)
    assert model.sample_rate == 16000


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"latnet_dim": 8}, r"unknown key 'model.options.latnet_dim'; did you mean 'latent_dim'\?"),
        (
            {"decoder": {"n_blokcs": 8}},
            r"unknown key 'model.options.decoder.n_blokcs'; did you mean 'n_blocks'\?",
        ),
        (
            {"encoder": {"hidden_dimm": 8}},
            r"unknown key 'model.options.encoder.hidden_dimm'; did you mean 'hidden_dim'\?",
        ),
        ({"decoder": {"n_blocks": "8"}}, r"'model.options.decoder.n_blocks' must be int, got '8'"),
        ({"decoder_type": "vocos"}, r"'model.options.decoder_type' must be one of 'seanet', 'istft'"),
    ],
)
def test_model_options_are_checked_at_any_depth_when_the_recipe_loads(options, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict({"model": {"options": options}}, "r.yaml")


@pytest.mark.parametrize(
    ("config", "options", "message"),
    [
        ("speech-16k", {"num_quantizers": 0}, "num_quantizers"),
        ("speech-16k", {"quantizer_dropout": 2.0}, "quantizer_dropout"),
        ("enhance-16k", {"hidden_dim": 0}, ""),
    ],
)
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # hidden_dim=0, before it refuses
def test_options_a_model_refuses_are_a_recipe_error(config, options, message):
    """Values of the right type that the model cannot be built with: a recipe error naming the option
    (they were an internal error, exit 70)."""
    task = {"speech-16k": {}, "enhance-16k": {"task": "enhance", "data": {"noise": "noise.jsonl"}}}[config]
    recipe = recipe_from_dict({**task, "model": {"config": config, "options": options}}, "r.yaml")
    with pytest.raises(RecipeError, match=f"r.yaml: model.options: .*{message}"):
        build_model(recipe.model, "r.yaml")


@pytest.mark.parametrize(
    ("mixture", "message"),
    [
        ({"babble_talkers": [8, 3]}, "'mixture.babble_talkers' must be \\[low, high\\]"),
        ({"babble_talkers": [0, 0]}, "'mixture.babble_talkers' must be \\[low, high\\] with 1"),
        ({"pause_seconds": [0.8, -0.1]}, "'mixture.pause_seconds'"),
        ({"rt60_seconds": [0.0, 1.0]}, "'mixture.rt60_seconds' must be > 0"),
        ({"early_reflections_ms": -5.0}, "'mixture.early_reflections_ms' must be >= 0"),
        ({"noise_weights": {"babble": -1.0, "white": 1.0}}, "'mixture.noise_weights.babble' must be >= 0"),
    ],
)
def test_the_enhancers_mixture_is_checked_when_the_recipe_loads(mixture, message):
    """(They failed at the first batch, after the run directory was written.)"""
    base = {"task": "enhance", "model": {"config": "enhance-16k"}, "data": {"noise": "noise.jsonl"}}
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict({**base, "mixture": mixture}, "r.yaml")


def test_unknown_model_config_and_task_suggest_the_closest():
    with pytest.raises(RecipeError, match="did you mean 'speech-16k'"):
        recipe_from_dict({"model": {"config": "speech16k"}})
    with pytest.raises(RecipeError, match=r"unknown task 'task: codek'; did you mean 'codec'\?"):
        recipe_from_dict({"task": "codek"})
    with pytest.raises(RecipeError, match=r"unknown key 'losses.mell'; did you mean 'mel'\?"):
        recipe_from_dict({"task": "codec", "losses": {"mell": 1.0}})


def test_partial_model_override_merges_key_by_key(tmp_path):
    path = _write(tmp_path, "model:\n  config: speech-16k\n  options:\n    decoder: {n_blocks: 8}\n")
    recipe = load_recipe(path, ["model.options.encoder.n_blocks=2"])
    config = build_model(recipe.model).config
    registered = CONFIGS["speech-16k"]
    assert config.decoder.n_blocks == 8 and config.encoder.n_blocks == 2
    # every other key keeps the registered value, at every depth
    assert config.decoder == dataclasses.replace(registered.decoder, n_blocks=8)
    assert config.encoder == dataclasses.replace(registered.encoder, n_blocks=2)
    assert dataclasses.replace(config, encoder=registered.encoder, decoder=registered.decoder) == registered


def test_bad_discriminator_options_are_a_recipe_error():
    recipe = recipe_from_dict({"discriminator": {"kinds": ["mpd"], "options": {"mpd": {"nonsense": 1}}}})
    with pytest.raises(RecipeError, match="discriminator.options.mpd"):
        build_discriminator(recipe.discriminator, 1)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(_write(tmp_path, "run: [\n"))


@pytest.mark.parametrize("name", ["bwe_8to16.yaml", "enhance_speech16k.yaml", "codec_speech16k.yaml"])
def test_a_recipes_header_states_its_models_latency_and_size(name):
    """What a recipe's header comment says of its model ("20 ms algorithmic latency", "~339 k
    parameters", "50 Hz frames") is what the recipe builds."""
    path = ROOT / "recipes" / name
    header = " ".join(line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#"))
    model = build_model(load_recipe(path).model)
    latency = re.search(r"(\d+) ms algorithmic latency", header)
    if latency:
        assert int(latency[1]) == 1000 * model.algorithmic_latency / model.sample_rate, latency[0]
    size = re.search(r"~(\d+) k parameters", header)
    if size:
        assert abs(int(size[1]) - sum(p.numel() for p in model.parameters()) / 1000) < 1, size[0]
    frames = re.search(r"(\d+) Hz frames", header)
    if frames:
        assert int(frames[1]) == model.sample_rate / model.hop_length, frames[0]
    assert latency or size or frames, f"{name}: its header states none of them"
