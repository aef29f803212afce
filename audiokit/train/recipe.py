"""Training recipes: YAML mapped onto typed, nested dataclasses.

Every recipe names its task (``task: codec``, the default) and has the sections of :class:`Recipe`
(``data``, ``model``, ``optim``, ``schedule``, ``eval``, ``run``); a task's recipe class adds its own
sections and keys (the codec's ``losses``: :mod:`audiokit.train.tasks.codec`; the ``discriminator``
section of the tasks with adversarial terms: :mod:`audiokit.train.adversarial`).
Every key is optional and defaults to the value below. ``model`` names a registered model config and
overrides it key by key, checked against the family's typed config at load. Unknown or misspelt keys
(at any depth), keys given twice in one mapping and values of the wrong type or out of range
raise :class:`RecipeError` naming the file, the dotted key and, for unknown keys, the closest valid
key. ``load_recipe(path, ["optim.learning_rate=1e-4"])``
applies dotted ``key=value`` overrides (values parsed as YAML; a mapping merges key by key into the
mapping it overrides) after the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from audiokit import schema
from audiokit.errors import RecipeError
from audiokit.models.base import resolve_config


@dataclass
class DataConfig:
    """Where the audio comes from and how crops are made.

    ``train``, ``valid``, ``noise`` and ``music`` (the enhancer's music noise, read as excerpts) are
    each a JSONL manifest, a directory of audio files, or a
    prepared manifest's name (``$AUDIOKIT_DATA/manifests/<name>.jsonl``, in ``manifests/sr<rate>/``
    for models at another rate than 16 kHz: :func:`audiokit.data.manifest.find_manifest`). Levels are
    in dB (LUFS for ``loudness: lufs``, dBFS for ``rms``); ranges are ``[low, high]``. A training clip
    is drawn with probability proportional to its length, its group's (speaker's) share of all draws
    scaled to ``group_seconds ** group_exponent`` (1: by length alone; 0: every group alike). With
    probability ``eq_probability`` a crop is equalised: a low and a high shelf of up to ``eq_gain_db``
    each way, then ``eq_peaks`` peaking filters of up to ``eq_peak_db`` (centre 200 Hz-5 kHz,
    log-uniform; Q 1-4): resonances moved, as another voice or microphone would move them.
    """

    train: str = "train_speech"
    valid: str | None = "valid_speech"
    noise: str | None = None
    music: str | None = None
    glob: str = "*"
    segment_seconds: float = 1.0
    group_exponent: float = 1.0
    batch_size: int = 8
    num_workers: int = 0
    cache_mb: float = 512.0
    loudness: str = "lufs"
    target_level_db: float = -23.0
    gain_db: list[float] = field(default_factory=lambda: [-6.0, 6.0])
    eq_probability: float = 0.5
    eq_gain_db: float = 6.0
    eq_peaks: int = 0
    eq_peak_db: float = 9.0
    noise_probability: float = 0.0
    snr_db: list[float] = field(default_factory=lambda: [5.0, 30.0])
    reverb_probability: float = 0.0
    rt60_seconds: list[float] = field(default_factory=lambda: [0.2, 0.8])


@dataclass
class ModelSection:
    """``config`` names a registered model config (:func:`audiokit.models.registered_names`);
    ``options`` overrides its fields key by key at any depth (``{decoder: {n_blocks: 8}}`` keeps the
    decoder's other keys). Both are checked against the family's typed config when the recipe loads."""

    config: str = "speech-16k"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """AdamW for the model (``learning_rate``, ``betas``, ``weight_decay``).

    Gradients are clipped by global norm (``grad_clip``; 0 turns clipping off); ``ema_decay`` is the
    decay of the EMA copy of the model's weights. ``frozen`` names submodules of the model (dotted
    paths such as ``encoder`` or ``quantizer.quantizers``) held as they start: no gradients, no
    optimiser state, and eval mode in training, so they update no statistics either (a codec trained
    with its encoder and codebooks frozen keeps the codes of its ``--init`` weights). ``lr_scales``
    maps a parameter-name prefix to a multiple of the learning rate for the parameters whose names start
    with it (e.g. ``{rate_: 30}``: a rate-conditioned codec's per-bitrate vectors), each prefix having
    to match some trained parameter; changing it changes the optimiser's groups, so a run resumes only
    with the ``lr_scales`` it started with.
    """

    learning_rate: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    frozen: list[str] = field(default_factory=list)
    lr_scales: dict[str, float] = field(default_factory=dict)


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
class EvalConfig:
    """Validation of the EMA model every ``every_steps`` steps on ``data.valid``: at most ``max_files``
    clips, each cut to ``max_seconds``; ``audio_examples`` of them go to TensorBoard. ``stride`` > 1
    takes every ``stride``-th clip of a listed validation set (the enhancer's noisy set) instead of the
    first ones, so that a few clips cover every speaker of a set sorted by source."""

    every_steps: int = 2000
    max_files: int = 20
    stride: int = 1
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
    """A whole training recipe: the sections every task shares (a task's recipe class adds its own)."""

    task: str = "codec"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self, where: str) -> None:
        """Value checks that types alone cannot express (ranges, choices); subclasses add theirs."""
        d, s, r = self.data, self.schedule, self.run
        check(d.segment_seconds > 0, where, f"'data.segment_seconds' must be > 0, got {d.segment_seconds}")
        check(
            0 <= d.group_exponent <= 1,
            where,
            f"'data.group_exponent' must be in [0, 1], got {d.group_exponent}",
        )
        check(d.batch_size >= 1, where, f"'data.batch_size' must be >= 1, got {d.batch_size}")
        check(
            d.loudness in ("lufs", "rms", "none"),
            where,
            f"'data.loudness' must be lufs, rms or none, got {d.loudness!r}",
        )
        for name in ("gain_db", "snr_db", "rt60_seconds"):
            pair = getattr(d, name)
            check(
                len(pair) == 2 and pair[0] <= pair[1], where, f"'data.{name}' must be [low, high], got {pair}"
            )
        for name in ("eq_probability", "noise_probability", "reverb_probability"):
            value = getattr(d, name)
            check(0.0 <= value <= 1.0, where, f"'data.{name}' must be in [0, 1], got {value}")
        check(
            d.noise_probability == 0 or d.noise is not None,
            where,
            "'data.noise_probability' > 0 needs 'data.noise' (a noise manifest or directory)",
        )
        check(
            s.decay in ("cosine", "exponential", "constant"),
            where,
            f"'schedule.decay' must be cosine, exponential or constant, got {s.decay!r}",
        )
        check(s.warmup_steps >= 0, where, f"'schedule.warmup_steps' must be >= 0, got {s.warmup_steps}")
        check(
            s.cooldown_start is None or s.cooldown_start >= s.warmup_steps,
            where,
            f"'schedule.cooldown_start' must be >= 'schedule.warmup_steps', got {s.cooldown_start}",
        )
        check(s.cooldown_steps >= 1, where, f"'schedule.cooldown_steps' must be >= 1, got {s.cooldown_steps}")
        check(
            0.0 <= s.min_lr_ratio <= 1.0,
            where,
            f"'schedule.min_lr_ratio' must be in [0, 1], got {s.min_lr_ratio}",
        )
        check(0.0 < s.gamma <= 1.0, where, f"'schedule.gamma' must be in (0, 1], got {s.gamma}")
        check(
            self.optim.learning_rate > 0,
            where,
            f"'optim.learning_rate' must be > 0, got {self.optim.learning_rate}",
        )
        check(0.0 <= self.optim.ema_decay < 1.0, where, "'optim.ema_decay' must be in [0, 1)")
        for prefix, scale in self.optim.lr_scales.items():
            check(
                isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0,
                where,
                f"'optim.lr_scales.{prefix}' must be a number > 0, got {scale!r}",
            )
        check_betas(self.optim.betas, "optim.betas", where)
        for name in ("weight_decay", "grad_clip"):
            value = getattr(self.optim, name)
            check(value >= 0, where, f"'optim.{name}' must be >= 0, got {value}")
        check(
            s.total_steps is None or s.total_steps >= 1,
            where,
            f"'schedule.total_steps' must be >= 1 (or null: run.max_steps), got {s.total_steps}",
        )
        check(r.max_steps >= 1, where, f"'run.max_steps' must be >= 1, got {r.max_steps}")
        check(0 <= r.seed < 2**63, where, f"'run.seed' must be in [0, 2**63), got {r.seed}")
        check(
            r.max_minutes is None or r.max_minutes >= 0,
            where,
            f"'run.max_minutes' must be >= 0 (or null: no limit), got {r.max_minutes}",
        )
        check(
            r.threads is None or r.threads >= 1,
            where,
            f"'run.threads' must be >= 1 (or null: torch's default), got {r.threads}",
        )
        check(
            re.fullmatch(r"cpu|cuda(:\d+)?", r.device) is not None,
            where,
            f"'run.device' must be cpu, cuda or cuda:N, got {r.device!r}",
        )
        check(
            r.checkpoint_every >= 1, where, f"'run.checkpoint_every' must be >= 1, got {r.checkpoint_every}"
        )
        check(r.log_every >= 1, where, f"'run.log_every' must be >= 1, got {r.log_every}")
        check(
            r.keep_every is None or r.keep_every >= 1,
            where,
            f"'run.keep_every' must be >= 1, got {r.keep_every}",
        )
        check(
            self.eval.every_steps >= 1, where, f"'eval.every_steps' must be >= 1, got {self.eval.every_steps}"
        )
        for section, name, low in (
            ("data", "num_workers", 0),
            ("data", "cache_mb", 0),
            ("data", "eq_gain_db", 0),
            ("data", "eq_peaks", 0),
            ("data", "eq_peak_db", 0),
            ("eval", "max_files", 1),
            ("eval", "stride", 1),
            ("eval", "audio_examples", 0),
        ):
            value = getattr(getattr(self, section), name)
            check(value >= low, where, f"'{section}.{name}' must be >= {low:g}, got {value}")


def check(condition: bool, where: str, message: str) -> None:
    """Raise :class:`RecipeError` ``where: message`` unless ``condition``."""
    if not condition:
        raise RecipeError(f"{where}: {message}")


def check_finite(value: Any, key: str, where: str) -> None:
    """Raise :class:`RecipeError` for a NaN or infinite number anywhere in ``value`` (a section, a list,
    a mapping or a number) at the dotted ``key``: YAML reads ``.inf`` and ``.nan`` as numbers."""
    if isinstance(value, float):
        check(math.isfinite(value), where, f"'{key}' must be a finite number, got {value}")
    elif dataclasses.is_dataclass(value):
        for item in dataclasses.fields(value):
            check_finite(getattr(value, item.name), f"{key}.{item.name}" if key else item.name, where)
    elif isinstance(value, dict):
        for name, child in value.items():
            check_finite(child, f"{key}.{name}", where)
    elif isinstance(value, (list, tuple)):
        for index, child in enumerate(value):
            check_finite(child, f"{key}[{index}]", where)


def check_betas(betas: list[float], key: str, where: str) -> None:
    """Check AdamW's ``betas`` at the dotted ``key``: two values, each in [0, 1)."""
    check(
        len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas),
        where,
        f"'{key}' must be two values in [0, 1), e.g. [0.8, 0.99], got {betas}",
    )


def check_non_negative(losses: Any, terms: tuple[str, ...], where: str) -> None:
    """Check that the loss weights ``terms`` (field names of a task's ``losses`` section) are >= 0."""
    for term in terms:
        value = getattr(losses, term)
        check(value >= 0, where, f"'losses.{term}' must be >= 0 (a loss weight; 0 turns it off), got {value}")


def check_loss_weights(losses: Any, terms: tuple[str, ...], where: str) -> None:
    """Check a task's ``losses`` section: the weights ``terms`` (its field names) are >= 0 and one is on,
    and its ``excess_weight`` (:meth:`~audiokit.losses.CompressedComplexSTFTLoss.magnitude_from_spectra`)
    > 0."""
    check_non_negative(losses, terms, where)
    check(any(getattr(losses, term) > 0 for term in terms), where, "every loss weight is 0")
    weight = losses.excess_weight
    check(weight > 0, where, f"'losses.excess_weight' must be > 0, got {weight}")


def check_resolutions(
    losses: Any, where: str, stft_terms: tuple[str, ...] = (), mel_terms: tuple[str, ...] = ()
) -> None:
    """Check a task's loss resolutions: ``losses.stft_resolutions`` (when the section has it) are
    ``[n_fft, hop, window]`` triples with ``hop >= 1`` and ``1 <= window <= n_fft``, and
    ``losses.mel_window_lengths``/``mel_bins`` (when it has them) pair up, windows of at least 4 samples
    (hop: a quarter of the window) and at least 1 band each. A list must not be empty while a loss that
    uses it is on (``stft_terms``, ``mel_terms``: the weights' field names)."""
    if hasattr(losses, "stft_resolutions"):
        resolutions = losses.stft_resolutions
        for index, triple in enumerate(resolutions):
            key = f"losses.stft_resolutions[{index}]"
            check(len(triple) == 3, where, f"'{key}' must be an [n_fft, hop, window] triple, got {triple}")
            n_fft, hop, window = triple
            check(
                hop >= 1 and 1 <= window <= n_fft,
                where,
                f"'{key}' must be [n_fft, hop, window] with hop >= 1 and 1 <= window <= n_fft, got {triple}",
            )
        _check_filled_while_used(
            losses, "stft_resolutions", stft_terms, "[n_fft, hop, window] triples", where
        )
    if hasattr(losses, "mel_window_lengths"):
        windows, bins = losses.mel_window_lengths, losses.mel_bins
        check(
            len(windows) == len(bins),
            where,
            "'losses.mel_window_lengths' and 'losses.mel_bins' must have the same length",
        )
        for index, (window, bands) in enumerate(zip(windows, bins, strict=True)):
            check(
                window >= 4,
                where,
                f"'losses.mel_window_lengths[{index}]' must be >= 4 samples (the hop is a quarter), "
                f"got {window}",
            )
            check(bands >= 1, where, f"'losses.mel_bins[{index}]' must be >= 1, got {bands}")
        _check_filled_while_used(losses, "mel_window_lengths", mel_terms, "window lengths", where)


def _check_filled_while_used(losses: Any, key: str, terms: tuple[str, ...], what: str, where: str) -> None:
    """``losses.<key>`` must not be empty while a loss weight of ``terms`` that uses it is not 0."""
    for term in terms:
        check(
            bool(getattr(losses, key)) or getattr(losses, term) == 0,
            where,
            f"'losses.{key}' is empty while 'losses.{term}' is on; give it {what} or set the weight to 0",
        )


def recipe_from_dict(values: dict, where: str = "<recipe>") -> Recipe:
    """Build and check the recipe of the task ``values`` names (default ``codec``) from nested dicts;
    ``where`` names the source in errors."""
    from audiokit.train.task import task_class, task_names  # the task modules import this one

    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: a recipe must be a mapping of sections, got {type(values).__name__}")
    name = values.get("task", Recipe.task)
    task = task_class(name) if isinstance(name, str) else None
    if task is None:
        names = task_names()
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(names)}"
        raise RecipeError(f"{where}: unknown task 'task: {name}'; {hint}")
    recipe = schema.build(task.recipe_type, values, where, RecipeError)
    family, config = resolve_config(recipe.model.config, recipe.model.options, where, RecipeError)
    if family.family != task.family:
        raise RecipeError(
            f"{where}: 'model.config: {recipe.model.config}' is a {family.family} model; task "
            f"{name!r} trains {task.family} models"
        )
    check_finite(recipe, "", where)
    recipe.validate(where)
    _check_segment(recipe, config, where)
    return recipe


def _windows(value: Any) -> list[int]:
    """Every ``n_fft`` of a (nested) typed model config."""
    if not dataclasses.is_dataclass(value):
        return []
    found = []
    for item in dataclasses.fields(value):
        child = getattr(value, item.name)
        if item.name == "n_fft" and isinstance(child, int):
            found.append(child)
        found += _windows(child)
    return found


def _check_segment(recipe: Recipe, config: Any, where: str) -> None:
    """``data.segment_seconds`` must hold more samples than half the longest analysis window of the
    model and the losses (the STFTs pad each side by half a window by reflection)."""
    losses = getattr(recipe, "losses", None)
    windows = _windows(config)
    windows += list(getattr(losses, "mel_window_lengths", []))
    windows += [n for r in getattr(losses, "stft_resolutions", []) for n in (r[0], r[-1])]
    rate = config.sample_rate
    samples = round(recipe.data.segment_seconds * rate)
    longest = max(windows, default=0)
    check(
        samples > longest // 2,
        where,
        f"'data.segment_seconds' must be more than {longest // 2 / rate:g} s (half the longest analysis "
        f"window, {longest} samples at {rate} Hz), got {recipe.data.segment_seconds}",
    )


class _DuplicateKey(Exception):
    """A mapping of a YAML document names ``key`` twice (the second time on 1-based ``line``)."""

    def __init__(self, key: object, line: int) -> None:
        super().__init__(key, line)
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that names a key twice (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # not hashable, or not a plain key: the base class reports it
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _apply_override(values: dict, override: str) -> None:
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {override!r}: expected key=value, e.g. optim.learning_rate=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", exc)).replace("'\\x00'", "the end").split())
        hint = ""
        if raw.lstrip().startswith(("*", "&")):
            hint = f"; a leading {raw.lstrip()[0]} is YAML syntax (an alias/anchor): quote the value, e.g. "
            hint += f"--set '{key}=\"{raw.strip()}\"'"
        raise RecipeError(f"--set {override!r}: value is not valid YAML ({problem}){hint}") from None
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = _merged(node.get(parts[-1]), value)


def _merged(old: Any, new: Any) -> Any:
    """``new``, or for two mappings ``old`` updated key by key (recursively) with ``new``."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    return {**old, **{k: _merged(old.get(k), v) for k, v in new.items()}}


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read the YAML recipe at ``path``, apply dotted ``key=value`` overrides, and check it."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        values = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not a YAML text file (byte {exc.start} is not UTF-8)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except _DuplicateKey as exc:
        raise RecipeError(f"{path}:{exc.line}: key {exc.key!r} given twice in one mapping") from None
    if not isinstance(values, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(values).__name__}")
    if not values:  # a truncated or new file: its defaults would start a 100,000-step codec run
        raise RecipeError(f"{path}: an empty recipe (no keys); start from one in recipes/, e.g. task: codec")
    where = str(path)
    for override in overrides:
        _apply_override(values, override)
        where = f"{path} (with --set overrides)"
    return recipe_from_dict(values, where)


def recipe_to_dict(recipe: Recipe) -> dict:
    """Plain nested dicts (YAML-ready) of ``recipe``."""
    return dataclasses.asdict(recipe)


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML text, every key spelt out."""
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, default_flow_style=None)
