"""What a scheduler drives: one served model's streams in batchers, and each stream's wire-side audio.

An :class:`Engine` keeps every live stream of one model in multi-stream batchers (one per codec bitrate;
one for an enhancer, each stream with its own knobs in its row) and advances all ready streams together in
batched steps of one hop or, for streams with a backlog, several. A :class:`WireAudio` turns a stream's
samples at the client's rate into the model's rate and back (soxr HQ, streaming), and keeps the output
exactly as long as the input. Neither is thread-safe: the scheduler calls them from its one worker thread
only.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import numpy as np
import soxr
import torch

from audiokit.errors import UsageError
from audiokit.high_band import HighBand
from audiokit.models.codec import Codec
from audiokit.models.enhancer import Enhancer
from audiokit.serve.protocol import BAD_REQUEST, ProtocolError, StartRequest
from audiokit.streaming.batcher import AudioBatcher, MultiStreamBatcher

StreamKey = tuple[Hashable, int]
"""A stream in an engine: its batcher's key and its id there."""


class Engine:
    """The live streams of one served ``model`` (a :class:`Codec` or an :class:`Enhancer`), at most
    ``capacity`` per batcher."""

    def __init__(self, name: str, model: torch.nn.Module, capacity: int, compile: str | None = None) -> None:
        if not isinstance(model, Codec | Enhancer):
            raise UsageError(f"{name}: a {type(model).__name__} cannot be served (codecs and enhancers can)")
        self.name = name
        self.model = model
        self.task = "codec" if isinstance(model, Codec) else "enhance"
        self.capacity = capacity
        self.sample_rate: int = model.sample_rate
        self.hop_length: int = model.hop_length
        self.latency: int = model.algorithmic_latency
        self.compile = compile
        self._batchers: dict[Hashable, MultiStreamBatcher | AudioBatcher] = {}
        if compile:  # build (or load from the cache) every library now, not while a stream waits
            for bitrate in model.bitrates if self.task == "codec" else [None]:
                self._batcher(bitrate)

    @property
    def compiled(self) -> bool:
        """Whether every batcher built so far runs compiled steps."""
        flags = [
            all(b.session.compiled.values()) if isinstance(b, MultiStreamBatcher) else b.compiled
            for b in self._batchers.values()
        ]
        return bool(flags) and all(flags)

    def _batcher(self, bitrate: float | None) -> tuple[Hashable, MultiStreamBatcher | AudioBatcher]:
        """The batcher of the streams at ``bitrate`` (codecs; None for enhancers), made when first needed."""
        key = None if bitrate is None else self.model.n_q_for_bitrate(bitrate)
        if key not in self._batchers:
            self._batchers[key] = (
                MultiStreamBatcher(self.model, self.capacity, "roundtrip", bitrate, self.compile or False)
                if self.task == "codec"
                else AudioBatcher(self.model, self.capacity, self.compile)
            )
        return key, self._batchers[key]

    def latency_at(self, rate: int) -> int:
        """The algorithmic latency in samples at ``rate`` Hz (rounded up)."""
        return math.ceil(self.latency * rate / self.sample_rate)

    def check(self, request: StartRequest) -> None:
        """:class:`ProtocolError` 4400 unless this engine can serve ``request``."""
        if request.task != self.task:
            raise ProtocolError(
                BAD_REQUEST, f"model {self.name!r} serves task {self.task!r}, not {request.task!r}"
            )
        if self.task == "codec":
            low, high = self.model.bitrates[0], self.model.bitrates[-1]
            if not low <= request.bitrate <= high:
                raise ProtocolError(
                    BAD_REQUEST,
                    f"bitrate {request.bitrate:g} b/s ({request.bitrate / 1000:g} kbps) is outside "
                    f"{low:g}..{high:g} b/s ({low / 1000:g}..{high / 1000:g} kbps) for {self.name}",
                )

    def reset(self) -> None:
        """Forget every stream (after a failed step)."""
        self._batchers.clear()

    def open(self, request: StartRequest) -> StreamKey:
        """Start a stream of ``request`` (checked by :meth:`check`); an enhancer's stream runs with its
        own knobs, in the batcher of every stream (one row each)."""
        if self.task == "codec":
            key, batcher = self._batcher(request.bitrate)
            return key, batcher.open()
        key, batcher = self._batcher(None)
        return key, batcher.open(atten_lim_db=request.atten_lim_db, dry=request.dry)

    def push(self, stream: StreamKey, samples: torch.Tensor) -> None:
        """Queue mono ``samples (n,)`` at the model's rate."""
        self._batchers[stream[0]].push(stream[1], samples[None])

    def step(self, max_hops: int = 1) -> list[tuple[StreamKey, int, np.ndarray]]:
        """Batched steps of every batcher: each stream holding a whole hop advances by as many hops as
        it holds, at most ``max_hops`` (see :meth:`AudioBatcher.step`); returns ``(stream, hops,
        output)`` of those that advanced, the output float32 ``(n,)`` at the model's rate."""
        advanced = []
        for key, batcher in self._batchers.items():
            for i, hops in batcher.step(max_hops).items():
                advanced.append(((key, i), hops, batcher.pull(i)[0].numpy()))
        return advanced

    def ready(self) -> int:
        """How many streams hold a whole hop of input."""
        return sum(len(b.ready()) for b in self._batchers.values())

    def backlog(self, stream: StreamKey) -> int:
        """Whole hops of input ``stream`` holds that no step has taken yet."""
        return self._batchers[stream[0]].backlog(stream[1])

    def close(self, stream: StreamKey) -> np.ndarray:
        """End ``stream``: process its rest and return its remaining output; frees its slot."""
        return self.close_many([stream])[0]

    def close_many(self, streams: list[StreamKey]) -> list[np.ndarray]:
        """:meth:`close` of several streams, in batched final steps (one batcher at a time); their
        outputs, in order."""
        by_batcher: dict[Hashable, list[int]] = {}
        for key, stream_id in streams:
            by_batcher.setdefault(key, []).append(stream_id)
        outputs: dict[StreamKey, np.ndarray] = {}
        for key, stream_ids in by_batcher.items():
            for stream_id, out in zip(stream_ids, self._batchers[key].close_many(stream_ids), strict=True):
                outputs[key, stream_id] = out[0].numpy()
        return [outputs[stream] for stream in streams]


class WireAudio:
    """One stream's audio between the client's rate and the model's (both in Hz).

    With ``high_band`` and a client rate above the model's, the output also holds the input's band above
    the model's Nyquist frequency, as ``audiokit enhance`` keeps it in files
    (:class:`~audiokit.high_band.HighBand`); its gains look two hops ahead, so the output lags the input
    by :attr:`extra_latency` samples more than the model's latency.
    """

    def __init__(self, client_rate: int, model_rate: int, high_band: bool = False) -> None:
        self.client_rate = client_rate
        self.model_rate = model_rate
        self.samples_in = 0  # client-rate samples received
        self.samples_out = 0  # client-rate samples returned
        same = client_rate == model_rate
        self._to_model = None if same else soxr.ResampleStream(client_rate, model_rate, 1, dtype="float32")
        self._from_model = None if same else soxr.ResampleStream(model_rate, client_rate, 1, dtype="float32")
        self._high_band: HighBand | None = None
        self.extra_latency = 0
        if high_band and client_rate > model_rate:
            self._high_band = HighBand(1, client_rate, model_rate)
            self._round_trip = soxr.ResampleStream(model_rate, client_rate, 1, dtype="float32")
            self._inputs: list[list[np.ndarray]] = [[], []]  # the input and its round trip, not yet used
            self.extra_latency = 2 * self._high_band.hop

    @property
    def high_band(self) -> bool:
        """Whether the output keeps the input's band above the model's."""
        return self._high_band is not None

    def to_model(self, samples: np.ndarray, last: bool = False) -> torch.Tensor:
        """Client samples ``(n,)`` -> model-rate samples (``last``: flush the resampler)."""
        self.samples_in += samples.shape[0]
        if self._to_model is not None:
            down = self._to_model.resample_chunk(samples, last=last)
            if self._high_band is not None:
                self._inputs[0].append(samples)
                self._inputs[1].append(self._round_trip.resample_chunk(down, last=last))
            samples = down
        return torch.from_numpy(np.ascontiguousarray(samples, np.float32))

    def from_model(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        """Model-rate output -> client samples, never past the input's length; ``last`` pads to it."""
        if self._from_model is not None:
            samples = self._from_model.resample_chunk(np.ascontiguousarray(samples, np.float32), last=last)
        if self._high_band is not None:
            x, low = (np.concatenate(parts or [np.zeros(0, np.float32)])[None] for parts in self._inputs)
            self._inputs = [[], []]
            samples = self._high_band.push(x, low, samples[None], last)[0]
        samples = samples[: self.samples_in - self.samples_out]
        if last:
            samples = np.pad(samples, (0, self.samples_in - self.samples_out - samples.shape[0]))
        self.samples_out += samples.shape[0]
        return samples
