"""A differentiable PESQ-style disturbance: the shape of ITU-T P.862's perceptual model as a loss.

PESQ compares the loudness of the reference and the degraded signal per band and frame, forgives
differences below a fraction of the softer of the two (masking), and adds an asymmetric term in which
*added* components (residual noise, artefacts) cost far more than removed ones; its MOS is
``4.5 - 0.1 d_sym - 0.0309 d_asym``. This loss keeps that structure in a simplified, smooth form
(PMSQE, Martin-Donas et al. 2018, is a closer approximation of the same idea):

1. power spectra of both signals (``n_fft``/``hop`` samples: 32/16 ms at 16 kHz, PESQ's frames),
   integrated over ``bands`` ERB bands and divided by the reference's mean band power (PESQ aligns the
   levels of the two files; the scale is not learnt from);
2. loudness ``L = (P + p0)^e - p0^e`` (Zwicker's exponent ``e = 0.23``; ``p0`` the threshold of
   audibility relative to the reference's mean level);
3. disturbance ``D = L_est - L_ref`` with a dead zone of ``deadzone x min(L_est, L_ref)`` (masking);
4. asymmetry factor ``A = ((P_est + p0) / (P_ref + p0))^1.2``, counted where ``A >= 3`` and capped at
   12, as in P.862;
5. per frame, the symmetric disturbance is the L3 norm over bands and the asymmetric one the L1 norm of
   ``|D| A``; the loss is their P.862-weighted sum averaged over frames.
"""

from __future__ import annotations

import torch
from torch import nn

from audiokit.dsp import erb_filterbank


class PesqStyleLoss(nn.Module):
    """``0.1 d_sym + 0.0309 d_asym`` (module docstring) of ``estimate`` against ``target`` ``(B, C, T)``,
    averaged over items, channels and frames; 0 for identical signals."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        hop_length: int = 256,
        bands: int = 42,
        exponent: float = 0.23,
        threshold_db: float = -30.0,
        deadzone: float = 0.25,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.exponent, self.deadzone = exponent, deadzone
        self.threshold = 10.0 ** (threshold_db / 10)
        filters = erb_filterbank(sample_rate, n_fft, bands)
        self.register_buffer("filters", filters / filters.sum(1, keepdim=True), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def _band_power(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` audio -> ``(N, frames, bands)`` band powers."""
        spec = torch.stft(x, self.n_fft, self.hop_length, window=self.window, return_complex=True)
        return torch.einsum("nft,bf->ntb", spec.real.square() + spec.imag.square(), self.filters)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        est = self._band_power(estimate.flatten(0, -2).float())
        ref = self._band_power(target.flatten(0, -2).float())
        level = ref.mean(dim=(1, 2), keepdim=True).detach().clamp_min(1e-10)
        est, ref = est / level, ref / level
        p0 = self.threshold
        loud_est = (est + p0).pow(self.exponent) - p0**self.exponent
        loud_ref = (ref + p0).pow(self.exponent) - p0**self.exponent
        difference = loud_est - loud_ref
        masked = torch.relu(difference.abs() - self.deadzone * torch.minimum(loud_est, loud_ref))
        ratio = ((est + p0) / (ref + p0)).pow(1.2)
        asymmetry = torch.where(ratio >= 3.0, ratio.clamp_max(12.0), torch.zeros_like(ratio))
        cubes = masked.pow(3).mean(-1)
        symmetric = torch.where(cubes > 0, cubes, torch.ones_like(cubes)).pow(1 / 3) * (cubes > 0)
        asymmetric = (masked * asymmetry).mean(-1)
        return (0.1 * symmetric + 0.0309 * asymmetric).mean()
