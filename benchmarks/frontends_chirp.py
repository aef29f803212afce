"""Seed experiment: fit DiffSTFT window lengths to synthetic signals by gradient descent, no network.

1. Scalar length, Gaussian window, linear chirp (alone, and plus two sinusoids): start 4x too long
   and 4x too short, maximise the mean per-frame Jones-Parks concentration with Adam, compare the
   result with the analytic optimum ``L* = 6 * fs / sqrt(2 pi c)`` (docs/frontends.md) and with a
   grid search of the same criterion.
2. Time-varying lengths on a steady tone that switches to a fast chirp: compare the learned
   per-frame length with the per-frame grid optimum (the local optimum).

Usage: ``python benchmarks/frontends_chirp.py [--json] [--quick]``; writes
``benchmarks/results/frontends_chirp.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from audiokit.frontends import DiffSTFT, concentration
from audiokit.provenance import run_info, write_json

SAMPLE_RATE = 16000
RESULTS = Path(__file__).resolve().parent / "results"


def analytic_length(chirp_rate: float, sample_rate: int = SAMPLE_RATE) -> float:
    """Optimal nominal Gaussian length (samples, std = L / 6) for a linear chirp of ``chirp_rate`` Hz/s."""
    return 6.0 * sample_rate / math.sqrt(2.0 * math.pi * chirp_rate)


def chirp(seconds: float, f0: float, rate: float) -> torch.Tensor:
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    return torch.cos(2 * math.pi * (f0 * t + 0.5 * rate * t**2))


def inner_frames(spec: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Drop frames that reach into the padding (the signal edges are not part of the model)."""
    edge = -(-(n_fft // 2) // hop)
    return spec[..., edge : spec.shape[-1] - edge]


def mean_concentration(module: DiffSTFT, x: torch.Tensor, hop: int) -> torch.Tensor:
    return concentration(inner_frames(module(x), module.n_fft, hop), dim=-2).mean()


def fit_scalar(x: torch.Tensor, start: float, n_fft: int, hop: int, steps: int) -> tuple[float, list[float]]:
    """Adam on the window length (step size proportional to the current length, decaying)."""
    module = DiffSTFT(n_fft, start, hop, "gaussian").double()
    module.hop_length.requires_grad_(False)
    opt = torch.optim.Adam([module.win_length], lr=1.0)
    path = [start]
    for step in range(steps):
        opt.param_groups[0]["lr"] = 0.05 * float(module.win_length.detach()) * (1 - step / steps) + 0.5
        opt.zero_grad()
        (-mean_concentration(module, x, hop)).backward()
        opt.step()
        path.append(float(module.lengths().detach()))
    return path[-1], path


def grid_curve(
    x: torch.Tensor, lengths: np.ndarray, n_fft: int, hop: int, per_frame: bool = False
) -> np.ndarray:
    """Criterion for each length: ``(len(lengths),)``, or ``(len(lengths), frames)`` with ``per_frame``."""
    out = []
    module = DiffSTFT(n_fft, float(lengths[0]), hop, "gaussian", learnable=False).double()
    with torch.no_grad():
        for length in lengths:
            module.win_length.fill_(float(length))
            spec = module(x)
            values = (
                concentration(spec, dim=-2)[0]
                if per_frame
                else concentration(inner_frames(spec, n_fft, hop), dim=-2).mean()
            )
            out.append(values.numpy())
    return np.stack(out)


def grid_optimum(x: torch.Tensor, low: float, high: float, n_fft: int, hop: int) -> float:
    """Argmax on a log grid, refined by a parabola through the best point and its neighbours (log L)."""
    lengths = np.geomspace(low, high, 61)
    values = grid_curve(x, lengths, n_fft, hop)
    i = int(np.clip(values.argmax(), 1, len(lengths) - 2))
    logs = np.log(lengths[i - 1 : i + 2])
    a, b, _ = np.polyfit(logs, values[i - 1 : i + 2], 2)
    return float(np.exp(-b / (2 * a))) if a < 0 else float(lengths[i])


def scalar_experiments(steps: int) -> tuple[list[dict], dict]:
    n_fft, hop, rate = 2048, 64, 7000.0
    target = analytic_length(rate)
    pure = chirp(1.0, 500.0, rate)
    t = torch.arange(SAMPLE_RATE, dtype=torch.float64) / SAMPLE_RATE
    mixed = pure + 0.5 * torch.cos(2 * math.pi * 1200 * t) + 0.5 * torch.cos(2 * math.pi * 5300 * t + 1.0)
    rows, curves = [], {}
    for name, signal in (("chirp", pure), ("chirp+2 sinusoids", mixed)):
        x = signal[None]
        grid = grid_optimum(x, target / 6, min(6 * target, n_fft), n_fft, hop)
        curve_lengths = np.geomspace(target / 5, n_fft, 40)
        curves[name] = {"lengths": curve_lengths, "values": grid_curve(x, curve_lengths, n_fft, hop)}
        for factor in (4.0, 0.25):
            began = time.perf_counter()
            learned, path = fit_scalar(x, factor * target, n_fft, hop, steps)
            rows.append(
                {
                    "signal": name,
                    "start_factor": factor,
                    "start_length": factor * target,
                    "learned_length": learned,
                    "analytic_length": target,
                    "grid_length": grid,
                    "rel_error_vs_analytic": learned / target - 1,
                    "rel_error_vs_grid": learned / grid - 1,
                    "steps": steps,
                    "seconds": time.perf_counter() - began,
                    "path": path,
                }
            )
    return rows, curves


def time_varying_experiment(steps: int) -> dict:
    """Steady 1.5 kHz tone for 0.5 s, then a 500 -> 7500 Hz chirp in 0.5 s (14 kHz/s)."""
    n_fft, hop, rate, start = 1024, 128, 14000.0, 128.0
    tone = torch.cos(2 * math.pi * 1500 * torch.arange(SAMPLE_RATE // 2, dtype=torch.float64) / SAMPLE_RATE)
    x = torch.cat([tone, chirp(0.5, 500.0, rate)])[None]
    n_frames = 1 + x.shape[-1] // hop
    module = DiffSTFT(n_fft, start, hop, "gaussian", time_varying=True, max_frames=n_frames).double()
    module.hop_length.requires_grad_(False)
    opt = torch.optim.Adam([module.win_length], lr=1.0)
    for step in range(steps):
        opt.param_groups[0]["lr"] = 30.0 * (1 - step / steps) + 0.3
        opt.zero_grad()
        (-concentration(module(x), dim=-2).sum()).backward()
        opt.step()
    learned = module.lengths().detach().numpy()
    grid = np.geomspace(32, n_fft, 80)
    local = grid[grid_curve(x, grid, n_fft, hop, per_frame=True).argmax(0)]
    centres = np.arange(n_frames) * hop
    switch = SAMPLE_RATE // 2
    tone_frames = (centres + n_fft // 2 < switch) & (centres - n_fft // 2 >= 0)
    chirp_frames = (centres - n_fft // 2 >= switch) & (centres + n_fft // 2 <= x.shape[-1])
    ratio = learned / local - 1
    target = analytic_length(rate)
    return {
        "n_fft": n_fft,
        "hop": hop,
        "start_length": start,
        "chirp_rate_hz_per_s": rate,
        "analytic_chirp_length": target,
        "steps": steps,
        "tone_median_abs_rel_error_vs_local": float(np.median(np.abs(ratio[tone_frames]))),
        "chirp_median_abs_rel_error_vs_local": float(np.median(np.abs(ratio[chirp_frames]))),
        "chirp_median_learned_length": float(np.median(learned[chirp_frames])),
        "chirp_median_rel_error_vs_analytic": float(np.median(learned[chirp_frames]) / target - 1),
        "tone_median_learned_length": float(np.median(learned[tone_frames])),
        "centres": centres.tolist(),
        "learned": learned.tolist(),
        "local_optimum": local.tolist(),
        "signal": x[0].numpy(),
    }


def plot(rows: list[dict], curves: dict, varying: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    for name, curve in curves.items():
        ax.semilogx(curve["lengths"], curve["values"], label=f"criterion, {name}")
    ax.axvline(rows[0]["analytic_length"], color="k", ls="--", label="analytic L* (chirp)")
    for row in rows:
        ax.plot(
            row["learned_length"],
            np.interp(
                row["learned_length"], curves[row["signal"]]["lengths"], curves[row["signal"]]["values"]
            ),
            "o",
            label=f"learned ({row['signal']}, start x{row['start_factor']:g})",
        )
    ax.set(
        xlabel="Gaussian window length L (samples, std = L/6)",
        ylabel="mean frame concentration",
        title="criterion vs window length",
    )
    ax.legend(fontsize=7)
    ax = axes[1]
    for row in rows:
        ax.semilogy(row["path"], label=f"{row['signal']}, start x{row['start_factor']:g}")
    ax.axhline(rows[0]["analytic_length"], color="k", ls="--", label="analytic L*")
    ax.set(xlabel="Adam step", ylabel="window length (samples)", title="optimisation paths")
    ax.legend(fontsize=7)
    ax = axes[2]
    x = varying["signal"]
    ax.specgram(x, NFFT=512, Fs=SAMPLE_RATE, noverlap=384, cmap="magma")
    ax2 = ax.twinx()
    t = np.array(varying["centres"]) / SAMPLE_RATE
    ax2.plot(t, varying["local_optimum"], "c.", label="per-frame grid optimum")
    ax2.plot(t, varying["learned"], "w-", lw=2, label="learned per-frame length")
    ax2.axhline(varying["analytic_chirp_length"], color="y", ls="--", label="analytic L* (chirp part)")
    ax2.set(ylabel="window length (samples)", yscale="log")
    ax2.legend(fontsize=7, loc="upper left")
    ax.set(xlabel="time (s)", ylabel="frequency (Hz)", title="tone -> fast chirp, time-varying length")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the result JSON to stdout")
    parser.add_argument("--quick", action="store_true", help="fewer optimisation steps (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS / "frontends_chirp.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    steps = 40 if args.quick else 150
    rows, curves = scalar_experiments(steps)
    varying = time_varying_experiment(100 if args.quick else 300)
    worst = max(abs(r["rel_error_vs_analytic"]) for r in rows if r["signal"] == "chirp")
    result = {
        "benchmark": "frontends_chirp",
        **run_info(),
        "settings": {
            "sample_rate": SAMPLE_RATE,
            "window": "gaussian (std = L/6)",
            "criterion": "mean per-frame Jones-Parks concentration sum P^2 / (sum P)^2",
        },
        "scalar": [{k: v for k, v in r.items() if k != "path"} for r in rows],
        "time_varying": {
            k: v for k, v in varying.items() if k not in ("centres", "learned", "local_optimum", "signal")
        },
        "chirp_worst_rel_error_vs_analytic": worst,
        "target_rel_error": 0.05,
        "pass": worst <= 0.05,
    }
    write_json(args.out, result)
    plot(rows, curves, varying, args.out.with_suffix(".png"))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for r in rows:
            print(
                f"{r['signal']:>18} start x{r['start_factor']:<4g} learned {r['learned_length']:7.1f}  "
                f"analytic {r['analytic_length']:7.1f} ({100 * r['rel_error_vs_analytic']:+.2f} %)  "
                f"grid {r['grid_length']:7.1f} ({100 * r['rel_error_vs_grid']:+.2f} %)"
            )
        v = result["time_varying"]
        print(
            f"time-varying: median |learned/local-1| tone {v['tone_median_abs_rel_error_vs_local']:.1%}, "
            f"chirp {v['chirp_median_abs_rel_error_vs_local']:.1%}; chirp median length "
            f"{v['chirp_median_learned_length']:.1f} vs analytic {v['analytic_chirp_length']:.1f}"
        )
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
