"""Typed per-stream state of streaming modules, and the row operations a batch of streams needs.

Every state is a dataclass whose tensor fields hold one row per stream along :attr:`StreamState.batch_dim`
(a module with nothing to remember, e.g. a 1x1 conv, has state ``None``). Composite modules keep a
:class:`StateList` of their children's states. The helpers below act on whole trees:
:func:`select_rows` / :func:`assign_rows` gather and scatter the rows of a subset of streams,
:func:`zero_rows` restarts rows (zeros are every state's initial value), and
:func:`flatten_state` / :func:`load_flat_state` turn a tree into ``{name: tensor}`` and back, and
:func:`state_tensors` / :func:`with_state_tensors` / :func:`assign_state_tensors` into a flat list of
tensors and back (a step as a function of tensors, for compilers; :func:`state_slots` locates them
once for a step called many times on the same tree).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from audiokit.errors import UsageError


@dataclass
class StreamState:
    """Base of every streaming state: tensor fields indexed by stream along ``batch_dim``."""

    batch_dim: ClassVar[int] = 0


@dataclass
class ConvState(StreamState):
    """Causal conv history: the last ``history_length`` input samples ``(B, C_in, history_length)``."""

    history: torch.Tensor


@dataclass
class ConvTransposeState(StreamState):
    """Causal transposed-conv overlap: bias-free output tail ``(B, C_out, kernel_size - stride)``."""

    overlap: torch.Tensor


@dataclass
class LSTMState(StreamState):
    """LSTM hidden and cell states, each ``(num_layers, B, dim)``."""

    batch_dim: ClassVar[int] = 1
    h: torch.Tensor
    c: torch.Tensor


@dataclass
class OverlapAddState(StreamState):
    """Inverse-STFT overlap-add tail ``(B, channels, n_fft - hop_length)``."""

    tail: torch.Tensor


@dataclass
class StateList(StreamState):
    """States of a composite module's children, in order (``None`` for stateless children)."""

    children: list[StreamState | None]


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _tensor_fields(state: StreamState) -> list[str]:
    names = _FIELD_NAMES.get(type(state))
    if names is None:  # dataclasses.fields is slow for a per-step path
        names = _FIELD_NAMES[type(state)] = tuple(f.name for f in dataclasses.fields(state))
    return [name for name in names if isinstance(getattr(state, name), torch.Tensor)]


def row_indices(rows: Any, count: int, what: str) -> list[int]:
    """``rows`` (one index, or a sequence of them: Python, numpy or torch integers) as a list of ints in
    ``0 .. count - 1``; anything else is a :class:`~audiokit.errors.UsageError` naming ``what``."""
    try:
        indices = [operator.index(rows)]
    except TypeError:
        try:
            indices = [operator.index(row) for row in rows]
        except TypeError:
            raise UsageError(f"{what}: an index or a sequence of indices, got {rows!r}") from None
    for index in indices:
        if not 0 <= index < count:
            raise UsageError(f"{what} {index} out of range 0..{count - 1}")
    return indices


def select_rows(state: StreamState | None, rows: torch.Tensor) -> StreamState | None:
    """A new state tree holding only ``rows`` (int64 indices) of ``state``."""
    if state is None:
        return None
    if isinstance(state, StateList):
        return StateList([select_rows(child, rows) for child in state.children])
    changes = {
        name: getattr(state, name).index_select(state.batch_dim, rows) for name in _tensor_fields(state)
    }
    return dataclasses.replace(state, **changes)


def assign_rows(state: StreamState | None, rows: torch.Tensor, part: StreamState | None) -> None:
    """Write ``part`` (a tree from :func:`select_rows` of the same ``rows``) back into ``state``."""
    if state is None:
        return
    if isinstance(state, StateList):
        for child, sub in zip(state.children, part.children, strict=True):
            assign_rows(child, rows, sub)
        return
    for name in _tensor_fields(state):
        getattr(state, name).index_copy_(state.batch_dim, rows, getattr(part, name))


def snapshot(state: StreamState | None) -> StreamState | None:
    """A shallow copy of the state tree: the same tensors, which steps replace rather than change."""
    if state is None:
        return None
    if isinstance(state, StateList):
        return StateList([snapshot(child) for child in state.children])
    return dataclasses.replace(state)


def keep_where(state: StreamState | None, before: StreamState | None, keep: torch.Tensor) -> None:
    """Rows of ``state`` where ``keep`` (bool, one per stream) holds go back to ``before`` (its
    :func:`snapshot` before a step), in place; shape-static (``torch.where``), so compiled steps take it."""
    if state is None:
        return
    if isinstance(state, StateList):
        for child, old in zip(state.children, before.children, strict=True):
            keep_where(child, old, keep)
        return
    for name in _tensor_fields(state):
        new = getattr(state, name)
        shape = [1] * new.dim()
        shape[state.batch_dim] = keep.shape[0]
        setattr(state, name, torch.where(keep.view(shape), getattr(before, name), new))


def zero_rows(state: StreamState | None, rows: torch.Tensor) -> None:
    """Reset ``rows`` of every tensor in ``state`` to zeros (the initial state), in place."""
    if state is None:
        return
    if isinstance(state, StateList):
        for child in state.children:
            zero_rows(child, rows)
        return
    for name in _tensor_fields(state):
        getattr(state, name).index_fill_(state.batch_dim, rows, 0.0)


def flatten_state(state: StreamState | None, prefix: str = "") -> dict[str, torch.Tensor]:
    """``{dotted.path: tensor}`` of every tensor in ``state`` (contiguous copies)."""
    if state is None:
        return {}
    if isinstance(state, StateList):
        flat: dict[str, torch.Tensor] = {}
        for i, child in enumerate(state.children):
            flat.update(flatten_state(child, f"{prefix}{i}."))
        return flat
    return {f"{prefix}{name}": getattr(state, name).detach().clone() for name in _tensor_fields(state)}


def load_flat_state(state: StreamState | None, flat: dict[str, torch.Tensor], prefix: str = "") -> None:
    """Copy tensors from :func:`flatten_state`'s output into ``state`` in place (shapes must match)."""
    if state is None:
        return
    if isinstance(state, StateList):
        for i, child in enumerate(state.children):
            load_flat_state(child, flat, f"{prefix}{i}.")
        return
    for name in _tensor_fields(state):
        key = f"{prefix}{name}"
        target = getattr(state, name)
        if key not in flat or tuple(flat[key].shape) != tuple(target.shape):
            got = tuple(flat[key].shape) if key in flat else "nothing"
            raise ValueError(f"streaming state {key!r}: expected shape {tuple(target.shape)}, got {got}")
        target.copy_(flat[key])


def state_tensors(state: StreamState | None) -> list[torch.Tensor]:
    """The tensors of a state tree, depth first (no copies; the order the helpers below read them in)."""
    if state is None:
        return []
    if isinstance(state, StateList):
        return [t for child in state.children for t in state_tensors(child)]
    return [getattr(state, name) for name in _tensor_fields(state)]


def state_slots(state: StreamState | None) -> list[tuple[StreamState, str]]:
    """``(node, field name)`` of every tensor of a state tree, in :func:`state_tensors`' order: reading
    and re-pointing the tensors through these is cheaper than walking the tree at every step (valid
    while the tree's nodes stay the same: steps replace tensors, never nodes)."""
    if state is None:
        return []
    if isinstance(state, StateList):
        return [slot for child in state.children for slot in state_slots(child)]
    return [(state, name) for name in _tensor_fields(state)]


def state_batch_dims(state: StreamState | None) -> list[int]:
    """The stream dimension of each tensor of :func:`state_tensors`, in the same order."""
    if state is None:
        return []
    if isinstance(state, StateList):
        return [d for child in state.children for d in state_batch_dims(child)]
    return [state.batch_dim] * len(_tensor_fields(state))


def with_state_tensors(template: StreamState | None, tensors: Iterator[torch.Tensor]) -> StreamState | None:
    """A new state tree shaped like ``template`` holding the next tensors of ``tensors``."""
    if template is None:
        return None
    if isinstance(template, StateList):
        return StateList([with_state_tensors(child, tensors) for child in template.children])
    return dataclasses.replace(template, **{name: next(tensors) for name in _tensor_fields(template)})


def assign_state_tensors(state: StreamState | None, tensors: Iterator[torch.Tensor]) -> None:
    """Point the tensor fields of ``state`` at the next tensors of ``tensors``, in place."""
    if state is None:
        return
    if isinstance(state, StateList):
        for child in state.children:
            assign_state_tensors(child, tensors)
        return
    for name in _tensor_fields(state):
        setattr(state, name, next(tensors))
