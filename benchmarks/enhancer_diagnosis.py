"""Where an enhancer's errors come from, on the fixed noisy validation set: speech distortion against noise
left, below and above the deep filter's band, for the model and for oracle ERB gains; and how its band
gains behave (mean, spread over frames, correlation with the oracle's).

Given the noisy input, the model's output is a linear function of it (per-bin gains plus a deep filter
whose coefficients depend on the noisy input only), so the same gains and filters applied to the clean
speech and to the noise alone split the output into *filtered speech* and *residual noise*:
``speech SDR = 10 log10(|s|^2 / |f(s) - s|^2)`` and ``noise reduction = 10 log10(|n|^2 / |f(n)|^2)``, in
dB, per clip, each below and above ``split_hz`` (the deep filter's upper edge). The oracle applies
``sqrt(E_clean / E_noisy)`` (at most 1) per ERB band and frame, the way the model applies its gains.

Usage: ``python benchmarks/enhancer_diagnosis.py (--weights W.safetensors | --checkpoint
RUN/checkpoints/latest.pt) [--clips 80]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from audiokit.models.enhancer import Enhancer
from audiokit.train.tasks.enhance import read_noisy_set


def parse_model_args(description: str) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """``--weights`` or ``--checkpoint`` (the enhancer to examine) and ``--clips``, parsed."""
    parser = argparse.ArgumentParser(description=description)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", type=Path)
    source.add_argument("--checkpoint", type=Path)
    parser.add_argument("--clips", type=int, default=80)
    return parser, parser.parse_args()


def load(args: argparse.Namespace) -> Enhancer:
    if args.weights:
        return Enhancer.from_pretrained(args.weights).eval()
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    model = Enhancer.from_config("enhance-16k", **(state["recipe"]["model"].get("options") or {}))
    model.load_state_dict(state["ema"]["module"])
    return model.eval()


def gains_and_filter(model: Enhancer, noisy: torch.Tensor):
    """The model's per-bin gains ``(1, bins, M)``, band gains ``(M, bands)`` and deep-filter
    coefficients for ``noisy (1, 1, T)``, as :meth:`Enhancer._enhance_spectrum` computes them."""
    c = model.config
    spec = model.analysis(noisy)[:, 0]
    h = model.input_proj(model._features(spec))
    h = model.lstm(F.gelu(model.frame_conv.forward_t(h)).transpose(1, 2)).transpose(1, 2)
    band_gains = torch.sigmoid(model.gain_head(h))
    coef = model.df_head(h).view(1, h.shape[1], c.df_bins, c.df_order, 2)
    coef = torch.view_as_complex(coef.permute(0, 2, 1, 3, 4).contiguous())
    return (band_gains @ model.erb_spread.t()).transpose(1, 2), band_gains[0], coef


def apply(model: Enhancer, x: torch.Tensor, gains: torch.Tensor, coef: torch.Tensor | None) -> np.ndarray:
    """``x (1, 1, T)`` through the given per-bin gains and (if any) deep filter."""
    spec = model.analysis(x)[:, 0]
    out = spec * gains
    if coef is not None:
        low = model.deep_filter(spec[:, : model.config.df_bins], coef)
        out = torch.cat([out[:, : model.config.df_bins] + low, out[:, model.config.df_bins :]], 1)
    return model.synthesis(out[:, None], x.shape[-1])[0, 0].numpy()


def split(x: np.ndarray, hz: float, rate: int) -> tuple[np.ndarray, np.ndarray]:
    spectrum = np.fft.rfft(x)
    low = np.where(np.fft.rfftfreq(x.shape[0], 1.0 / rate) < hz, spectrum, 0)
    return np.fft.irfft(low, x.shape[0]), np.fft.irfft(spectrum - low, x.shape[0])


def ratio_db(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(a**2) / max(np.sum(b**2), 1e-20)))


def rounded(values) -> list[float]:
    return [round(float(v), 2) for v in values]


def main() -> None:
    parser, args = parse_model_args(__doc__.split("\n\n")[0])
    torch.set_num_threads(1)
    model = load(args)
    if model.pitch is not None or model.noise_floor is not None or model.band_decoder is not None:
        parser.error(
            "the speech/noise split needs an enhancer without pitch analysis, noise floor or band convs"
        )
    rate, split_hz = model.sample_rate, model.config.df_bins * model.sample_rate / model.config.n_fft
    rows: list[list[float]] = []
    model_gains, oracle_gains = [], []
    with torch.no_grad():
        for _, (noisy, clean) in read_noisy_set("valid_noisy_16k", rate, args.clips, 6.0):
            noisy, clean = noisy[None, :1], clean[None, :1]
            noise = noisy - clean
            gains, band_gains, coef = gains_and_filter(model, noisy)
            oracle, valid = model.ideal_band_gains(noisy, clean)
            oracle_bins = (oracle @ model.erb_spread.t()).transpose(1, 2)
            model_gains.append(band_gains.numpy())
            oracle_gains.append(oracle[0].numpy())
            s, n = clean[0, 0].numpy(), noise[0, 0].numpy()
            row = []
            for g, df in ((gains, coef), (oracle_bins, None)):
                signals = (s, apply(model, clean, g, df), n, apply(model, noise, g, df))
                for ref, filtered, nz, left in zip(*(split(v, split_hz, rate) for v in signals), strict=True):
                    row += [ratio_db(ref, filtered - ref), ratio_db(nz, left)]
            rows.append(row)
    g, o = np.concatenate(model_gains), np.concatenate(oracle_gains)
    table = np.array(rows)
    keys = [
        f"{who}_{band}_{what}"
        for who in ("model", "oracle")
        for band in ("low", "high")
        for what in ("speech_sdr_db", "noise_reduction_db")
    ]
    correlation = [np.corrcoef(g[:, b], o[:, b])[0, 1] for b in range(g.shape[1])]
    report = {
        "clips": len(table),
        "split_hz": split_hz,
        "mean": dict(zip(keys, rounded(table.mean(0)), strict=True)),
        "band_gain_mean": rounded(g.mean(0)),
        "band_gain_std": rounded(g.std(0)),
        "oracle_gain_mean": rounded(o.mean(0)),
        "correlation_with_oracle": rounded(correlation),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
