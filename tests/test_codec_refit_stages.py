"""The deep-codebook refit (``benchmarks/codec_refit_stages.py``): the stages it keeps code as before, the
ones it refits each shrink the residual they are given, and the codec saves and loads with them."""

from __future__ import annotations

import torch
from conftest import TINY_SPEECH_CODEC, load_benchmark

from audiokit.models import Codec


def test_kept_stages_code_as_before_and_refitted_ones_shrink_the_residual(tmp_path):
    torch.manual_seed(0)
    codec = Codec.from_config("speech-16k", **TINY_SPEECH_CODEC, num_quantizers=4, codebook_size=16).eval()
    latents = (
        torch.randn(1, codec.quantizer.dim, 2000) * torch.linspace(0.2, 3.0, codec.quantizer.dim)[:, None]
    )
    before = codec.quantizer.encode(latents, 4)
    energies = load_benchmark("codec_refit_stages").refit(codec, latents, first=2)
    after = codec.quantizer.encode(latents, 4)
    assert torch.equal(after[:, :2], before[:, :2]) and not torch.equal(after[:, 2:], before[:, 2:])
    assert len(energies) == 2 and all(out < 0.9 * given for given, out in energies)
    assert energies[1][0] == energies[0][1]  # each stage takes what the one before left
    loaded = Codec.from_pretrained(codec.save_pretrained(tmp_path / "refit"))
    assert torch.equal(loaded.quantizer.encode(latents, 4), after)
