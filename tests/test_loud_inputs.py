"""Files as loud as the commands take (a peak up to :data:`audiokit.io.FLOAT_PEAK_LIMIT`) go through every
command that resamples them into a model session: the resampler overshoots such a peak, and the sessions,
checking the resampled audio again, refused it ("push: samples up to 70.61 (+37 dBFS), beyond 64") for
a file whose own peak is 60."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from audiokit.cli import main
from audiokit.io import FLOAT_PEAK_LIMIT


def _loud(path, rate: int) -> None:
    rng = np.random.default_rng(0)
    wav = (rng.random(rate // 2) * 2 - 1) * 0.94 * FLOAT_PEAK_LIMIT  # a peak of 60, within the limit
    sf.write(path, wav.astype(np.float32), rate, subtype="FLOAT")


@pytest.mark.parametrize(
    "command,rate,extra",
    [
        ("encode", 48000, []),
        ("enhance", 48000, []),  # above the model's rate: the high band is kept (HighBandSession)
        ("enhance", 22050, []),
        ("bwe", 48000, []),
        ("bwe", 16000, ["--input-rate", "8000"]),
        ("bwe", 8000, []),  # the extender's own upsampler overshoots (UpsampledStream)
    ],
)
def test_a_loud_file_within_the_limit_is_processed_at_any_rate(tmp_path, command, rate, extra):
    source, target = tmp_path / "loud.wav", tmp_path / ("out.akc" if command == "encode" else "out.wav")
    _loud(source, rate)
    assert main([command, "-q", str(source), str(target), *extra]) == 0
    if command != "encode":
        out, _ = sf.read(target)
        assert np.isfinite(out).all() and out.shape[0] > 0
