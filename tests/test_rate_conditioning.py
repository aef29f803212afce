"""A rate-conditioned codec: its decoder input is scaled and shifted per number of codebooks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY_SPEECH_CODEC, run_stream

from audiokit.errors import ModelError
from audiokit.models import Codec
from audiokit.models.growth import add_rate_conditioning, grow_to

BITRATES = (1500, 3000, None)  # 3, 6 and 12 codebooks


def _plain() -> Codec:
    torch.manual_seed(4)
    return Codec.from_config("speech-16k", **TINY_SPEECH_CODEC).eval()


def _conditioned() -> Codec:
    """A rate-conditioned tiny codec whose scales and shifts differ from the identity for every rate."""
    codec = add_rate_conditioning(_plain()).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        codec.rate_scale.copy_(1 + 0.5 * torch.randn(codec.rate_scale.shape, generator=generator))
        codec.rate_shift.copy_(0.3 * torch.randn(codec.rate_shift.shape, generator=generator))
    return codec


def _audio(rows: int = 2, length: int = 5000) -> torch.Tensor:
    return torch.randn(rows, 1, length, generator=torch.Generator().manual_seed(6)) * 0.3


def test_added_conditioning_starts_as_the_identity():
    plain = _plain()
    conditioned = add_rate_conditioning(plain).eval()
    assert conditioned.config.rate_conditioned and not plain.config.rate_conditioned
    assert conditioned.codes_sha256() == plain.codes_sha256()  # the same code space: files stay valid
    x = _audio()
    with torch.inference_mode():
        for bitrate in BITRATES:
            codes = plain.encode(x, bitrate)
            assert torch.equal(conditioned.encode(x, bitrate).codes, codes.codes)
            assert torch.equal(conditioned.decode(codes), plain.decode(codes))


def test_each_rate_decodes_through_its_own_scale_and_shift():
    codec = _conditioned()
    x = _audio()
    with torch.inference_mode():
        for bitrate in BITRATES:
            codes = codec.encode(x, bitrate)
            n_q = codes.codes.shape[1]
            latent = codec.quantizer.decode(codes.codes)
            expected = codec.decoder(
                latent * codec.rate_scale[n_q - 1, :, None] + codec.rate_shift[n_q - 1, :, None]
            )
            delay = codec.target_delay
            expected = expected[..., delay : delay + x.shape[-1]]
            torch.testing.assert_close(codec.decode(codes), expected, rtol=0, atol=1e-6)
            unconditioned = codec.decoder(latent)[..., delay : delay + x.shape[-1]]
            assert not torch.allclose(codec.decode(codes), unconditioned, atol=1e-3)


@pytest.mark.parametrize("bitrate", BITRATES)
def test_conditioned_streams_equal_offline(bitrate):
    codec = _conditioned()
    x = _audio(3, 7000)
    with torch.inference_mode():
        codes = codec.encode(x, bitrate)
        audio = codec.decode(codes)
    chunks = [900, 1, 2500, 333]
    assert torch.equal(run_stream(codec.stream(3, "encode", bitrate), x, chunks), codes.codes)
    roundtrip = run_stream(codec.stream(3, "roundtrip", bitrate), x, chunks)
    torch.testing.assert_close(roundtrip, audio, rtol=0, atol=1e-5)
    decoded = run_stream(codec.stream(3, "decode", length=x.shape[-1]), codes.codes, [1, 4, 7, 2])
    torch.testing.assert_close(decoded, audio, rtol=0, atol=1e-5)
    # the streams really condition: without it they would be far off
    assert not torch.allclose(decoded, _plain().decode(codes), atol=1e-3)


def test_training_conditions_each_item_on_the_codebooks_it_kept():
    config = dataclasses.replace(_conditioned().config, quantizer_dropout=1.0, quantizer_dropout_choices=(2,))
    codec = Codec(config).train()
    codec.load_state_dict(_conditioned().state_dict())
    codec(_audio(4, 3200)).audio.square().mean().backward()
    used = codec.rate_scale.grad.abs().sum(1) > 0
    assert used.tolist() == [n_q == 2 for n_q in range(1, 13)]  # every item dropped to 2 codebooks
    assert codec.rate_shift.grad[1].abs().sum() > 0


def test_conditioning_survives_saving_and_growth_keeps_it(tmp_path):
    codec = _conditioned()
    loaded = Codec.from_pretrained(codec.save_pretrained(tmp_path / "conditioned")).eval()
    assert loaded.config.rate_conditioned
    x = _audio()
    with torch.inference_mode():
        codes = codec.encode(x, 3000)
        assert torch.equal(loaded.decode(codes), codec.decode(codes))
    # growing a conditioned decoder keeps the scales and shifts; the switch cannot be turned off
    bigger = dataclasses.replace(codec.config, decoder=dataclasses.replace(codec.config.decoder, n_blocks=2))
    grown = grow_to(codec, bigger).eval()
    assert torch.equal(grown.rate_scale, codec.rate_scale)
    with torch.inference_mode():
        torch.testing.assert_close(grown.decode(codes), codec.decode(codes), rtol=0, atol=1e-6)
    with pytest.raises(ModelError, match="rate-conditioned"):
        grow_to(codec, dataclasses.replace(codec.config, rate_conditioned=False))
    # and an unconditioned codec grows and gains conditioning in one step
    plain = _plain()
    both = grow_to(plain, dataclasses.replace(bigger, quantizer_dropout_choices=(3, 6))).eval()
    assert both.config.rate_conditioned and len(both.decoder.blocks) == 2
    with torch.inference_mode():
        codes = plain.encode(x, 1500)
        torch.testing.assert_close(both.decode(codes), plain.decode(codes), rtol=0, atol=1e-6)
