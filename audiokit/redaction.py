"""What is never printed or logged: the server's shared secret in ``?token=`` query parameters, and the
password of a URL's ``user:password@``."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

_QUERY_PARAMETER = re.compile(r"([?&])([^=&#\s\"]*)=([^&#\s\"]*)")
_PASSWORD = re.compile(r"(://[^/:@\s\"]*):[^/@\s\"]*@")


def redact_token(text: str) -> str:
    """``text`` (a URL, a log line) with the value of every ``token`` query parameter replaced by ``***``,
    however its name is spelt (``%74oken=`` is the same parameter to the server's query parser), and a
    URL's password too (``ws://user:***@host``)."""

    def redact(match: re.Match) -> str:
        if unquote_plus(match.group(2)) != "token":
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}=***"

    return _PASSWORD.sub(r"\1:***@", _QUERY_PARAMETER.sub(redact, text))
