"""audiokit.streaming.graphs: steps replayed from CUDA graphs keep every stream's output and state.

On the CPU, the graph's recording is replaced by running the recorded function again at each replay
(what a CUDA graph does, without the GPU), so the bookkeeping around it (static chunk and state
buffers, the state pointed at them between replays, eager steps and in-place resets in between, other
shapes and failures falling back to the step itself) runs on the real codec steps. On a GPU the same
checks run with real CUDA graphs (``gpu`` marker).
"""

from __future__ import annotations

import random

import pytest
import torch
from conftest import TINY_SPEECH_CODEC, run_stream

from audiokit.models import Codec
from audiokit.models.bwe import BandwidthExtender
from audiokit.models.enhancer import Enhancer
from audiokit.nn.state import ConvState
from audiokit.streaming import MultiStreamBatcher
from audiokit.streaming.batcher import AudioBatcher
from audiokit.streaming.codec import CodecStream
from audiokit.streaming.graphs import MAX_GRAPHS, GraphedStep, graph_report

torch.set_num_threads(1)


def replayed_eagerly(run, warmup):
    """A recorder without a GPU: warm up once, then every replay runs the recorded function."""
    warmup()
    return run


def failing(run, warmup):
    raise RuntimeError("operation not permitted when stream is capturing\nmore detail")


def _tiny_codec() -> Codec:
    torch.manual_seed(2)
    return Codec.from_config("speech-16k", **TINY_SPEECH_CODEC).eval()


def _graph(session: CodecStream, record=replayed_eagerly) -> CodecStream:
    """``session``'s steps of all rows swapped for :class:`GraphedStep` with ``record``."""
    outputs = 2 if session._coding["quantize"] else 1
    rows, codec = session.rows, session.codec
    session._encode = GraphedStep(session._encode, outputs, batch=rows, model=codec, record=record)
    session._decoder_step = GraphedStep(session._decoder_step, batch=rows, model=codec, record=record)
    return session


def test_graphed_roundtrip_equals_eager_through_frames_resets_and_flush():
    codec = _tiny_codec()
    hop = codec.hop_length
    x = torch.randn(3, 1, 23 * hop + 17, generator=torch.Generator().manual_seed(0)) * 0.3
    # one frame of every row (replayed), several frames and part frames (eager), a reset in between
    chunks = [hop, hop, 3 * hop + 5, hop - 5, hop, hop, 2 * hop, hop]
    results = []
    for graphed in (False, True):
        session = CodecStream(codec, 3, "roundtrip", bitrate=1500)
        if graphed:
            session = _graph(session)
        outs, at = [], 0
        with torch.inference_mode():
            for i, size in enumerate(chunks):
                outs.append(session.push(x[..., at : at + size]))
                at += size
                if i == 4:
                    session.reset([1])  # in place, in the static buffers between replays
            outs.append(session.push(x[..., at:]))
            outs.append(session.flush())
        results.append((torch.cat(outs, -1), session))
    (eager, _), (graphed, session) = results
    assert session._encode.replays >= 4 and session._decoder_step.replays >= 4
    assert graph_report(session._encode, session._decoder_step)["failure"] is None
    assert len(session._decoder_step._graphs) > 1  # one frame and several frames: one graph each
    assert torch.equal(graphed, eager)  # the same operations on the same values
    # what the blocks cached for their steps is kept as recorded, even once a new session replaces it
    kept = {id(cache) for cache in session._encode._kept}
    block = next(m for m in codec.encoder.modules() if "_prepared" in m.__dict__)
    recorded = block.__dict__["_prepared"]
    codec.stream(1, "roundtrip")  # unchanged weights: a new session reuses what was prepared
    assert block.__dict__["_prepared"] is recorded
    with torch.no_grad():
        next(block.parameters()).mul_(1.0)  # an in-place update (its version counter moves)
    codec.stream(1, "roundtrip")  # a new session prepares the weights afresh
    assert id(recorded) in kept and block.__dict__["_prepared"] is not recorded


def test_graphs_per_step_are_bounded_and_other_state_objects_run_eagerly():
    graphed = GraphedStep(lambda x, state, final=False: x * 2, record=replayed_eagerly)
    for width in range(1, MAX_GRAPHS + 3):
        graphed(torch.ones(2, width), None)
    assert len(graphed._graphs) == MAX_GRAPHS and graphed.replays == MAX_GRAPHS
    other = GraphedStep(lambda x, state, final=False: x + state.history, record=replayed_eagerly)
    recorded, another = ConvState(torch.zeros(2, 3)), ConvState(torch.ones(2, 3))
    other(torch.ones(2, 3), recorded)
    assert torch.equal(other(torch.ones(2, 3), another), torch.full((2, 3), 2.0))  # eager, on its own state
    assert other.replays == 1 and recorded.history is other._graphs[(2, 3)].buffers[0]


def test_graphed_batcher_streams_equal_their_own_sessions():
    """Many streams opening and closing at different ticks: steps of every row run from the graph,
    the others' rows saved and put back around them, and each stream gets what it gets alone."""
    codec = _tiny_codec()
    rng = random.Random(0)
    count, hop = 8, codec.hop_length
    signals = [torch.randn(1, rng.randint(hop, 6 * hop)) * 0.3 for _ in range(count)]
    starts = [rng.randint(0, 4) for _ in range(count)]
    batcher = MultiStreamBatcher(codec, capacity=count, mode="roundtrip")
    _graph(batcher.session)
    ids, fed, outputs = {}, [0] * count, [[] for _ in range(count)]
    for tick in range(40):
        for k in range(count):
            if k not in ids and starts[k] == tick:
                ids[k] = batcher.open()
            if ids.get(k) is not None and fed[k] < signals[k].shape[-1]:
                batcher.push(ids[k], signals[k][:, fed[k] : fed[k] + hop])
                fed[k] += hop
        batcher.step()
        for k, stream in list(ids.items()):
            if stream is not None:
                outputs[k].append(batcher.pull(stream))
                if fed[k] >= signals[k].shape[-1]:
                    outputs[k].append(batcher.close(stream))
                    ids[k] = None
    assert batcher.session._decoder_step.replays > 0
    for k in range(count):
        alone = run_stream(codec.stream(1, "roundtrip"), signals[k][None], [hop])[0]
        assert torch.equal(torch.cat(outputs[k], -1), alone)


def test_a_step_that_cannot_be_recorded_runs_eagerly_and_says_why():
    codec = _tiny_codec()
    x = torch.randn(2, 1, 6 * codec.hop_length) * 0.3
    eager = run_stream(codec.stream(2, "roundtrip"), x, [codec.hop_length])
    session = _graph(codec.stream(2, "roundtrip"), record=failing)
    assert torch.equal(run_stream(session, x, [codec.hop_length]), eager)
    assert session._encode.failure == "RuntimeError: operation not permitted when stream is capturing"
    assert session._encode.replays == 0


def test_graphed_enhancer_sessions_and_batcher_equal_eager():
    torch.manual_seed(0)
    enhancer = Enhancer.from_config("enhance-16k").eval()
    hop = enhancer.hop_length
    x = torch.randn(2, 1, 30 * hop + 7, generator=torch.Generator().manual_seed(3)) * 0.3
    chunks = [2 * hop, 2 * hop, 3 * hop + 1, 2 * hop - 1]  # two hops of both rows replayed, others eager
    eager = run_stream(enhancer.stream(2), x, chunks)
    session = enhancer.stream(2)
    session._step = GraphedStep(session._step, batch=session.rows, record=replayed_eagerly)
    assert torch.equal(run_stream(session, x, chunks), eager)
    assert session._step.replays > 0
    batched = []
    for graphed in (False, True):
        batcher = AudioBatcher(enhancer, 2)
        if graphed:
            batcher._step = GraphedStep(batcher._step, batch=2, record=replayed_eagerly)
        ids = [batcher.open() for _ in range(2)]
        outs = [[], []]
        for start in range(0, x.shape[-1], hop):
            for i, stream in enumerate(ids):
                batcher.push(stream, x[i, :, start : start + hop])
            batcher.step()
            for i, stream in enumerate(ids):
                outs[i].append(batcher.pull(stream))
        batched.append([torch.cat([*out, batcher.close(s)], -1) for out, s in zip(outs, ids, strict=True)])
    assert batcher._step.replays > 0
    for eager_row, graphed_row, alone in zip(*batched, eager, strict=True):
        assert torch.equal(graphed_row, eager_row)
        torch.testing.assert_close(graphed_row, alone, rtol=0, atol=1e-5)


def test_cuda_graph_sessions_stay_eager_off_the_gpu():
    session = _tiny_codec().stream(2, "roundtrip", compile="cuda_graph")
    assert session.compiled == {"encoder": False, "decoder": False}
    assert Enhancer.from_config("enhance-16k").stream(1, compile="cuda_graph").compiled is False


@pytest.mark.gpu
def test_cuda_graph_roundtrip_and_batcher_equal_eager_on_the_gpu():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    codec = Codec.from_config("speech-16k").eval().to("cuda")
    hop = codec.hop_length
    x = torch.randn(16, 1, 30 * hop + 11, generator=torch.Generator().manual_seed(1)).cuda() * 0.3
    eager = run_stream(codec.stream(16, "roundtrip", bitrate=6000), x, [hop, hop, 2 * hop + 3])
    session = codec.stream(16, "roundtrip", bitrate=6000, compile="cuda_graph")
    graphed = run_stream(session, x, [hop, hop, 2 * hop + 3])
    assert session.compiled == {"encoder": True, "decoder": True}
    assert session._encode.failure is None and session._decoder_step.failure is None
    assert session._encode.replays > 0 and session._decoder_step.replays > 0
    torch.testing.assert_close(graphed, eager, rtol=0, atol=1e-5)


@pytest.mark.gpu
def test_cuda_graph_enhancer_and_extender_equal_eager_on_the_gpu():
    torch.manual_seed(0)
    for model, options in (
        (Enhancer.from_config("enhance-16k").eval().cuda(), {}),
        (BandwidthExtender.from_config("bwe-8to16").eval().cuda(), {"input_rate": 8000}),
    ):
        hop = model.hop_length
        x = torch.randn(8, 1, 40 * hop, generator=torch.Generator().manual_seed(2)).cuda() * 0.3
        eager = run_stream(model.stream(8, **options), x, [hop])
        session = model.stream(8, compile="cuda_graph", **options)
        graphed = run_stream(session, x, [hop])
        inner = getattr(session, "inner", session)
        assert inner.compiled and inner._step.failure is None and inner._step.replays > 0
        torch.testing.assert_close(graphed, eager, rtol=0, atol=1e-5)
