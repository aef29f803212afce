"""External programs audiokit runs (opusenc/opusdec, ffmpeg/ffprobe): lookup with an install hint."""

from __future__ import annotations

import shutil

from audiokit.errors import ToolMissingError

OPUS_MIN_KBPS = 6.0
"""The lowest bitrate libopus documents (kbit/s); comparisons with codecs below it use Opus at this rate."""


def require_tool(tool: str, package: str, purpose: str = "") -> str:
    """Path of the command ``tool``, or a ToolMissingError naming the Debian ``package`` that has it.

    ``purpose``: what needs it, said first in the message (e.g. ``"talk.m4a: reading .m4a"``).
    """
    path = shutil.which(tool)
    if path is None:
        needs = f"{purpose} needs {tool}, which is" if purpose else tool
        raise ToolMissingError(f"{needs} not found; install it with: apt-get install {package}")
    return path
