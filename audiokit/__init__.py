"""audiokit: neural audio coding and real-time audio processing on PyTorch.

``from audiokit import Codec`` (``Enhancer``, ``BandwidthExtender`` and the other names below) imports
the model code on first use, so ``import audiokit`` itself stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_MODELS = ("AudioModel", "BandwidthExtender", "Codec", "Codes", "Enhancer")
_LAZY = dict.fromkeys(_MODELS, "audiokit.models")
__all__ = [*_MODELS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audiokit' has no attribute {name!r}")
