"""audiokit.streaming: streaming == offline for any chunking, resets, moved state, many streams, latency."""

from __future__ import annotations

import io
import random
import shutil
import tracemalloc

import numpy as np
import pytest
import torch
from conftest import run_stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from audiokit.bitstream import AkcHeader, AkcReader, AkcWriter
from audiokit.errors import ModelError, UsageError
from audiokit.models import BandwidthExtender, Codec, Codes
from audiokit.models.enhancer import Enhancer
from audiokit.nn import CausalISTFTHead, StreamableConv1d, StreamableConvTranspose1d, StreamableLSTM
from audiokit.nn.streaming import PIECE_INPUTS, StreamingSequential, matmul_rows
from audiokit.streaming import MultiStreamBatcher, StepTimer, encode_to_akc, measure_latency
from audiokit.streaming.batcher import AudioBatcher

torch.set_num_threads(1)
ATOL = 1e-5
PROPERTY = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _speech() -> Codec:
    torch.manual_seed(0)
    return Codec.from_config("speech-16k").eval()


def _seanet_lstm() -> Codec:
    """A small causal SEANet codec with LSTMs on both sides (covers transposed convs and LSTM state)."""
    torch.manual_seed(1)
    return Codec.from_config(
        "speech-16k-noncausal",
        causal=True,
        encoder={"n_filters": 8, "lstm_layers": 1},
        decoder={"n_filters": 8, "lstm_layers": 1},
        num_quantizers=6,
    ).eval()


def _tiny_istft() -> Codec:
    torch.manual_seed(2)
    codec = Codec.from_config(
        "speech-16k",
        encoder={"hidden_dim": 16, "intermediate_dim": 32, "n_blocks": 2},
        decoder={
            "n_fft": 480,
            "istft_hop": 160,
            "hidden_dim": 16,
            "intermediate_dim": 32,
            "n_blocks": 2,
            "head_hidden_dim": 24,
        },
        num_quantizers=4,
        rate_decoders=(),
    )
    torch.nn.init.normal_(codec.decoder.head.mlp[2].weight, std=0.05)  # the head's MLP starts silent
    return codec.eval()


CODECS = {"speech-16k": _speech(), "seanet-lstm": _seanet_lstm(), "tiny-istft": _tiny_istft()}


def offline(codec: Codec, x: torch.Tensor, bitrate=None):
    with torch.inference_mode():
        codes = codec.encode(x, bitrate)
        return codes, codec.decode(codes)


# ------------------------------------------------------------------ the property: streaming == offline
@pytest.mark.parametrize("name", list(CODECS))
@PROPERTY
@given(
    length=st.integers(1, 9000),
    chunks=st.lists(st.integers(1, 4000), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)
def test_streaming_equals_offline_for_random_chunkings(name, length, chunks, seed):
    codec = CODECS[name]
    x = torch.randn(2, 1, length, generator=torch.Generator().manual_seed(seed)) * 0.3
    codes, audio = offline(codec, x)
    streamed_codes = run_stream(codec.stream(2, "encode"), x, chunks)
    assert torch.equal(streamed_codes, codes.codes)
    streamed = run_stream(codec.stream(2, "roundtrip"), x, chunks)
    assert streamed.shape == audio.shape
    torch.testing.assert_close(streamed, audio, rtol=0, atol=ATOL)
    frame_chunks = [1 + c % 9 for c in chunks]
    decoded = run_stream(codec.stream(2, "decode", length=length), codes.codes, frame_chunks)
    torch.testing.assert_close(decoded, audio, rtol=0, atol=ATOL)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    length=st.integers(1, 40000),
    chunks=st.lists(st.integers(1, 4000), min_size=1, max_size=30),
    bitrate=st.sampled_from([None, 1500, 3000]),
)
def test_speech_16k_roundtrip_random_chunkings_long(length, chunks, bitrate):
    codec = CODECS["speech-16k"]
    x = torch.randn(1, 1, length) * 0.3
    codes, audio = offline(codec, x, bitrate)
    assert torch.equal(run_stream(codec.stream(1, "encode", bitrate), x, chunks), codes.codes)
    streamed = run_stream(codec.stream(1, "roundtrip", bitrate), x, chunks)
    torch.testing.assert_close(streamed, audio, rtol=0, atol=ATOL)


def test_single_samples_and_every_length_near_frame_edges():
    codec = CODECS["tiny-istft"]
    hop = codec.hop_length
    for length in (1, hop - 1, hop, hop + 1, 2 * hop - 1, 3 * hop + 7):
        x = torch.randn(1, 1, length) * 0.3
        codes, audio = offline(codec, x)
        assert torch.equal(run_stream(codec.stream(1, "encode"), x, [1]), codes.codes)
        torch.testing.assert_close(run_stream(codec.stream(1, "roundtrip"), x, [1]), audio, rtol=0, atol=ATOL)


def test_push_returns_frames_as_they_complete():
    codec = CODECS["speech-16k"]
    hop, delay = codec.hop_length, codec.target_delay
    session = codec.stream(1, "encode")
    assert session.push(torch.zeros(1, 1, hop - 1)).shape == (1, 12, 0)
    assert session.push(torch.zeros(1, 1, 1)).shape == (1, 12, 1)
    assert session.push(torch.zeros(1, 1, 2 * hop + 5)).shape == (1, 12, 2)
    roundtrip = codec.stream(1, "roundtrip")
    assert roundtrip.push(torch.zeros(1, 1, hop)).shape[-1] == hop - delay
    assert roundtrip.push(torch.zeros(1, 1, hop)).shape[-1] == hop


def test_inference_mode_no_grad_and_plain_give_the_same():
    codec = CODECS["seanet-lstm"]
    x = torch.randn(1, 1, 2345) * 0.3
    _, audio = offline(codec, x)
    plain = run_stream(codec.stream(1, "roundtrip"), x, [700, 33])
    with torch.inference_mode():
        inference = run_stream(codec.stream(1, "roundtrip"), x, [700, 33])
    with torch.no_grad():
        no_grad = run_stream(codec.stream(1, "roundtrip"), x, [700, 33])
    for y in (plain, inference, no_grad):
        torch.testing.assert_close(y, audio, rtol=0, atol=ATOL)


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("cc")), reason="torch.compile needs a C++ compiler"
)
def test_compiled_streaming_equals_offline():
    codec = CODECS["tiny-istft"]
    x = torch.randn(1, 1, 3000) * 0.3
    codes, audio = offline(codec, x)
    streamed = run_stream(codec.stream(1, "roundtrip", compile=True), x, [320])
    torch.testing.assert_close(streamed, audio, rtol=0, atol=ATOL)


def test_multichannel_items_are_coded_per_channel():
    codec = CODECS["tiny-istft"]
    x = torch.randn(2, 3, 1500) * 0.3
    codes, audio = offline(codec, x)
    assert torch.equal(run_stream(codec.stream(2, "encode", channels=3), x, [333]), codes.codes)
    streamed = run_stream(codec.stream(2, "roundtrip", channels=3), x, [333])
    torch.testing.assert_close(streamed, audio, rtol=0, atol=ATOL)
    session = codec.stream(2, "decode", channels=3)
    decoded = torch.cat([session.push(codes), session.flush()], -1)  # a whole Codes object at once
    torch.testing.assert_close(decoded, audio, rtol=0, atol=ATOL)


# ------------------------------------------------------------------ decode sessions and lengths
def test_decode_length_from_codes_object_or_argument_or_whole_frames():
    codec = CODECS["speech-16k"]
    x = torch.randn(1, 1, 1000) * 0.3
    codes, audio = offline(codec, x)
    session = codec.stream(1, "decode")
    from_object = torch.cat([session.push(codes), session.flush()], -1)  # Codes carries length 1000
    torch.testing.assert_close(from_object, audio, rtol=0, atol=ATOL)
    whole = run_stream(codec.stream(1, "decode"), codes.codes, [1])
    assert whole.shape[-1] == codes.frames * codec.hop_length - codec.target_delay
    torch.testing.assert_close(whole[..., :1000], audio, rtol=0, atol=ATOL)
    with pytest.raises(UsageError, match="length"):
        run_stream(codec.stream(1, "decode", length=codes.frames * codec.hop_length), codes.codes, [1])


# ------------------------------------------------------------------ reset and moving a live stream
def test_reset_restarts_chosen_rows_without_disturbing_the_others():
    codec = CODECS["seanet-lstm"]
    a, b, c = (torch.randn(1, 1, 3000) * 0.3 for _ in range(3))
    fresh = torch.randn(1, 1, 1766) * 0.3
    for mode in ("encode", "roundtrip"):
        session = codec.stream(3, mode)
        outputs = [session.push(torch.cat([a, b, c])[..., :1234])]
        session.reset([1])  # row 1 drops stream b and starts stream `fresh` with the next push
        joined = torch.cat([a[..., 1234:], fresh, c[..., 1234:]])
        outputs += [session.push(joined[..., i : i + 777]) for i in range(0, 1766, 777)]
        tail = session.flush()
        rows = [
            torch.cat([out[r] for out in outputs] + [tail[r, ..., : session.lengths[r]]], -1) for r in (0, 2)
        ]
        restarted = torch.cat([out[1] for out in outputs[1:]] + [tail[1, ..., : session.lengths[1]]], -1)
        for got, signal in ((rows[0], a), (rows[1], c), (restarted, fresh)):
            codes, audio = offline(codec, signal)
            if mode == "encode":
                assert torch.equal(got, codes.codes[0])
            else:
                torch.testing.assert_close(got, audio[0], rtol=0, atol=ATOL)


def test_state_dict_moves_a_live_stream_to_another_session():
    codec = CODECS["speech-16k"]
    x = torch.randn(2, 1, 5000) * 0.3
    _, audio = offline(codec, x)
    first = codec.stream(2, "roundtrip")
    head = first.push(x[..., :2222])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = codec.stream(2, "roundtrip")
    second.load_state_dict(torch.load(buffer, weights_only=True))
    rest = run_stream(second, x[..., 2222:], [1000])
    torch.testing.assert_close(torch.cat([head, rest], -1), audio, rtol=0, atol=ATOL)
    with pytest.raises(UsageError, match="does not fit"):
        codec.stream(2, "encode").load_state_dict(first.state_dict())


def test_state_dict_moves_a_live_decode_stream_to_a_fresh_session():
    """A decode session learns its codebook count from the first codes: a fresh one takes the saved."""
    codec = CODECS["tiny-istft"]
    x = torch.randn(2, 1, 3000) * 0.3
    codes, audio = offline(codec, x, 1500)
    first = codec.stream(2, "decode", length=3000)
    head = first.push(codes.codes[..., :4])
    second = codec.stream(2, "decode")
    second.load_state_dict(first.state_dict())
    with pytest.raises(UsageError, match="started with 3"):  # refused, and nothing changes
        second.push(codes.codes[:, [0, 1, 2, 0], :2])  # 4 codebooks (the codec's all), not the saved 3
    rest = run_stream(second, codes.codes[..., 4:], [3])
    torch.testing.assert_close(torch.cat([head, rest], -1), audio, rtol=0, atol=ATOL)
    with pytest.raises(UsageError, match="does not fit"):
        codec.stream(2, "decode").load_state_dict({**first.state_dict(), "rows": 3})


# ------------------------------------------------------------------ many streams at once
def test_64_interleaved_streams_equal_64_separate_sessions():
    codec = CODECS["tiny-istft"]
    rng = random.Random(0)
    count, hop = 64, codec.hop_length
    signals = [torch.randn(1, rng.randint(1, 6 * hop)) * 0.3 for _ in range(count)]
    chunk_sizes = [rng.randint(1, 2 * hop) for _ in range(count)]
    starts = [rng.randint(0, 8) for _ in range(count)]
    batcher = MultiStreamBatcher(codec, capacity=count, mode="roundtrip")
    ids, fed, outputs, tick = {}, [0] * count, [[] for _ in range(count)], 0
    while len(ids) < count or any(i in ids for i in range(count)):
        for k in range(count):
            if k not in ids and starts[k] == tick:
                ids[k] = batcher.open()
            if k in ids and ids[k] is not None:
                piece = signals[k][:, fed[k] : fed[k] + chunk_sizes[k]]
                fed[k] += piece.shape[-1]
                if piece.shape[-1]:
                    batcher.push(ids[k], piece)
        batcher.step()
        for k, stream in list(ids.items()):
            if stream is None:
                continue
            outputs[k].append(batcher.pull(stream))
            if fed[k] == signals[k].shape[-1] and tick % 3 == k % 3:
                outputs[k].append(batcher.close(stream))
                ids[k] = None
        if all(v is None for v in ids.values()) and len(ids) == count:
            break
        tick += 1
    assert batcher.timer.summary()["steps"] > 0
    for k in range(count):
        got = torch.cat(outputs[k], -1)
        alone = run_stream(codec.stream(1, "roundtrip"), signals[k][None], [chunk_sizes[k]])[0]
        torch.testing.assert_close(got, alone, rtol=0, atol=ATOL)
        torch.testing.assert_close(got, offline(codec, signals[k][None])[1][0], rtol=0, atol=ATOL)


def test_closing_many_streams_at_once_equals_closing_them_one_by_one():
    """A server flushes every stream that ended in one tick together (``close_many``): batched final
    steps, grouped by the length of each stream's rest, give each stream what its own flush gives."""
    torch.manual_seed(0)
    enhancer = Enhancer.from_config("enhance-16k").eval()
    codec = CODECS["tiny-istft"]
    for model, make in (
        (enhancer, lambda: AudioBatcher(enhancer, 6)),
        (codec, lambda: MultiStreamBatcher(codec, 6)),
    ):
        hop = model.hop_length
        lengths = [3 * hop, 3 * hop + 1, 5 * hop - 7, 2 * hop + hop // 2, 7, 4 * hop]  # several rests
        signals = [torch.randn(1, n) * 0.3 for n in lengths]
        results = []
        for together in (True, False):
            batcher = make()
            ids = [batcher.open() for _ in signals]
            for i, x in zip(ids, signals, strict=True):
                batcher.push(i, x)
            batcher.step()
            heads = [batcher.pull(i) for i in ids]
            rests = batcher.close_many(ids) if together else [batcher.close(i) for i in ids]
            results.append([torch.cat([h, r], -1) for h, r in zip(heads, rests, strict=True)])
            assert not batcher._slots  # every slot freed
        for x, together, alone in zip(signals, *results, strict=True):
            assert together.shape[-1] == x.shape[-1]
            torch.testing.assert_close(together, alone, rtol=0, atol=ATOL)


@pytest.mark.parametrize("capacity", [4, 8])  # every row stepped (idle ones restored), or a gathered few
def test_audio_batcher_streams_keep_their_own_knobs(capacity):
    """Streams opened with their own `atten_lim_db`/`dry` (over the batcher's `dry`) share batched steps
    (random pushes, several hops a step, final steps closed together): each equals its own session with
    its knobs and offline enhancement with them; the model's step takes the mix per row with the same
    arithmetic as one mix for all (bitwise)."""
    torch.manual_seed(0)
    enhancer = Enhancer.from_config("enhance-16k").eval()
    batcher = AudioBatcher(enhancer, capacity, dry=0.1)
    knobs = [{}, {"atten_lim_db": 6.0}, {"atten_lim_db": 12.0, "dry": 0.3}, {"dry": 0.0}]
    signals = [torch.randn(1, n) * 0.3 for n in (4001, 5000, 3333, 4800)]
    ids = [batcher.open(**k) for k in knobs]
    outs: dict[int, list[torch.Tensor]] = {i: [] for i in ids}
    rng, fed = np.random.default_rng(0), [0] * len(ids)
    while any(f < x.shape[-1] for f, x in zip(fed, signals, strict=True)):
        for k, (i, x) in enumerate(zip(ids, signals, strict=True)):
            n = int(rng.integers(1, 700))
            batcher.push(i, x[:, fed[k] : fed[k] + n])
            fed[k] += n
        batcher.step(4)
        for i in ids:
            outs[i].append(batcher.pull(i))
    for i, rest in zip(ids, batcher.close_many(ids), strict=True):
        outs[i].append(rest)
    for i, k, x in zip(ids, knobs, signals, strict=True):
        own = {"dry": 0.1, **k}
        got = torch.cat(outs[i], -1)
        alone = run_stream(enhancer.stream(1, **own), x[None], [333])[0]
        torch.testing.assert_close(got, alone, rtol=0, atol=ATOL)
        torch.testing.assert_close(got, enhancer.enhance(x, **own), rtol=0, atol=ATOL)
    assert not torch.allclose(torch.cat(outs[ids[0]], -1), enhancer.enhance(signals[0]), atol=1e-3)
    mixes = [enhancer.step_options(**{"dry": 0.1, **k})["mix"] for k in knobs]
    x = torch.randn(4, 1, 4 * enhancer.hop_length) * 0.3
    with torch.inference_mode():
        per_row = enhancer.step(x, enhancer.init_state(4), mix=torch.tensor(mixes, dtype=torch.float64))
        for row, mix in enumerate(mixes):
            assert torch.equal(per_row[row], enhancer.step(x, enhancer.init_state(4), mix=mix)[row])


def test_audio_batcher_refuses_own_values_of_options_its_streams_share():
    """Only the options a model takes per row (an enhancer's mix) may differ between a batcher's streams:
    a bandwidth extender's streams share their `edge_hz`, and an unknown knob is named."""
    bwe = BandwidthExtender.from_config("bwe-8to16").eval()
    batcher = AudioBatcher(bwe, 2, edge_hz=4000)
    batcher.open(edge_hz=4000)
    with pytest.raises(UsageError, match="share edge_hz; open another batcher"):
        batcher.open(edge_hz=3000)
    with pytest.raises(UsageError, match="take no option 'gain'"):
        AudioBatcher(Enhancer.from_config("enhance-16k"), 2).open(gain=2)
    assert len(batcher.streams) == 1


def test_batcher_encode_and_decode_modes_and_capacity():
    codec = CODECS["tiny-istft"]
    x = torch.randn(1, 1, 2000) * 0.3
    codes, audio = offline(codec, x)
    encoder = MultiStreamBatcher(codec, capacity=2, mode="encode")
    s = encoder.open()
    encoder.push(s, x[0])
    encoder.run()
    got = torch.cat([encoder.pull(s), encoder.close(s)], -1)
    assert torch.equal(got, codes.codes[0])
    decoder = MultiStreamBatcher(codec, capacity=1, mode="decode")
    d = decoder.open(length=2000)
    decoder.push(d, codes.codes[0])
    with pytest.raises(UsageError, match="slots"):
        decoder.open()
    decoder.run()
    torch.testing.assert_close(
        torch.cat([decoder.pull(d), decoder.close(d)], -1), audio[0], rtol=0, atol=ATOL
    )
    with pytest.raises(UsageError, match="no open stream"):
        decoder.push(d, codes.codes[0])
    # a Codes object carries the length, as it does for a session (the batcher output 2240 samples)
    d = decoder.open()
    decoder.push(d, Codes(codes.codes[0], 2000))
    decoder.run()
    torch.testing.assert_close(decoder.close(d), audio[0], rtol=0, atol=ATOL)
    # ... and one item's codes as Codec.encode returns them, (1, n_q, frames), are that stream's codes
    d = decoder.open()
    decoder.push(d, codes)
    decoder.run()
    torch.testing.assert_close(decoder.close(d), audio[0], rtol=0, atol=ATOL)
    d = decoder.open()
    with pytest.raises(UsageError, match=r"push codes \(n_q, frames\) for one stream, got \(2, "):
        decoder.push(d, torch.cat([codes.codes, codes.codes]))


def test_free_slots_hold_no_output_of_steps_of_every_row():
    """A step of nearly every slot runs on all state rows; a free slot's row must not keep the output of
    those idle steps (memory would grow for as long as the slot stays free)."""
    codec = CODECS["tiny-istft"]
    for mode, chunk in (("roundtrip", torch.zeros(1, 320)), ("decode", torch.zeros(4, 1, dtype=torch.long))):
        batcher = MultiStreamBatcher(codec, capacity=5, mode=mode)
        ids = [batcher.open() for _ in range(5)]
        batcher.close(ids.pop())  # 4 of 5 open: every step runs on all rows
        for _ in range(3):
            for stream in ids:
                batcher.push(stream, chunk)
            assert batcher.step() == dict.fromkeys(ids, 1)
            for stream in ids:
                batcher.pull(stream)
        assert all(row.out_len == 0 and not row.out for row in batcher.session._rows)


def test_batcher_open_with_a_refused_length_keeps_its_slot_free():
    """``open(length=...)`` that raises takes no slot: the batcher still opens ``capacity`` streams."""
    codec = CODECS["tiny-istft"]
    for mode, bad in (("decode", 0), ("decode", -5), ("roundtrip", 1000)):
        batcher = MultiStreamBatcher(codec, capacity=1, mode=mode)
        with pytest.raises(UsageError, match="length"):
            batcher.open(length=bad)
        assert batcher.streams == []
        batcher.open()


def test_close_many_with_unknown_or_repeated_ids_touches_no_stream():
    """``close_many`` naming an unknown or a repeated id is a UsageError before anything runs: the
    streams it named stay open and go on exactly as offline."""
    codec, enhancer = CODECS["tiny-istft"], Enhancer.from_config("enhance-16k").eval()
    x = 0.3 * torch.randn(1, 2000)
    expected = {"codec": offline(codec, x[None])[1][0], "enhancer": enhancer.enhance(x)}
    for name, batcher in (
        ("codec", MultiStreamBatcher(codec, capacity=2)),
        ("enhancer", AudioBatcher(enhancer, 2)),
    ):
        stream = batcher.open()
        batcher.push(stream, x[:, :1000])
        with pytest.raises(UsageError, match="no open stream 99"):
            batcher.close_many([stream, 99])
        with pytest.raises(UsageError, match="repeat"):
            batcher.close_many([stream, stream])
        assert batcher.streams == [stream]
        batcher.push(stream, x[:, 1000:])
        while batcher.step():
            pass
        got = torch.cat([batcher.pull(stream), batcher.close(stream)], -1)
        torch.testing.assert_close(got, expected[name], rtol=0, atol=ATOL)


def test_batcher_steps_refuse_max_hops_that_are_not_whole_numbers_from_one():
    """``step(max_hops)`` takes a whole number >= 1; anything else is a UsageError that advances
    nothing (a negative count stepped a codec stream by one frame, 1.5 raised an AttributeError)."""
    codec, enhancer = CODECS["tiny-istft"], Enhancer.from_config("enhance-16k").eval()
    for batcher in (MultiStreamBatcher(codec, capacity=2), AudioBatcher(enhancer, 2)):
        stream = batcher.open()
        batcher.push(stream, torch.zeros(1, 1280))
        for bad in (0, -1, 1.5, "2", None):
            with pytest.raises(UsageError, match="max_hops must be a whole number >= 1"):
                batcher.step(max_hops=bad)
        assert batcher.step(max_hops=np.int64(2)) == {stream: 2}


def test_batchers_check_their_model_and_capacity():
    """A batcher of the other kind of model, or a capacity that is not a whole number >= 1, is a
    UsageError saying so (they were AttributeErrors, a RuntimeError, a TypeError, or for AudioBatcher's
    capacity 0 a batcher that could open nothing)."""
    codec, enhancer = CODECS["tiny-istft"], Enhancer.from_config("enhance-16k").eval()
    with pytest.raises(UsageError, match="MultiStreamBatcher takes a codec, got the enhancer .*AudioBatcher"):
        MultiStreamBatcher(enhancer, 2)
    with pytest.raises(UsageError, match="AudioBatcher takes an audio-to-audio model .*MultiStreamBatcher"):
        AudioBatcher(codec, 2)
    for make in (lambda n: MultiStreamBatcher(codec, n), lambda n: AudioBatcher(enhancer, n)):
        for bad in (0, -1, 1.5, "2"):
            with pytest.raises(UsageError, match="capacity must be a whole number >= 1"):
                make(bad)
        assert make(np.int64(2)).capacity == 2


def test_audio_batcher_backlog_costs_its_own_size_not_capacity_times_it():
    """A stream's burst waits in its own spill: the shared pending buffer (one row per slot) stays as
    wide as a step reads, instead of widening every slot's row to the burst (a server kept 64 rows x
    the largest backlog it ever saw, 49 MB after one client's unpaced file). Streams holding less than a
    hop, drained bursts and a burst closed at once (its rest read from the spill) all equal offline."""
    torch.manual_seed(0)
    enhancer = Enhancer.from_config("enhance-16k").eval()
    hop = enhancer.hop_length
    batcher = AudioBatcher(enhancer, capacity=8)
    steady, burst, closed = (torch.randn(1, n) * 0.3 for n in (7 * hop + 37, 200 * hop, 50 * hop + 37))
    a, b, c = batcher.open(), batcher.open(), batcher.open()
    batcher.push(a, steady[:, :37])  # less than a hop, pending across the burst
    for i in range(0, burst.shape[-1], 1000):
        batcher.push(b, burst[:, i : i + 1000])
        batcher.push(b, burst[:, :0])  # empty pushes, also while spilling, are nothing
    batcher.push(c, closed)
    outs = {a: [], b: [], c: [batcher.close(c)]}
    while batcher.step(8):
        outs[b].append(batcher.pull(b))
        assert batcher._pending.shape[1] <= 8 * hop
    outs[b].append(batcher.close(b))
    batcher.push(a, steady[:, 37:])
    batcher.step(8)
    outs[a] += [batcher.pull(a), batcher.close(a)]
    assert batcher._pending.shape[1] <= 8 * hop and not any(batcher._spill) and not batcher._spilled.any()
    for stream, x in ((a, steady), (b, burst), (c, closed)):
        expected = enhancer.enhance(x[None])[0]
        torch.testing.assert_close(torch.cat(outs[stream], -1), expected, rtol=0, atol=ATOL)


def test_batcher_close_that_raises_still_frees_the_stream():
    """A decode stream whose codes fall short of its length fails to close; its slot is freed all the
    same (a server's stream must not stay open), and the next stream in it decodes as offline."""
    codec = CODECS["tiny-istft"]
    codes, audio = offline(codec, 0.3 * torch.randn(1, 1, 3000))
    decoder = MultiStreamBatcher(codec, capacity=1, mode="decode")
    d = decoder.open(length=5000)
    decoder.push(d, codes.codes[0, :, :5])
    decoder.run()
    with pytest.raises(UsageError, match="its length is 5000"):
        decoder.close(d)
    assert decoder.streams == []
    d = decoder.open(length=3000)
    decoder.push(d, codes.codes[0])
    decoder.run()
    torch.testing.assert_close(
        torch.cat([decoder.pull(d), decoder.close(d)], -1), audio[0], rtol=0, atol=ATOL
    )


def test_batchers_refuse_bad_pushes_before_queuing_them():
    """Integer PCM, NaN and codes out of range are refused at push, as a session refuses them; a refused
    push leaves the stream (and its batcher) as if it had not been made."""
    codec = CODECS["tiny-istft"]
    x = torch.randn(1, 1, 1000) * 0.3
    codes, audio = offline(codec, x)
    poisoned = x[0].clone()
    poisoned[0, 10] = float("nan")
    bad_codes = codes.codes[0].clone()
    bad_codes[0, 1] = codec.codebook_size
    enhancer = Enhancer.from_config("enhance-16k").eval()
    roundtrip = MultiStreamBatcher(codec, capacity=2, mode="roundtrip")
    decoder = MultiStreamBatcher(codec, capacity=2, mode="decode")
    audio_batcher = AudioBatcher(enhancer, capacity=2)
    cases = [
        (roundtrip, roundtrip.open(), x[0], [(x[0] * 32767).short(), poisoned, x[0].numpy()]),
        (decoder, decoder.open(length=1000), codes.codes[0], [bad_codes, -bad_codes]),
        (audio_batcher, audio_batcher.open(), x[0], [(x[0] * 32767).short(), poisoned, x[0].numpy()]),
    ]
    for batcher, stream, good, bads in cases:
        for bad in bads:
            with pytest.raises(UsageError, match=r"int16|NaN|numpy|0\.\.\d+"):
                batcher.push(stream, bad)
        batcher.push(stream, good)
        while batcher.step():
            pass
        got = torch.cat([batcher.pull(stream), batcher.close(stream)], -1)
        expected = audio[0] if batcher is not audio_batcher else enhancer.enhance(x)[0]
        torch.testing.assert_close(got, expected, rtol=0, atol=ATOL)


def test_decode_lengths_take_numpy_and_torch_integers_and_refuse_other_values():
    """A decode length may be any integer type (a numpy or torch integer from arithmetic on lengths);
    fractions, strings and the like are a one-line UsageError, never truncated or a TypeError."""
    codec = CODECS["tiny-istft"]
    codes, audio = offline(codec, 0.3 * torch.randn(2, 1, 3000))
    for length in (np.int64(3000), torch.tensor(3000), np.array([3000, 3000]), torch.tensor([3000, 3000])):
        session = codec.stream(2, "decode", length=length)
        got = torch.cat([session.push(codes.codes), session.flush()], -1)
        torch.testing.assert_close(got, audio, rtol=0, atol=ATOL)
    for bad in (3000.0, [2999.5, 3000], "3000", [3000], [3000, 0]):
        with pytest.raises(UsageError, match="length must be one positive int or one per item"):
            codec.stream(2, "decode", length=bad)
    batcher = MultiStreamBatcher(codec, capacity=1, mode="decode")
    stream = batcher.open(length=np.int64(3000))
    batcher.push(stream, codes.codes[0])
    batcher.run()
    torch.testing.assert_close(batcher.close(stream), audio[0], rtol=0, atol=ATOL)


def test_a_refused_reset_leaves_the_streams_as_they_were():
    """``reset`` with a length it refuses (on a session that is not ``"decode"``, or a bad value) raises
    before touching any row: the streams go on exactly as offline."""
    codec = CODECS["tiny-istft"]
    x = 0.3 * torch.randn(2, 1, 3000)
    codes, audio = offline(codec, x)
    session = codec.stream(2, "roundtrip")
    first = session.push(x[..., :1300])
    with pytest.raises(UsageError, match="only for 'decode' sessions"):
        session.reset(0, length=3000)
    got = torch.cat([first, session.push(x[..., 1300:]), session.flush()], -1)
    torch.testing.assert_close(got, audio, rtol=0, atol=ATOL)
    session = codec.stream(2, "decode", length=3000)
    first = session.push(codes.codes[..., :7])
    with pytest.raises(UsageError, match="length must be one positive int"):
        session.reset(1, length=0)
    got = torch.cat([first, session.push(codes.codes[..., 7:]), session.flush()], -1)
    torch.testing.assert_close(got, audio, rtol=0, atol=ATOL)


def test_failed_decode_flush_resets_every_row():
    """A decode flush that raises (codes short of the rows' length) leaves fresh rows: the same session
    then decodes new codes exactly as offline (stale state, counters or limits would change them)."""
    codec = CODECS["tiny-istft"]
    codes, audio = offline(codec, 0.3 * torch.randn(2, 1, 3000))
    session = codec.stream(2, "decode", length=[5000, 4000])
    session.push(codes.codes[..., :5])
    with pytest.raises(UsageError, match="its length is 5000"):
        session.flush()
    got = torch.cat([session.push(codes), session.flush()], -1)
    torch.testing.assert_close(got, audio, rtol=0, atol=ATOL)


def test_decode_session_takes_any_bitrate_after_a_flush_and_a_refused_push_changes_nothing():
    """A decode session learns its number of codebooks from the first codes it accepts: a push refused
    (values out of range) leaves it unset, a flush lets the next stream come at another bitrate, and
    integer codes of any width decode as int64 ones (as ``Codec.decode`` takes them)."""
    codec = CODECS["speech-16k"]
    x = 0.3 * torch.randn(1, 1, 3200)
    session = codec.stream(1, "decode")
    with pytest.raises(UsageError, match="values in"):
        session.push(torch.full((1, 12, 5), codec.codebook_size))
    for n_q in (6, 12, 3):
        codes = codec.encode(x, codec.bitrates[n_q - 1])
        got = torch.cat([session.push(codes.codes.int()), session.flush()], -1)[..., : x.shape[-1]]
        torch.testing.assert_close(got, codec.decode(codes), rtol=0, atol=ATOL)
    with pytest.raises(UsageError, match="codes have 6 codebooks but this stream started with 3"):
        session.push(codec.encode(x, codec.bitrates[2]).codes[..., :2])
        session.push(codec.encode(x, codec.bitrates[5]).codes)


# ------------------------------------------------------------------ latency and timing
@pytest.mark.parametrize("name", ["speech-16k", "seanet-lstm"])
def test_measured_latency_matches_algorithmic_latency(name):
    codec = CODECS[name]
    hop = codec.hop_length
    assert measure_latency(codec, phases=[0, 1, hop // 2, hop - 1]) == codec.algorithmic_latency
    assert measure_latency(codec, phases=[hop - 1]) == codec.algorithmic_latency - (hop - 1)


@pytest.mark.parametrize("family,name", [(Enhancer, "enhance-16k"), (BandwidthExtender, "bwe-8to16")])
def test_measured_latency_of_audio_models_matches_algorithmic_latency(family, name):
    """The shipped enhancer's plain session and the bandwidth extender's from 8 kHz (measured in 16 kHz
    samples, each 8 kHz sample being two) deliver the latency they declare, worst at a hop's first
    sample."""
    model = family.from_pretrained(name).eval()
    factor = 2 if family is BandwidthExtender else 1
    hop = model.hop_length // factor  # at the input rate
    assert measure_latency(model, phases=[0, 1, hop // 2, hop - 1]) == model.algorithmic_latency
    assert measure_latency(model, phases=[hop - 1]) == model.algorithmic_latency - factor * (hop - 1)


def test_measure_latency_refuses_what_does_not_stream():
    with pytest.raises(UsageError, match="measure_latency takes a streaming model"):
        measure_latency(nn.Linear(2, 2))
    with pytest.raises(UsageError, match="input_rate must divide"):
        measure_latency(BandwidthExtender.from_config("bwe-8to16"), input_rate=32000)
    for mode in ("encode", "decode"):  # codes out or codes in: were a RuntimeError and an int64 message
        with pytest.raises(UsageError, match=f"a codec's '{mode}' session does not give audio for audio"):
            measure_latency(CODECS["tiny-istft"], mode=mode)


def test_session_records_step_times():
    codec = CODECS["tiny-istft"]
    session = codec.stream(1, "roundtrip")
    run_stream(session, torch.randn(1, 1, 3200), [320])
    summary = session.timer.summary()
    assert summary["frames"] >= 10 and 0 < summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]


def test_step_timer_keeps_16_bytes_a_step_and_its_last_capacity_steps():
    """Every session and batcher times its steps, and a server's batchers step ~50 times a second for as
    long as it runs: the timer keeps a step in 16 bytes (two deques of Python numbers took 40-70, 4-7 MB
    per codec batcher after 100,000 steps), and only its last ``capacity`` steps, oldest first."""
    timer = StepTimer(capacity=2000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2000):
            timer.record(1e-3 + i * 1e-6, 300 + i)  # frames over 256: ints Python does not share
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20 * 2000
    for i in range(2000, 5000):
        timer.record(1e-3 + i * 1e-6, 300 + i)
    assert timer.frames == list(range(3300, 5300)) and len(timer.seconds) == 2000
    assert timer.summary()["steps"] == 2000 and timer.summary()["frames"] == sum(range(3300, 5300))
    timer.clear()
    assert timer.summary() == {"steps": 0, "frames": 0} and timer.frames == []


# ------------------------------------------------------------------ .akc streaming writer
def test_streaming_encode_into_akc_writer(tmp_path):
    codec = CODECS["tiny-istft"]
    x = torch.randn(1, 2, 5000) * 0.3
    codes, _ = offline(codec, x)
    header = AkcHeader("tiny", "0" * 64, 16000, 2, codec.num_codebooks, codec.codebook_size, codec.frame_rate)
    path = tmp_path / "out.akc"
    blocks = (x[0, :, i : i + 1234] for i in range(0, 5000, 1234))
    with open(path, "wb") as file:
        assert encode_to_akc(codec.stream(1, "encode", channels=2), blocks, AkcWriter(file, header)) == 5000
    with AkcReader(path) as reader:
        assert reader.header.num_samples == 5000 and reader.num_frames == codes.frames
        frames = reader.read_frames(0, codes.frames)
    assert torch.equal(frames.reshape(codes.codes.shape), codes.codes)


# ------------------------------------------------------------------ module steps and errors
def _chunks(total: int, unit: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    while sum(sizes) < total:
        sizes.append(min(rng.randint(1, 5) * unit, total - sum(sizes)))
    return sizes


@pytest.mark.parametrize(
    ("kernel", "stride", "dilation"), [(7, 1, 1), (3, 1, 9), (8, 4, 1), (5, 2, 3), (4, 4, 1)]
)
def test_conv_step_with_partial_final_chunk(kernel, stride, dilation):
    torch.manual_seed(0)
    conv = StreamableConv1d(3, 2, kernel, stride, dilation, causal=True).eval()
    for length in (stride * 13, stride * 13 + 1, stride * 13 - 1):
        x = torch.randn(2, 3, length)
        step = conv.eval()
        state = step.init_state(2, x.device, x.dtype)
        whole = length // stride * stride
        outs = []
        start = 0
        for size in _chunks(whole, stride, length):
            outs.append(step.step(x[..., start : start + size], state))
            start += size
        if length > whole:
            outs.append(step.step(x[..., whole:], state, final=True))
        with torch.no_grad():
            torch.testing.assert_close(torch.cat(outs, -1), conv(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("kernel", "stride", "groups", "bias"),
    [
        (7, 1, 1, True),
        (16, 8, 1, True),
        (10, 5, 1, False),
        (4, 2, 1, True),
        (1, 1, 1, False),
        (7, 1, 6, True),
        (3, 1, 2, True),
    ],
)
def test_conv_step_of_many_streams_equals_offline_for_short_and_long_chunks(kernel, stride, groups, bias):
    # batched streaming takes different paths for long chunks (shifted blocks) and short ones (windows)
    torch.manual_seed(1)
    conv = StreamableConv1d(6, 6 if groups > 1 else 5, kernel, stride, groups=groups, bias=bias, causal=True)
    conv.eval()
    x = torch.randn(5, 6, stride * 60)
    step = conv
    state = step.init_state(5, x.device, x.dtype)
    outs, start = [], 0
    for frames in (1, 40, 2, 3, 14):
        outs.append(step.step(x[..., start : start + frames * stride], state))
        start += frames * stride
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(outs, -1), conv(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("inputs, outputs", [(64, 256), (256, 64), (PIECE_INPUTS + 100, 96)])
def test_matmul_rows_rounds_each_row_the_same_whatever_the_row_count(inputs, outputs):
    """Bitwise: what keeps a streamed step (few rows) equal to offline (many) in the codec's decoder.
    One row (a matrix-vector product everywhere) and 2-3 rows (on some CPUs) round differently in BLAS."""
    generator = torch.Generator().manual_seed(inputs)
    matrix = torch.randn(inputs, outputs, generator=generator)
    bias = torch.randn(outputs, generator=generator)
    rows = torch.randn(120, inputs, generator=generator)
    start = torch.randn(120, outputs, generator=generator)
    with torch.no_grad():
        many = matmul_rows(rows, matrix, bias)
        many_into = matmul_rows(rows, matrix, into=start.clone())
        for count in range(1, 9):
            assert torch.equal(matmul_rows(rows[:count], matrix, bias), many[:count]), count
            into = start[:count].clone()
            assert matmul_rows(rows[:count], matrix, into=into) is into
            assert torch.equal(into, many_into[:count]), count
    graded = matmul_rows(rows[:2].requires_grad_(), matrix, into=start[:2])
    assert torch.equal(graded.detach(), many_into[:2]) and torch.equal(start[:2], start[:2].clone())


def test_transposed_conv_lstm_and_istft_head_steps():
    torch.manual_seed(0)
    modules = [
        (StreamableConvTranspose1d(3, 2, 8, 4, causal=True), 3),
        (StreamableConvTranspose1d(3, 2, 4, 4, causal=True), 3),
        (StreamableLSTM(3, 2), 3),
        (CausalISTFTHead(dim=5, channels=2, n_fft=32, hop_length=8, frames_per_step=2), 5),
        (CausalISTFTHead(dim=5, n_fft=32, hop_length=8, hidden_dim=6), 5),
    ]
    torch.nn.init.normal_(modules[-1][0].mlp[2].weight)
    for module, channels in modules:
        x = torch.randn(2, channels, 17)
        step = module.eval()
        state = step.init_state(2, x.device, x.dtype)
        outs, start = [], 0
        for size in [1, 5, 2, 9]:
            outs.append(step.step(x[..., start : start + size], state))
            start += size
        with torch.no_grad():
            torch.testing.assert_close(torch.cat(outs, -1), module(x), rtol=0, atol=1e-5)


def test_lstm_fast_steps_match_the_offline_lstm():
    torch.manual_seed(0)
    module = StreamableLSTM(6, 2, fast_steps=True).eval()
    x = torch.randn(3, 6, 23)
    state = module.init_state(3, x.device, x.dtype)
    outs, start = [], 0
    with torch.no_grad():
        for size in [1, 4, 2, 9, 7]:  # chunks of <= 4 frames take the per-frame cell, longer ones nn.LSTM
            outs.append(module.step(x[..., start : start + size], state))
            start += size
        torch.testing.assert_close(torch.cat(outs, -1), module(x), rtol=0, atol=1e-6)


def test_subclasses_stream_through_their_parents_steps():
    class Doubled(StreamableConv1d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

        def step_t(self, x, state, final=False):
            return 2 * super().step_t(x, state, final)

    torch.manual_seed(0)
    model = StreamingSequential(
        Doubled(2, 3, 5, causal=True), nn.ELU(), StreamableConv1d(3, 2, 3, causal=True)
    )
    model.eval()
    x = torch.randn(2, 2, 40)
    state = model.init_state(2, x.device, x.dtype)
    streamed = torch.cat([model.step(x[..., i : i + 7], state) for i in range(0, 40, 7)], -1)
    with torch.no_grad():
        torch.testing.assert_close(streamed, model(x), rtol=0, atol=1e-6)


def test_steps_use_the_weights_of_the_latest_init_state_and_forward_never_goes_stale():
    torch.manual_seed(0)
    conv = StreamableConv1d(2, 2, 3, causal=True).eval()
    x = torch.randn(1, 2, 12)
    with torch.no_grad():
        before = conv(x)
        conv.conv.parametrizations.weight.original0.mul_(2.0)  # an optimiser-like in-place update (g)
        after = conv(x)
    assert not torch.allclose(before, after)
    state = conv.init_state(1, x.device, x.dtype)
    with torch.no_grad():
        torch.testing.assert_close(conv.step(x, state), after, rtol=0, atol=1e-6)


def test_a_new_session_reuses_the_prepared_weights_until_the_weights_change():
    """A folder run opens a session per file: each re-prepared every block's matrices (4 ms of 5 for a
    speech-16k decode session, a sixth of a folder of short clips' decode). They are kept while the
    parameters are unchanged, and prepared again after an in-place update."""
    codec = _tiny_istft()
    block = codec.decoder.blocks[0]
    codec.stream(1, "decode")
    kept = block.prepared()
    codec.stream(1, "decode")
    assert block.prepared() is kept
    x = torch.randn(1, 1, 4000) * 0.1
    codes, decoded = offline(codec, x)
    with torch.no_grad():
        block.pwconv1.weight.mul_(0.5)  # an optimiser-like update: its version counter moves
    session = codec.stream(1, "decode")
    assert block.prepared() is not kept
    streamed = torch.cat([session.push(codes.codes), session.flush()], -1)[..., : x.shape[-1]]
    assert torch.equal(streamed, offline(codec, x)[1][..., : x.shape[-1]])
    assert not torch.equal(streamed, decoded[..., : x.shape[-1]])


def test_weights_that_are_inference_tensors_are_prepared_for_every_session():
    """Inference tensors have no version counter to say they changed (as for the quantizer's tables)."""
    with torch.inference_mode():
        conv = StreamableConv1d(2, 2, 3, causal=True).eval()
        conv.init_state(1, torch.device("cpu"), torch.float32)
        kept = conv.prepared()
        conv.init_state(1, torch.device("cpu"), torch.float32)
        assert conv.prepared() is not kept


def test_non_causal_and_unknown_modules_cannot_stream():
    codec = Codec.from_config("speech-16k-noncausal", encoder={"n_filters": 4}, decoder={"n_filters": 4})
    for mode in ("encode", "decode", "roundtrip"):
        with pytest.raises(ModelError, match="non-causal"):
            codec.stream(1, mode)
    with pytest.raises(ModelError, match="no streaming step"):
        StreamingSequential(nn.ELU(), nn.Conv1d(1, 1, 3)).init_state(1, torch.device("cpu"), torch.float32)
    conv = StreamableConv1d(1, 1, 4, 2, causal=True)
    state = conv.init_state(1, torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="multiple of the stride"):
        conv.step(torch.zeros(1, 1, 3), state)


def test_push_errors_are_clear():
    codec = CODECS["tiny-istft"]
    with pytest.raises(UsageError, match="mode"):
        codec.stream(1, "sideways")
    for bad in (0, 1.5, "2", True):  # 1.5 and "2" were truncated to 1 and read as 2; True was 1
        with pytest.raises(UsageError, match="channels must be a whole number >= 1, got"):
            codec.stream(1, "roundtrip", channels=bad)
    assert codec.stream(1, "roundtrip", channels=np.int64(2)).channels == 2
    assert codec.stream(torch.tensor(2), "roundtrip", channels=torch.tensor(2)).batch_size == 2
    session = codec.stream(2, "roundtrip")
    with pytest.raises(UsageError, match=r"push audio \(2, 1, samples\)"):
        session.push(torch.zeros(1, 1, 10))
    decode = codec.stream(1, "decode")
    with pytest.raises(UsageError, match="int64"):
        decode.push(torch.zeros(1, 4, 2))
    decode.push(torch.zeros(1, 3, 2, dtype=torch.int64))
    with pytest.raises(UsageError, match="started with 3"):
        decode.push(torch.zeros(1, 4, 2, dtype=torch.int64))


def test_zero_length_push_and_empty_flush():
    codec = CODECS["tiny-istft"]
    session = codec.stream(1, "roundtrip")
    assert session.push(torch.zeros(1, 1, 0)).shape == (1, 1, 0)
    assert session.flush().shape == (1, 1, 0)
    x = torch.randn(1, 1, 100)
    torch.testing.assert_close(run_stream(session, x, [7]), offline(codec, x)[1], rtol=0, atol=ATOL)


@pytest.mark.gpu
def test_streaming_on_cuda_equals_offline_on_cuda_and_on_cpu():
    """The streaming step on a GPU (TF32 off) gives the offline GPU result, and the CPU's codes."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    codec = CODECS["speech-16k"]
    x = torch.randn(4, 1, 8000, generator=torch.Generator().manual_seed(5)) * 0.3
    cpu_codes, _ = offline(codec, x, 6000)
    gpu = codec.to("cuda")
    try:
        codes, audio = offline(gpu, x.cuda(), 6000)
        streamed = run_stream(gpu.stream(4, "encode", bitrate=6000), x.cuda(), [320, 960, 1])
        decoded = run_stream(gpu.stream(4, "roundtrip", bitrate=6000), x.cuda(), [640, 320])
    finally:
        codec.cpu()
    assert torch.equal(streamed, codes.codes)
    # other kernels round differently: a code may flip where two codewords are within ~1e-6 of a tie
    assert (codes.codes.cpu() == cpu_codes.codes).float().mean() > 0.99
    torch.testing.assert_close(decoded, audio, rtol=0, atol=1e-4)
