"""Enhancers with a learnable front end (``band_features`` diffstft or adaptive) stream chunk by chunk as
they run offline: random chunkings, digital silence, rows reset on their own, sessions moved."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from audiokit.models.enhancer import Enhancer

FRONT_ENDS = ("diffstft", "adaptive")


@pytest.fixture(scope="module", params=FRONT_ENDS)
def ablation(request) -> Enhancer:
    """A small enhancer of ``band_features`` (the shipped analyses, 16 hidden units), random but far from
    pass-through, its front end's learnt parameters moved off their initial values."""
    torch.manual_seed(0)
    model = Enhancer.from_config("enhance-16k", hidden_dim=16, band_features=request.param).eval()
    frontend = model.band_frontend
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("band_frontend."):
                p.add_(torch.randn_like(p) * 0.2)
        if request.param == "diffstft":
            frontend.win_length.fill_(203.7)  # from 240: a shorter, fractional learnt length
        else:
            for bank in frontend.banks:
                for p in bank.parameters():
                    p.mul_(1.0 + 0.1 * torch.randn_like(p))
            for p in frontend.analyser.parameters():
                p.add_(torch.randn_like(p) * 0.5)
            frontend.prior.copy_(torch.randn_like(frontend.prior))
    if request.param == "adaptive":
        frontend.segment_frames = 3  # short inputs cross many segments (the default 50 is 0.5 s)
        x = torch.randn(1, 16000) * 0.3
        assert len(set(frontend.mixing_weights(x)[0].argmax(-1).tolist())) > 1  # the decisions move
    return model


def _streamed(model: Enhancer, x: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    session = model.stream(x.shape[0])
    outs, pos = [], 0
    for size in chunks:
        outs.append(session.push(x[..., pos : pos + size]))
        pos += size
    outs += [session.push(x[..., pos:]), session.flush()]
    return torch.cat(outs, -1)


@settings(max_examples=25, deadline=None)
@given(
    length=st.integers(1, 4000),
    chunks=st.lists(st.integers(0, 900), max_size=8),
    zeros=st.tuples(st.integers(0, 4000), st.integers(0, 1600)),
    only_one_row=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_streaming_equals_offline_with_digital_silence(ablation, length, chunks, zeros, only_one_row, seed):
    """Frames of exact zeros (in both rows, which then step together, or in one, which then steps frame
    by frame) are skipped by the network's states alike offline and streamed; the front end's own
    analysis runs through them both ways."""
    x = torch.randn(2, 1, length, generator=torch.Generator().manual_seed(seed)) * 0.3
    start, size = zeros
    x[int(only_one_row) :, :, start : start + size] = 0.0
    offline = ablation.enhance(x)
    streamed = _streamed(ablation, x, chunks)
    assert streamed.shape == offline.shape == x.shape
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=0)


def test_a_reset_row_starts_over_and_the_other_goes_on(ablation):
    torch.manual_seed(1)
    head, x = torch.randn(2, 1, 1777) * 0.3, torch.randn(2, 1, 3000) * 0.3
    session = ablation.stream(2)
    first = session.push(head)
    session.reset([1])
    pushed = session.push(x)
    out = torch.cat([pushed, session.flush()], -1)
    assert pushed.shape[-1] + session.lengths[1] == 3000
    torch.testing.assert_close(out[1:, :, :3000], ablation.enhance(x[1:]), atol=1e-5, rtol=0)
    row0 = torch.cat([first[0], out[0]], -1)
    torch.testing.assert_close(row0, ablation.enhance(torch.cat([head[0], x[0]], -1)), atol=1e-5, rtol=0)


def test_a_live_session_moves_to_another(ablation):
    """:meth:`AudioStream.state_dict` carries the front end's state (the filterbank's history, segment
    sums and frame count) through ``torch.load(weights_only=True)``."""
    x = torch.randn(2, 1, 4000) * 0.3
    first = ablation.stream(2)
    head = first.push(x[..., :1234])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = ablation.stream(2)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    out = torch.cat([head, second.push(x[..., 1234:]), second.flush()], -1)
    torch.testing.assert_close(out, ablation.enhance(x), atol=1e-5, rtol=0)
