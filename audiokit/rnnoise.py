"""RNNoise (Valin, 2018), the real-time enhancement baseline: its C library and weights as the ``pyrnnoise``
package ships them, called directly through ctypes on float32 (the package's own wrapper rounds to
int16 first).

RNNoise runs at 48 kHz on 10 ms frames (480 samples) and its output lags its input by
:data:`DELAY_FRAMES` frames (960 samples, 20 ms; measured by cross-correlation on real speech, see
``tests/test_baselines_enhance.py``). :func:`denoise` resamples to 48 kHz with soxr, pads, runs the
frames, drops the delay and resamples back, so its output is aligned sample-exactly with its input
and of the same length.
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

import numpy as np
import soxr
import torch

from audiokit.errors import ToolMissingError

SAMPLE_RATE = 48000
FRAME_SIZE = 480
"""Samples per RNNoise frame at 48 kHz (10 ms)."""
DELAY_FRAMES = 2
"""Frames by which RNNoise's output lags its input (960 samples at 48 kHz, 20 ms)."""
DELAY = DELAY_FRAMES * FRAME_SIZE
_SCALE = 32768.0  # RNNoise works on floats in 16-bit PCM range

_LIB: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """The RNNoise C library shipped in ``pyrnnoise`` (loaded once, without importing the package's
    Python wrapper and its dependencies)."""
    global _LIB
    if _LIB is None:
        spec = importlib.util.find_spec("pyrnnoise")
        folders = list(spec.submodule_search_locations or []) if spec else []
        found = [p for folder in folders for p in Path(folder).glob("librnnoise.*")]
        if not found:
            raise ToolMissingError("the RNNoise baseline needs the pyrnnoise package: pip install pyrnnoise")
        lib = ctypes.CDLL(str(found[0]))
        lib.rnnoise_create.argtypes = [ctypes.c_void_p]
        lib.rnnoise_create.restype = ctypes.c_void_p
        lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
        lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.rnnoise_process_frame.restype = ctypes.c_float
        lib.rnnoise_get_frame_size.restype = ctypes.c_int
        if lib.rnnoise_get_frame_size() != FRAME_SIZE:
            raise ToolMissingError(f"{found[0]}: expected RNNoise frames of {FRAME_SIZE} samples")
        _LIB = lib
    return _LIB


class RNNoiseState:
    """One RNNoise stream at 48 kHz, fed whole frames by :meth:`process`."""

    def __init__(self) -> None:
        self._lib = library()
        self._state = self._lib.rnnoise_create(None)

    def process(self, x: np.ndarray) -> np.ndarray:
        """Denoise ``x (k * FRAME_SIZE,)`` float32 samples in [-1, 1] at 48 kHz; the output lags by
        :data:`DELAY` samples (state carries over between calls)."""
        if x.shape[0] % FRAME_SIZE:
            raise ValueError(f"RNNoise takes whole frames of {FRAME_SIZE} samples, got {x.shape[0]}")
        frames = np.ascontiguousarray(x, dtype=np.float32) * np.float32(_SCALE)
        out = np.empty_like(frames)
        step = FRAME_SIZE * frames.itemsize
        src, dst = frames.ctypes.data, out.ctypes.data
        for offset in range(0, frames.nbytes, step):
            self._lib.rnnoise_process_frame(self._state, dst + offset, src + offset)
        return out / np.float32(_SCALE)

    def close(self) -> None:
        """Free the C state (also done when the object is collected)."""
        if self._state is not None:
            self._lib.rnnoise_destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()


def denoise(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """RNNoise on ``wav (channels, samples)`` at ``sample_rate`` Hz, each channel its own stream:
    same shape, aligned with the input (delay removed)."""
    length = wav.shape[-1]
    out = []
    for channel in wav.detach().cpu().numpy().astype(np.float32):
        x = channel
        if sample_rate != SAMPLE_RATE:
            x = soxr.resample(channel, sample_rate, SAMPLE_RATE, quality="HQ")
        padded = np.zeros(-(-(x.shape[0] + DELAY) // FRAME_SIZE) * FRAME_SIZE, np.float32)
        padded[: x.shape[0]] = x
        state = RNNoiseState()
        y = state.process(padded)[DELAY : DELAY + x.shape[0]]
        state.close()
        if sample_rate != SAMPLE_RATE:
            y = soxr.resample(y, SAMPLE_RATE, sample_rate, quality="HQ")
        fitted = np.zeros(length, np.float32)
        fitted[: min(length, y.shape[0])] = y[:length]
        out.append(fitted)
    return torch.from_numpy(np.stack(out))
