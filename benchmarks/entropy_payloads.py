"""Real payload bytes of an entropy prior on every chunk of the validation speech (issue 23).

Usage: ``python benchmarks/entropy_payloads.py [--prior audiokit/weights/speech-16k.entropy.safetensors]``.

The shipped ``speech-16k`` codes all of ``$AUDIOKIT_DATA/manifests/valid_speech.jsonl`` (cached in
``--cache``, as :mod:`entropy_models` caches them); each clip is cut into one-second ``.akc`` chunks
(the last one shorter) and each chunk is range-coded on its own, at 1.5 / 3 / 6 kbps (the first 3 / 6
/ 12 codebooks). Reported per rate: payload bits a code, and the saving against the fixed-width
payload of the same chunks (``ceil(frames * codebooks * 10 / 8)`` bytes each). Every payload is
decoded back and compared. Results: ``benchmarks/results/entropy_payloads.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from entropy_models import CHUNK, RATES, chunks_of, extract_codes  # noqa: E402

from audiokit.entropy_model import PriorModel  # noqa: E402


def chunk_payloads(prior: PriorModel, codes: np.ndarray, lengths: np.ndarray, n_q: int) -> dict:
    """Payload and fixed-width bytes of every chunk of every clip with the first ``n_q`` codebooks."""
    chunks, mask = chunks_of(codes, lengths)  # [CHUNK, chunks, stages], padded past each clip's end
    coded = fixed = count = 0
    for i, frames in enumerate(mask.sum(0).astype(int).tolist()):
        chunk = chunks[:frames, i, :n_q][:, None, :]
        payload = prior.encode(chunk)
        if not np.array_equal(prior.decode(payload, frames, 1, n_q), chunk):
            raise AssertionError("a payload did not decode to its codes")
        coded += len(payload)
        fixed += math.ceil(chunk.size * 10 / 8)
        count += chunk.size
    return {
        "payload_bits_per_code": round(8 * coded / count, 4),
        "saving_vs_fixed_payloads": round(1 - coded / fixed, 4),
        "payload_bytes": coded,
        "fixed_bytes": fixed,
    }


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument(
        "--prior", type=Path, default=ROOT / "audiokit" / "weights" / "speech-16k.entropy.safetensors"
    )
    cli.add_argument("--cache", type=Path, default=Path("/tmp/entropy_codes"))
    cli.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "entropy_payloads.json")
    args = cli.parse_args()
    prior = PriorModel.load(args.prior)
    codes, lengths = extract_codes("valid", 1e9, args.cache)
    codes = codes.astype(np.int64)
    results = {}
    for kbps, n_q in RATES.items():
        results[kbps] = chunk_payloads(prior, codes, lengths, n_q)
        print(kbps, "kbps", results[kbps], flush=True)
    report = {
        "benchmark": "entropy_payloads",
        "prior": str(args.prior.relative_to(ROOT) if args.prior.is_relative_to(ROOT) else args.prior),
        "prior_model_id": prior.model_id,
        "clips": len(lengths),
        "frames": int(lengths.sum()),
        "chunks": int(sum(math.ceil(n / CHUNK) for n in lengths.tolist())),
        "rates_kbps": results,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
