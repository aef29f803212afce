"""audiokit.quantize: VQ fits, EMA, dead codes, RVQ monotonic error, dropout, determinism, bitrates."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from audiokit.errors import UsageError
from audiokit.quantize import (
    ResidualVectorQuantizer,
    VectorQuantizer,
    num_quantizers_for_bitrate,
    supported_bitrates,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread avoids oversubscribing a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mixture(
    centres: torch.Tensor, batch: int, frames: int, sigma: float, gen: torch.Generator
) -> torch.Tensor:
    """Latents ``[batch, dim, frames]`` drawn from an isotropic Gaussian mixture with equal weights."""
    which = torch.randint(centres.shape[0], (batch, frames), generator=gen)
    x = centres[which] + sigma * torch.randn(batch, frames, centres.shape[1], generator=gen)
    return x.transpose(1, 2)


def _centres(k: int, dim: int, seed: int) -> torch.Tensor:
    """``k`` centres at least 2.0 apart (rejection sampling in a cube)."""
    gen = torch.Generator().manual_seed(seed)
    chosen: list[torch.Tensor] = []
    while len(chosen) < k:
        c = 6.0 * torch.rand(dim, generator=gen) - 3.0
        if all((c - o).norm() > 2.0 for o in chosen):
            chosen.append(c)
    return torch.stack(chosen)


def _match_error(codebook: torch.Tensor, centres: torch.Tensor) -> float:
    """Largest distance from a true centre to its nearest codeword, requiring a one-to-one match."""
    d = torch.cdist(centres, codebook)
    nearest = d.argmin(1)
    assert len(set(nearest.tolist())) == centres.shape[0], "two centres share one codeword"
    return float(d.min(1).values.max())


def test_vq_with_kmeans_init_and_ema_recovers_mixture_centres():
    torch.manual_seed(0)
    centres = _centres(8, 4, seed=1)
    gen = torch.Generator().manual_seed(2)
    vq = VectorQuantizer(4, 8, ema=True, kmeans_init=True, dead_code_threshold=0.0).train()
    for _ in range(30):
        vq(_mixture(centres, 8, 64, 0.1, gen))
    assert _match_error(vq.codebook, centres) < 0.05


def test_ema_updates_move_a_shifted_codebook_onto_the_centres():
    torch.manual_seed(0)
    centres = _centres(6, 3, seed=3)
    gen = torch.Generator().manual_seed(4)
    vq = VectorQuantizer(3, 6, ema=True, decay=0.8, kmeans_init=False, dead_code_threshold=0.0).train()
    vq.codebook.copy_(centres + 0.6)
    vq.embed_sum.copy_(vq.codebook)
    before = _match_error(vq.codebook, centres)
    for _ in range(40):
        vq(_mixture(centres, 8, 64, 0.1, gen))
    assert before > 0.9 and _match_error(vq.codebook, centres) < 0.05


def test_codebook_loss_trains_a_parameter_codebook_onto_the_centres():
    torch.manual_seed(0)
    centres = _centres(6, 3, seed=5)
    gen = torch.Generator().manual_seed(6)
    vq = VectorQuantizer(3, 6, ema=False, kmeans_init=False, dead_code_threshold=0.0).train()
    with torch.no_grad():
        vq.codebook.copy_(centres + 0.6)
    assert isinstance(vq.codebook, torch.nn.Parameter)
    opt = torch.optim.Adam(vq.parameters(), lr=0.1)
    for _ in range(60):
        out = vq(_mixture(centres, 8, 64, 0.1, gen))
        opt.zero_grad()
        out.codebook_loss.backward()
        opt.step()
    assert _match_error(vq.codebook.detach(), centres) < 0.05


@pytest.mark.parametrize("ema", [True, False])
def test_dead_codes_are_restarted_onto_the_data(ema):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(7)

    def run(threshold: float) -> VectorQuantizer:
        vq = VectorQuantizer(
            2, 16, ema=ema, decay=0.8, kmeans_init=False, dead_code_threshold=threshold
        ).train()
        with torch.no_grad():
            vq.codebook.copy_(torch.randn(16, 2))
            vq.codebook[8:] += 100.0  # half the codebook far away from the data: never chosen
            if ema:
                vq.embed_sum.copy_(vq.codebook * 5.0)
            vq.cluster_size.fill_(5.0)
        for _ in range(40):
            vq(torch.randn(8, 2, 64, generator=gen))
        return vq

    restarted = run(threshold=1.0)
    assert restarted.codebook.detach().abs().max() < 10.0
    codes = restarted.encode(torch.randn(8, 2, 256, generator=gen))
    assert len(torch.unique(codes)) >= 14
    untouched = run(threshold=0.0)  # without restarts the far codes stay dead
    assert untouched.codebook.detach()[8:].abs().min() > 90.0


@pytest.mark.parametrize("ema", [True, False])
def test_used_codes_survive_batches_smaller_than_the_codebook(ema):
    """16 rows per batch, 256 codewords: the 16 in use stay (an absolute EMA count of 2 restarted them
    all at every step, so the codebook churned instead of learning)."""
    gen = torch.Generator().manual_seed(3)
    centres = _centres(16, 4, seed=5)
    vq = VectorQuantizer(4, 256, ema=ema, kmeans_init=False).train()
    with torch.no_grad():
        vq.codebook.copy_(torch.randn(256, 4, generator=gen) + 100.0)
        vq.codebook[:16] = centres
        if ema:
            vq.embed_sum.copy_(vq.codebook * vq.cluster_size[:, None])
    probe = _mixture(centres, 1, 64, 0.05, gen)
    before = vq.encode(probe)
    for _ in range(50):
        vq(centres.t()[None] + 0.05 * torch.randn(1, 4, 16, generator=gen))
    assert torch.equal(vq.encode(probe), before)
    assert _match_error(vq.codebook.detach()[:16], centres) < 0.1
    # nothing is dead yet: an unused codeword falls from its initial count of 1 below 0.1 x 16 / 256
    # only after ~500 steps of decay 0.99
    out = vq(centres.t()[None])
    assert out.restarted.item() == 0.0


@pytest.mark.parametrize("ema", [True, False])
def test_restarted_codewords_are_distinct_batch_rows(ema):
    """32 codewords restarted (24 dead, 8 near-duplicates) from a batch of 64 distinct rows take 32
    different rows: drawn with replacement, two of them often took the same row (the birthday odds of
    32 draws from 64 are > 99 %), an exact duplicate of which the lookup never picks the later one."""
    gen = torch.Generator().manual_seed(13)
    vq = VectorQuantizer(
        2, 64, ema=ema, kmeans_init=False, dead_code_threshold=0.5, duplicate_distance=1e-6
    ).train()
    with torch.no_grad():
        vq.codebook.copy_(torch.randn(64, 2, generator=gen))
        vq.codebook[32:56] += 1000.0  # never chosen, counts 0: dead
        vq.codebook[56:] = vq.codebook[:8]  # exact duplicates of codewords used more
        vq.cluster_size[:8] = 10.0
        vq.cluster_size[32:56] = 0.0
        vq.cluster_size[56:] = 2.0
        if ema:
            vq.embed_sum.copy_(vq.codebook * vq.cluster_size[:, None])
    x = torch.randn(1, 2, 64, generator=gen)
    for seed in range(5):
        torch.manual_seed(seed)
        trial = copy.deepcopy(vq)
        out = trial(x)
        assert round(float(out.restarted) * 64) == 24 and round(float(out.duplicates) * 64) == 8
        restarted = trial.codebook.detach()[32:]
        rows = x[0].t()
        assert (restarted[:, None] == rows[None]).all(-1).any(1).all()  # each is a batch row
        assert torch.unique(restarted, dim=0).shape[0] == 32


def test_vq_codes_match_a_naive_nearest_neighbour():
    torch.manual_seed(0)
    vq = VectorQuantizer(5, 32, kmeans_init=False).eval()
    x = torch.randn(3, 5, 40)
    codes = vq.encode(x).numpy()
    xs = x.transpose(1, 2).numpy().astype(np.float64)
    cb = vq.codebook.numpy().astype(np.float64)
    naive = np.array([[np.argmin([((v - c) ** 2).sum() for c in cb]) for v in row] for row in xs])
    assert (codes == naive).all()


def test_codes_follow_codebook_changes_and_far_codebooks_pick_the_nearest():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 16, kmeans_init=False).eval()
    x = torch.randn(1, 4, 50)
    before = vq.encode(x)
    with torch.no_grad():
        vq.codebook.mul_(-1.0)  # in place: the prepared lookup must see it
    assert not torch.equal(vq.encode(x), before)
    # codewords of norm ~15 spaced 1e-3 apart on a line (like trained speech-16k's later stages): float32
    # |c|^2 - 2 z.c cannot rank them; the float64 lookup picks the true nearest
    line = 7.5 + 1e-3 * torch.arange(16.0)[:, None] * torch.ones(4)
    with torch.no_grad():
        vq.codebook.copy_(line)
    probes = line[:-1] + 0.3e-3 * torch.ones(4)  # each nearer to its own codeword than to the next
    assert torch.equal(vq.encode(probes.t()[None])[0], torch.arange(15))


def test_l2_normalized_factorised_codes_use_cosine_similarity():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 32, codebook_dim=4, l2_normalize=True, kmeans_init=False).eval()
    x = torch.randn(2, 16, 30)
    codes = vq.encode(x)
    with torch.no_grad():
        proj = vq.in_proj(x).transpose(1, 2).numpy().astype(np.float64)  # [B, T, 4]
    cb = vq.codebook.numpy().astype(np.float64)
    cos = (proj / np.linalg.norm(proj, axis=-1, keepdims=True)) @ (cb / np.linalg.norm(cb, axis=1)[:, None]).T
    assert (codes.numpy() == cos.argmax(-1)).all()
    assert vq.decode(codes).shape == (2, 16, 30)
    plain = VectorQuantizer(16, 32, l2_normalize=True, kmeans_init=False).eval()
    assert torch.equal(plain.encode(x), plain.encode(3.7 * x))  # cosine lookup: scale invariant


@pytest.mark.parametrize("ema", [True, False])
def test_cosine_kmeans_init_gives_codewords_at_the_latents_scale(ema):
    """A cosine lookup clusters the first batch by direction; each codeword starts at the mean of its
    cluster's latents (what the EMA update keeps it at), not on the unit sphere: latents of norm 20-30
    quantized to vectors of norm <= 1 until the EMA caught up."""
    gen = torch.Generator().manual_seed(11)
    directions = torch.nn.functional.normalize(_centres(8, 4, seed=12), dim=1)
    which = torch.randint(8, (4, 64), generator=gen)
    norms = 20.0 + 10.0 * torch.rand(4, 64, 1, generator=gen)
    x = (directions[which] * norms + 0.01 * torch.randn(4, 64, 4, generator=gen)).transpose(1, 2)
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 8, l2_normalize=True, ema=ema, kmeans_init=True, dead_code_threshold=0).train()
    vq(x)
    codes = vq.encode(x).reshape(-1)
    rows = x.transpose(1, 2).reshape(-1, 4)
    for k in codes.unique():
        mean = rows[codes == k].mean(0)
        torch.testing.assert_close(vq.codebook.detach()[k], mean, rtol=1e-3, atol=1e-3)
    error = (vq.decode(vq.encode(x)) - x).norm(dim=1).mean()
    assert error < 0.1 * x.norm(dim=1).mean()


def test_straight_through_gradient_and_commitment_loss():
    torch.manual_seed(0)
    vq = VectorQuantizer(6, 16, kmeans_init=False).eval()
    z = torch.randn(2, 6, 10, requires_grad=True)
    out = vq(z)
    out.quantized.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))
    expected = ((z.detach() - vq.decode(out.codes)) ** 2).mean()
    assert torch.allclose(out.commitment_loss, expected)
    assert torch.equal(out.quantized.detach(), vq.decode(out.codes))
    assert float(out.codebook_loss) == 0.0  # EMA codebook: no codebook loss


def _trained_rvq(n_q: int = 8, **kwargs) -> tuple[ResidualVectorQuantizer, torch.Generator]:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(8)
    rvq = ResidualVectorQuantizer(16, n_q, 64, **kwargs).train()
    for _ in range(15):
        rvq(torch.randn(8, 16, 50, generator=gen))
    return rvq.eval(), gen


def test_rvq_error_falls_monotonically_with_codebooks():
    rvq, gen = _trained_rvq()
    z = torch.randn(8, 16, 100, generator=gen)
    codes = rvq.encode(z)
    errors = [float(((rvq.decode(codes[:, :n]) - z) ** 2).mean()) for n in range(1, 9)]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.5 * errors[0]
    assert torch.equal(rvq.encode(z, 3), codes[:, :3])


def test_rvq_encoding_is_deterministic_and_identical_in_train_and_eval():
    rvq, gen = _trained_rvq(quantizer_dropout=0.5, codebook_dim=8)
    z = torch.randn(4, 16, 60, generator=gen)
    reference = copy.deepcopy(rvq).eval()
    trained_step = rvq.train()(z)  # codes of a training step come from the codebooks before it
    assert torch.equal(trained_step.codes, reference.encode(z))
    assert torch.equal(reference.encode(z), reference.encode(z))
    evaluated = reference(z)
    assert torch.equal(evaluated.codes, reference.encode(z))
    # the forward's straight-through projection rounds differently from decode's codeword table
    torch.testing.assert_close(evaluated.quantized, reference.decode(evaluated.codes), rtol=0, atol=1e-5)


def _stages_used_per_item(**kwargs) -> list[int]:
    """How many codebooks each of 32 items of one training step decoded from (with dropout)."""
    rvq, gen = _trained_rvq(**kwargs)
    reference = copy.deepcopy(rvq)
    torch.manual_seed(3)
    z = torch.randn(32, 16, 20, generator=gen)
    out = rvq.train()(z)
    used = []
    for b in range(32):
        errs = [
            float((reference.decode(out.codes[b : b + 1, :n]) - out.quantized[b : b + 1]).abs().max())
            for n in range(1, 9)
        ]
        used.append(int(np.argmin(errs)) + 1)
        assert min(errs) < 1e-5
    return used


def test_quantizer_dropout_uses_a_prefix_of_codebooks_per_item():
    used = _stages_used_per_item(quantizer_dropout=1.0)
    assert len(set(used)) >= 4  # items really use different numbers of codebooks


def test_quantizer_dropout_draws_only_the_chosen_stage_counts():
    used = _stages_used_per_item(quantizer_dropout=1.0, dropout_choices=[3, 6])
    assert set(used) == {3, 6}
    assert set(_stages_used_per_item(quantizer_dropout=0.5, dropout_choices=[2])) == {2, 8}
    with pytest.raises(ValueError, match="dropout_choices"):
        ResidualVectorQuantizer(16, 8, 64, dropout_choices=[9])


def test_rvq_metrics_and_gradients_through_factorised_codes():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(12, 4, 32, codebook_dim=4, ema=False, quantizer_dropout=0.3).train()
    z = torch.randn(4, 12, 40, requires_grad=True)
    out = rvq(z)
    assert out.codes.shape == (4, 4, 40) and out.codes.dtype == torch.int64
    assert out.metrics["perplexity"].shape == (4,) and out.metrics["usage"].shape == (4,)
    assert (out.metrics["usage"] > 0).all() and (out.metrics["perplexity"] <= 32).all()
    (out.quantized.sum() + out.commitment_loss + out.codebook_loss).backward()
    assert z.grad.abs().sum() > 0
    assert all(q.codebook.grad is not None for q in rvq.quantizers)


def test_decode_accepts_fewer_codebooks_and_rejects_too_many():
    rvq = ResidualVectorQuantizer(8, 3, 16, kmeans_init=False).eval()
    assert rvq.decode(torch.zeros(2, 2, 5, dtype=torch.int64)).shape == (2, 8, 5)
    with pytest.raises(ValueError):
        rvq.decode(torch.zeros(2, 4, 5, dtype=torch.int64))
    with pytest.raises(ValueError):
        rvq.encode(torch.zeros(1, 8, 5), n_q=4)


@pytest.mark.parametrize("shape", [(2, 16, 0), (0, 16, 3), (1, 16, 1)])
def test_empty_and_one_frame_latents_round_trip(shape):
    """Encode gave codes of 0 frames (or 0 items) that decode and the forward could not reshape (a
    factorised stage's 1x1 convolution itself refuses 0 frames in the forward)."""
    rvq = ResidualVectorQuantizer(16, 3, 32, codebook_dim=4, kmeans_init=False).eval()
    z = torch.randn(*shape)
    codes = rvq.encode(z)
    assert codes.shape == (shape[0], 3, shape[2]) and codes.dtype == torch.int64
    assert rvq.decode(codes).shape == shape
    plain = ResidualVectorQuantizer(16, 3, 32, kmeans_init=False).eval()
    out = plain(z)
    assert out.quantized.shape == shape and torch.equal(out.codes, plain.encode(z))
    torch.testing.assert_close(out.quantized, plain.decode(out.codes))


def test_bitrate_mapping():
    assert num_quantizers_for_bitrate(6000, 50, 1024, 12) == 12
    assert num_quantizers_for_bitrate(5999, 50, 1024, 12) == 11
    assert num_quantizers_for_bitrate(1500, 75, 1024, 32) == 2
    assert supported_bitrates(50, 1024, 3) == [500.0, 1000.0, 1500.0]
    with pytest.raises(UsageError, match="500, 1000, 1500 b/s"):
        num_quantizers_for_bitrate(400, 50, 1024, 3)
    with pytest.raises(UsageError):
        num_quantizers_for_bitrate(3000, 50, 1024, 3)
    for not_a_number in ("1500", True, None):
        with pytest.raises(UsageError, match="bitrate must be a number of bits per second"):
            num_quantizers_for_bitrate(not_a_number, 50, 1024, 3)
    assert num_quantizers_for_bitrate(np.float32(1000.0), 50, 1024, 3) == 2
    rvq = ResidualVectorQuantizer(8, 12, 1024, kmeans_init=False)
    assert rvq.n_q_for_bitrate(3000, 50) == 6


@pytest.mark.gpu
def test_cuda_autocast_does_not_change_codes():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(32, 4, 256, codebook_dim=8).cuda().train()
    z = torch.randn(4, 32, 50, device="cuda")
    rvq(z)
    rvq.eval()
    reference = rvq.encode(z)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = rvq(z)
    assert out.quantized.dtype == torch.float32 and torch.equal(out.codes, reference)


def test_near_duplicate_codewords_are_restarted_and_separate():
    from audiokit.quantize.health import duplicate_pairs

    torch.manual_seed(0)
    vq = VectorQuantizer(
        4, 16, kmeans_init=False, dead_code_threshold=0, duplicate_cosine=0.9999, duplicate_distance=1e-3
    ).train()
    book = torch.randn(16, 4) * 3
    book[5] = book[3]  # an exact duplicate
    book[7] = book[2] * 1.5  # the same direction, another length (cosine 1)
    book[9] = book[8] + 1e-5  # closer than 1e-3 x the spread
    vq.codebook.copy_(book)
    vq.embed_sum.copy_(book)
    assert int(duplicate_pairs(vq.codebook, 0.9999, 1e-3).sum()) // 2 == 3
    first = vq(torch.randn(8, 4, 50) * 3)
    assert round(float(first.duplicates) * 16) == 3  # the later codeword of each pair (equal usage)
    assert float(first.restarted) == 0
    for _ in range(4):
        out = vq(torch.randn(8, 4, 50) * 3)
    assert not duplicate_pairs(vq.codebook, 0.9999, 1e-3).any()
    assert float(out.duplicates) == 0
    vq.eval()
    assert float(vq(torch.randn(1, 4, 10)).duplicates) == 0  # nothing restarts outside training


def test_codebook_health_report(tiny_codec_file):
    from audiokit.models import Codec
    from audiokit.quantize.health import codebook_health

    codec = Codec.from_pretrained(tiny_codec_file)
    clips = [torch.randn(1, 16000) * 0.1, torch.randn(1, 8000) * 0.1]
    report = codebook_health(codec, clips)
    assert [r["stage"] for r in report] == list(range(1, codec.num_codebooks + 1))
    for r in report:
        assert r["used"] + r["dead"] == codec.codebook_size
        assert 1 <= r["perplexity"] <= r["used"] + 1e-6
        assert r["frames"] == report[0]["frames"] >= 75 and r["min_distance"] > 0
    # a planted duplicate shows up in both counts
    stage = codec.quantizer.quantizers[0]
    stage.codebook[1] = stage.codebook[0]
    again = codebook_health(codec, clips[:1])[0]
    assert again["duplicates_cosine"] >= 1 and again["duplicates_euclidean"] >= 1


def test_code_space_geometry_against_numpy():
    from audiokit.quantize.health import effective_dimensions, offset, spread

    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(512, 8)) * [3.0, 2.0, 1.0, 1.0, 0.5, 0.5, 0.1, 0.1]
    eigen = np.linalg.eigvalsh(np.cov(cloud.T))
    assert effective_dimensions(torch.tensor(cloud)) == pytest.approx(eigen.sum() ** 2 / (eigen**2).sum())
    line = torch.linspace(-1, 1, 64)[:, None] * torch.tensor([1.0, 2.0, -1.0])
    assert effective_dimensions(line) == pytest.approx(1.0)
    shift = np.full(8, 50.0)
    rms = np.sqrt(((cloud - cloud.mean(0)) ** 2).sum(1).mean())
    assert offset(torch.tensor(cloud + shift)) == pytest.approx(np.linalg.norm(cloud.mean(0) + shift) / rms)
    assert spread(torch.tensor(cloud + shift)) == pytest.approx(rms)


def test_an_offset_code_space_fools_the_cosine_test_not_the_centred_one(tiny_codec_file):
    """Moving every codeword far from the origin (what an in-projection's bias does) makes all pairs
    near-parallel; the pairs counted about the codewords' mean and the distances do not change."""
    from audiokit.models import Codec
    from audiokit.quantize.health import codebook_health

    codec = Codec.from_pretrained(tiny_codec_file)
    clips = [torch.randn(1, 8000) * 0.1]
    before = codebook_health(codec, clips)[0]
    stage = codec.quantizer.quantizers[0]
    stage.codebook += 1e4 * stage.codebook.std()
    after = codebook_health(codec, clips)[0]
    assert before["duplicates_cosine"] == 0 and after["duplicates_cosine"] > 0
    assert after["duplicates_cosine_centred"] == before["duplicates_cosine_centred"] == 0
    assert after["offset"] > 1000 > before["offset"]
    assert after["effective_dims"] == pytest.approx(before["effective_dims"], rel=1e-6)
    assert after["duplicates_euclidean"] == before["duplicates_euclidean"] == 0


def test_codec_config_passes_duplicate_restarts_to_every_stage():
    from audiokit.models.codec import CONFIGS, Codec

    config = dataclasses.replace(CONFIGS["speech-16k"], duplicate_cosine=0.9999, duplicate_distance=1e-3)
    stages = Codec(config).quantizer.quantizers
    assert {(s.duplicate_cosine, s.duplicate_distance) for s in stages} == {(0.9999, 1e-3)}
