"""Streaming encode straight into an ``.akc`` file: codes are written as frames complete."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from audiokit.bitstream import AkcWriter
from audiokit.errors import UsageError
from audiokit.streaming.codec import CodecStream


def encode_to_akc(
    session: CodecStream,
    blocks: Iterable[torch.Tensor],
    writer: AkcWriter,
    source_samples: Callable[[], int] | None = None,
    checked: bool = False,
) -> int:
    """Push audio ``blocks`` (each ``(channels, n)``) through ``session`` (an ``"encode"`` session of one
    item) and append each push's codes to ``writer``; flush, close the writer with the exact length and
    return it in samples. Memory stays constant however long the input is. ``source_samples``: called
    once the blocks are exhausted, the source's own length for a version-2 writer (its header has a
    ``source_rate``). ``checked``: the blocks were checked at their source (a file read through
    :mod:`audiokit.io`, then resampled): pushed with :meth:`CodecStream.push_checked`."""
    if session.mode != "encode" or session.batch_size != 1:
        raise UsageError("encode_to_akc needs an 'encode' session of batch_size 1")
    length = 0
    for block in blocks:
        codes = session.push_checked(block[None]) if checked else session.push(block[None])
        length += block.shape[-1]
        if codes.shape[-1]:
            writer.append(codes)
    codes = session.flush()
    if codes.shape[-1]:
        writer.append(codes)
    writer.close(length, None if source_samples is None else source_samples())
    return length
