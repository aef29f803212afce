"""Streaming inference: typed per-stream state, chunk-by-chunk steps, codec sessions, many streams at once.

* :mod:`~audiokit.streaming.state`: the state dataclasses (conv history, transposed-conv overlap, LSTM
  ``(h, c)``, iSTFT tail) and row operations on them;
* :mod:`~audiokit.streaming.modules`: the :class:`StreamingModule` contract and :func:`as_streaming`;
* :mod:`~audiokit.streaming.codec`: :class:`CodecStream` sessions (``codec.stream(...)``);
* :mod:`~audiokit.streaming.batcher`: :class:`MultiStreamBatcher` for independent streams;
* :mod:`~audiokit.streaming.latency`: per-step timing and the measured algorithmic latency;
* :mod:`~audiokit.streaming.akc`: streaming encode into an ``.akc`` writer.

Streaming output equals offline output (codes identical, audio within float rounding) for any
chunking; see ``docs/streaming.md``.
"""

from audiokit.streaming.akc import encode_to_akc
from audiokit.streaming.batcher import MultiStreamBatcher
from audiokit.streaming.codec import MODES, CodecStream
from audiokit.streaming.latency import StepTimer, measure_latency
from audiokit.streaming.modules import StreamingModule, as_streaming
from audiokit.streaming.state import (
    ConvState,
    ConvTransposeState,
    LSTMState,
    OverlapAddState,
    StateList,
    StreamState,
)

__all__ = [
    "MODES",
    "CodecStream",
    "ConvState",
    "ConvTransposeState",
    "LSTMState",
    "MultiStreamBatcher",
    "OverlapAddState",
    "StateList",
    "StepTimer",
    "StreamState",
    "StreamingModule",
    "as_streaming",
    "encode_to_akc",
    "measure_latency",
]
