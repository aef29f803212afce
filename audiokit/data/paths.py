"""Where the prepared data lives."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """The data cache: ``$AUDIOKIT_DATA``, default ``~/.cache/audiokit/data``."""
    return Path(os.environ.get("AUDIOKIT_DATA") or Path.home() / ".cache" / "audiokit" / "data").expanduser()
