"""audiokit.models.codec: exact lengths, channels, bitrates, causality and safe weight loading."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from audiokit.errors import ModelError, UsageError
from audiokit.models import CONFIGS, Codec

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def speech_codec() -> Codec:
    torch.manual_seed(0)
    return Codec.from_config("speech-16k").eval()


@pytest.fixture(scope="module")
def small_seanet() -> Codec:
    torch.manual_seed(0)
    return Codec.from_config(
        "speech-16k-noncausal",
        causal=True,
        encoder={"n_filters": 8},
        decoder={"n_filters": 8},
        num_quantizers=4,
    ).eval()


@pytest.mark.parametrize("length", [1, 2, 159, 160, 319, 320, 321, 641, 1000, 4799])
def test_decoded_length_is_exact(speech_codec, small_seanet, length):
    x = torch.randn(2, 1, length) * 0.1
    with torch.inference_mode():
        for codec in (speech_codec, small_seanet):
            codes = codec.encode(x)
            assert codes.codes.dtype == torch.int64 and codes.codes.shape[:2] == (2, codec.num_codebooks)
            assert codes.frames == -(-(length + codec.target_delay) // codec.hop_length)
            y = codec.decode(codes)
            assert y.shape == x.shape and torch.isfinite(y).all()


def test_speech_16k_interface(speech_codec):
    assert speech_codec.sample_rate == 16000 and speech_codec.hop_length == 320
    assert speech_codec.frame_rate == 50.0 and speech_codec.codebook_size == 1024
    assert {1500.0, 3000.0, 6000.0} <= set(speech_codec.bitrates)
    assert [speech_codec.n_q_for_bitrate(b) for b in (1500, 3000, 6000)] == [3, 6, 12]
    with pytest.raises(UsageError, match="6000"):
        speech_codec.n_q_for_bitrate(100)
    x = torch.randn(1, 1, 3200) * 0.1
    with torch.inference_mode():
        assert speech_codec.encode(x, 1500).num_codebooks == 3
    assert speech_codec.algorithmic_latency == 320 + speech_codec.target_delay


def test_multichannel_is_coded_per_channel_and_restored(speech_codec):
    x = torch.randn(2, 3, 2000) * 0.1
    with torch.inference_mode():
        codes = speech_codec.encode(x, 3000)
        y = speech_codec.decode(codes)
        assert codes.codes.shape[0] == 6 and codes.channels == 3 and y.shape == x.shape
        # channel 1 of item 1 is coded exactly as it would be alone
        alone = speech_codec.encode(x[1:2, 1:2], 3000)
        assert torch.equal(codes.codes[4], alone.codes[0])
        torch.testing.assert_close(y[1, 1], speech_codec.decode(alone)[0, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("fixture", ["speech_codec", "small_seanet"])
def test_causal_codecs_do_not_look_ahead(request, fixture):
    """Codes and audio that a prefix can determine are identical with or without the future."""
    codec = request.getfixturevalue(fixture)
    hop, delay = codec.hop_length, codec.target_delay
    x = torch.randn(1, 1, 16 * hop) * 0.1
    with torch.inference_mode():
        full = codec.encode(x)
        full_audio = codec.decode(full)
        for n in (3 * hop, 7 * hop + 11):
            prefix = codec.encode(x[..., :n])
            complete = n // hop  # frames whose input lies entirely in the prefix
            assert torch.equal(prefix.codes[..., :complete], full.codes[..., :complete])
            settled = complete * hop - delay
            audio = codec.decode(prefix)
            torch.testing.assert_close(audio[..., :settled], full_audio[..., :settled], atol=1e-5, rtol=0)
    # and the check can fail: a non-causal codec does look ahead
    noncausal = Codec.from_config(
        "speech-16k-noncausal", encoder={"n_filters": 8}, decoder={"n_filters": 8}
    ).eval()
    with torch.inference_mode():
        a = noncausal.encode(x[..., : 4 * hop]).codes[..., :2]
        b = noncausal.encode(x).codes[..., :2]
        assert not torch.equal(a, b) or not torch.equal(
            noncausal.decode(noncausal.encode(x[..., : 4 * hop]))[..., :hop],
            noncausal.decode(noncausal.encode(x))[..., :hop],
        )


def test_training_forward_is_aligned_and_differentiable(small_seanet):
    codec = Codec(small_seanet.config).train()
    x = torch.randn(2, 1, 1600, requires_grad=False) * 0.1
    out = codec(x)
    assert out.audio.shape == x.shape and out.codes.shape == (2, 4, 5)
    (out.audio.square().mean() + out.commitment_loss).backward()
    assert all(p.grad is not None for p in codec.encoder.parameters() if p.requires_grad)


def test_decode_trains_again_and_again_and_reads_inference_codes(small_seanet):
    """The codeword tables decode reads are built without autograd: a second backward through decode
    (gradient accumulation, a decoder fine-tuned on frozen codes), codes made under inference mode,
    and a deep copy of a model that has decoded all work."""
    codec = Codec(small_seanet.config).eval()
    x = torch.randn(1, 1, 1600) * 0.1
    codes = codec.encode(x)
    for _ in range(2):
        codec.decode(codes).square().sum().backward()
    assert all(p.grad is not None for p in codec.decoder.parameters())
    with torch.inference_mode():
        inference_codes = codec.encode(x)
    assert torch.equal(codec.decode(inference_codes).detach(), codec.decode(codes).detach())
    twin = copy.deepcopy(codec)
    with torch.inference_mode():
        assert torch.equal(twin.decode(codes), codec.decode(codes))


def test_weights_edited_through_data_are_seen_after_weights_changed(small_seanet):
    """Edits through ``.data`` bypass the version counters the prepared weights are keyed by:
    ``weights_changed()`` makes the model use them (a twin edited the same way is the reference)."""
    codec, twin = Codec(small_seanet.config).eval(), Codec(small_seanet.config).eval()
    twin.load_state_dict(codec.state_dict())
    x = torch.randn(1, 1, 1600) * 0.1
    codes = codec.encode(x)
    with torch.inference_mode():
        codec.decode(codes)  # prepares (and keeps) the decoder's weights and the codeword tables
    for model in (codec, twin):
        for name, param in model.named_parameters():
            if name.startswith(("decoder.", "quantizer.")):
                param.data.mul_(0.9)
    with torch.inference_mode():
        expected = twin.decode(codes)
        assert not torch.equal(codec.decode(codes), expected)  # what the method is for
        assert torch.equal(codec.weights_changed().decode(codes), expected)


def test_silence_and_clipping_stay_finite(speech_codec):
    with torch.inference_mode():
        for x in (torch.zeros(1, 1, 4000), torch.ones(1, 1, 4000), torch.full((1, 1, 4000), -1.0)):
            assert torch.isfinite(speech_codec.decode(speech_codec.encode(x))).all()


def test_save_and_load_pretrained_round_trip(tmp_path, small_seanet):
    path = small_seanet.save_pretrained(tmp_path / "model.safetensors", extra={"steps": 0})
    loaded = Codec.from_pretrained(path)
    x = torch.randn(1, 1, 1000) * 0.1
    with torch.inference_mode():
        assert torch.equal(loaded.encode(x).codes, small_seanet.encode(x).codes)
    assert loaded.weights_sha256() == small_seanet.weights_sha256()
    assert Codec.from_pretrained(tmp_path).config == small_seanet.config
    # the config's path names the weights beside it (it was read as the weights: "sha256 does not match")
    assert Codec.from_pretrained(path.with_suffix(".json")).weights_sha256() == small_seanet.weights_sha256()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["steps"] == 0 and meta["config"]["name"] == "speech-16k-noncausal"
    # a flipped byte is caught by the sha256 check
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        Codec.from_pretrained(path)


def test_unknown_names_and_missing_files_are_clear(tmp_path):
    with pytest.raises(ModelError, match="known model name"):
        Codec.from_pretrained("no-such-model")
    with pytest.raises(ModelError, match="unknown codec config"):
        Codec.from_config("nope")
    assert set(CONFIGS) >= {"speech-16k", "speech-16k-noncausal", "general-24k"}


def test_seeking_equals_full_decode_also_with_lstm_decoders(tmp_path):
    from audiokit import io
    from audiokit.coding import decode_file, encode_file

    torch.manual_seed(0)
    codec = Codec.from_config(
        "speech-16k-noncausal",
        causal=True,
        encoder={"n_filters": 4},
        decoder={"n_filters": 4, "lstm_layers": 1},
        num_quantizers=2,
        codebook_size=16,
    ).eval()
    assert codec.decoder_context_frames is None  # an LSTM remembers everything: decode from frame 0
    x = torch.randn(1, 16000 * 3) * 0.1
    io.save(tmp_path / "x.wav", x, 16000, subtype="FLOAT")
    weights = codec.weights_sha256()
    encode_file(codec, tmp_path / "x.wav", tmp_path / "x.akc", codec.bitrates[-1], weights)
    decode_file(codec, tmp_path / "x.akc", tmp_path / "full.wav", weights, None, None, None)
    decode_file(codec, tmp_path / "x.akc", tmp_path / "part.wav", weights, 1.5, 0.5, None)
    full, _ = io.load(tmp_path / "full.wav")
    part, _ = io.load(tmp_path / "part.wav")
    assert part.shape == (1, 8000)
    assert (part - full[:, 24000:32000]).abs().max() <= 2 / 32768


def test_sub_config_defaults_are_those_of_the_blocks():
    """The typed encoder/decoder configs cannot drift from the blocks they build."""
    import dataclasses
    import inspect

    from audiokit.models import ISTFTDecoderConfig, SEANetConfig, STFTEncoderConfig
    from audiokit.nn import ISTFTDecoder, SEANetDecoder, SEANetEncoder, STFTEncoder

    pairs = [(SEANetConfig, SEANetEncoder), (SEANetConfig, SEANetDecoder)]
    pairs += [(STFTEncoderConfig, STFTEncoder), (ISTFTDecoderConfig, ISTFTDecoder)]
    for config, block in pairs:
        parameters = inspect.signature(block).parameters
        for f in dataclasses.fields(config):
            assert parameters[f.name].default == f.default, (config.__name__, f.name)


def test_overrides_merge_key_by_key_and_unknown_keys_name_the_closest():
    codec = Codec.from_config(
        "speech-16k", decoder={"n_blocks": 1, "head_hidden_dim": 0}, num_quantizers=2, rate_decoders=()
    )
    decoder = codec.config.decoder
    assert (decoder.n_blocks, decoder.head_hidden_dim, decoder.n_fft, decoder.hidden_dim) == (1, 0, 480, 192)
    assert codec.config.encoder == CONFIGS["speech-16k"].encoder
    with pytest.raises(ModelError, match=r"unknown key 'decoder.n_blokcs'; did you mean 'n_blocks'\?"):
        Codec.from_config("speech-16k", decoder={"n_blokcs": 1})
    with pytest.raises(ModelError, match=r"'decoder.n_blocks' must be int"):
        Codec.from_config("speech-16k", decoder={"n_blocks": "many"})
    # switching the decoder's kind starts it from that kind's defaults
    seanet = Codec.from_config("speech-16k", decoder_type="seanet", decoder={"n_filters": 4}).config
    assert seanet.decoder.n_filters == 4 and seanet.decoder.n_residual_layers == 1


def test_shipped_config_json_loads_to_the_registered_typed_config():
    from audiokit import schema
    from audiokit.models import WEIGHTS_DIR, CodecConfig

    # the shipped JSON names only the keys that differ from the blocks' defaults
    meta = json.loads((WEIGHTS_DIR / "speech-16k.json").read_text())
    config = schema.build(CodecConfig, meta["config"], "speech-16k.json", ModelError)
    assert config == CONFIGS["speech-16k"]
    assert schema.build(CodecConfig, config.to_dict(), "round trip", ModelError) == config


def test_from_pretrained_of_the_base_class_finds_the_family(tmp_path, small_seanet):
    from audiokit import AudioModel

    path = small_seanet.save_pretrained(tmp_path / "model.safetensors")
    assert type(AudioModel.from_pretrained(path)) is Codec
    assert json.loads(path.with_suffix(".json").read_text())["format"] == "audiokit-codec"
