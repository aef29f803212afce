"""Loss balancer (EnCodec semantics): each loss's gradient w.r.t. the model output gets a fixed share.

For losses ``l_i`` with weights ``w_i`` and ``g_i = d l_i / d output``, the balancer back-propagates
``sum_i total_norm * (w_i / sum_j w_j) * g_i / (eps + n_i)``, where ``n_i`` is an exponential moving
average (bias-corrected, decay ``ema_decay``) of ``||g_i||`` (the mean over batch items of each item's
gradient norm when ``per_batch_item``, else the norm over the whole batch). So loss ``i`` contributes
a gradient of norm about ``total_norm * w_i / sum_j w_j``, independent of its scale: multiplying a
loss by 1000 changes nothing. Under ``torch.distributed`` the norms are averaged over ranks before
they enter the EMA, so every rank applies the same scales.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class Balancer:
    """Rescale per-loss gradients w.r.t. ``output`` to shares ``w_i / sum(w)`` of ``total_norm``.

    Usage: ``balancer.backward({"mel": mel, "stft": stft}, output)`` instead of
    ``(mel + stft).backward()``; losses that do not depend on ``output`` (e.g. a commitment loss)
    are back-propagated separately. Weights of 0 are allowed (the loss is skipped); the shares are
    taken over the weighted losses present in each call.
    """

    def __init__(
        self,
        weights: dict[str, float],
        ema_decay: float = 0.999,
        total_norm: float = 1.0,
        per_batch_item: bool = True,
        eps: float = 1e-12,
    ) -> None:
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"balancer weights must be >= 0 with a positive sum, got {weights}")
        self.weights = dict(weights)
        self.ema_decay = ema_decay
        self.total_norm = total_norm
        self.per_batch_item = per_batch_item
        self.eps = eps
        self._sums: dict[str, float] = {}
        self._counts: dict[str, float] = {}
        self.metrics: dict[str, float] = {}

    def _norm(self, grad: torch.Tensor) -> torch.Tensor:
        if self.per_batch_item:
            return grad.flatten(1).norm(dim=1).mean()
        return grad.norm()

    def _update_ema(self, norms: dict[str, float]) -> dict[str, float]:
        averaged = {}
        for name, value in norms.items():
            self._sums[name] = self.ema_decay * self._sums.get(name, 0.0) + value
            self._counts[name] = self.ema_decay * self._counts.get(name, 0.0) + 1.0
            averaged[name] = self._sums[name] / self._counts[name]
        return averaged

    def backward(self, losses: dict[str, torch.Tensor], output: torch.Tensor) -> None:
        """Back-propagate the balanced combination of ``losses`` (scalars depending on ``output``).

        Afterwards :attr:`metrics` holds, per loss, ``ratio_<name>``: its share of the sum of the raw
        gradient norms (before balancing), a diagnostic of how the losses would have pulled.
        """
        unknown = set(losses) - set(self.weights)
        if unknown:
            raise KeyError(f"losses {sorted(unknown)} have no balancer weight; known: {sorted(self.weights)}")
        active = [name for name in losses if self.weights[name] > 0]
        grads = {name: torch.autograd.grad(losses[name], [output], retain_graph=True)[0] for name in active}
        norms = torch.stack([self._norm(grads[name]) for name in active]).detach()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(norms)
            norms /= dist.get_world_size()
        raw = dict(zip(active, norms.tolist(), strict=True))
        averaged = self._update_ema(raw)
        weight_sum = sum(self.weights[name] for name in active)
        combined = torch.zeros_like(output)
        for name in active:
            scale = self.total_norm * self.weights[name] / weight_sum / (self.eps + averaged[name])
            combined.add_(grads[name], alpha=scale)
        raw_total = sum(raw.values()) + self.eps
        self.metrics = {f"ratio_{name}": value / raw_total for name, value in raw.items()}
        output.backward(combined)

    def state_dict(self) -> dict[str, dict[str, float]]:
        """EMA state, for checkpoints."""
        return {"sums": dict(self._sums), "counts": dict(self._counts)}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        """Restore the EMA state saved by :meth:`state_dict`."""
        self._sums = dict(state["sums"])
        self._counts = dict(state["counts"])
