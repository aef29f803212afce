"""A learned causal prior over RVQ codes, evaluated in integer arithmetic: the second probability model of
entropy-coded ``.akc`` (version 3), beside the static tables of :class:`audiokit.entropy.EntropyModel`.

The probability of code ``x[t, q]`` (frame ``t``, codebook/stage ``q``) is predicted from the codes of
stages ``0..q`` of the ``lags`` frames before it and of stages ``0..q-1`` of frame ``t`` itself, all
within the same chunk (frames before the chunk count as the "start" code ``codebook_size``, so every
chunk decodes on its own and seeking still reads only the chunks of a range). The network, per stage
``q``, on integers in fixed point (``v`` stands for ``v * 2**-exponent``):

``x = stage[q] + sum_l sum_{q'<=q} prev[l, q', x[t-1-l, q']] + sum_{q'<q} cur[q', x[t, q']]``
(embeddings summed like the partial sums of a residual quantizer), ``h = relu(x W1[q] + b1[q])``,
``y = relu(x + h W2[q] + b2[q])``, ``logits = y out[q]^T + bias[q]``; then frequencies from the logits
with a shipped exponential table (see :meth:`PriorModel.frequencies`). Every step is int64 numpy:
additions, products, arithmetic right shifts with rounding (``(v + 2**(s-1)) >> s``), a table
lookup and a floor division, so the encoder and the decoder compute bit-identical tables on any
machine, whichever device computed the codes. Weights are int8 (the big tables) or int32 (biases) in
one safetensors file (``<weights stem>.entropy.safetensors``); the exponents and sizes are its
``config`` tensor. ``benchmarks/entropy_models.py`` trains the float network on codes of training
speech and quantises it; ``docs/bitstream.md`` has the measurements.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from audiokit import ops
from audiokit.entropy import (
    MAX_PRECISION,
    MIN_PRECISION,
    RangeDecoder,
    RangeEncoder,
    bytes_after_last_code,
    outside_code_range,
)
from audiokit.io import atomic_path

FORMAT = "audiokit-entropy-prior"
CONFIG_FIELDS = (
    "lags",  # frames of history (before the current one) the prior sees
    "num_stages",  # codebooks it covers
    "codebook_size",
    "width",  # embedding / activation width H
    "hidden",  # MLP width M
    "precision",  # frequencies sum to 2**precision
    "act_exp",  # activations x, h, y are ints at 2**-act_exp
    "prev_exp",  # exponent of the int8 tables prev, cur
    "cur_exp",
    "w1_exp",
    "w2_exp",
    "out_exp",
    "table_exp",  # exp_table[i] ~ exp(-i * 2**-table_exp) * exp_table[0]
)
TENSORS = ("config", "prev", "cur", "stage", "w1", "b1", "w2", "b2", "out", "bias", "exp_table")
_DTYPES = {
    "config": np.int32,
    "prev": np.int8,
    "cur": np.int8,
    "stage": np.int32,
    "w1": np.int8,
    "b1": np.int32,
    "w2": np.int8,
    "b2": np.int32,
    "out": np.int8,
    "bias": np.int32,
    "exp_table": np.int32,
}


def rshift(value: np.ndarray, shift: int) -> np.ndarray:
    """``value * 2**-shift`` rounded half up (``shift > 0``: ``(v + 2**(shift-1)) >> shift``, an arithmetic
    shift); ``shift <= 0``: an exact left shift."""
    if shift > 0:
        return (value + (1 << (shift - 1))) >> shift
    return value << -shift


class PriorModel:
    """The integer causal prior (see the module docstring) and the range coding it drives.

    ``tensors``: the arrays of :data:`TENSORS` (integers of the dtypes of ``_DTYPES``; ``config`` holds
    :data:`CONFIG_FIELDS`); ``meta``: free-form strings (what it was trained on), not part of
    :attr:`model_id`.
    """

    def __init__(self, tensors: dict[str, np.ndarray], meta: dict | None = None) -> None:
        missing = [n for n in TENSORS if n not in tensors]
        if missing:
            raise ValueError(f"entropy prior lacks tensors {missing}")
        self.tensors = {n: np.ascontiguousarray(tensors[n], dtype=_DTYPES[n]) for n in TENSORS}
        if not np.array_equal(self.tensors["config"], np.asarray(tensors["config"])):
            raise ValueError("entropy prior: config out of range")
        self.meta = dict(meta or {})
        config = self.tensors["config"]
        if config.shape != (len(CONFIG_FIELDS),):
            raise ValueError(f"entropy prior: config must hold {len(CONFIG_FIELDS)} ints")
        self.config = dict(zip(CONFIG_FIELDS, (int(v) for v in config), strict=True))
        c = self.config
        lags, stages, size, width, hidden = (
            c["lags"],
            c["num_stages"],
            c["codebook_size"],
            c["width"],
            c["hidden"],
        )
        if not (1 <= lags <= 8 and 1 <= stages <= 64 and 2 <= size <= 1 << 16 and width >= 1 and hidden >= 1):
            raise ValueError(f"entropy prior: bad sizes {c}")
        if not MIN_PRECISION <= c["precision"] <= MAX_PRECISION or size > (1 << c["precision"]) // 2:
            raise ValueError(f"entropy prior: precision {c['precision']} does not fit {size} codes")
        shapes = {
            "prev": (lags, stages, size + 1, width),
            "cur": (stages, size, width),
            "stage": (stages, width),
            "w1": (stages, width, hidden),
            "b1": (stages, hidden),
            "w2": (stages, hidden, width),
            "b2": (stages, width),
            "out": (stages, size, width),
            "bias": (stages, size),
        }
        for name, shape in shapes.items():
            if self.tensors[name].shape != shape:
                raise ValueError(
                    f"entropy prior: {name} has shape {self.tensors[name].shape}, expected {shape}"
                )
        table = self.tensors["exp_table"]
        if table.ndim != 1 or not 2 <= len(table) <= 1 << 16 or table[0] > 1 << 24 or (table < 0).any():
            raise ValueError("entropy prior: exp_table must be 2..65536 ints in [0, 2**24]")
        if table[0] < 1 or (np.diff(table) > 0).any():
            raise ValueError("entropy prior: exp_table must start >= 1 and not increase")
        for name in ("prev_exp", "cur_exp"):
            if c[name] > c["act_exp"]:
                raise ValueError(f"entropy prior: {name} must be <= act_exp")
        # int64 working copies, the embeddings already at the activation exponent
        self._prev = self.tensors["prev"].astype(np.int64) << (c["act_exp"] - c["prev_exp"])
        self._cur = self.tensors["cur"].astype(np.int64) << (c["act_exp"] - c["cur_exp"])
        self._stage = self.tensors["stage"].astype(np.int64)
        self._w1 = self.tensors["w1"].astype(np.int64)
        self._b1 = self.tensors["b1"].astype(np.int64)
        self._w2 = self.tensors["w2"].astype(np.int64)
        self._b2 = self.tensors["b2"].astype(np.int64)
        self._out_t = np.ascontiguousarray(self.tensors["out"].astype(np.int64).transpose(0, 2, 1))
        self._bias = self.tensors["bias"].astype(np.int64)
        self._table = table.astype(np.int64)
        self._logit_shift = c["act_exp"] + c["out_exp"] - c["table_exp"]
        self._kernel_tables: tuple[torch.Tensor, ...] | None = None  # the C++ decoder's, made on first use

    # -- identity --------------------------------------------------------------------------------
    @property
    def precision(self) -> int:
        return self.config["precision"]

    @property
    def num_tables(self) -> int:
        """Codebooks (stages) the model covers."""
        return self.config["num_stages"]

    @property
    def codebook_size(self) -> int:
        return self.config["codebook_size"]

    @property
    def model_id(self) -> int:
        """CRC32 of the tensors in :data:`TENSORS` order, each as its name, dtype, shape (u32 LE each) and
        its little-endian bytes: what an ``.akc`` header records."""
        crc = zlib.crc32(FORMAT.encode())
        for name in TENSORS:
            array = self.tensors[name]
            head = name.encode() + array.dtype.str.encode() + struct.pack(f"<{array.ndim}I", *array.shape)
            crc = zlib.crc32(
                array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(), zlib.crc32(head, crc)
            )
        return crc

    def fits(self, num_codebooks: int, codebook_size: int) -> bool:
        """Whether the model codes streams of ``num_codebooks`` codebooks of ``codebook_size`` entries."""
        return 1 <= num_codebooks <= self.num_tables and codebook_size == self.codebook_size

    # -- the network -----------------------------------------------------------------------------
    def _history(self, codes: np.ndarray) -> np.ndarray:
        """Summed history embeddings ``[frames, rows, n_q, width]`` (int64) of ``codes [frames, rows,
        n_q]``: for stage ``q`` the codes of stages ``0..q`` of the ``lags`` frames before (start code
        before frame 0)."""
        frames, rows, n_q = codes.shape
        start = self.codebook_size
        stages = np.arange(n_q)
        total = np.zeros((frames, rows, n_q, self.config["width"]), dtype=np.int64)
        for lag in range(1, self.config["lags"] + 1):
            before = np.full((frames, rows, n_q), start, dtype=np.int64)
            if lag < frames:
                before[lag:] = codes[:-lag]
            total += np.cumsum(self._prev[lag - 1, stages, before], axis=2)
        return total

    def _current(self, codes: np.ndarray) -> np.ndarray:
        """Summed current-frame embeddings: for stage ``q`` those of stages ``0..q-1`` (exclusive cumsum)."""
        n_q = codes.shape[-1]
        emb = self._cur[np.arange(n_q), codes]  # [..., n_q, width]
        total = np.zeros_like(emb)
        total[..., 1:, :] = np.cumsum(emb[..., :-1, :], axis=-2)
        return total

    def _logits(self, x: np.ndarray, q: int) -> np.ndarray:
        """Integer logits ``[rows, codebook_size]`` of stage ``q`` from its summed inputs ``x [rows, width]``
        (int64)."""
        c = self.config
        x = x + self._stage[q]
        h = np.maximum(rshift(x @ self._w1[q] + self._b1[q], c["w1_exp"]), 0)
        y = np.maximum(x + rshift(h @ self._w2[q] + self._b2[q], c["w2_exp"]), 0)
        return y @ self._out_t[q] + self._bias[q]

    def frequencies_from_logits(self, logits: np.ndarray) -> np.ndarray:
        """Frequencies ``[rows, codebook_size]`` (int64, each >= 1, rows summing to ``2**precision``) of
        integer logits: ``d = max - logit``, weight ``exp_table[min(round(d * 2**-shift), len - 1)]``, every
        code gets 1 and the rest of ``2**precision`` is shared in proportion to the weights (floor), the
        remainder to the first code of the largest weight."""
        if not logits.size:
            return np.zeros(logits.shape, dtype=np.int64)
        d = logits.max(axis=-1, keepdims=True) - logits
        index = np.minimum(rshift(d, self._logit_shift), len(self._table) - 1)
        weights = self._table[index]
        total = 1 << self.precision
        spare = total - self.codebook_size
        freqs = 1 + weights * spare // weights.sum(axis=-1, keepdims=True)
        rows = np.arange(freqs.shape[0])
        freqs[rows, weights.argmax(axis=-1)] += total - freqs.sum(axis=-1)
        return freqs

    def frequencies(self, codes: np.ndarray) -> np.ndarray:
        """Frequency tables ``[frames, rows, n_q, codebook_size]`` with which each code of ``codes [frames,
        rows, n_q]`` (one chunk; rows = channels) is coded (all known at once: the encoder's view)."""
        codes = np.asarray(codes, dtype=np.int64)
        frames, rows, n_q = codes.shape
        x = self._history(codes) + self._current(codes)
        out = np.empty((frames, rows, n_q, self.codebook_size), dtype=np.int64)
        for q in range(n_q):
            flat = x[:, :, q].reshape(-1, x.shape[-1])
            out[:, :, q] = self.frequencies_from_logits(self._logits(flat, q)).reshape(out[:, :, q].shape)
        return out

    def bits(self, codes: np.ndarray) -> np.ndarray:
        """Ideal code length (bits, float64) of every code of ``codes [frames, rows, n_q]`` (a report
        figure, not used by the coder)."""
        codes = np.asarray(codes, dtype=np.int64)
        freqs = self.frequencies(codes)
        picked = np.take_along_axis(freqs, codes[..., None], axis=-1)[..., 0]
        return self.precision - np.log2(picked)

    # -- coding ----------------------------------------------------------------------------------
    def encode(self, codes: np.ndarray) -> bytes:
        """Payload of one chunk's ``codes [frames, channels, n_q]``, coded frame by frame, then channel by
        channel, then codebook by codebook with the tables of :meth:`frequencies`."""
        codes = np.asarray(codes, dtype=np.int64)
        self._check_shape(codes.shape[2])
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must be in [0, {self.codebook_size})")
        freqs = self.frequencies(codes).reshape(-1, self.codebook_size)
        flat = codes.reshape(-1)
        starts = (np.cumsum(freqs, axis=1) - freqs)[np.arange(len(flat)), flat]
        sizes = freqs[np.arange(len(flat)), flat]
        coder = RangeEncoder()
        for start, size in zip(starts.tolist(), sizes.tolist(), strict=True):
            coder.encode(start, size, self.precision)
        return coder.finish()

    def decode(self, payload: bytes | memoryview, frames: int, channels: int, n_q: int) -> np.ndarray:
        """Codes ``[frames, channels, n_q]`` int64 of a payload :meth:`encode` wrote; an
        :class:`EntropyDecodeError` naming the payload byte otherwise."""
        self._check_shape(n_q)
        decoder = RangeDecoder(payload, frames * channels * n_q)  # checks the payload's last byte
        kernels = ops.exact_kernels()
        if kernels is not None:
            return self._decode_compiled(kernels, payload, frames, channels, n_q)
        codes = np.zeros((frames, channels, n_q), dtype=np.int64)
        width = self.config["width"]
        for t in range(frames):
            window = codes[max(0, t - self.config["lags"]) : t + 1]
            history = self._history(window)[-1]  # [channels, n_q, width]; frame t's codes are not used
            for c in range(channels):  # the payload's order: frame, channel, codebook
                current = np.zeros((1, width), dtype=np.int64)
                for q in range(n_q):
                    freqs = self.frequencies_from_logits(self._logits(history[c : c + 1, q] + current, q))
                    code = decoder.decode(np.cumsum(freqs[0]), self.precision)
                    codes[t, c, q] = code
                    current = current + self._cur[q, code]
        decoder.finish()
        return codes

    def _decode_compiled(
        self, kernels: ModuleType, payload: bytes | memoryview, frames: int, channels: int, n_q: int
    ) -> np.ndarray:
        """:meth:`decode` in the C++ kernel (``kernels/cpu/prior_decode.cpp``): the same integers."""
        if self._kernel_tables is None:
            arrays = (self._prev, self._cur, self._stage, self._w1, self._b1, self._w2, self._b2)
            out = self.tensors["out"].astype(np.int64)
            row_bound = np.abs(out).sum(axis=2).max(axis=1).astype(np.float64)
            w1_bound = np.abs(self._w1).sum(axis=1).max(axis=1)  # per stage, over w1's output columns
            w2_bound = np.abs(self._w2).sum(axis=1).max(axis=1)
            layer_bound = np.stack([w1_bound, w2_bound], axis=1).astype(np.float64)
            reals = (self._w1.astype(np.float64), self._w2.astype(np.float64), layer_bound)
            tables = (*arrays, out, out.astype(np.float64), row_bound, *reals, self._bias, self._table)
            self._kernel_tables = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in tables)
        data = (
            torch.frombuffer(bytearray(payload), dtype=torch.uint8)
            if len(payload)
            else torch.zeros(0, dtype=torch.uint8)
        )
        c = self.config
        codes, error, position = kernels.prior_decode(
            data,
            frames,
            channels,
            n_q,
            *self._kernel_tables,
            c["precision"],
            c["w1_exp"],
            c["w2_exp"],
            self._logit_shift,
        )
        if error == 1:
            raise outside_code_range(position)
        if error == 2:
            raise bytes_after_last_code(position, len(payload))
        return codes.numpy()

    def _check_shape(self, n_q: int) -> None:
        if not 1 <= n_q <= self.num_tables:
            raise ValueError(f"{n_q} codebooks, but the entropy prior covers 1..{self.num_tables}")

    # -- files -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model as safetensors (ints; ``meta`` and the id in its metadata), atomically."""
        from safetensors.numpy import save

        path = Path(path)
        metadata = {
            "format": FORMAT,
            "model_id": str(self.model_id),
            **{k: str(v) for k, v in self.meta.items()},
        }
        with atomic_path(path) as tmp:
            tmp.write_bytes(save(self.tensors, metadata=metadata))
        return path

    @classmethod
    def load(cls, path: str | Path) -> PriorModel:
        """Read a model :meth:`save` wrote; ``ValueError`` when it is not one or its id does not match."""
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            if metadata.get("format") != FORMAT:
                raise ValueError(f"{path}: not an {FORMAT} file")
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open API)
        for name in TENSORS:
            if name in tensors and tensors[name].dtype != _DTYPES[name]:
                raise ValueError(
                    f"{path}: tensor {name} is {tensors[name].dtype}, expected {np.dtype(_DTYPES[name])}"
                )
        expected = metadata.pop("model_id", None)
        metadata.pop("format")
        model = cls(tensors, metadata)
        if str(model.model_id) != expected:
            raise ValueError(f"{path}: model_id {expected} does not match its tensors")
        return model
