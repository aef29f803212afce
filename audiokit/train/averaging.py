"""Weight averaging ("model soups"): the mean of several weights of one architecture, as one model.

Weights saved along one run (or a run and its warm restarts) often average into a model better than
each of them (Wortsman et al. 2022; fairseq's ``average_checkpoints``). :func:`average_weights` writes
the mean as a model file whose JSON names its ingredients (``averaged_from``: their sha256 and step), so
that ``audiokit card`` can trace it to the run that saved them
(:func:`audiokit.evaluation.training_record.check_run_weights`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from audiokit.errors import UsageError
from audiokit.models.base import AudioModel, resolve_weights, round_to_float16


def average_weights(
    sources: Sequence[str],
    out: str | Path,
    only: Sequence[str] = (),
    force: bool = False,
    float16: Sequence[str] = (),
) -> Path:
    """Write the mean of the weights ``sources`` (shipped names, run directories or ``.safetensors``
    paths; at least two, of one family and architecture: configs equal but for the name and training-only
    fields, whose values the first source's config gives) to ``out/model.safetensors`` (+ ``model.json``),
    atomically; returns the weights path.

    ``only``: parameter-name prefixes (e.g. ``rate_decoders.3.``): just those tensors are averaged, the
    others are the first source's. Floating-point tensors are averaged in float64 and stored in their own
    dtype; other tensors must be equal in every source. ``float16``: prefixes of tensors whose mean is
    rounded to float16 values and stored as float16 (half the bytes; loaded as float32,
    :meth:`AudioModel.save_pretrained`). :class:`UsageError` (one line) for fewer than two sources,
    differing architectures, a prefix that names no tensor, or an existing ``out/model.safetensors``
    without ``force``; :class:`~audiokit.errors.ModelError` for weights that do not load.
    """
    if len(sources) < 2:
        raise UsageError(f"averaging needs at least two weights, got {len(sources)}")
    target = Path(out) / "model.safetensors"
    if target.exists() and not force:
        raise UsageError(f"{target}: exists; -f/--force replaces it")
    models = [AudioModel.from_pretrained(source) for source in sources]
    first = models[0]
    for source, model in zip(sources[1:], models[1:], strict=True):
        if type(model) is not type(first) or model.config.architecture() != first.config.architecture():
            raise UsageError(f"{source}: another architecture than {sources[0]}; only weights of one average")
    states = [model.state_dict() for model in models]
    names = list(states[0])
    for option, prefixes in (("--only", only), ("--float16", float16)):
        for prefix in prefixes:
            if not any(name.startswith(prefix) for name in names):
                raise UsageError(f"{option} {prefix}: no parameter of {sources[0]} starts with it")
    averaged = {}
    for name in names:
        tensors = [state[name] for state in states]
        chosen = not only or name.startswith(tuple(only))
        if not tensors[0].is_floating_point():
            if any(not torch.equal(t, tensors[0]) for t in tensors[1:]):
                raise UsageError(f"{name}: integer tensors that differ between the weights; cannot average")
            averaged[name] = tensors[0]
        elif chosen:
            mean = torch.stack([t.double() for t in tensors]).mean(0)
            averaged[name] = mean.to(tensors[0].dtype)
        else:
            averaged[name] = tensors[0]
    first.load_state_dict(averaged, strict=True)
    round_to_float16(first, float16)
    ingredients = []
    for source in sources:
        meta = json.loads(resolve_weights(source).with_suffix(".json").read_text())
        sha256 = meta.get("weights_sha256") or meta["sha256"]  # the weights' own, as runs record them
        ingredients.append({"sha256": sha256, "step": meta.get("step")})
    Path(out).mkdir(parents=True, exist_ok=True)
    extra = {"averaged_from": ingredients, "averaged_tensors": list(only)}
    return first.save_pretrained(target, extra=extra, float16=float16)
