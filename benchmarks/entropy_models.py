"""How many bits entropy coding saves on ``speech-16k``'s codes, per probability model (issue 23), and the
training of the shipped causal prior (``audiokit/weights/speech-16k.entropy.safetensors``).

Usage: ``nice -n 19 python benchmarks/entropy_models.py [--train-minutes 120] [--epochs 3] [--write]``.

1. Codes: the shipped codec encodes the first ``--train-minutes`` of the training speech
   (``$AUDIOKIT_DATA/manifests/train_speech.jsonl`` shuffled with ``random.Random(0)``) and all the
   validation speech (``valid_speech.jsonl``), one clip at a time, on one thread; cached in ``--cache``.
2. Ideal code lengths (bits a code) on the validation codes, per stage and at 1.5/3/6 kbps (the first
   3/6/12 codebooks), of models fitted on the training codes, with the context reset every 50 frames
   as in an ``.akc`` chunk: (a) a unigram per stage; (b) interpolated absolute-discounting count tables
   conditioned on the previous frame's code of the same stage, on the stage above in the same frame,
   on both, and an even mixture of the first two; (c) the causal prior of
   :mod:`audiokit.entropy_model`, trained in float (Adam, cross-entropy; with ``--geometric`` its tables
   are made from the codec's codewords, :class:`GeometricPrior`), then quantised to its integer
   form (int8 tables at power-of-two exponents tuned on training codes, optionally
   ``--qat-steps`` of fine-tuning on that grid, 16-bit frequency tables) and measured again in that
   form (what the coder uses).
3. The integer prior's real payload bytes and coding speed on a slice of the validation codes.

Results go to ``benchmarks/results/entropy_models.json``; ``--write`` also writes the quantised prior to
``audiokit/weights/speech-16k.entropy.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from audiokit import io  # noqa: E402
from audiokit.data.paths import data_root  # noqa: E402
from audiokit.entropy_model import CONFIG_FIELDS, PriorModel  # noqa: E402
from audiokit.models import Codec  # noqa: E402

CHUNK = 50  # frames per .akc chunk (one second): contexts restart there
RATES = {"1.5": 3, "3": 6, "6": 12}  # kbps -> codebooks used


# -- 1. codes -------------------------------------------------------------------------------------------
def extract_codes(
    split: str, minutes: float, cache: Path, manifest: str | None = None, speed: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``[frames, 12]`` (clips concatenated) and clip lengths in frames of ``manifest`` (default
    ``<split>_speech``), cached in ``cache``. ``speed`` != 1: each clip played that much faster (tempo
    and pitch, as a tape: resampled to ``16000 / speed`` Hz and read at 16 kHz), a voice the data lacks;
    ``minutes`` counts the clips' original durations."""
    manifest = manifest or f"{split}_speech"
    path = cache / (f"{split}.npz" if manifest == f"{split}_speech" else f"{manifest}.npz")
    if speed != 1.0:
        path = path.with_name(f"{path.stem}-speed{speed:g}.npz")
    if path.exists():
        saved = np.load(path)
        if float(saved["minutes"]) == minutes:
            return saved["codes"].astype(np.int64), saved["lengths"]
    root = data_root()
    rows = [json.loads(line) for line in open(root / "manifests" / f"{manifest}.jsonl")]
    if split == "train":
        random.Random(0).shuffle(rows)
    codec = Codec.from_pretrained("speech-16k").eval()
    codes, lengths, seconds = [], [], 0.0
    with torch.inference_mode():
        for row in rows:
            if seconds >= minutes * 60:
                break
            wav, _ = io.load(root / row["path"], sample_rate=round(16000 / speed), channels=1)
            clip = codec.encode(wav[None]).codes[0].T.numpy().astype(np.int16)
            codes.append(clip)
            lengths.append(len(clip))
            seconds += row["seconds"]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, codes=np.concatenate(codes), lengths=np.asarray(lengths), minutes=minutes)
    return np.concatenate(codes).astype(np.int64), np.asarray(lengths)


def chunk_positions(lengths: np.ndarray) -> np.ndarray:
    """Position of every frame in its chunk (clips cut into chunks of :data:`CHUNK` frames)."""
    return np.concatenate([np.arange(n) % CHUNK for n in lengths])


# -- 2b. count tables -------------------------------------------------------------------------------------
class CountModel:
    """``p(x | context)`` by interpolated absolute discounting onto a lower-order distribution."""

    def __init__(self, context: np.ndarray, x: np.ndarray, size: int, discount: float) -> None:
        self.size, self.discount = size, discount
        self.keys, self.counts = np.unique(context * size + x, return_counts=True)
        self.contexts, inverse = np.unique(self.keys // size, return_inverse=True)
        self.totals = np.bincount(inverse, weights=self.counts)
        self.types = np.bincount(inverse)

    def prob(self, context: np.ndarray, x: np.ndarray, lower: np.ndarray) -> np.ndarray:
        key = context * self.size + x
        i = np.clip(np.searchsorted(self.keys, key), 0, len(self.keys) - 1)
        count = np.where(self.keys[i] == key, self.counts[i], 0)
        j = np.clip(np.searchsorted(self.contexts, context), 0, len(self.contexts) - 1)
        seen = self.contexts[j] == context
        total = np.where(seen, self.totals[j], 1)
        types = np.where(seen, self.types[j], 0)
        p = np.maximum(count - self.discount, 0) / total + self.discount * types / total * lower
        return np.where(seen, p, lower)


def count_models(train, train_pos, valid, valid_pos, size: int, discount: float = 0.8) -> dict:
    """Bits a code per stage of the unigram and count-table models (2a, 2b) on the validation codes."""
    out: dict[str, list[float]] = {
        k: [] for k in ("uniform", "unigram", "prev", "above", "prev+above", "mixture")
    }

    def previous(codes, pos, q):
        p = np.roll(codes[:, q], 1)
        p[pos == 0] = size
        return p

    for q in range(train.shape[1]):
        x, xv = train[:, q], valid[:, q]
        unigram = np.bincount(x, minlength=size) + 0.5
        pu = (unigram / unigram.sum())[xv]
        pp = CountModel(previous(train, train_pos, q), x, size, discount).prob(
            previous(valid, valid_pos, q), xv, pu
        )
        if q:
            pa = CountModel(train[:, q - 1], x, size, discount).prob(valid[:, q - 1], xv, pu)
            both_train = previous(train, train_pos, q) * (size + 1) + train[:, q - 1]
            both_valid = previous(valid, valid_pos, q) * (size + 1) + valid[:, q - 1]
            pb = CountModel(both_train, x, size, discount).prob(both_valid, xv, pp)
        else:
            pa = pb = pu
        for name, p in (
            ("unigram", pu),
            ("prev", pp),
            ("above", pa),
            ("prev+above", pb),
            ("mixture", (pp + pa) / 2),
        ):
            out[name].append(float(-np.log2(p).mean()))
        out["uniform"].append(math.log2(size))
    return out


# -- 2c. the causal prior ---------------------------------------------------------------------------------
class FloatPrior(torch.nn.Module):
    """The float twin of :class:`audiokit.entropy_model.PriorModel` (same structure), for training."""

    def __init__(
        self, stages: int, size: int, lags: int, width: int, hidden: int, context_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.stages, self.size, self.lags = stages, size, lags
        self.context_dropout = context_dropout  # training only: a frame before reads as the start code
        self.prev = torch.nn.Parameter(torch.randn(lags, stages, size + 1, width) * 0.1)
        self.cur = torch.nn.Parameter(torch.randn(stages, size, width) * 0.1)
        self.stage = torch.nn.Parameter(torch.zeros(stages, width))
        self.w1 = torch.nn.Parameter(torch.randn(stages, width, hidden) / math.sqrt(width))
        self.b1 = torch.nn.Parameter(torch.zeros(stages, hidden))
        self.w2 = torch.nn.Parameter(torch.randn(stages, hidden, width) / math.sqrt(hidden))
        self.b2 = torch.nn.Parameter(torch.zeros(stages, width))
        self.out = torch.nn.Parameter(torch.randn(stages, size, width) * 0.05)
        self.bias = torch.nn.Parameter(torch.zeros(stages, size))

    def forward(self, window: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, stages, size]`` of frame ``t`` from ``window [B, lags + 1, stages]`` (frames
        ``t - lags .. t``) and the frame's position in its chunk ``pos [B]``."""
        x = self.stage.expand(window.shape[0], -1, -1)
        for lag in range(1, self.lags + 1):
            blank = pos < lag
            if self.training and self.context_dropout:
                blank = blank | (torch.rand(pos.shape) < self.context_dropout)
            before = torch.where(blank[:, None], self.size, window[:, self.lags - lag])
            x = x + self.embed_before(lag, before).cumsum(1)
        e = self.embed_current(window[:, self.lags])
        x = x + torch.cat([torch.zeros_like(e[:, :1]), e.cumsum(1)[:, :-1]], 1)
        h = torch.relu(torch.einsum("bqh,qhm->bqm", x, self.w1) + self.b1)
        y = torch.relu(x + torch.einsum("bqm,qmh->bqh", h, self.w2) + self.b2)
        return torch.einsum("bqh,qkh->bqk", y, self.out_table()) + self.bias

    def embed_before(self, lag: int, codes: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, stages, width]`` of the codes ``[B, stages]`` of the frame ``lag`` before (the
        start code ``size`` before the chunk)."""
        return self.prev[lag - 1][torch.arange(self.stages), codes]

    def embed_current(self, codes: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, stages, width]`` of the current frame's codes ``[B, stages]``."""
        return self.cur[torch.arange(self.stages), codes]

    def out_table(self) -> torch.Tensor:
        """The output vector of every code, ``[stages, size, width]``."""
        return self.out


class GeometricPrior(FloatPrior):
    """A :class:`FloatPrior` whose tables are functions of where each code lies, plus free corrections
    (zero at the start, under the same weight decay). The embedding of code ``k`` of stage ``q`` (in
    ``prev`` and ``cur``) is a linear map of its codeword's contribution to the codec's latent
    (``out_proj(codebook[k])``, 128 values), per lag, so the embeddings of a frame's stages sum to a map
    of its partial reconstruction; the output vector of code ``k`` is a small per-stage MLP of its
    8-value codeword. Codes near each other in the codec's spaces start near each other here, so a
    voice the training speech lacks lands among codes whose neighbours it has seen.
    :meth:`plain` gives the ordinary :class:`FloatPrior` with these tables, which quantises as any."""

    def __init__(
        self,
        latents: torch.Tensor,
        words: torch.Tensor,
        lags: int,
        width: int,
        hidden: int,
        context_dropout: float = 0.0,
        features: int = 64,
    ) -> None:
        stages, size, dim = latents.shape
        super().__init__(stages, size, lags, width, hidden, context_dropout)
        self.register_buffer("latents", latents / latents.square().mean().sqrt())
        spread = (words - words.mean(1, keepdim=True)).square().mean((1, 2), keepdim=True).sqrt()
        self.register_buffer("words", (words - words.mean(1, keepdim=True)) / spread)
        with torch.no_grad():
            self.prev[:, :, :size].zero_()
            self.cur.zero_()
            self.out.zero_()
        self.prev_map = torch.nn.Parameter(torch.randn(lags, dim, width) * 0.1 / math.sqrt(dim))
        self.cur_map = torch.nn.Parameter(torch.randn(dim, width) * 0.1 / math.sqrt(dim))
        word_dim = words.shape[-1]
        self.word_w1 = torch.nn.Parameter(torch.randn(stages, word_dim, features) / math.sqrt(word_dim))
        self.word_b1 = torch.nn.Parameter(torch.zeros(stages, 1, features))
        self.word_w2 = torch.nn.Parameter(torch.randn(stages, features, width) * 0.05 / math.sqrt(features))

    def out_table(self) -> torch.Tensor:
        """``out [stages, size, width]``: the MLP of each codeword plus the free correction."""
        hidden = torch.nn.functional.gelu(
            torch.einsum("qkd,qdf->qkf", self.words, self.word_w1) + self.word_b1
        )
        return torch.einsum("qkf,qfh->qkh", hidden, self.word_w2) + self.out

    def embed_before(self, lag: int, codes: torch.Tensor) -> torch.Tensor:
        placed = (
            self.latents[torch.arange(self.stages), codes.clamp(max=self.size - 1)] @ self.prev_map[lag - 1]
        )
        placed = torch.where((codes == self.size)[..., None], 0.0, placed)  # the start code: free alone
        return placed + super().embed_before(lag, codes)

    def embed_current(self, codes: torch.Tensor) -> torch.Tensor:
        return self.latents[torch.arange(self.stages), codes] @ self.cur_map + super().embed_current(codes)

    def plain(self) -> FloatPrior:
        """The :class:`FloatPrior` computing exactly what this one computes."""
        plain = FloatPrior(self.stages, self.size, self.lags, self.cur.shape[-1], self.w1.shape[-1])
        with torch.no_grad():
            prev = self.prev.clone()
            prev[:, :, : self.size] += torch.einsum("qkd,ldh->lqkh", self.latents, self.prev_map)
            state = {name: getattr(self, name).detach().clone() for name in plain.state_dict()}
            state |= {"prev": prev, "cur": self.cur + self.latents @ self.cur_map, "out": self.out_table()}
            plain.load_state_dict(state)
        return plain.eval()


def codec_geometry(name: str = "speech-16k") -> tuple[torch.Tensor, torch.Tensor]:
    """Per stage, each code's contribution to the codec's latent ``[stages, size, latent_dim]`` and its
    codeword in the lookup space ``[stages, size, codebook_dim]``."""
    codec = Codec.from_pretrained(name).eval()
    latents, words = [], []
    with torch.no_grad():
        for stage in codec.quantizer.quantizers:
            word = stage.codebook.float()
            latents.append(stage.out_proj(word.T[None])[0].T)
            words.append(word)
    return torch.stack(latents), torch.stack(words)


def windows(codes: torch.Tensor, pos: torch.Tensor, index: torch.Tensor, lags: int):
    return torch.stack([codes[(index - lag).clamp(min=0)] for lag in range(lags, -1, -1)], 1), pos[index]


def grown_from(model: FloatPrior, trained: dict[str, torch.Tensor]) -> FloatPrior:
    """``model`` holding a trained prior's parameters, which may have fewer ``lags``: the extra lags'
    tables start at zero, so the grown prior computes exactly what the trained one did."""
    state = dict(trained)
    prev = state["prev"]
    if prev.shape[0] > model.lags:
        raise ValueError(f"the trained prior has {prev.shape[0]} lags, more than {model.lags}")
    state["prev"] = torch.cat([prev, prev.new_zeros(model.lags - prev.shape[0], *prev.shape[1:])])
    model.load_state_dict(state)
    return model


def train_prior(
    train, train_pos, args, geometry: tuple[torch.Tensor, torch.Tensor] | None = None
) -> FloatPrior:
    """A :class:`FloatPrior` trained on ``train`` (AdamW, one-cycle schedule) as ``args`` say, from
    ``args.init_float`` where given; with ``geometry`` (:func:`codec_geometry`'s codewords), trained as a
    :class:`GeometricPrior` and returned as its plain twin."""
    torch.manual_seed(args.seed)
    if geometry is not None and args.init_float:
        raise ValueError("--init-float grows a free prior; it cannot start a --geometric one")
    if geometry is not None:
        latents, words = (g[: train.shape[1]] for g in geometry)
        model = GeometricPrior(latents, words, args.lags, args.width, args.hidden, args.context_dropout)
    else:
        model = FloatPrior(
            train.shape[1], args.codebook_size, args.lags, args.width, args.hidden, args.context_dropout
        )
    if args.init_float:
        grown_from(model, load_file(str(args.init_float)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = int(args.epochs * len(train) / args.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps, pct_start=0.05)
    model = _fit(model, train, train_pos, optimizer, schedule, steps, args.batch, args.seed)
    return model.plain() if geometry is not None else model


def _fit(
    model: FloatPrior,
    train,
    train_pos,
    optimizer,
    schedule,
    steps: int,
    batch: int,
    seed: int,
    grids: dict[str, tuple[int, type]] | None = None,
) -> FloatPrior:
    """``steps`` of cross-entropy on random frames of ``train``; with ``grids``, the forward pass uses
    the weights rounded to them (straight-through: the gradients update the float weights)."""
    codes, pos = torch.from_numpy(train), torch.from_numpy(train_pos)
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(seed)
    start = time.time()
    model.train()
    for step in range(steps):
        index = torch.randint(0, len(codes), (batch,), generator=generator)
        window, p = windows(codes, pos, index, model.lags)
        if grids is None:
            logits = model(window, p)
        else:
            snapped = {n: v + (_on_grid(v.detach(), *grids[n]) - v).detach() for n, v in params.items()}
            logits = torch.func.functional_call(model, snapped, (window, p))
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), window[:, -1].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 500 == 0 or step == steps - 1:
            bits = loss.item() / math.log(2)
            print(f"  step {step}/{steps}: {bits:.3f} bits a code ({time.time() - start:.0f} s)")
    return model.eval()


def float_bits(model: FloatPrior, valid, valid_pos) -> list[float]:
    codes, pos = torch.from_numpy(valid), torch.from_numpy(valid_pos)
    total = torch.zeros(valid.shape[1], dtype=torch.float64)
    with torch.no_grad():
        for i in range(0, len(codes), 4096):
            window, p = windows(codes, pos, torch.arange(i, min(i + 4096, len(codes))), model.lags)
            logp = torch.log_softmax(model(window, p), -1)
            total -= logp.gather(-1, window[:, -1, :, None])[..., 0].sum(0).double()
    return (total / len(codes) / math.log(2)).tolist()


def _exponent(tensor: torch.Tensor, limit: int = 127) -> int:
    """The largest ``e`` with ``max|tensor| * 2**e <= limit``."""
    peak = float(tensor.detach().abs().max())
    return int(math.floor(math.log2(limit / peak))) if peak > 0 else 0


INT8_TABLES = ("prev", "cur", "w1", "w2", "out")  # each stored as int8 at one power-of-two exponent


def peak_exponents(model: FloatPrior) -> dict[str, int]:
    """Per int8 tensor the finest exponent that clips nothing."""
    return {name: _exponent(getattr(model, name)) for name in INT8_TABLES}


def _act_exponent(exps: dict[str, int]) -> int:
    return max(exps["prev"], exps["cur"], 8)


def _integers(tensor: torch.Tensor, exp: int, dtype: type) -> torch.Tensor:
    """``tensor * 2**exp`` rounded and clipped to ``dtype``'s range (still a float tensor)."""
    info = np.iinfo(dtype)
    return torch.clamp(torch.round(tensor * 2.0**exp), info.min, info.max)


def _on_grid(tensor: torch.Tensor, exp: int, dtype: type) -> torch.Tensor:
    """``tensor`` on the grid it is stored on: multiples of ``2**-exp`` within ``dtype``'s range."""
    return _integers(tensor, exp, dtype) / 2.0**exp


def _grids(exps: dict[str, int]) -> dict[str, tuple[int, type]]:
    """Per parameter the exponent and integer type :func:`quantise` stores it at."""
    act = _act_exponent(exps)
    return {name: (exps[name], np.int8) for name in INT8_TABLES} | {
        "stage": (act, np.int32),
        "b1": (act + exps["w1"], np.int32),
        "b2": (act + exps["w2"], np.int32),
        "bias": (act + exps["out"], np.int32),
    }


def fake_quantised(model: FloatPrior, exps: dict[str, int]) -> FloatPrior:
    """A float copy of ``model`` with every parameter on the grid :func:`quantise` stores it on (int8
    tables clipped at +-127 where ``exps`` is finer than their peak): the integer prior's network up to
    the rounding of its activations and of its frequency tables."""
    grids = _grids(exps)
    copy = FloatPrior(model.stages, model.size, model.lags, model.cur.shape[-1], model.w1.shape[-1])
    with torch.no_grad():
        copy.load_state_dict(
            {name: _on_grid(value, *grids[name]) for name, value in model.state_dict().items()}
        )
    return copy.eval()


def quantisation_aware(
    model: FloatPrior, exps: dict[str, int], train, train_pos, steps: int, lr: float, batch: int, seed: int
) -> FloatPrior:
    """``model`` fine-tuned for ``steps`` with its forward pass on the integer grid of ``exps`` (Adam,
    learning rate cosine-decayed from ``lr``), so that the weights settle where rounding costs least."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    return _fit(model, train, train_pos, optimizer, schedule, steps, batch, seed + 1, _grids(exps))


def tune_exponents(model: FloatPrior, codes: np.ndarray, pos: np.ndarray, reach: int = 3) -> dict[str, int]:
    """Exponents for the int8 tensors that minimise the fake-quantised model's bits a code on ``codes``
    (training codes, never the validation codes): from the clip-free :func:`peak_exponents`, each
    tensor in turn tries up to ``reach`` finer steps (clipping its largest values), keeping a step only
    when it lowers the bits; two passes. A table whose peak is a rare outlier buys resolution for all
    its other entries."""
    exps = peak_exponents(model)
    best = float(np.mean(float_bits(fake_quantised(model, exps), codes, pos)))
    base = dict(exps)
    for _ in range(2):
        for name in INT8_TABLES:
            for exp in range(base[name], base[name] + reach + 1):
                if exp == exps[name]:
                    continue
                trial = exps | {name: exp}
                bits = float(np.mean(float_bits(fake_quantised(model, trial), codes, pos)))
                if bits < best - 1e-4:
                    exps, best = trial, bits
    return exps


def quantise(
    model: FloatPrior, precision: int, table_exp: int, exps: dict[str, int] | None = None
) -> PriorModel:
    """The integer prior of ``model``: int8 tables with power-of-two scales (``exps``, default the
    clip-free :func:`peak_exponents`; finer ones clip), int32 biases."""
    exps = exps or peak_exponents(model)
    table = [round(2**20 * math.exp(-i / 2**table_exp)) for i in range(40 << table_exp)]
    table = [v for v in table if v > 0] + [0]
    config = dict(
        lags=model.lags,
        num_stages=model.stages,
        codebook_size=model.size,
        width=model.cur.shape[-1],
        hidden=model.w1.shape[-1],
        precision=precision,
        act_exp=_act_exponent(exps),
        table_exp=table_exp,
        **{f"{name}_exp": exps[name] for name in INT8_TABLES},
    )
    with torch.no_grad():
        tensors = {
            name: _integers(getattr(model, name), exp, dtype).numpy().astype(dtype)
            for name, (exp, dtype) in _grids(exps).items()
        }
    tensors["config"] = np.asarray([config[k] for k in CONFIG_FIELDS], dtype=np.int32)
    tensors["exp_table"] = np.asarray(table, dtype=np.int32)
    return PriorModel(tensors)


def chunks_of(codes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clips cut into chunks: codes ``[CHUNK, chunks, stages]`` (padded with 0) and a validity mask."""
    pieces, masks, start = [], [], 0
    for n in lengths.tolist():
        for s in range(0, n, CHUNK):
            piece = codes[start + s : start + min(n, s + CHUNK)]
            pad = CHUNK - len(piece)
            pieces.append(np.pad(piece, ((0, pad), (0, 0))))
            masks.append(np.arange(CHUNK) < len(piece))
        start += n
    return np.stack(pieces, 1), np.stack(masks, 1)


def integer_bits(model: PriorModel, codes: np.ndarray, mask: np.ndarray, batch: int = 32) -> list[float]:
    total = np.zeros(codes.shape[2])
    for i in range(0, codes.shape[1], batch):
        bits = model.bits(codes[:, i : i + batch])
        total += (bits * mask[:, i : i + batch, None]).sum((0, 1))
    return (total / mask.sum()).tolist()


def per_rate(stage_bits: list[float]) -> dict:
    return {
        kbps: {
            "bits_per_code": round(float(np.mean(stage_bits[:n])), 4),
            "saving_percent": round(100 * (1 - np.mean(stage_bits[:n]) / 10), 2),
        }
        for kbps, n in RATES.items()
    }


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--train-minutes", type=float, default=120.0)
    cli.add_argument("--cache", type=Path, default=Path("/tmp/entropy_codes"))
    cli.add_argument(
        "--train-manifest",
        default="train_speech",
        help="manifest of the training speech under $AUDIOKIT_DATA/manifests (default train_speech)",
    )
    cli.add_argument(
        "--speeds",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[1.0],
        help="comma list: the training speech again at these speeds (tempo and pitch), e.g. 1,0.9,1.12",
    )
    cli.add_argument("--epochs", type=float, default=3.0)
    cli.add_argument("--batch", type=int, default=512)
    cli.add_argument("--lr", type=float, default=3e-3)
    cli.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's decoupled weight decay")
    cli.add_argument("--lags", type=int, default=2)
    cli.add_argument(
        "--context-dropout",
        type=float,
        default=0.0,
        help="training only: each frame before reads as the start code with this probability (a regulariser)",
    )
    cli.add_argument(
        "--geometric",
        action="store_true",
        help="train the tables as functions of the codec's codewords plus free corrections (GeometricPrior)",
    )
    cli.add_argument("--width", type=int, default=32)
    cli.add_argument("--hidden", type=int, default=64)
    cli.add_argument(
        "--precision",
        type=int,
        default=16,
        help="frequency tables sum to 2**precision (16, the finest: the floor of 1 a code costs least)",
    )
    cli.add_argument("--table-exp", type=int, default=5)
    cli.add_argument(
        "--exponents",
        choices=("tuned", "peak"),
        default="tuned",
        help="int8 exponents: tuned on training codes (may clip outliers), or the clip-free peak ones",
    )
    cli.add_argument(
        "--qat-steps", type=int, default=0, help="then this many steps with the weights on the integer grid"
    )
    cli.add_argument("--qat-lr", type=float, default=3e-4)
    cli.add_argument(
        "--from-float", type=Path, help="skip training: quantise and measure this --save-float file"
    )
    cli.add_argument(
        "--init-float",
        type=Path,
        help="train on from this --save-float file (it may have fewer --lags: the new ones start at zero)",
    )
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--codebook-size", type=int, default=1024)
    cli.add_argument(
        "--write", action="store_true", help="write audiokit/weights/speech-16k.entropy.safetensors"
    )
    cli.add_argument("--save", type=Path, help="also write the quantised prior to this file")
    cli.add_argument(
        "--save-float", type=Path, help="also write the float prior's parameters (safetensors) to this file"
    )
    cli.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "entropy_models.json")
    args = cli.parse_args()
    torch.set_num_threads(1)

    start = time.time()
    parts = [
        extract_codes("train", args.train_minutes, args.cache, args.train_manifest, speed)
        for speed in args.speeds
    ]
    train, train_len = np.concatenate([c for c, _ in parts]), np.concatenate([n for _, n in parts])
    valid, valid_len = extract_codes("valid", 1e9, args.cache)
    train_pos, valid_pos = chunk_positions(train_len), chunk_positions(valid_len)
    print(
        f"codes: {len(train)} training frames, {len(valid)} validation frames ({time.time() - start:.0f} s)"
    )

    stage_bits = count_models(train, train_pos, valid, valid_pos, args.codebook_size)
    if args.from_float:
        model = FloatPrior(train.shape[1], args.codebook_size, args.lags, args.width, args.hidden)
        model.load_state_dict(load_file(str(args.from_float)))
        model.eval()
    else:
        print("training prior...")
        model = train_prior(train, train_pos, args, codec_geometry() if args.geometric else None)
    if args.save_float:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(args.save_float))
    stage_bits["prior (float)"] = float_bits(model, valid, valid_pos)
    exps = peak_exponents(model)
    if args.exponents == "tuned":  # on the first ~20 minutes of training codes, never the validation codes
        tune_clips = int(np.searchsorted(np.cumsum(train_len), 60_000)) + 1
        tune_len = train_len[:tune_clips]
        exps = tune_exponents(model, train[: tune_len.sum()], train_pos[: tune_len.sum()])
        print("exponents: peak", peak_exponents(model), "tuned", exps)
    if args.qat_steps:
        model = quantisation_aware(
            model, exps, train, train_pos, args.qat_steps, args.qat_lr, args.batch, args.seed
        )
        stage_bits["prior (float, after quantisation-aware steps)"] = float_bits(model, valid, valid_pos)
    stage_bits["prior (float, weights on the integer grid)"] = float_bits(
        fake_quantised(model, exps), valid, valid_pos
    )
    prior = quantise(model, args.precision, args.table_exp, exps)
    valid_chunks, valid_mask = chunks_of(valid, valid_len)
    stage_bits["prior (integer)"] = integer_bits(prior, valid_chunks, valid_mask)
    train_chunks, train_mask = chunks_of(train[: len(valid)], train_len[np.cumsum(train_len) <= len(valid)])
    train_bits = integer_bits(prior, train_chunks, train_mask)

    # real payloads and speed on 60 full validation chunks (one second each, spread over the set), one
    # chunk at a time
    full = np.flatnonzero(valid_mask.all(0))
    sample = valid_chunks[:, full[:: max(1, len(full) // 60)][:60]]
    prior.decode(prior.encode(sample[:, :1]), CHUNK, 1, sample.shape[2])  # builds the C++ decoder, untimed
    coded, encode_s, decode_s = {}, 0.0, 0.0
    for kbps, n in RATES.items():
        size = 0
        for i in range(sample.shape[1]):
            chunk = sample[:, i : i + 1, :n]
            t0 = time.perf_counter()
            payload = prior.encode(chunk)
            t1 = time.perf_counter()
            assert np.array_equal(prior.decode(payload, CHUNK, 1, n), chunk)
            encode_s += t1 - t0
            decode_s += time.perf_counter() - t1
            size += len(payload)
        coded[kbps] = {"payload_bits_per_code": round(8 * size / (CHUNK * sample.shape[1] * n), 4)}
    seconds = 3 * sample.shape[1]  # audio seconds coded (each chunk at three rates, 21 codebooks in all)
    speed = {
        "audio_seconds": seconds,
        "codebooks": sum(RATES.values()),
        "encode_seconds": round(encode_s, 3),
        "decode_seconds": round(decode_s, 3),
        "encode_ms_per_second_at_6kbps": round(1000 * encode_s / seconds * 12 / 7, 2),
        "decode_ms_per_second_at_6kbps": round(1000 * decode_s / seconds * 12 / 7, 2),
    }

    models = {
        name: {"per_stage": [round(b, 4) for b in bits], "rates": per_rate(bits)}
        for name, bits in stage_bits.items()
    }
    result = {
        "benchmark": "entropy_models",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {
            "train_frames": int(len(train)),
            "train_clips": int(len(train_len)),
            "valid_frames": int(len(valid)),
            "valid_clips": int(len(valid_len)),
            "train_minutes": round(len(train) / 50 / 60, 2),
            "valid_minutes": round(len(valid) / 50 / 60, 2),
        },
        "bits_per_code_valid": models,
        "prior_integer_on_training_codes": per_rate(train_bits),
        "prior_payload": coded,
        "prior_speed_one_thread": speed,
        "prior_model_id": prior.model_id,
        "prior_bytes": int(sum(t.nbytes for t in prior.tensors.values())),
        "seconds": round(time.time() - start),
    }
    for name, entry in models.items():
        rates = "  ".join(
            f"{k} kbps {v['bits_per_code']:.3f} ({v['saving_percent']:+.1f} %)"
            for k, v in entry["rates"].items()
        )
        print(f"{name:16s} {rates}")
    print("payload", coded, "speed", speed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    prior.meta = {
        "model": "speech-16k",
        "weights_sha256": "02129b818b3081e532ec71097e00e6a969536c28406bd1a2f0175db03dd9a31f",
        "trained_on": (
            f"codes of {len(train_len)} clips ({len(train) / 50 / 3600:.2f} h, {len(train)} frames) of "
            f"the training speech ($AUDIOKIT_DATA/manifests/{args.train_manifest}.jsonl, shuffled with "
            f"random.Random(0)) at speeds {', '.join(f'{s:g}' for s in args.speeds)}"
        ),
        "command": "python benchmarks/entropy_models.py " + " ".join(sys.argv[1:]),
    }
    for path in [args.save] if args.save else []:
        print("wrote", prior.save(path))
    if args.write:
        print("wrote", prior.save(ROOT / "audiokit" / "weights" / "speech-16k.entropy.safetensors"))


if __name__ == "__main__":
    main()
