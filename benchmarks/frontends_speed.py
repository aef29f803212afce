"""CPU speed of the learnable front ends, measured side by side in one run.

* DiffSTFT forward with fixed integer parameters vs ``torch.stft`` on the same input (target <= 1.5x);
* DiffSTFT forward+backward (gradients for the input, window length and hop) vs ``torch.stft``
  forward+backward (gradient for the input) (target <= 3x);
* the general fractional-hop path, for information;
* AdaptiveFilterbank (4 banks x 64 bands) vs the 64-band log-mel front end, forward and forward+backward.

Usage: ``python benchmarks/frontends_speed.py [--json] [--threads 1] [--repeats 20]``; writes
``benchmarks/results/frontends_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from audiokit.argtypes import add_threads_option, finite_number, whole_number
from audiokit.frontends import DiffSTFT, build_frontend
from audiokit.provenance import run_info, write_json

RESULTS = Path(__file__).resolve().parent / "results"
MIN_SECONDS = 0.02
"""Shortest ``--seconds``: more than ``n_fft // 2`` samples (reflect padding) and one hop at 16 kHz."""


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median time (ms) of each candidate, calls alternated one by one so they share the machine's noise."""
    for fn in fns.values():
        for _ in range(2):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            began = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - began)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the result JSON to stdout")
    add_threads_option(parser)
    parser.add_argument("--repeats", type=whole_number(), default=60)
    parser.add_argument("--batch", type=whole_number(), default=8)
    parser.add_argument("--seconds", type=finite_number(MIN_SECONDS, above=False), default=4.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "frontends_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sr, n_fft, win, hop = 16000, 512, 400, 160
    x = 0.1 * torch.randn(args.batch, int(args.seconds * sr))
    xg = x.clone().requires_grad_()
    window = torch.hann_window(win)

    fixed = DiffSTFT(n_fft, win, hop, learnable=False)
    learnable = DiffSTFT(n_fft, win, hop)
    fractional = DiffSTFT(n_fft, win + 0.3, hop + 0.3)
    assert (fixed(x) - torch.stft(x, n_fft, hop, win, window, return_complex=True)).abs().max() < 1e-5

    def torch_stft(inp: torch.Tensor) -> torch.Tensor:
        return torch.stft(inp, n_fft, hop, win, window, center=True, return_complex=True)

    def backward(
        fn: Callable[[torch.Tensor], torch.Tensor], module: torch.nn.Module | None = None
    ) -> Callable:
        def run() -> None:
            xg.grad = None
            if module is not None:
                module.zero_grad(set_to_none=True)
            fn(xg).abs().sum().backward()

        return run

    stft_times = interleaved(
        {
            "torch_stft_forward": lambda: torch_stft(x),
            "diffstft_fixed_forward": lambda: fixed(x),
            "torch_stft_forward_backward": backward(torch_stft),
            "diffstft_learnable_forward_backward": backward(learnable, learnable),
        },
        args.repeats,
    )
    general = interleaved(
        {
            "diffstft_fractional_forward": lambda: fractional(x),
            "diffstft_fractional_forward_backward": backward(fractional, fractional),
        },
        max(3, args.repeats // 4),
    )
    mel = build_frontend("mel", sr)
    adaptive = build_frontend("adaptive", sr).train()
    with torch.no_grad():
        bank_times = interleaved({"mel_forward": lambda: mel(x), "adaptive_forward": lambda: adaptive(x)}, 10)
    bank_times |= interleaved(
        {
            "mel_forward_backward": backward(mel),
            "adaptive_forward_backward": backward(adaptive, adaptive),
        },
        10,
    )
    ratios = {
        "diffstft_forward_vs_torch_stft": stft_times["diffstft_fixed_forward"]
        / stft_times["torch_stft_forward"],
        "diffstft_forward_backward_vs_torch_stft": stft_times["diffstft_learnable_forward_backward"]
        / stft_times["torch_stft_forward_backward"],
        "fractional_forward_vs_torch_stft": general["diffstft_fractional_forward"]
        / stft_times["torch_stft_forward"],
        "fractional_forward_backward_vs_torch_stft": general["diffstft_fractional_forward_backward"]
        / stft_times["torch_stft_forward_backward"],
        "adaptive_forward_vs_mel": bank_times["adaptive_forward"] / bank_times["mel_forward"],
        "adaptive_forward_backward_vs_mel": bank_times["adaptive_forward_backward"]
        / bank_times["mel_forward_backward"],
    }
    result = {
        "benchmark": "frontends_speed",
        **run_info(),
        "settings": {
            "device": "cpu",
            "batch": args.batch,
            "seconds": args.seconds,
            "sample_rate": sr,
            "n_fft": n_fft,
            "win_length": win,
            "hop_length": hop,
            "loss": "sum |X|",
            "adaptive": "4 banks (mel, erb, linear, gabor) x 64 bands, 641 taps, log",
        },
        "milliseconds": stft_times | general | bank_times,
        "ratios": ratios,
        "targets": {"diffstft_forward_vs_torch_stft": 1.5, "diffstft_forward_backward_vs_torch_stft": 3.0},
        "pass": ratios["diffstft_forward_vs_torch_stft"] <= 1.5
        and ratios["diffstft_forward_backward_vs_torch_stft"] <= 3.0,
    }
    write_json(args.out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, ms in result["milliseconds"].items():
            print(f"{name:>40}: {ms:8.2f} ms")
        for name, ratio in ratios.items():
            print(f"{name:>40}: {ratio:6.2f}x")
        print(f"targets met: {result['pass']}; wrote {args.out}")


if __name__ == "__main__":
    main()
