"""Function-preserving decoder growth: a grown codec decodes exactly as the one it grew from."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY_SPEECH_CODEC

from audiokit.errors import ModelError
from audiokit.models import Codec
from audiokit.models.growth import grow_decoder, grow_to


def _trained_like_codec() -> Codec:
    """A tiny codec with random weights everywhere, layer scales included (as after training)."""
    torch.manual_seed(1)
    codec = Codec.from_config("speech-16k", **TINY_SPEECH_CODEC).eval()
    with torch.no_grad():
        for block in codec.decoder.blocks:
            block.gamma.normal_()
    return codec


def test_grown_decoder_decodes_the_same_samples():
    codec = _trained_like_codec()
    grown = grow_decoder(codec, n_blocks=3, intermediate_dim=80, head_hidden_dim=24).eval()
    assert len(grown.decoder.blocks) == 3
    assert grown.decoder.blocks[0].pwconv1.out_features == 80
    assert grown.decoder.head.mlp[0].out_features == 24
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in codec.parameters())
    audio = torch.randn(2, 1, 4000) * 0.2
    with torch.no_grad():
        codes = codec.encode(audio)
        assert torch.equal(codes.codes, grown.encode(audio).codes)
        reference = codec.decode(codes)
        torch.testing.assert_close(grown.decode(codes), reference, rtol=0, atol=1e-6)
        # the growth is not a no-op: the new units are live, once their output weights move
        for layer in (grown.decoder.blocks[0].pwconv2, grown.decoder.head.mlp[2]):
            saved = layer.weight.clone()
            layer.weight[:, -1] = 1.0
            assert not torch.allclose(grown.decode(codes), reference, atol=1e-4)
            layer.weight.copy_(saved)
        # and it grows again from a grown decoder (a widened head MLP)
        regrown = grow_decoder(grown, head_hidden_dim=40).eval()
        torch.testing.assert_close(regrown.decode(codes), reference, rtol=0, atol=1e-6)


def test_new_capacity_receives_gradient():
    grown = grow_decoder(_trained_like_codec(), n_blocks=2, intermediate_dim=48, head_hidden_dim=8).train()
    grown(torch.randn(1, 1, 3200) * 0.2).audio.square().mean().backward()
    new_block, widened = grown.decoder.blocks[1], grown.decoder.blocks[0]
    assert new_block.gamma.grad.abs().sum() > 0
    assert widened.pwconv2.weight.grad[:, 32:].abs().sum() > 0
    assert grown.decoder.head.mlp[2].weight.grad.abs().sum() > 0


def test_grow_to_refuses_what_is_not_a_larger_decoder():
    codec = _trained_like_codec()
    assert grow_to(codec, codec.config) is codec
    bigger = dataclasses.replace(codec.config, decoder=dataclasses.replace(codec.config.decoder, n_blocks=2))
    assert len(grow_to(codec, bigger).decoder.blocks) == 2
    with pytest.raises(ModelError, match="differs"):
        grow_to(codec, dataclasses.replace(bigger, latent_dim=8))
    with pytest.raises(ModelError, match="differs"):
        grow_to(
            codec,
            dataclasses.replace(
                codec.config, decoder=dataclasses.replace(codec.config.decoder, hidden_dim=24)
            ),
        )
    with pytest.raises(ModelError, match="shrink"):
        grow_decoder(grow_to(codec, bigger), n_blocks=1)
    with pytest.raises(ModelError, match="cannot grow hidden_dim"):
        grow_decoder(codec, hidden_dim=32)
