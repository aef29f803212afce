"""Training recipes: YAML mapped onto typed, nested dataclasses.

A recipe has eight sections (``data``, ``model``, ``losses``, ``optim``, ``schedule``,
``discriminator``, ``eval``, ``run``); every key is optional and defaults to the value below.
Unknown or misspelt keys and values of the wrong type raise :class:`RecipeError` naming the file, the
dotted key and, for unknown keys, the closest valid key. ``load_recipe(path, ["optim.learning_rate=1e-4"])``
applies dotted ``key=value`` overrides (values parsed as YAML) after the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from audiokit.errors import RecipeError


@dataclass
class DataConfig:
    """Where the audio comes from and how crops are made.

    ``train``, ``valid`` and ``noise`` are each a JSONL manifest, a directory of audio files, or a
    manifest name looked up as ``$AUDIOKIT_DATA/manifests/<name>.jsonl``. Levels are in dB (LUFS for
    ``loudness: lufs``, dBFS for ``rms``); ranges are ``[low, high]``.
    """

    train: str = "train_speech"
    valid: str | None = "valid_speech"
    noise: str | None = None
    glob: str = "*"
    segment_seconds: float = 1.0
    batch_size: int = 8
    num_workers: int = 0
    cache_mb: float = 512.0
    loudness: str = "lufs"
    target_level_db: float = -23.0
    gain_db: list[float] = field(default_factory=lambda: [-6.0, 6.0])
    eq_probability: float = 0.5
    eq_gain_db: float = 6.0
    noise_probability: float = 0.0
    snr_db: list[float] = field(default_factory=lambda: [5.0, 30.0])
    reverb_probability: float = 0.0
    rt60_seconds: list[float] = field(default_factory=lambda: [0.2, 0.8])


@dataclass
class ModelConfig:
    """``config`` names a registered codec configuration; ``options`` overrides its fields."""

    config: str = "speech-16k"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossesConfig:
    """Generator loss weights (relative shares when ``balancer`` is on) and loss settings.

    ``mel``, ``stft``, ``complex``, ``phase``, ``waveform``, ``adversarial`` and ``feature_matching``
    go through the balancer (when on); ``commitment`` and ``codebook`` are added to the total as plain
    weighted terms. A weight of 0 switches a loss off. The mel loss has one scale per
    ``mel_window_lengths`` entry (samples) with ``mel_bins`` bands each; ``stft_resolutions`` lists
    ``[n_fft, hop, window]`` triples for the ``stft`` (magnitude), ``complex`` (magnitude and phase,
    magnitudes compressed by ``complex_exponent``) and ``phase`` (instantaneous frequency and group
    delay, weighted by reference magnitudes to the power ``phase_exponent``) losses.
    """

    mel: float = 15.0
    stft: float = 2.0
    complex: float = 0.0
    phase: float = 0.0
    waveform: float = 0.0
    adversarial: float = 1.0
    feature_matching: float = 2.0
    commitment: float = 1.0
    codebook: float = 1.0
    balancer: bool = True
    balancer_ema_decay: float = 0.999
    mel_window_lengths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])
    mel_bins: list[int] = field(default_factory=lambda: [10, 20, 40, 80, 160, 320])
    stft_resolutions: list[list[int]] = field(
        default_factory=lambda: [[1024, 120, 600], [2048, 240, 1200], [512, 50, 240]]
    )
    complex_exponent: float = 0.3
    phase_exponent: float = 1.0
    adversarial_kind: str = "hinge"


@dataclass
class OptimConfig:
    """AdamW for the generator (``learning_rate``) and discriminator (``disc_learning_rate``).

    Gradients are clipped by global norm (``grad_clip``, ``disc_grad_clip``; 0 turns clipping off);
    ``ema_decay`` is the decay of the EMA copy of the generator weights.
    """

    learning_rate: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    weight_decay: float = 0.0
    disc_learning_rate: float = 3e-4
    disc_betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    grad_clip: float = 1.0
    disc_grad_clip: float = 10.0
    ema_decay: float = 0.999


@dataclass
class ScheduleConfig:
    """Linear warm-up for ``warmup_steps``, then ``decay`` (``cosine``, ``exponential`` or ``constant``).

    Cosine decays to ``min_lr_ratio * learning_rate`` at ``total_steps`` (default ``run.max_steps``);
    exponential multiplies the rate by ``gamma`` every step. ``cooldown_start`` (a step) ends any
    decay early, warmup-stable-decay style: from there the rate falls linearly to
    ``min_lr_ratio * learning_rate`` over ``cooldown_steps`` steps and stays there. Set it on a
    ``--resume`` to anneal a run for release without giving up its schedule for later sessions.
    """

    warmup_steps: int = 1000
    decay: str = "cosine"
    total_steps: int | None = None
    min_lr_ratio: float = 0.05
    gamma: float = 0.99999
    cooldown_start: int | None = None
    cooldown_steps: int = 10000


@dataclass
class DiscriminatorConfig:
    """Which discriminators (``msstft``, ``mpd``, ``mrd``), from which step, and how often they update.

    ``options`` maps a kind to keyword arguments of its class, e.g. ``{msstft: {filters: 16}}``.
    The discriminators train alone for ``warmup_steps`` steps from ``start_step``; the generator's
    adversarial and feature-matching losses start after that, against trained discriminators.
    """

    kinds: list[str] = field(default_factory=lambda: ["msstft", "mpd"])
    start_step: int = 20000
    warmup_steps: int = 0
    update_every: int = 1
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalConfig:
    """Validation every ``every_steps`` steps on ``data.valid`` at each bitrate (bits/s).

    An empty ``bitrates`` means every bitrate the model supports. At most ``max_files`` clips, each
    cut to ``max_seconds``.
    """

    every_steps: int = 2000
    bitrates: list[float] = field(default_factory=list)
    max_files: int = 20
    max_seconds: float = 6.0
    audio_examples: int = 2


@dataclass
class RunConfig:
    """Seed, length of the run, logging and checkpoint cadence, device and precision."""

    seed: int = 0
    max_steps: int = 100000
    max_minutes: float | None = None
    checkpoint_every: int = 1000
    keep_every: int | None = None
    log_every: int = 50
    device: str = "cpu"
    bf16: bool = True
    threads: int | None = None
    tensorboard: bool = True
    find_unused_parameters: bool = False


@dataclass
class Recipe:
    """A whole training recipe."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    losses: LossesConfig = field(default_factory=LossesConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


_FREE_FORM = {"model.options", "discriminator.options"}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str, key: str) -> Any:
    """``value`` checked against (and converted to) the annotation ``tp``; RecipeError if it does not fit."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: '{key}' must be a mapping of keys, got {value!r}")
        return _build(tp, value, where, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: '{key}' must be a list, got {value!r}")
        return [_convert(v, args[0], where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # PyYAML reads ``1e-4`` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and type(value) is tp:
        return value
    raise RecipeError(f"{where}: '{key}' must be {_type_name(tp)}, got {value!r}")


def _unknown(where: str, key: str, name: str, valid: list[str]) -> RecipeError:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    return RecipeError(f"{where}: unknown key '{key}'{hint}")


def _build(cls: type, values: dict, where: str, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in names:
            raise _unknown(where, key, str(name), names)
        if key in _FREE_FORM and value is None:
            value = {}
        kwargs[name] = _convert(value, hints[name], where, key)
    return cls(**kwargs)


def recipe_from_dict(values: dict, where: str = "<recipe>") -> Recipe:
    """Build and check a :class:`Recipe` from nested dicts; ``where`` names the source in errors."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: a recipe must be a mapping of sections, got {type(values).__name__}")
    recipe = _build(Recipe, values, where)
    validate(recipe, where)
    return recipe


def _apply_override(values: dict, override: str) -> None:
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {override!r}: expected key=value, e.g. optim.learning_rate=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {override!r}: value is not valid YAML ({exc.problem})") from None
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read the YAML recipe at ``path``, apply dotted ``key=value`` overrides, and check it."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(values).__name__}")
    where = str(path)
    for override in overrides:
        _apply_override(values, override)
        where = f"{path} (with --set overrides)"
    return recipe_from_dict(values, where)


def _check(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise RecipeError(f"{where}: {message}")


def validate(recipe: Recipe, where: str = "<recipe>") -> None:
    """Value checks that types alone cannot express (ranges, choices)."""
    d, s, r = recipe.data, recipe.schedule, recipe.run
    _check(d.segment_seconds > 0, where, f"'data.segment_seconds' must be > 0, got {d.segment_seconds}")
    _check(d.batch_size >= 1, where, f"'data.batch_size' must be >= 1, got {d.batch_size}")
    _check(
        d.loudness in ("lufs", "rms", "none"),
        where,
        f"'data.loudness' must be lufs, rms or none, got {d.loudness!r}",
    )
    for name in ("gain_db", "snr_db", "rt60_seconds"):
        pair = getattr(d, name)
        _check(len(pair) == 2 and pair[0] <= pair[1], where, f"'data.{name}' must be [low, high], got {pair}")
    for name in ("eq_probability", "noise_probability", "reverb_probability"):
        value = getattr(d, name)
        _check(0.0 <= value <= 1.0, where, f"'data.{name}' must be in [0, 1], got {value}")
    _check(
        d.noise_probability == 0 or d.noise is not None,
        where,
        "'data.noise_probability' > 0 needs 'data.noise' (a noise manifest or directory)",
    )
    _check(
        s.decay in ("cosine", "exponential", "constant"),
        where,
        f"'schedule.decay' must be cosine, exponential or constant, got {s.decay!r}",
    )
    _check(s.warmup_steps >= 0, where, f"'schedule.warmup_steps' must be >= 0, got {s.warmup_steps}")
    _check(
        s.cooldown_start is None or s.cooldown_start >= s.warmup_steps,
        where,
        f"'schedule.cooldown_start' must be >= 'schedule.warmup_steps', got {s.cooldown_start}",
    )
    _check(s.cooldown_steps >= 1, where, f"'schedule.cooldown_steps' must be >= 1, got {s.cooldown_steps}")
    warmup = recipe.discriminator.warmup_steps
    _check(warmup >= 0, where, f"'discriminator.warmup_steps' must be >= 0, got {warmup}")
    lr = recipe.optim.learning_rate
    _check(lr > 0, where, f"'optim.learning_rate' must be > 0, got {lr}")
    _check(0.0 <= recipe.optim.ema_decay < 1.0, where, "'optim.ema_decay' must be in [0, 1)")
    losses = recipe.losses
    _check(
        len(losses.mel_window_lengths) == len(losses.mel_bins),
        where,
        "'losses.mel_window_lengths' and 'losses.mel_bins' must have the same length",
    )
    _check(
        all(len(r) == 3 for r in losses.stft_resolutions),
        where,
        "'losses.stft_resolutions' entries must be [n_fft, hop, window] triples",
    )
    kinds = ("msstft", "mpd", "mrd")
    for kind in recipe.discriminator.kinds:
        _check(
            kind in kinds, where, f"'discriminator.kinds': unknown {kind!r}; choose from {', '.join(kinds)}"
        )
    for kind in recipe.discriminator.options:
        _check(
            kind in kinds,
            where,
            f"'discriminator.options.{kind}': unknown kind; choose from {', '.join(kinds)}",
        )
    _check(recipe.discriminator.update_every >= 1, where, "'discriminator.update_every' must be >= 1")
    _check(
        recipe.losses.adversarial_kind in ("hinge", "lsgan"),
        where,
        f"'losses.adversarial_kind' must be hinge or lsgan, got {recipe.losses.adversarial_kind!r}",
    )
    _check(r.max_steps >= 1, where, f"'run.max_steps' must be >= 1, got {r.max_steps}")
    _check(r.checkpoint_every >= 1, where, f"'run.checkpoint_every' must be >= 1, got {r.checkpoint_every}")
    _check(r.log_every >= 1, where, f"'run.log_every' must be >= 1, got {r.log_every}")
    every = recipe.eval.every_steps
    _check(every >= 1, where, f"'eval.every_steps' must be >= 1, got {every}")
    for section, name, low in (
        ("data", "num_workers", 0),
        ("data", "cache_mb", 0),
        ("data", "eq_gain_db", 0),
        ("eval", "max_files", 1),
        ("eval", "audio_examples", 0),
        ("optim", "disc_learning_rate", 1e-12),
    ):
        value = getattr(getattr(recipe, section), name)
        _check(value >= low, where, f"'{section}.{name}' must be >= {low:g}, got {value}")
    _check(
        r.keep_every is None or r.keep_every >= 1, where, f"'run.keep_every' must be >= 1, got {r.keep_every}"
    )
    _check(
        losses.mel > 0 or losses.stft > 0 or losses.complex > 0 or losses.waveform > 0,
        where,
        "one of 'losses.mel', 'losses.stft', 'losses.complex', 'losses.waveform' must be > 0 (nothing "
        "else trains the decoder before the discriminators start)",
    )
    exponent = losses.complex_exponent
    _check(0.0 < exponent <= 1.0, where, f"'losses.complex_exponent' must be in (0, 1], got {exponent}")
    exponent = losses.phase_exponent
    _check(exponent >= 0, where, f"'losses.phase_exponent' must be >= 0, got {exponent}")


def recipe_to_dict(recipe: Recipe) -> dict:
    """Plain nested dicts (YAML-ready) of ``recipe``."""
    return dataclasses.asdict(recipe)


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML text, every key spelt out."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)
