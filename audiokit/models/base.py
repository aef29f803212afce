"""The interface every model family shares (codec now; enhancer and bandwidth extender next).

A family is a subclass of :class:`AudioModel` declared with its name, its typed config class (a
subclass of :class:`ModelConfig`) and its registry of named configs::

    class Codec(AudioModel, family="codec", config_class=CodecConfig, configs=CONFIGS): ...

Each named config is defined once, there: :meth:`AudioModel.from_config` builds it with overrides
merged key by key (:func:`audiokit.schema.merge`), a recipe's ``model:`` section names one plus
overrides (:func:`resolve_config`), and :meth:`AudioModel.save_pretrained` writes the typed config as
JSON beside the weights, which :meth:`AudioModel.from_pretrained` reads back through the same schema.
Weights are safetensors only: nothing is ever unpickled.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import importlib
import json
import math
import numbers
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import safetensors
import safetensors.torch
import torch
from torch import nn

from audiokit import schema
from audiokit.errors import AudiokitError, ModelError, UsageError
from audiokit.io import FLOAT_PEAK_LIMIT, atomic_path
from audiokit.nn.precision import PREPARED_CACHES, set_weight_precision

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
FORMAT_VERSION = 1
BUILTIN_FAMILIES = {
    "codec": "audiokit.models.codec",
    "enhancer": "audiokit.models.enhancer",
    "bwe": "audiokit.models.bwe",
}  # imported on first lookup

M = TypeVar("M", bound="AudioModel")
AUDIO_SHAPE = "(batch, channels, samples)"
ANY_AUDIO_SHAPE = "(samples,), (channels, samples) or (batch, channels, samples)"


def real_number(value: Any) -> float | None:
    """``value`` as a float when it is one real number (Python, numpy, or a 0-d real tensor), else None."""
    if isinstance(value, torch.Tensor):
        return (
            float(value)
            if value.dim() == 0 and not value.is_complex() and value.dtype != torch.bool
            else None
        )
    return float(value) if isinstance(value, numbers.Real) else None


def check_audio(
    x: Any,
    where: str,
    sample_rate: int,
    shape: str = AUDIO_SHAPE,
    ndims: Sequence[int] = (3,),
    dtype: torch.dtype = torch.float32,
    allow_empty: bool = False,
) -> torch.Tensor:
    """``x`` as audio for ``where`` (the call named in messages), converted to ``dtype``.

    Audio is a floating-point torch tensor of ``ndims`` dimensions (``shape`` in messages) holding
    finite samples in [-1, 1] at ``sample_rate`` Hz (and at least one, unless ``allow_empty``). Float64
    and the other float types are converted to ``dtype``; anything else (integer PCM, numpy arrays,
    tensors on the meta device, NaN or infinite samples, samples beyond
    :data:`~audiokit.io.FLOAT_PEAK_LIMIT`, as files and the server refuse them) raises
    :class:`~audiokit.errors.UsageError` saying what is expected.
    One reduction per call (the peak, NaN where any sample is), so on a GPU one synchronisation: a few
    microseconds a push on a CPU.
    """

    def expected() -> str:
        return f"{where} takes a float torch tensor {shape} of samples in [-1, 1] at {sample_rate} Hz"

    if not isinstance(x, torch.Tensor):
        kind = type(x)
        hint = "; torch.from_numpy(x) converts it" if kind.__module__ == "numpy" else ""
        raise UsageError(f"{expected()}, got {kind.__module__}.{kind.__qualname__}{hint}")
    if not x.is_floating_point():
        pcm = x.dtype != torch.bool and not x.is_complex()
        hint = "; scale integer PCM to [-1, 1] first (int16: x.float() / 32768)" if pcm else ""
        raise UsageError(f"{expected()}, got dtype {str(x.dtype).removeprefix('torch.')}{hint}")
    if x.dim() not in ndims:
        raise UsageError(f"{expected()}, got shape {tuple(x.shape)}")
    if x.device.type == "meta":
        raise UsageError(f"{expected()}, got a tensor on the meta device, which holds no samples")
    if not allow_empty and x.shape[-1] < 1:
        raise UsageError(f"{where}: the audio must hold at least one sample, got shape {tuple(x.shape)}")
    x = x.to(dtype)
    low, high = x.detach().aminmax() if x.numel() else (x.new_zeros(()), x.new_zeros(()))
    peak = float(torch.maximum(-low, high))  # one pass, no copy; NaN where any sample is
    if not math.isfinite(peak):
        raise UsageError(f"{where}: the audio holds NaN or infinite samples")
    if peak > FLOAT_PEAK_LIMIT:  # the models' squares overflow to NaN (1e19 did)
        raise UsageError(
            f"{where}: samples up to {peak:.4g} ({20 * math.log10(peak):+.0f} dBFS), beyond "
            f"{FLOAT_PEAK_LIMIT:g}: not audio scaled to about [-1, 1] (int16 PCM as floats? divide by 32768)"
        )
    return x


@dataclass
class ModelConfig:
    """What every family's config holds: its ``name``, ``sample_rate`` (Hz) and ``channels``."""

    name: str
    sample_rate: int
    channels: int = 1

    training_only: ClassVar[tuple[str, ...]] = ()
    """Fields that change how a model trains, not what its weights compute."""

    def to_dict(self) -> dict:
        """JSON-ready nested dicts (:func:`audiokit.schema.build` restores the config)."""
        return dataclasses.asdict(self)

    def architecture(self) -> dict:
        """:meth:`to_dict` without the name and the :attr:`training_only` fields: what two configs must
        share for their weights to compute alike."""
        fields = self.to_dict()
        for key in ("name", *self.training_only):
            fields.pop(key, None)
        return fields


FAMILIES: dict[str, type[AudioModel]] = {}


class AudioModel(nn.Module):
    """Base of every model family. Audio is float32 ``(batch, channels, samples)`` at :attr:`sample_rate`.

    Subclasses set :attr:`hop_length`, :attr:`algorithmic_latency` and :meth:`stream`, and build their
    layers from ``config`` in ``__init__``; their inference calls and sessions check audio with
    :meth:`audio_input`.
    """

    family: ClassVar[str]
    config_class: ClassVar[type[ModelConfig]]
    configs: ClassVar[dict[str, ModelConfig]]

    def __init_subclass__(
        cls, family: str, config_class: type[ModelConfig], configs: dict, **kw: Any
    ) -> None:
        super().__init_subclass__(**kw)
        cls.family, cls.config_class, cls.configs = family, config_class, configs
        FAMILIES[family] = cls

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        # its own copy: configs built from the registry share its nested dataclasses (an encoder's options)
        self.config = copy.deepcopy(config)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def sample_rate(self) -> int:
        """Hz."""
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def hop_length(self) -> int:
        """Samples per frame: a codec's code frame, a spectral model's STFT hop."""
        raise NotImplementedError

    @property
    def frame_rate(self) -> float:
        """Frames per second (Hz): :attr:`sample_rate` / :attr:`hop_length`."""
        return self.sample_rate / self.hop_length

    @property
    def algorithmic_latency(self) -> int:
        """Samples from an input sample to the output sample it produces, in streaming use."""
        raise NotImplementedError

    @contextmanager
    def evaluating(self) -> Iterator[Any]:
        """The model in evaluation mode within the block, and in the mode it had before after it (an
        inference call in the middle of a training loop must not leave dropout off)."""
        was_training = self.training
        try:
            yield self.eval()
        finally:
            self.train(was_training)

    def audio_input(
        self,
        x: Any,
        where: str,
        shape: str = AUDIO_SHAPE,
        ndims: Sequence[int] = (3,),
        sample_rate: int | None = None,
        allow_empty: bool = False,
    ) -> torch.Tensor:
        """:func:`check_audio` of ``x`` for this model (at :attr:`sample_rate` unless ``sample_rate``):
        the float32 tensor, or :class:`~audiokit.errors.UsageError`; :class:`~audiokit.errors.ModelError`
        for a model converted to another dtype (``.double()``, ``.half()``: the models run in float32;
        :meth:`set_weight_precision` is how to use float16 or int8 weights)."""
        self.check_float32()
        rate = self.sample_rate if sample_rate is None else sample_rate
        return check_audio(x, where, rate, shape, ndims, torch.float32, allow_empty)

    def check_float32(self) -> None:
        """:class:`~audiokit.errors.ModelError` unless the weights are float32, the one dtype the models
        run in (:meth:`set_weight_precision` is how to use float16 or int8 weights)."""
        dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float32)
        if dtype != torch.float32:
            raise ModelError(
                f"{self.name} runs in float32, but its weights are {str(dtype).removeprefix('torch.')}: "
                "convert it back with .float() (set_weight_precision('float16') rounds weights for speed)"
            )

    def stream(self, batch_size: int = 1, **options: Any) -> Any:
        """A streaming session of ``batch_size`` independent streams (``push(chunk)``, ``flush()``)."""
        raise NotImplementedError

    def set_weight_precision(self: M, precision: str) -> M:
        """Inference with matrices rounded to ``"float16"`` values (or back to ``"float32"``), offline
        and streaming alike; compiled steps then read float16 weights (:mod:`audiokit.nn.precision`).
        Returns the model."""
        set_weight_precision(self, precision)
        return self

    def weights_changed(self: M) -> M:
        """Drop the matrices and codeword tables prepared from the weights: the next call prepares them
        afresh. Needed only after editing weights in place through ``.data`` (PyTorch's version counters,
        which tell a change otherwise, do not see such edits); optimiser steps, in-place edits under
        ``torch.no_grad()`` and ``load_state_dict`` are seen. Sessions opened before keep the weights
        they started with. Returns the model."""
        for module in self.modules():
            for cache in PREPARED_CACHES:
                module.__dict__.pop(cache, None)
        return self

    def copy_with_weight_precision(self: M, precision: str) -> M:
        """A second model of the same config and weights, in evaluation mode, set to ``precision``
        (:meth:`set_weight_precision`; built anew, as weight norm keeps ``deepcopy`` out)."""
        copy = type(self)(self.config).eval()
        copy.load_state_dict(self.state_dict())
        return copy.set_weight_precision(precision)

    # -- configs ------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls: type[M], name: str, **overrides: Any) -> M:
        """An untrained model of the registered config ``name``, ``overrides`` merged key by key
        (``decoder={"n_blocks": 8}`` keeps the decoder's other keys)."""
        if name not in cls.configs:
            raise ModelError(f"unknown {cls.family} config {name!r}; choose one of {', '.join(cls.configs)}")
        where = f"{cls.family} config {name!r}"
        return _build(cls, schema.merge(cls.configs[name], overrides, where, ModelError), where)

    # -- weights ------------------------------------------------------------------------------------
    def weights_sha256(self) -> str:
        """sha256 (hex) of the model's weights serialised as safetensors: identifies the weights."""
        return hashlib.sha256(safetensors.torch.save(_contiguous_state(self))).hexdigest()

    def save_pretrained(
        self, path: str | Path, extra: dict | None = None, float16: Sequence[str] = ()
    ) -> Path:
        """Write ``path`` (``.safetensors``) and its typed config as JSON beside it (``.json``), atomically.

        ``.safetensors`` is added to a ``path`` that does not end in it (a ``.json`` ending is replaced):
        ``runs/model.step100`` writes ``runs/model.step100.safetensors`` and ``.json``, never another
        model's ``runs/model.safetensors``; an existing folder gets ``model.safetensors`` and
        ``model.json`` inside it (as a run directory holds them), so :meth:`from_pretrained` of the
        folder loads them. ``extra``: more keys for the JSON (e.g. the training step).
        ``float16``: name prefixes of float32 tensors stored as float16 (half the bytes; the JSON's
        ``float16_tensors`` lists them and :meth:`from_pretrained` loads them as float32 again); their
        values must be float16 values already (:func:`round_to_float16`), so the model loaded is this one
        (:class:`ModelError` otherwise); the JSON then also records :meth:`weights_sha256`
        (``weights_sha256``), which differs from the file's. Returns the ``.safetensors`` path."""
        path = _weights_path(Path(path))
        state = _contiguous_state(self)
        for name, tensor in state.items():
            if tensor.dtype == torch.float32 and _under(name, float16):
                half = tensor.half()
                if not torch.equal(half.float(), tensor):
                    raise ModelError(f"{name}: not float16 values; round_to_float16 the model before storing")
                state[name] = half
        blob = safetensors.torch.save(state)
        meta = {
            "format": f"audiokit-{self.family}",
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "sha256": hashlib.sha256(blob).hexdigest(),
            # with tensors stored as float16, the file's sha256 is not the weights' own
            # (:meth:`weights_sha256`, what .akc headers and the weights archive name them by)
            **(
                {"float16_tensors": list(float16), "weights_sha256": self.weights_sha256()} if float16 else {}
            ),
            **(extra or {}),
        }
        with atomic_path(path) as tmp:
            tmp.write_bytes(blob)
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls: type[M], name_or_path: str | Path) -> M:
        """Load shipped weights by name (``"speech-16k"``; ``"speech-16k@1"`` for an archived shipped
        version, where its files are installed) or a ``.safetensors`` path (its ``.json``, a
        folder holding one, or the path given to :meth:`save_pretrained`) with its ``.json``; on a family
        class, the weights must be of that family.

        The weights file's sha256 must match the one recorded in the JSON; nothing is unpickled.
        """
        path = resolve_weights(name_or_path)
        config_path = path.with_suffix(".json")
        if not config_path.is_file():
            raise ModelError(f"{config_path}: config not found beside the weights")
        try:
            meta = json.loads(config_path.read_text())
            kind = str(meta["format"]).removeprefix("audiokit-")
        except OSError as exc:
            raise ModelError(f"{config_path}: cannot read the config ({exc.strerror or exc})") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{config_path}: not an audiokit model config ({exc})") from None
        family = _family(kind)
        version = meta.get("format_version", 0)
        if family is None or type(version) is not int or version > FORMAT_VERSION:
            raise ModelError(
                f"{config_path}: unsupported format {meta.get('format')!r} v{meta.get('format_version')}"
            )
        if not issubclass(family, cls):
            raise ModelError(f"{path}: {_article(family.family)} model, not {_article(cls.family)}")
        config = schema.build(family.config_class, meta.get("config") or {}, str(config_path), ModelError)
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read the weights ({exc.strerror or exc})") from None
        if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
            raise ModelError(
                f"{path}: sha256 does not match {config_path.name}; the file is corrupt or replaced"
            )
        try:  # the sha256 only says that the JSON names this file, not that the file is well formed
            state = safetensors.torch.load(blob)
        except safetensors.SafetensorError as exc:
            raise ModelError(f"{path}: not a valid safetensors file ({exc})") from None
        model = _build(family, config, str(config_path))
        expected = model.state_dict()
        stored_half = meta.get("float16_tensors") or []
        for key, tensor in state.items():  # load_state_dict would cast float16 or int64 tensors silently
            if key not in expected:
                continue
            if (
                tensor.dtype == torch.float16
                and expected[key].dtype == torch.float32
                and _under(key, stored_half)
            ):
                state[key] = tensor.float()  # stored as float16 (save_pretrained's float16)
            elif tensor.dtype != expected[key].dtype:
                raise ModelError(
                    f"{path}: tensor {key!r} is {str(tensor.dtype).removeprefix('torch.')} but config "
                    f"{config.name!r} holds {str(expected[key].dtype).removeprefix('torch.')} there "
                    "(save_pretrained a model in its own dtype)"
                )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(
                f"{path}: weights do not fit config {config.name!r} ({str(exc)[:200]})"
            ) from None
        if stored_half and meta.get("weights_sha256") != model.weights_sha256():
            raise ModelError(
                f"{path}: the weights loaded are not those {config_path.name} names (weights_sha256)"
            )
        return model.eval()


def _build(family: type[M], config: ModelConfig, where: str) -> M:
    """``family(config)``, or a one-line :class:`ModelError` naming ``where`` for sizes that the schema
    lets through but no model has (a negative width, a hop of 0)."""
    try:
        return family(config)
    except (ArithmeticError, LookupError, RuntimeError, TypeError, ValueError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise ModelError(
            f"{where}: config {config.name!r} does not make {_article(family.family)} model "
            f"({type(exc).__name__}: {message})"
        ) from None


def _weights_path(path: Path) -> Path:
    """The ``.safetensors`` file that ``path`` names: itself, the weights beside a ``.json`` config,
    ``model.safetensors`` inside an existing folder (as in a run directory), or ``path`` with
    ``.safetensors`` added (``model.v2`` -> ``model.v2.safetensors``)."""
    if path.is_dir():
        return path / "model.safetensors"
    if path.suffix == ".safetensors":
        return path
    if path.suffix == ".json":
        return path.with_suffix(".safetensors")
    return path.with_name(path.name + ".safetensors")


def _article(word: str) -> str:
    """``word`` with "a" or "an" before it."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def round_to_float16(model: nn.Module, prefixes: Sequence[str]) -> None:
    """Round ``model``'s float32 parameters and buffers whose names start with one of ``prefixes`` to
    the nearest float16 values, in place (still float32), so that :meth:`AudioModel.save_pretrained` can
    store them as float16 without changing the model. :class:`ModelError` for a value beyond float16's
    range."""
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if tensor.dtype == torch.float32 and _under(name, prefixes):
                rounded = tensor.half().float()
                if not torch.isfinite(rounded).all() and torch.isfinite(tensor).all():
                    raise ModelError(f"{name}: a value beyond float16's range (|x| > 65504)")
                tensor.copy_(rounded)


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name.startswith(prefix) for prefix in prefixes)


def _contiguous_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def _family(name: str) -> type[AudioModel] | None:
    if name not in FAMILIES and name in BUILTIN_FAMILIES:
        importlib.import_module(BUILTIN_FAMILIES[name])
    return FAMILIES.get(name)


def registered_names() -> dict[str, type[AudioModel]]:
    """Every registered config name, with the family class that builds it."""
    for name in BUILTIN_FAMILIES:
        _family(name)
    return {name: family for family in FAMILIES.values() for name in family.configs}


def resolve_config(
    name: str, overrides: dict, where: str, error: type[AudiokitError] = ModelError, prefix: str = "model"
) -> tuple[type[AudioModel], ModelConfig]:
    """The family and the typed config of registered config ``name`` with ``overrides`` merged in.

    Unknown names and keys (at any depth) raise ``error`` naming the closest valid one; ``prefix`` is
    the dotted path of the overrides in messages (``model.options``).
    """
    names = registered_names()
    if name not in names:
        close = difflib.get_close_matches(name, list(names), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(names)}"
        raise error(f"{where}: unknown model config '{prefix}.config: {name}'; {hint}")
    family = names[name]
    return family, schema.merge(family.configs[name], overrides, where, error, f"{prefix}.options")


def is_shipped_name(text: str) -> bool:
    """Whether ``text`` names shipped weights by name, not by path: a registered model name, or
    ``name@version`` of an archived shipped version (:mod:`audiokit.models.archive`)."""
    if text in registered_names():
        return True
    if "@" not in text or Path(text).exists():
        return False
    from audiokit.models.archive import archived_version  # (which imports this module)

    return archived_version(text) is not None


def is_shipped(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` names shipped weights: a model name (``name@version`` included), or a
    file in ``audiokit/weights``."""
    if is_shipped_name(str(name_or_path)):
        return True
    path = Path(name_or_path)
    folder = path if path.is_dir() else path.parent
    return folder.resolve() == WEIGHTS_DIR.resolve()


def with_article(name: str) -> str:
    """``name`` after its indefinite article: ``a speech-16k``, ``an enhance-16k``."""
    return f"{'an' if name[:1].lower() in 'aeio' else 'a'} {name}"


def model_label(name_or_path: str | Path, name: str) -> str:
    """How messages name a model: the shipped name as given (``speech-16k``, ``enhance-16k@1``), its
    ``name`` for a file in ``audiokit/weights``, else the path as the user gave it with the config name
    it was built from (``runs/tiny (a speech-16k model)``)."""
    if is_shipped_name(str(name_or_path)):
        return str(name_or_path)
    return name if is_shipped(name_or_path) else f"{name_or_path} ({with_article(name)} model)"


def resolve_weights(name_or_path: str | Path) -> Path:
    """The ``.safetensors`` file a model name (shipped weights), ``name@version`` (an archived shipped
    version, :mod:`audiokit.models.archive`) or a path (the file, its ``.json``, a folder holding one, or
    the path given to :meth:`AudioModel.save_pretrained`) names."""
    text = str(name_or_path)
    if "@" in text and not Path(text).exists():
        from audiokit.models.archive import versioned_weights  # (which imports this module)

        return versioned_weights(text)
    names = registered_names()
    if text in names:
        path = WEIGHTS_DIR / f"{text}.safetensors"
        if not path.is_file():
            raise ModelError(
                f"no shipped weights for {text!r} in {WEIGHTS_DIR}; train them with `audiokit train` "
                "or give a path to a .safetensors file"
            )
        return path
    path = Path(text)
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
        if len(candidates) != 1:
            raise ModelError(f"{path}: expected exactly one .safetensors file, found {len(candidates)}")
        path = candidates[0]
    if path.suffix == ".json":  # the config beside the weights names them too
        path = path.with_suffix(".safetensors")
    elif not path.exists() and _weights_path(path).is_file():  # the path given to save_pretrained
        path = _weights_path(path)
    if not path.is_file():
        shipped = ", ".join(shipped_names()) or "none"
        raise ModelError(f"{path}: no such model file, and not a known model name (shipped: {shipped})")
    if path.suffix != ".safetensors":
        raise ModelError(
            f"{path}: not a model: give a shipped name, a run directory, "
            "or a .safetensors file (or its .json)"
        )
    return path


def shipped_names() -> list[str]:
    """The registered model names whose weights ship in ``audiokit/weights``."""
    return [name for name in registered_names() if (WEIGHTS_DIR / f"{name}.safetensors").is_file()]
