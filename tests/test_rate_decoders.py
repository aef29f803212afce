"""Decoders of a bitrate's own: a codec decodes codes of ``n`` codebooks with ``rate_decoders[n]``."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY_SPEECH_CODEC, run_stream

from audiokit.errors import ModelError
from audiokit.models import Codec
from audiokit.models.growth import add_rate_decoders, grow_to
from audiokit.streaming import compiled

OWN = (3, 6)  # 1.5 and 3 kbps have decoders of their own; every other rate uses the shared one
BITRATES = (1500, 2000, 3000, None)  # 3, 4, 6 and 12 codebooks


def _plain(seed: int = 4) -> Codec:
    torch.manual_seed(seed)
    return Codec.from_config("speech-16k", **TINY_SPEECH_CODEC).eval()


def _perturbed(decoder: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))


def _with_own_decoders() -> Codec:
    """A tiny codec whose decoders for 3 and 6 codebooks differ from its shared one and each other."""
    codec = add_rate_decoders(_plain(), OWN).eval()
    for i, n in enumerate(OWN):
        _perturbed(codec.rate_decoders[str(n)], 10 + i)
    return codec


def _audio(rows: int = 2, length: int = 5000) -> torch.Tensor:
    return torch.randn(rows, 1, length, generator=torch.Generator().manual_seed(6)) * 0.3


def _reference(codec: Codec, decoder: torch.nn.Module, codes, length: int) -> torch.Tensor:
    """``decoder``'s audio of ``codes``, aligned and cut as :meth:`Codec.decode` does."""
    audio = decoder(codec.quantizer.decode(codes.codes))
    return audio[..., codec.target_delay : codec.target_delay + length]


def test_added_decoders_start_as_copies_of_the_shared_one():
    plain = _plain()
    codec = add_rate_decoders(plain, OWN).eval()
    assert codec.config.rate_decoders == OWN and sorted(codec.rate_decoders) == ["3", "6"]
    assert codec.codes_sha256() == plain.codes_sha256()  # the same code space: files stay valid
    x = _audio()
    with torch.inference_mode():
        for bitrate in BITRATES:
            codes = plain.encode(x, bitrate)
            assert torch.equal(codec.encode(x, bitrate).codes, codes.codes)
            assert torch.equal(codec.decode(codes), plain.decode(codes))


def test_each_rate_decodes_with_its_own_decoder():
    codec = _with_own_decoders()
    x = _audio()
    with torch.inference_mode():
        for bitrate in BITRATES:
            codes = codec.encode(x, bitrate)
            n_q = codes.codes.shape[1]
            own = codec.rate_decoders[str(n_q)] if n_q in OWN else codec.decoder
            assert codec.decoder_for(n_q) is own
            expected = _reference(codec, own, codes, x.shape[-1])
            torch.testing.assert_close(codec.decode(codes), expected, rtol=0, atol=1e-6)
            if n_q in OWN:  # really another decoder: the shared one is far off
                shared = _reference(codec, codec.decoder, codes, x.shape[-1])
                assert not torch.allclose(codec.decode(codes), shared, atol=1e-3)
            segment = codec.decode_segment(codes, 0, 1000, 2000)
            torch.testing.assert_close(segment, expected[..., 1000:3000], rtol=0, atol=1e-5)


@pytest.mark.parametrize("bitrate", (1500, 2000, 3000))
def test_own_decoders_stream_as_offline(bitrate):
    codec = _with_own_decoders()
    x = _audio(3, 7000)
    with torch.inference_mode():
        codes = codec.encode(x, bitrate)
        audio = codec.decode(codes)
    roundtrip = run_stream(codec.stream(3, "roundtrip", bitrate), x, [900, 1, 2500, 333])
    torch.testing.assert_close(roundtrip, audio, rtol=0, atol=1e-5)
    # a decode session learns the number of codebooks from the first codes pushed
    decoded = run_stream(codec.stream(3, "decode", length=x.shape[-1]), codes.codes, [1, 4, 7, 2])
    torch.testing.assert_close(decoded, audio, rtol=0, atol=1e-5)
    # and from a saved state, before any codes: the state continues with the rate's decoder
    first = codec.stream(3, "decode", length=x.shape[-1])
    head = first.push(codes.codes[..., :9])
    second = codec.stream(3, "decode", length=x.shape[-1])
    second.load_state_dict(first.state_dict())
    assert second.decoder is codec.decoder_for(codes.codes.shape[1])
    tail = run_stream(second, codes.codes[..., 9:], [5])
    torch.testing.assert_close(torch.cat([head, tail], -1), audio, rtol=0, atol=1e-5)


def test_training_sends_each_item_through_the_decoder_of_its_codebooks():
    base = _with_own_decoders()
    config = dataclasses.replace(base.config, quantizer_dropout=1.0, quantizer_dropout_choices=(3, 4, 6))
    codec = Codec(config).train()
    codec.load_state_dict(base.state_dict())
    seen = []
    codec.quantizer.register_forward_hook(lambda module, args, result: seen.append(result))
    torch.manual_seed(0)
    x = _audio(12, 3200)
    out = codec(x)
    stages, quantized = seen[0].stages, seen[0].quantized.detach()
    assert set(stages.tolist()) == {3, 4, 6}  # the batch mixes the rates
    out.audio.square().mean().backward()
    for name, decoder in [("shared", codec.decoder), *codec.rate_decoders.items()]:
        grads = [p.grad.abs().sum() for p in decoder.parameters() if p.grad is not None]
        assert grads and sum(grads) > 0, name  # each decoder trained on its items
    with torch.no_grad():  # each item's audio is its own decoder's, whatever the others drew
        for row, n_q in enumerate(stages.tolist()):
            expected = codec.decoder_for(n_q)(quantized[row : row + 1])
            expected = expected[..., codec.target_delay : codec.target_delay + x.shape[-1]]
            torch.testing.assert_close(out.audio[row : row + 1], expected, rtol=0, atol=1e-5)


def test_own_decoders_survive_saving_and_come_from_donors(tmp_path):
    codec = _with_own_decoders()
    loaded = Codec.from_pretrained(codec.save_pretrained(tmp_path / "own")).eval()
    assert loaded.config.rate_decoders == OWN
    x = _audio()
    with torch.inference_mode():
        codes = codec.encode(x, 1500)
        assert torch.equal(loaded.decode(codes), codec.decode(codes))
    # a donor: the same codes, its shared decoder trained on (here: perturbed) for 3 codebooks
    plain = _plain()
    donor = _plain()
    _perturbed(donor.decoder, 20)
    merged = add_rate_decoders(plain, (3,), {3: donor}).eval()
    with torch.inference_mode():
        codes = plain.encode(x, 1500)
        torch.testing.assert_close(merged.decode(codes), donor.decode(codes), rtol=0, atol=0)
        codes = plain.encode(x, 3000)
        assert torch.equal(merged.decode(codes), plain.decode(codes))
    with pytest.raises(ModelError, match="other codes"):
        add_rate_decoders(plain, (3,), {3: _plain(seed=9)})
    with pytest.raises(ModelError, match="not among"):
        add_rate_decoders(plain, (3,), {6: donor})
    # grow_to adds decoders (copies of the shared one) and never drops them
    grown = grow_to(merged, dataclasses.replace(merged.config, rate_decoders=(3, 6))).eval()
    with torch.inference_mode():
        for bitrate in (1500, 3000):
            codes = plain.encode(x, bitrate)
            assert torch.equal(grown.decode(codes), merged.decode(codes))
    with pytest.raises(ModelError, match="decoders for"):
        grow_to(merged, dataclasses.replace(merged.config, rate_decoders=()))


@pytest.mark.parametrize("value", [(6, 3), (0,), (13,), (3, 3)])
def test_rate_decoders_must_be_increasing_codebook_counts(value):
    with pytest.raises(ModelError, match="rate_decoders"):
        Codec.from_config("speech-16k", **{**TINY_SPEECH_CODEC, "rate_decoders": value})


def test_compiled_decode_session_runs_the_decoder_of_its_rate():
    """AOTInductor libraries are cached by what they compute: the shared decoder's library (built first,
    before the codes say the rate) must not stand in for the rate's own decoder, of the same shapes."""
    codec = _with_own_decoders()
    x = _audio(2, 4000)
    with torch.inference_mode():
        codes = codec.encode(x, 1500)
        audio = codec.decode(codes)
    session = codec.stream(2, "decode", length=x.shape[-1], compile="aoti")
    decoded = run_stream(session, codes.codes, [1, 3])
    assert session.compiled["decoder"], compiled.unavailable_reason()
    torch.testing.assert_close(decoded, audio, rtol=0, atol=1e-5)
