"""The Python API refuses inputs that would give wrong audio (as the CLI does), with shipped models:
integer PCM, numpy arrays, NaN or infinite samples and knobs, codes out of range; and accepts the
shapes and types it documents (float64, raw code tensors, ``(T,)`` and ``(C, T)`` audio)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import run_stream

from audiokit.errors import ModelError, UsageError
from audiokit.io import FLOAT_PEAK_LIMIT
from audiokit.models import AudioModel, BandwidthExtender, Codec, Codes, Enhancer
from audiokit.models.base import check_audio

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.from_pretrained("speech-16k")


@pytest.fixture(scope="module")
def enhancer() -> Enhancer:
    return AudioModel.from_pretrained("enhance-16k")


@pytest.fixture(scope="module")
def bwe() -> BandwidthExtender:
    return AudioModel.from_pretrained("bwe-8to16")


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(1, 1, 1600) * 0.1


def calls(codec, enhancer, bwe) -> dict:
    """Every API entry point that takes audio ``(1, 1, T)``, by name."""
    return {
        "Codec.encode": codec.encode,
        "Enhancer.enhance": enhancer.enhance,
        "BandwidthExtender.extend": lambda x: bwe.extend(x, 16000),
        "BandwidthExtender.extend at 8 kHz": lambda x: bwe.extend(x, 8000),
        "codec roundtrip push": codec.stream(1, "roundtrip").push,
        "codec encode push": codec.stream(1, "encode").push,
        "enhancer push": enhancer.stream(1).push,
        "bwe push": bwe.stream(1, edge_hz=4000.0).push,
        "bwe push at 8 kHz": bwe.stream(1, input_rate=8000).push,
    }


def test_integer_pcm_and_numpy_are_refused(codec, enhancer, bwe, wav):
    pcm = (wav * 32767).round().to(torch.int16)
    for name, call in calls(codec, enhancer, bwe).items():
        with pytest.raises(UsageError, match=r"float torch tensor .* in \[-1, 1\] at \d+ Hz.*int16"):
            call(pcm)
        with pytest.raises(UsageError, match="numpy.ndarray; torch.from_numpy"):
            call(wav.numpy())
        with pytest.raises(UsageError, match="at 8000 Hz" if "8 kHz" in name else "at 16000 Hz"):
            call(pcm.int())


def test_tensors_on_the_meta_device_are_refused(codec, enhancer, bwe, wav):
    """A meta tensor (shape only, no samples) was a RuntimeError from ``Tensor.item()`` in every call."""
    for call in calls(codec, enhancer, bwe).values():
        with pytest.raises(UsageError, match="meta device"):
            call(wav.to("meta"))


@pytest.mark.filterwarnings("error")
def test_audio_that_requires_grad_is_checked_without_a_warning(codec, enhancer, bwe, wav):
    """The finiteness check warned 'Converting a tensor with requires_grad=True to a scalar' for audio
    from an autograd graph (a training loop's output pushed into a session)."""
    for call in calls(codec, enhancer, bwe).values():
        call(wav.clone().requires_grad_())


def test_float64_is_converted(codec, enhancer, bwe, wav):
    assert torch.equal(codec.encode(wav.double()).codes, codec.encode(wav).codes)
    torch.testing.assert_close(enhancer.enhance(wav.double()), enhancer.enhance(wav), atol=1e-6, rtol=0)
    torch.testing.assert_close(bwe.extend(wav.double(), 8000), bwe.extend(wav, 8000), atol=1e-6, rtol=0)
    assert enhancer.enhance(wav.double()).dtype == torch.float32
    session = enhancer.stream(1)
    torch.testing.assert_close(
        run_stream(session, wav.double(), [480]), enhancer.enhance(wav), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_non_finite_samples_are_refused(codec, enhancer, bwe, wav, bad):
    poisoned = wav.clone()
    poisoned[..., 100] = bad
    for call in calls(codec, enhancer, bwe).values():
        with pytest.raises(UsageError, match="NaN or infinite"):
            call(poisoned)


def test_non_finite_samples_anywhere_are_refused_and_loud_ones_up_to_the_files_limit_pass():
    """+inf beside -inf, a lone NaN and inf beside huge values are non-finite; samples up to
    FLOAT_PEAK_LIMIT (+36 dBFS, what files and the server take) are audio."""
    for bad in ([INF, -INF, 0.0, 0.0], [0.0, NAN, 0.0, 0.0], [3e38, 3e38, INF, 0.0], [NAN, 3e38, 0.0, 0.0]):
        with pytest.raises(UsageError, match="NaN or infinite"):
            check_audio(torch.tensor(bad).view(1, 1, 4), "test", 16000)
    loud = torch.tensor([FLOAT_PEAK_LIMIT, -FLOAT_PEAK_LIMIT, 0.5, 0.0]).view(1, 1, 4)
    assert check_audio(loud, "test", 16000) is not None


def test_samples_beyond_the_peak_limit_are_refused(codec, enhancer, bwe, wav):
    """One sample of 1e19 made Enhancer.enhance and BandwidthExtender.extend return NaN (and a stream's
    state stayed NaN for good); the CLI and the server already refused samples beyond +36 dBFS."""
    poisoned = wav.clone()
    poisoned[..., 100] = 1e19
    for call in calls(codec, enhancer, bwe).values():
        with pytest.raises(UsageError, match=r"samples up to 1e\+19 \(\+380 dBFS\), beyond 64"):
            call(poisoned)
    with pytest.raises(UsageError, match="beyond 64"):
        enhancer.stream(1).push(poisoned)


def test_refused_push_leaves_the_session_clean(codec, enhancer, bwe, wav):
    """A NaN chunk never reaches a session's state: the stream goes on as if it had not been pushed."""
    poisoned = torch.full((1, 1, 320), NAN)
    cases = [
        (enhancer.stream(1), enhancer.enhance(wav)),
        (bwe.stream(1, input_rate=8000), bwe.extend(wav, 8000)),
        (codec.stream(1, "roundtrip"), codec.decode(codec.encode(wav))),
    ]
    for session, offline in cases:
        outs = [session.push(wav[..., :640])]
        with pytest.raises(UsageError):
            session.push(poisoned)
        outs += [session.push(wav[..., 640:]), session.flush()]
        torch.testing.assert_close(torch.cat(outs, -1), offline, atol=1e-5, rtol=0)


def test_loud_input_within_the_limit_streams_from_8_khz_as_extend_takes_it(bwe):
    """A chunk at 8 kHz with samples near the limit passed the session's check, but the model session
    behind the upsampler checked the upsampled audio again, whose filter overshoots: "push: samples up
    to 83.66, beyond 64" for audio never pushed, after the filter and queue had taken it, and only for
    chunks off the steady state (whole hops went through)."""
    torch.manual_seed(1)
    loud = (torch.rand(1, 1, 4000) * 2 - 1) * FLOAT_PEAK_LIMIT
    offline = bwe.extend(loud, 8000)
    assert offline.abs().max() > FLOAT_PEAK_LIMIT  # the filter's overshoot
    streamed = run_stream(bwe.stream(1, input_rate=8000), loud, [333, 1, 0, 64])
    torch.testing.assert_close(streamed, offline, atol=1e-5 * FLOAT_PEAK_LIMIT, rtol=0)


def test_an_infinite_attenuation_limit_is_no_limit_everywhere(enhancer, wav):
    """``atten_lim_db=math.inf`` means what ``None`` means (as ``--atten-lim-db inf`` does on the command
    line) in every place the knob is taken: it was refused as not finite in Python."""
    from audiokit.models.enhancer import mix_factor
    from audiokit.streaming.batcher import AudioBatcher

    for limit in (INF, np.float64(INF), torch.tensor(INF)):
        assert mix_factor(limit, 0.25) == mix_factor(None, 0.25) == 0.25
        assert Enhancer.step_options(atten_lim_db=limit) == Enhancer.step_options() == {"mix": 0.0}
        assert torch.equal(enhancer.enhance(wav, atten_lim_db=limit), enhancer.enhance(wav))
        assert torch.equal(
            run_stream(enhancer.stream(1, atten_lim_db=limit), wav, [320]),
            run_stream(enhancer.stream(1), wav, [320]),
        )
        assert AudioBatcher(enhancer, 2, atten_lim_db=limit).step_options == {"mix": 0.0}


def test_non_finite_knobs_are_refused(enhancer, bwe, wav):
    limit = r"atten_lim_db must be a number of dB >= 0 \(None or inf: no limit\)"
    one_line = rf"^({limit}|dry must be in \[0, 1\]), got .*$"
    for knobs in ({"atten_lim_db": NAN}, {"atten_lim_db": -INF}, {"atten_lim_db": -3.0}, {"dry": NAN}):
        with pytest.raises(UsageError, match=one_line):
            enhancer.enhance(wav, **knobs)
        with pytest.raises(UsageError, match=one_line):
            enhancer.stream(1, **knobs)
    for knobs in ({"dry": None}, {"dry": "0.5"}, {"atten_lim_db": "20"}):
        with pytest.raises(UsageError, match="atten_lim_db|dry"):
            enhancer.enhance(wav, **knobs)
    # a 0-d tensor is a number (as numpy's scalars are)
    assert torch.equal(enhancer.enhance(wav, dry=torch.tensor(0.2)), enhancer.enhance(wav, dry=0.2))
    assert torch.equal(
        bwe.extend(wav, 16000, edge_hz=torch.tensor(4000.0)), bwe.extend(wav, 16000, edge_hz=4000.0)
    )
    for edge in (NAN, INF, 0.0, 8000.5, "4000"):
        with pytest.raises(UsageError, match=r"edge_hz must be a frequency in \(0, 8000\] Hz"):
            bwe.stream(1, edge_hz=edge)
        with pytest.raises(UsageError, match=r"edge_hz must be a frequency in \(0, 8000\] Hz"):
            bwe.extend(wav, 16000, edge_hz=edge)
    # at 8 kHz, content stops at 4 kHz at the latest: an edge above extends nothing
    with pytest.raises(UsageError, match=r"edge_hz must be a frequency in \(0, 4000\] Hz"):
        bwe.extend(wav[..., :800], 8000, edge_hz=4001.0)
    with pytest.raises(UsageError, match=r"edge_hz must be a frequency in \(0, 4000\] Hz"):
        bwe.stream(1, input_rate=8000, edge_hz=9000.0)
    with pytest.raises(UsageError, match="needs edge_hz"):
        bwe.stream(1)
    # the edge given to extend is the one a session at the output rate takes
    offline = bwe.extend(wav, 16000, edge_hz=4000.0)
    torch.testing.assert_close(
        run_stream(bwe.stream(1, edge_hz=4000.0), wav, [256]), offline, atol=1e-5, rtol=0
    )


def test_unknown_session_options_name_the_ones_sessions_take(enhancer, bwe):
    with pytest.raises(UsageError, match=r"enhance-16k sessions take no option 'atten'; .*atten_lim_db, dry"):
        enhancer.stream(1, atten=3.0)
    with pytest.raises(UsageError, match=r"bwe-8to16 sessions take no option 'edge'; .*edge_hz"):
        bwe.stream(1, edge=4000.0)
    from audiokit.streaming.batcher import AudioBatcher

    with pytest.raises(UsageError, match=r"take no option 'channels'; they take compile, atten_lim_db, dry$"):
        AudioBatcher(enhancer, 4, channels=2)  # a batcher's streams are one channel each


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_models_converted_to_another_dtype_say_they_run_in_float32(dtype, wav):
    """``.double()`` / ``.half()`` are refused in one clear error at every entry point (they failed deep
    inside with torch's "mat1 and mat2 must have the same dtype")."""
    codec = Codec.from_pretrained("speech-16k")
    codes = codec.encode(wav)
    models = {
        "codec": codec.to(dtype),
        "enhancer": AudioModel.from_pretrained("enhance-16k").to(dtype),
        "bwe": AudioModel.from_pretrained("bwe-8to16").to(dtype),
    }
    entry_points = [
        lambda: models["codec"].encode(wav),
        lambda: models["codec"].decode(codes),
        lambda: models["codec"].stream(1, "decode").push(codes),
        lambda: models["codec"].stream(1, "roundtrip").push(wav),
        lambda: models["enhancer"].enhance(wav),
        lambda: models["bwe"].extend(wav[..., :800], 8000),
    ]
    name = str(dtype).removeprefix("torch.")
    for call in entry_points:
        with pytest.raises(ModelError, match=rf"runs in float32, but its weights are {name}: .*\.float\(\)"):
            call()
    assert torch.isfinite(models["codec"].float().decode(codes)).all()  # back in float32, it runs again


def test_gradients_through_the_extender_stay_finite_on_digital_silence(bwe):
    """A silent frame's level is 0, whose square root has no finite derivative: the input's gradient
    stays finite (the extender chained after a trainable network), and silence stays silent."""
    speech_with_a_gap = torch.randn(1, 1, 8000) * 0.1
    speech_with_a_gap[..., 3000:5000] = 0.0
    for x in (torch.zeros(1, 1, 8000), speech_with_a_gap):
        x = x.clone().requires_grad_(True)
        out = bwe(x, torch.tensor([4000.0]))
        out.square().sum().backward()
        assert torch.isfinite(x.grad).all()
    assert not bwe(torch.zeros(1, 1, 8000), torch.tensor([4000.0])).any()


def test_enhance_and_extend_take_the_same_shapes(enhancer, bwe):
    x = torch.randn(2, 2, 800) * 0.1
    batched = enhancer.enhance(x)
    assert torch.allclose(enhancer.enhance(x[1]), batched[1], atol=1e-6)  # (C, T), as io.load gives
    assert torch.allclose(enhancer.enhance(x[1, 0]), batched[1, 0], atol=1e-6)  # (T,)
    extended = bwe.extend(x, 8000)
    assert extended.shape == (2, 2, 1600)
    assert torch.allclose(bwe.extend(x[1], 8000), extended[1], atol=1e-6)
    assert torch.allclose(bwe.extend(x[1, 0], 8000), extended[1, 0], atol=1e-6)
    for call in (enhancer.enhance, lambda y: bwe.extend(y, 8000)):
        with pytest.raises(UsageError, match=r"\(samples,\), \(channels, samples\) or \(batch"):
            call(x[None])


def test_encode_takes_the_shapes_enhance_and_extend_take_and_decode_gives_them_back(codec):
    """``Codec.encode`` took only ``(B, C, T)``, while ``enhance`` and ``extend`` also take ``(T,)`` and
    ``(C, T)``: now every rank gives the same codes (rows ``B * C``) and ``decode`` the input's shape."""
    x = torch.randn(2, 2, 800) * 0.1
    batched = codec.encode(x, 6000)
    decoded = codec.decode(batched)
    assert decoded.shape == x.shape and batched.codes.shape[0] == 4
    for one, rows in ((x[1], slice(2, 4)), (x[1, 0], slice(2, 3))):  # (C, T), as io.load gives; (T,)
        codes = codec.encode(one, 6000)
        assert torch.equal(codes.codes, batched.codes[rows]) and codes.audio_dims == one.dim()
        audio = codec.decode(codes)
        assert audio.shape == one.shape
        assert torch.equal(audio, decoded[1] if one.dim() == 2 else decoded[1, 0])
        segment = codec.decode_segment(codes, 0, 160, 320)
        assert torch.equal(segment, audio[..., 160:480])
    expected = "Codec.encode takes a float torch tensor (samples,), (channels, samples) or (batch, channels, "
    expected += "samples) of samples in [-1, 1] at 16000 Hz, got shape "
    for bad in (x[0, 0, 0], x[None]):  # 0-D, 4-D
        with pytest.raises(UsageError, match=f"^{re.escape(expected + str(tuple(bad.shape)))}$"):
            codec.encode(bad)
    # codes that say (C, T) or (T,) but hold more items (or channels) than that rank can hold
    for dims, codes in ((2, batched.codes), (1, batched.codes[:2])):
        with pytest.raises(UsageError, match=rf"^Codec.decode: audio_dims is 3 .* got {dims} for "):
            codec.decode(Codes(codes, 800, 2, dims))


def test_decode_takes_raw_codes_as_a_decode_session_does(codec, wav):
    codes = codec.encode(wav)
    raw = codec.decode(codes.codes)
    frames = codes.codes.shape[-1]
    assert raw.shape == (1, 1, frames * codec.hop_length - codec.target_delay)
    torch.testing.assert_close(raw[..., : wav.shape[-1]], codec.decode(codes), atol=1e-6, rtol=0)
    streamed = run_stream(codec.stream(1, "decode"), codes.codes, [3])
    torch.testing.assert_close(streamed, raw, atol=1e-5, rtol=0)
    assert torch.equal(codec.decode(codes.codes.int()), raw)  # any integer type


@pytest.mark.parametrize("bad", [1024, -1])
def test_codes_out_of_range_are_refused(codec, wav, bad):
    codes = codec.encode(wav)
    codes.codes[0, 1, 2] = bad
    for call in (
        codec.decode,
        lambda c: codec.decode(c.codes),
        codec.stream(1, "decode").push,
        lambda c: codec.stream(1, "decode").push(c.codes),
    ):
        with pytest.raises(UsageError, match=r"in 0\.\.1023"):
            call(codes)
    with pytest.raises(UsageError, match=r"integer \(int64\) codes"):
        codec.decode(codes.codes.float())
    with pytest.raises(UsageError, match="length"):
        codec.decode(Codes(codes.codes.clamp(0, 1023), 10**6))


def test_raw_codes_of_one_frame_decode_to_what_a_session_gives(codec, wav):
    """``frames * hop_length - target_delay`` samples: none for one frame of speech-16k (its decoder
    lags by a whole frame); the reshape to ``(rows, 1, 0)`` failed."""
    one = codec.encode(wav).codes[..., :1]
    session = codec.stream(1, "decode")
    streamed = torch.cat([session.push(one), session.flush()], -1)
    assert codec.target_delay == codec.hop_length
    assert codec.decode(one).shape == streamed.shape == (1, 1, 0)


def test_codes_without_frames_are_refused(codec, wav):
    empty = codec.encode(wav).codes[..., :0]
    for codes in (empty, Codes(empty, 1)):
        with pytest.raises(UsageError, match=r"decode: the codes hold no frames, got shape \(1, 12, 0\)"):
            codec.decode(codes)


def test_decode_segment_needs_no_gradients(codec, wav):
    """Seeking decodes without autograd; ``decode`` keeps gradients (tests train through it)."""
    codes = codec.encode(wav)
    segment = codec.decode_segment(codes, 0, 160, 800)
    assert not segment.requires_grad and segment.numpy().shape == (1, 1, 800)
    with torch.inference_mode():
        full = codec.decode(codes)
    torch.testing.assert_close(segment, full[..., 160:960], atol=1e-6, rtol=0)
    segment += 1.0  # an ordinary tensor, not an inference one: it can be written in place


def test_decode_segment_refuses_samples_the_frames_do_not_cover(codec, wav):
    """Samples before 0 are not in the signal (the decoder's first ``target_delay`` samples were
    returned for them), nor are samples past the frames."""
    codes = codec.encode(wav)
    for start, length in ((-5, 10), (-1, 1), (1500, 500)):
        with pytest.raises(UsageError, match=rf"do not cover samples \[{start}, {start + length}\)"):
            codec.decode_segment(codes, 0, start, length)


def test_docstrings_name_rate_and_shapes():
    assert "sample_rate" in Codec.encode.__doc__
    for method in (Codec.encode, Enhancer.enhance, BandwidthExtender.extend):
        assert "(batch, channels, samples)" in method.__doc__
        assert "(samples,)" in method.__doc__ and "(channels, samples)" in method.__doc__
    assert "Float64" in Codec.encode.__doc__ and "Float64" in Enhancer.enhance.__doc__


def test_models_are_exported(enhancer, bwe):
    assert isinstance(enhancer, Enhancer) and isinstance(bwe, BandwidthExtender)


def test_every_model_family_imports_from_the_package_as_codec_does():
    """``from audiokit import Codec`` worked (the package docstring's example) and ``from audiokit import
    Enhancer`` was an ImportError."""
    import audiokit

    assert (audiokit.Enhancer, audiokit.BandwidthExtender, audiokit.Codec) == (
        Enhancer,
        BandwidthExtender,
        Codec,
    )
    assert {"AudioModel", "BandwidthExtender", "Codec", "Codes", "Enhancer"} <= set(audiokit.__all__)


def test_audio_sessions_and_their_batcher_are_exported_beside_the_codecs(enhancer):
    """docs/streaming.md names AudioBatcher beside MultiStreamBatcher; only the latter was in
    audiokit.streaming."""
    import audiokit.streaming as streaming

    assert isinstance(enhancer.stream(1), streaming.AudioStream)
    assert {"AudioBatcher", "AudioStream", "MultiStreamBatcher"} <= set(streaming.__all__)
    assert streaming.AudioBatcher(enhancer, 2).capacity == 2


def test_inference_calls_leave_the_models_mode_as_it_was(enhancer, bwe, wav):
    """enhance() and extend() ran in eval mode and left the model there: called inside a training loop
    they switched dropout off for the rest of it."""
    for model, call in ((enhancer, enhancer.enhance), (bwe, lambda x: bwe.extend(x, bwe.sample_rate))):
        model.train()
        try:
            call(wav)
            assert model.training and all(m.training for m in model.modules())
        finally:
            model.eval()
        call(wav)
        assert not model.training


def test_reset_takes_numpy_and_torch_indices_and_names_a_bad_one(codec, enhancer, bwe, wav):
    """``reset(np.int64(1))`` and ``reset(torch.tensor(1))`` failed with "'int' object is not iterable"
    style TypeErrors in every session; a float index now gets a UsageError."""
    sessions = [codec.stream(2), enhancer.stream(2), bwe.stream(2, input_rate=bwe.sample_rate // 2)]
    for session in sessions:
        for rows in (np.int64(1), torch.tensor(1), torch.tensor([0, 1]), np.array([1])):
            session.reset(rows)
        for bad, problem in ((1.5, "an index or a sequence"), (2, "out of range 0..1"), ([0, -1], "-1 out")):
            with pytest.raises(UsageError, match=problem):
                session.reset(bad)


def test_session_sizes_and_weight_precisions_are_checked(codec, enhancer):
    """``stream(1.5)`` and ``set_weight_precision("bad")`` were a TypeError and a ValueError."""
    for make in (codec.stream, enhancer.stream):
        assert make(np.int64(2)).batch_size == 2
        for bad in (1.5, 0, "2"):
            with pytest.raises(UsageError, match="whole number"):
                make(bad)
    with pytest.raises(UsageError, match="weight precision 'bad'"):
        enhancer.copy_with_weight_precision("bad")


def test_every_session_takes_false_and_none_for_no_compilation(codec, enhancer, bwe, wav):
    """A codec session refused ``compile=None`` and the audio sessions ``compile=False``, each the
    other's default, so code written for one family failed on the other."""
    from audiokit.streaming.batcher import AudioBatcher, MultiStreamBatcher

    for off in (False, None):
        sessions = {
            "codec": codec.stream(1, "roundtrip", compile=off),
            "enhancer": enhancer.stream(1, compile=off),
            "bwe": bwe.stream(1, edge_hz=4000.0, compile=off),
            "bwe at 8 kHz": bwe.stream(1, input_rate=8000, compile=off),
        }
        for name, session in sessions.items():
            assert not (
                session.compiled if isinstance(session.compiled, bool) else any(session.compiled.values())
            )
            assert run_stream(session, wav, [700, 900]).shape[-1] == (3200 if "8 kHz" in name else 1600)
        assert not AudioBatcher(enhancer, 2, compile=off).compiled
        MultiStreamBatcher(codec, 2, compile=off)
    with pytest.raises(UsageError, match="compile must be None"):
        enhancer.stream(1, compile="jit")
