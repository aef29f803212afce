"""What is never printed or logged: the server's shared secret in ``?token=`` query parameters, and the
password of a URL's ``user:password@``."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

_QUERY_PARAMETER = re.compile(r"([?&])([^=&#\s\"]*)=([^&#\s\"]*)")
_AUTHORITY = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#\s\"]*)")


def redact_token(text: str) -> str:
    """``text`` (a URL, a log line) with the value of every ``token`` query parameter replaced by ``***``,
    however its name is spelt (``%74oken=`` is the same parameter to the server's query parser), and a
    URL's password too (``ws://user:***@host``)."""

    def redact(match: re.Match) -> str:
        if unquote_plus(match.group(2)) != "token":
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}=***"

    def hide_password(match: re.Match) -> str:  # userinfo ends at the authority's last "@"
        authority = match.group(2)
        userinfo, at, host = authority.rpartition("@")
        if not at or ":" not in userinfo:
            return match.group(0)
        return f"{match.group(1)}{userinfo.split(':', 1)[0]}:***@{host}"

    return _AUTHORITY.sub(hide_password, _QUERY_PARAMETER.sub(redact, text))
