"""Balancer: each loss's share of the output gradient is w_i / sum(w), whatever the losses' scales."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from audiokit.losses import Balancer, MultiResolutionSTFTLoss, MultiScaleMelLoss, time_l1_loss
from audiokit.nn import SEANetDecoder

WEIGHTS = {"l1": 0.1, "stft": 1.0, "mel": 2.0}
SPEECH = sorted((Path(__file__).resolve().parent.parent / "samples").glob("speech_fr_16k_*.flac"))


def decoder_and_losses(seed: int = 0, scale: dict[str, float] | None = None):
    """A tiny decoder's output and real L1 / MR-STFT / mel losses against real speech (``seed`` picks
    the latent and the excerpt)."""
    torch.manual_seed(0)
    decoder = SEANetDecoder(dimension=8, n_filters=4, ratios=(4, 4))
    output = decoder(torch.randn(2, 8, 64, generator=torch.Generator().manual_seed(seed)))
    audio, rate = sf.read(SPEECH[0], dtype="float32")
    assert rate == 16000
    start = 4000 * (1 + seed)
    target = torch.from_numpy(audio[start : start + 2048]).reshape(2, 1, 1024)
    losses = {
        "l1": time_l1_loss(output, target),
        "stft": MultiResolutionSTFTLoss((256, 128), (64, 32), (256, 128))(output, target),
        "mel": MultiScaleMelLoss(16000, (64, 256), (10, 40))(output, target),
    }
    for name, factor in (scale or {}).items():
        losses[name] = losses[name] * factor
    return decoder, output, losses


def balanced_step(balancer: Balancer, seed: int = 0, scale: dict[str, float] | None = None):
    """Run ``balancer.backward`` and return (combined output gradient, raw per-loss gradients)."""
    _, output, losses = decoder_and_losses(seed, scale)
    raw = {k: torch.autograd.grad(v, output, retain_graph=True)[0] for k, v in losses.items()}
    seen = []
    output.register_hook(seen.append)
    balancer.backward(losses, output)
    return seen[-1], raw  # the hook also sees the balancer's own autograd.grad calls


def item_norm(grad: torch.Tensor) -> float:
    return grad.flatten(1).norm(dim=1).mean().item()


def coefficients(combined: torch.Tensor, raw: dict[str, torch.Tensor]) -> dict[str, float]:
    """Solve ``combined = sum_i c_i raw_i`` by least squares (the raw gradients are independent)."""
    basis = torch.stack([g.flatten() for g in raw.values()], 1).double()
    solution = torch.linalg.lstsq(basis, combined.flatten().double()[:, None]).solution.flatten()
    residual = combined.flatten().double() - basis @ solution
    assert residual.norm() < 1e-5 * combined.norm()
    return dict(zip(raw, solution.tolist(), strict=True))


def shares(combined: torch.Tensor, raw: dict[str, torch.Tensor]) -> dict[str, float]:
    parts = {k: c * item_norm(raw[k]) for k, c in coefficients(combined, raw).items()}
    total = sum(parts.values())
    return {k: v / total for k, v in parts.items()}


def test_each_loss_gets_its_weight_share():
    combined, raw = balanced_step(Balancer(WEIGHTS, total_norm=1.0))
    norms = [item_norm(g) for g in raw.values()]
    assert max(norms) / min(norms) > 10  # the raw losses pull very unequally ...
    for name, share in shares(combined, raw).items():  # ... the balanced ones by weight
        assert share == pytest.approx(WEIGHTS[name] / sum(WEIGHTS.values()), rel=0.01)
    assert item_norm(combined) == pytest.approx(1.0, rel=0.3)  # the per-loss norms add up to total_norm


def test_scaling_a_loss_by_1000_changes_nothing():
    combined, raw = balanced_step(Balancer(WEIGHTS))
    scaled, _ = balanced_step(Balancer(WEIGHTS), scale={"stft": 1000.0})
    torch.testing.assert_close(scaled, combined, rtol=1e-4, atol=1e-9)
    for name, share in shares(scaled, raw).items():
        assert share == pytest.approx(WEIGHTS[name] / sum(WEIGHTS.values()), rel=0.01)


def test_shares_hold_over_steps_and_gradients_reach_the_model():
    balancer = Balancer(WEIGHTS, ema_decay=0.9)
    for _ in range(3):
        combined, raw = balanced_step(balancer)
        for name, share in shares(combined, raw).items():
            assert share == pytest.approx(WEIGHTS[name] / sum(WEIGHTS.values()), rel=0.01)
    assert set(balancer.metrics) == {"ratio_l1", "ratio_stft", "ratio_mel"}
    assert sum(balancer.metrics.values()) == pytest.approx(1.0)
    decoder, output, losses = decoder_and_losses()
    Balancer(WEIGHTS).backward(losses, output)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in decoder.parameters())


def test_ema_state_round_trips_and_weights_are_checked():
    balancer = Balancer(WEIGHTS, ema_decay=0.5)
    balanced_step(balancer, seed=0)
    restored = Balancer(WEIGHTS, ema_decay=0.5)
    restored.load_state_dict(balancer.state_dict())
    torch.testing.assert_close(balanced_step(restored, seed=1)[0], balanced_step(balancer, seed=1)[0])
    with pytest.raises(KeyError, match="no balancer weight"):
        balanced_step(Balancer({"l1": 1.0}))
    with pytest.raises(ValueError, match="positive sum"):
        Balancer({"l1": 0.0})


def _ddp_worker(rank: int, world: int, store: str, results: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        combined, raw = balanced_step(Balancer(WEIGHTS), seed=rank)
        coefs = coefficients(combined, raw)
        torch.save(
            {"coefs": coefs, "norms": {k: item_norm(g) for k, g in raw.items()}}, f"{results}/rank{rank}.pt"
        )
    finally:
        dist.destroy_process_group()


def test_ddp_norms_are_averaged_across_ranks(tmp_path):
    """Two gloo ranks with different data apply the same scales, computed from the mean norms."""
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    total_weight = sum(WEIGHTS.values())
    for name, weight in WEIGHTS.items():
        mean_norm = (ranks[0]["norms"][name] + ranks[1]["norms"][name]) / 2
        for result in ranks:
            assert result["coefs"][name] == pytest.approx(weight / total_weight / mean_norm, rel=1e-3)
    assert ranks[0]["norms"]["mel"] != pytest.approx(ranks[1]["norms"]["mel"], rel=1e-3)
