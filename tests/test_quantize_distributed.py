"""audiokit.quantize under torch.distributed (gloo, 2 CPU processes): codebooks stay in sync and EMA
statistics equal those of one process on the concatenated batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from audiokit.quantize import ResidualVectorQuantizer, VectorQuantizer


def _batch(rank: int) -> torch.Tensor:
    return torch.randn(4, 3, 32, generator=torch.Generator().manual_seed(100 + rank)) + rank


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial codebooks on every rank
        ema = VectorQuantizer(3, 8, decay=0.9, kmeans_init=False, dead_code_threshold=0.0).train()
        ema(_batch(rank))
        torch.manual_seed(1 + rank)  # different local randomness: restarts and seeds must still agree
        rvq = ResidualVectorQuantizer(
            3, 3, 16, kmeans_init=True, dead_code_threshold=1.0, quantizer_dropout=0.5
        )
        rvq.train()
        for step in range(5):
            rvq(_batch(rank) * (1 + step))
        torch.save({"ema": ema.state_dict(), "rvq": rvq.state_dict()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_codebooks_are_all_reduced_across_ranks(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in states[0]["rvq"].items():
        assert torch.equal(value, states[1]["rvq"][key]), key
    torch.manual_seed(0)
    single = VectorQuantizer(3, 8, decay=0.9, kmeans_init=False, dead_code_threshold=0.0).train()
    single(torch.cat([_batch(0), _batch(1)]))
    for r in range(2):
        assert torch.allclose(states[r]["ema"]["codebook"], single.codebook, atol=1e-5)
        assert torch.allclose(states[r]["ema"]["cluster_size"], single.cluster_size, atol=1e-5)
