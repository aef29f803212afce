"""Checks of the Python API's arguments, shared so that every class takes and refuses the same values."""

from __future__ import annotations

import operator

import torch

from audiokit.errors import UsageError


def whole_number(value: object, what: str, minimum: int = 1, unit: str = "") -> int:
    """``value`` as an int >= ``minimum``: Python, numpy and 0-d torch integers are taken; bools, floats
    (even 160.0), strings and anything else are a :class:`UsageError` saying ``what`` must be a whole
    number >= ``minimum`` (``unit``, e.g. ``" samples"``, follows the bound)."""
    number = None
    tensor = isinstance(value, torch.Tensor)
    if not isinstance(value, bool) and not (tensor and (value.dim() != 0 or value.dtype == torch.bool)):
        try:
            number = operator.index(value)
        except TypeError:
            pass
    if number is None or number < minimum:
        raise UsageError(f"{what} must be a whole number >= {minimum}{unit}, got {value!r}")
    return number
