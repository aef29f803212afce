"""Streaming inference: typed per-stream state, chunk-by-chunk steps, codec sessions, many streams at once.

* the blocks stream themselves: :class:`StreamingModule` (:mod:`audiokit.nn.streaming`, re-exported
  here) is the ``init_state`` / ``step`` contract every :mod:`audiokit.nn` block implements, and the
  typed states with their row operations live in :mod:`audiokit.nn.state`;
* :mod:`~audiokit.streaming.codec`: :class:`CodecStream` sessions (``codec.stream(...)``);
* :mod:`~audiokit.streaming.audio`: :class:`AudioStream` sessions of enhancers and bandwidth
  extenders (``model.stream(...)``);
* :mod:`~audiokit.streaming.batcher`: :class:`MultiStreamBatcher` (codecs) and :class:`AudioBatcher`
  (enhancers, bandwidth extenders) for independent streams;
* :mod:`~audiokit.streaming.latency`: per-step timing and the measured algorithmic latency;
* :mod:`~audiokit.streaming.akc`: streaming encode into an ``.akc`` writer.

Streaming output equals offline output (codes identical, audio within float rounding) for any
chunking; see ``docs/streaming.md``.
"""

from audiokit.nn.state import (
    ConvState,
    ConvTransposeState,
    LSTMState,
    OverlapAddState,
    StateList,
    StreamState,
    assign_rows,
    flatten_state,
    load_flat_state,
    select_rows,
    zero_rows,
)
from audiokit.nn.streaming import StreamingModule
from audiokit.streaming.akc import encode_to_akc
from audiokit.streaming.audio import AudioStream
from audiokit.streaming.batcher import AudioBatcher, MultiStreamBatcher
from audiokit.streaming.codec import MODES, CodecStream
from audiokit.streaming.latency import StepTimer, measure_latency

__all__ = [
    "MODES",
    "AudioBatcher",
    "AudioStream",
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
    "assign_rows",
    "encode_to_akc",
    "flatten_state",
    "load_flat_state",
    "measure_latency",
    "select_rows",
    "zero_rows",
]
