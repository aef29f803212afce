"""Reference systems to compare models against: Opus (Debian's opus-tools), sinc resampling, identity,
and the enhancement baselines RNNoise (``pyrnnoise``) and spectral gating (``noisereduce``).

Each baseline maps ``(channels, samples)`` audio at ``sample_rate`` to audio of the same shape and
rate, and reports the bitrate it actually used where that means something. The coding baselines take
the clean reference; the enhancement ones (:data:`ENHANCERS`) take the noisy input.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from audiokit import io
from audiokit.errors import ToolMissingError, UsageError
from audiokit.rnnoise import denoise
from audiokit.tools import require_tool


@dataclass
class BaselineOutput:
    """Processed audio ``(channels, samples)`` and, for codecs, the coded size in bits per second and
    in bytes (the whole coded file, container included)."""

    wav: torch.Tensor
    bitrate_bps: float | None = None
    coded_bytes: int | None = None


def fit_length(wav: torch.Tensor, length: int) -> torch.Tensor:
    """Trim or zero-pad ``(channels, n)`` audio to exactly ``length`` samples."""
    if wav.shape[-1] >= length:
        return wav[..., :length]
    return torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))


def identity(wav: torch.Tensor, sample_rate: int) -> BaselineOutput:
    """The input itself: the upper bound every metric reaches."""
    return BaselineOutput(wav.clone())


def sinc(wav: torch.Tensor, sample_rate: int, input_rate: int) -> BaselineOutput:
    """Band-limit to ``input_rate`` Hz and back with soxr (HQ): the bandwidth-extension baseline."""
    if input_rate >= sample_rate:
        raise UsageError(f"--input-rate {input_rate} must be below the audio's rate ({sample_rate} Hz)")
    x = wav.numpy().T
    low = io.resample(x, sample_rate, input_rate)
    back = torch.from_numpy(np.ascontiguousarray(io.resample(low, input_rate, sample_rate).T))
    return BaselineOutput(fit_length(back, wav.shape[-1]))


def opus(
    wav: torch.Tensor, sample_rate: int, bitrate_kbps: float, coded_path: str | Path | None = None
) -> BaselineOutput:
    """Encode with ``opusenc --bitrate`` (default VBR, complexity 10) and decode with ``opusdec``.

    ``bitrate_kbps`` is per channel, as a codec's bitrates are (it codes each channel as its own
    stream): a stereo input is coded at twice it. The decoded audio is resampled back to
    ``sample_rate`` by opusdec and trimmed/padded to the input length (opusdec honours the pre-skip, so
    at most a few samples differ). ``bitrate_bps`` is the real size of the Ogg Opus file (container
    included) over the duration. ``coded_path``: also keep the ``.opus`` file there (written
    atomically).
    """
    if wav.shape[0] > 2:  # opusdec writes at most stereo
        raise UsageError(f"the Opus baseline codes mono or stereo, not {wav.shape[0]} channels")
    opusenc, opusdec = require_tool("opusenc", "opus-tools"), require_tool("opusdec", "opus-tools")
    with tempfile.TemporaryDirectory(prefix="audiokit-opus-") as tmp:
        source, coded, decoded = Path(tmp, "in.wav"), Path(tmp, "x.opus"), Path(tmp, "out.wav")
        io.save(source, wav.clamp(-1, 1), sample_rate, subtype="FLOAT")
        for command in (
            [opusenc, "--quiet", "--bitrate", f"{bitrate_kbps * wav.shape[0]:g}", str(source), str(coded)],
            [opusdec, "--quiet", "--float", "--rate", str(sample_rate), str(coded), str(decoded)],
        ):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                reason = " ".join((done.stderr or done.stdout).split())[-300:]
                raise UsageError(f"{Path(command[0]).name} failed ({reason})")
        out, _ = io.load(decoded, channels=wav.shape[0])
        size = coded.stat().st_size
        if coded_path is not None:
            with io.atomic_path(coded_path) as tmp_path:
                shutil.copyfile(coded, tmp_path)
    return BaselineOutput(fit_length(out, wav.shape[-1]), size * 8 / (wav.shape[-1] / sample_rate), size)


def rnnoise(wav: torch.Tensor, sample_rate: int) -> BaselineOutput:
    """RNNoise at 48 kHz (soxr HQ there and back), each channel on its own, its 20 ms delay removed so
    the output aligns sample-exactly with the input (:func:`audiokit.rnnoise.denoise`)."""
    return BaselineOutput(denoise(wav, sample_rate))


def gating(wav: torch.Tensor, sample_rate: int) -> BaselineOutput:
    """Non-stationary spectral gating (``noisereduce.reduce_noise`` with its defaults), per channel."""
    try:
        import noisereduce
    except ImportError:
        raise ToolMissingError(
            "the gating baseline needs the noisereduce package: pip install noisereduce"
        ) from None
    x = wav.detach().cpu().numpy().astype(np.float32)
    # a silent channel stays silent (noisereduce returns NaN for it: 0 / 0 in its noise estimate)
    out = np.stack([noisereduce.reduce_noise(y=c, sr=sample_rate) if c.any() else c for c in x])
    return BaselineOutput(fit_length(torch.from_numpy(out.astype(np.float32)), wav.shape[-1]))


ENHANCERS = {"rnnoise": rnnoise, "gating": gating}
"""Enhancement baselines: they process the noisy input (``audiokit eval CLEAN NOISY --baseline ...``)."""

BASELINES = ("identity", "sinc", "opus", *ENHANCERS)
