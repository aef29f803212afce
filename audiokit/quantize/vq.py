"""Single-codebook vector quantizer: EMA or loss-trained codebook, k-means init, dead-code restart.

Shapes: latents are ``[batch, dim, frames]`` float; codes are ``[batch, frames]`` int64 in
``[0, codebook_size)``. With ``codebook_dim < dim`` the latent is projected down before the lookup
and the codeword projected back up (DAC's factorised codes); with ``l2_normalize`` the
nearest-neighbour search uses cosine similarity (latent and codewords L2-normalised for the lookup
only; the output is the stored codeword, as in DAC). Every lookup (training, offline coding,
streaming) is :meth:`~audiokit.quantize.lookup.CodebookSearch.nearest` (float64 scores).

Distributed training: codebook statistics (EMA counts and sums, k-means statistics) are all-reduced
and restart samples / k-means seeds are broadcast from rank 0 whenever ``torch.distributed`` is
initialised, so every rank keeps the same codebook. ``dead_code_threshold`` then refers to the
global (all-rank) batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from audiokit.quantize.distributed import all_reduce_sum_, broadcast_
from audiokit.quantize.health import redundant_codewords
from audiokit.quantize.kmeans import kmeans
from audiokit.quantize.lookup import CodebookSearch, StageLookup


@dataclass
class VQOutput:
    """Result of one :class:`VectorQuantizer` forward pass.

    ``quantized`` ``[B, dim, frames]`` carries a straight-through gradient to the input; ``codes``
    ``[B, frames]``; the losses are scalars averaged over the kept (unmasked) items; ``perplexity``
    (exp of the entropy of code use) and ``usage`` (fraction of codewords used) are measured on the
    kept items of this batch; ``restarted`` is the fraction of codewords restarted as dead by this
    pass (0 outside training) and ``duplicates`` the fraction restarted as near-duplicates of another.
    A healthy codebook restarts a few; most of them at every step means churn, not learning.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    commitment_loss: torch.Tensor
    codebook_loss: torch.Tensor
    perplexity: torch.Tensor
    usage: torch.Tensor
    restarted: torch.Tensor
    duplicates: torch.Tensor


class VectorQuantizer(nn.Module):
    """Nearest-codeword quantizer of ``[B, dim, frames]`` latents.

    Args:
        dim: latent channels.
        codebook_size: number of codewords.
        codebook_dim: lookup dimension; ``None`` or ``dim`` means no projection, smaller means
            factorised codes through 1x1 convolutions.
        l2_normalize: nearest neighbour by cosine similarity.
        ema: update codewords by exponential moving averages of their assigned vectors (no codebook
            gradient, ``codebook_loss`` is 0); otherwise the codebook is a parameter trained through
            ``codebook_loss``.
        decay: EMA decay of the codeword statistics and of the usage counts.
        epsilon: Laplace smoothing of the EMA counts.
        kmeans_init: on the first training batch, set the codebook by k-means on that batch.
        kmeans_iters: Lloyd iterations of that k-means.
        dead_code_threshold: in training, a codeword whose EMA usage count per batch falls below this
            fraction of the uniform share (``rows per batch / codebook_size``) is replaced by a random
            latent of the current batch and restarts at the uniform share; 0 disables restarts.
            Relative, so that it means the same for any batch: an absolute count (EnCodec's 2)
            restarts nearly every codeword at every step when a batch holds fewer rows than the
            codebook has entries.
        duplicate_cosine, duplicate_distance: in training, after the dead-code restarts, the less-used
            codeword of every pair with cosine similarity above ``duplicate_cosine`` or Euclidean
            distance below ``duplicate_distance`` times the codebook's spread (see
            :mod:`audiokit.quantize.health`) is restarted the same way; 0 disables each test
            (e.g. 0.9999 and 1e-3).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        l2_normalize: bool = False,
        ema: bool = True,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.1,
        duplicate_cosine: float = 0.0,
        duplicate_distance: float = 0.0,
    ) -> None:
        super().__init__()
        codebook_dim = dim if codebook_dim is None else codebook_dim
        if not 1 <= codebook_dim <= dim:
            raise ValueError(f"codebook_dim must be in [1, dim={dim}], got {codebook_dim}")
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {codebook_size}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.dim = dim
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.l2_normalize = l2_normalize
        self.ema = ema
        self.decay = decay
        self.epsilon = epsilon
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.duplicate_cosine = duplicate_cosine
        self.duplicate_distance = duplicate_distance
        factorised = codebook_dim < dim
        self.in_proj: nn.Module = nn.Conv1d(dim, codebook_dim, 1) if factorised else nn.Identity()
        self.out_proj: nn.Module = nn.Conv1d(codebook_dim, dim, 1) if factorised else nn.Identity()
        init = torch.randn(codebook_size, codebook_dim)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        # EMA of per-batch assignment counts (drives dead-code restarts in both modes).
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))

    # -- lookup ---------------------------------------------------------------------------------
    def _nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Codes ``[N]`` of the nearest codewords to ``flat [N, codebook_dim]`` (first index on ties)."""
        return CodebookSearch.of(self.codebook, self.l2_normalize).nearest(flat.detach())

    def _project_in(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent ``[B, dim, T]`` -> projected ``z_e [B, d, T]`` and its rows ``[B*T, d]``."""
        z_e = self.in_proj(x.float())
        return z_e, z_e.transpose(1, 2).reshape(-1, self.codebook_dim)

    def _project_out(self, z_q: torch.Tensor) -> torch.Tensor:
        """Code-space ``[B, d, T]`` -> latent ``[B, dim, T]`` (the training forward's straight-through)."""
        return self.out_proj(z_q.contiguous())

    def prepare_lookup(self) -> StageLookup:
        """This stage's tables for coding: float64 in-projection and search, float32 codeword table.

        Kept until one of the tensors they are made of changes (its version counter or storage moves:
        an optimiser step, an EMA update, ``load_state_dict``, ``.to(...)``); inference tensors, which
        have no version counter, are never kept.
        """
        sources = [self.codebook, *self.in_proj.parameters(), *self.out_proj.parameters()]
        key = None
        if not any(t.is_inference() for t in sources):
            key = [(t.data_ptr(), t._version) for t in sources]
        cached = self.__dict__.get("_lookup")
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        with torch.inference_mode(False), torch.no_grad():  # no_grad innermost: no graph
            codebook = self.codebook.detach().double()
            project = None
            table = codebook
            if not isinstance(self.in_proj, nn.Identity):
                w_in, w_out = self.in_proj.weight.double()[..., 0], self.out_proj.weight.double()[..., 0]
                project = (w_in.t().contiguous(), self.in_proj.bias.double())
                table = torch.addmm(self.out_proj.bias.double(), codebook, w_out.t())
            lookup = StageLookup(project, CodebookSearch.of(codebook, self.l2_normalize), table.float())
        self.__dict__["_lookup"] = (key, lookup)
        return lookup

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, frames]`` int64 of latents ``x [B, dim, frames]``; never updates anything."""
        rows = x.detach().float().transpose(1, 2).reshape(-1, self.dim)
        return self.prepare_lookup().codes(rows).view(x.shape[0], x.shape[2])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, dim, frames]`` float32 of codes ``[B, frames]`` (rows of the codeword table)."""
        return F.embedding(codes, self.prepare_lookup().table).transpose(1, 2)

    # -- training -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> VQOutput:
        """Quantize ``x [B, dim, frames]``; ``mask [B]`` bool marks the items that count for losses,
        statistics and metrics (quantizer dropout); in training mode the codebook is updated after
        the lookup, so the returned codes are those of the codebook before this step."""
        with torch.autocast(x.device.type, enabled=False):
            batch, _, frames = x.shape
            z_e, flat = self._project_in(x)
            keep = None if mask is None else mask.to(torch.bool)[:, None].expand(batch, frames).reshape(-1)
            kept = flat.detach() if keep is None else flat.detach()[keep]
            if self.training and not bool(self.initialized):
                self._kmeans_init(kept)
            codes = self._nearest(flat.detach())
            z_q = F.embedding(codes, self.codebook).view(batch, frames, self.codebook_dim).transpose(1, 2)
            commitment = (z_e - z_q.detach()).pow(2).mean(dim=(1, 2))
            if self.ema:
                codebook_loss = z_e.new_zeros(batch)
            else:
                codebook_loss = (z_q - z_e.detach()).pow(2).mean(dim=(1, 2))
            item_weight = torch.ones(batch, device=x.device) if mask is None else mask.to(x.device).float()
            denominator = item_weight.sum().clamp_min(1.0)
            commitment = (commitment * item_weight).sum() / denominator
            codebook_loss = (codebook_loss * item_weight).sum() / denominator
            # Straight-through with the exact codeword value: z_q + (z_e - z_e) == z_q bit for bit.
            quantized = self._project_out(z_q.detach() + (z_e - z_e.detach()))
            kept_codes = codes if keep is None else codes[keep]
            dead, duplicates = self._update(kept, kept_codes) if self.training else (0, 0)
            restarted = torch.tensor(dead / self.codebook_size, device=x.device)
            duplicates = torch.tensor(duplicates / self.codebook_size, device=x.device)
            perplexity, usage = self._usage_metrics(kept_codes)
            return VQOutput(
                quantized=quantized,
                codes=codes.view(batch, frames),
                commitment_loss=commitment,
                codebook_loss=codebook_loss,
                perplexity=perplexity,
                usage=usage,
                restarted=restarted,
                duplicates=duplicates,
            )

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        """Codebook from k-means on ``flat``. A cosine lookup clusters the rows by direction, then each
        codeword is the mean of its cluster's rows as they are (what the EMA update and the restarts
        keep it at, and the scale of what it stands for): unit-length centres would quantize latents of
        any norm to vectors of norm <= 1 until the EMA caught up."""
        data = F.normalize(flat, dim=1) if self.l2_normalize else flat
        if data.shape[0] == 0:  # nothing kept on this rank: seed from the current codebook
            data = self.codebook.detach().clone()
        centres, counts = kmeans(data, self.codebook_size, self.kmeans_iters)
        if self.l2_normalize:
            raw = flat if flat.shape[0] > 0 else data
            assign = CodebookSearch.of(centres, l2_normalize=True).nearest(data)
            counts = torch.bincount(assign, minlength=self.codebook_size).to(centres.dtype)
            sums = torch.zeros_like(centres).index_add_(0, assign, raw)
            all_reduce_sum_(counts)
            all_reduce_sum_(sums)
            centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1.0)[:, None], centres)
        self.codebook.copy_(centres)  # (no_grad: in place, so the version counter moves)
        self.cluster_size.copy_(counts)
        if self.ema:
            self.embed_sum.copy_(centres * counts[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, codes: torch.Tensor) -> tuple[int, int]:
        """EMA statistics (and codewords) from this batch, then restarts of the dead codewords and of
        those that were near-duplicates in this batch's lookup; returns how many of each."""
        redundant = None
        if self.duplicate_cosine > 0 or self.duplicate_distance > 0:  # same on every rank
            redundant = redundant_codewords(
                self.codebook, self.cluster_size, self.duplicate_cosine, self.duplicate_distance
            )
        counts = torch.bincount(codes, minlength=self.codebook_size).to(flat.dtype)
        all_reduce_sum_(counts)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        if self.ema:
            sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, flat)
            all_reduce_sum_(sums)
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
            total = self.cluster_size.sum()
            smoothing = self.codebook_size * self.epsilon
            smoothed = (self.cluster_size + self.epsilon) / (total + smoothing) * total
            self.codebook.copy_(self.embed_sum / smoothed[:, None])
        uniform_share = float(counts.sum()) / self.codebook_size
        dead = torch.zeros_like(self.cluster_size, dtype=torch.bool)
        if self.dead_code_threshold > 0:  # same on every rank: the counts are all-reduced
            dead = self.cluster_size < self.dead_code_threshold * uniform_share
        duplicates = torch.zeros_like(dead) if redundant is None else redundant & ~dead
        self._restart(dead | duplicates, flat, uniform_share)  # one draw: no row serves twice
        return int(dead.sum()), int(duplicates.sum())

    @torch.no_grad()
    def _restart(self, which: torch.Tensor, flat: torch.Tensor, uniform_share: float) -> int:
        """Replace the codewords ``which`` (bool ``[K]``) by random batch rows, distinct rows while the
        batch holds enough (two codewords restarted onto one row would be duplicates, and the later one
        never chosen); returns how many.

        ``uniform_share``: rows per batch and codeword. A restarted codeword starts at that count, so it
        has a few hundred steps (``log(threshold) / log(decay)``) to be chosen before it is dead again.
        """
        num = int(which.sum())
        if num == 0:
            return 0
        rows = flat.shape[0]
        if rows >= num:
            samples = flat[torch.randperm(rows, device=flat.device)[:num]]
        elif rows > 0:
            samples = flat[torch.randint(rows, (num,), device=flat.device)]
        else:
            samples = self.codebook.detach()[which].clone()
        broadcast_(samples)
        self.codebook[which] = samples
        self.cluster_size[which] = uniform_share
        if self.ema:
            self.embed_sum[which] = samples * uniform_share
        return num

    def _usage_metrics(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = torch.bincount(codes.detach(), minlength=self.codebook_size).float()
        if codes.numel() == 0:
            return counts.new_zeros(()), counts.new_zeros(())
        probs = counts / counts.sum()
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
        return entropy.exp(), (counts > 0).float().mean()
