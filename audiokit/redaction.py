"""What is never printed or logged: the server's shared secret in ``?token=`` query parameters."""

from __future__ import annotations

import re


def redact_token(text: str) -> str:
    """``text`` (a URL, a log line) with the value of every ``token`` query parameter replaced by ``***``."""
    return re.sub(r"([?&]token=)[^&#\s\"]*", r"\1***", text)
