"""How fast an entropy-coded ``speech-16k`` stream decodes on one thread (issue 23: at least 50x real
time): the learned prior's decoding of the codes (C++ kernel where it builds, and the numpy loop) and the
codec's decoder, on the same codes, in one process.

Usage: ``python benchmarks/entropy_decode_speed.py [--clips 40] [--kbps 6] [--rounds 3]``.

The audio: the first ``--clips`` clips (name order) of the validation voice
(``$AUDIOKIT_DATA/corpus/16000/valid/speech/asterisk-core-sounds-fr-g722``) concatenated; coded at
``--kbps`` in one-second chunks as ``.akc`` writes them. Results go to
``benchmarks/results/entropy_decode_speed.json`` with the machine, commit and date.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from audiokit import io, ops
from audiokit.coding import entropy_model_for, load_codec
from audiokit.data.paths import data_root
from audiokit.models.codec import Codes
from audiokit.provenance import run_info, write_json

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 50  # frames per .akc chunk


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--clips", type=int, default=40)
    cli.add_argument("--kbps", type=float, default=6.0)
    cli.add_argument("--rounds", type=int, default=3)
    cli.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "results" / "entropy_decode_speed.json"
    )
    args = cli.parse_args()
    torch.set_num_threads(1)

    folder = data_root() / "corpus" / "16000" / "valid" / "speech" / "asterisk-core-sounds-fr-g722"
    files = sorted(folder.rglob("*.flac"))[: args.clips]
    wav = torch.cat([io.load(f, sample_rate=16000, channels=1)[0] for f in files], dim=-1)
    codec, weights_hash = load_codec("speech-16k")
    with torch.inference_mode():
        codes = codec.encode(wav[None], bitrate=args.kbps * 1000)
    frames = codes.codes[0].numpy().T[:, None, :]  # [frames, channels, n_q]
    chunks = [frames[i : i + CHUNK] for i in range(0, len(frames), CHUNK)]
    prior = entropy_model_for(codec.name, weights_hash)
    payloads = [prior.encode(chunk) for chunk in chunks]
    seconds = wav.shape[-1] / 16000

    ops.exact_kernels()  # build the C++ kernels now (once per machine), not inside the first timing
    prior.decode(payloads[0], *chunks[0].shape)
    rounds = []
    for _ in range(args.rounds):
        timings = {}
        for backend in ("cpp", "torch"):
            with ops.use_backend(backend):
                start = time.perf_counter()
                decoded = [prior.decode(p, *c.shape) for p, c in zip(payloads, chunks, strict=True)]
                timings[f"entropy_{backend}_ms_per_s"] = 1000 * (time.perf_counter() - start) / seconds
            assert all(np.array_equal(d, c) for d, c in zip(decoded, chunks, strict=True))
        start = time.perf_counter()
        with torch.inference_mode():
            codec.decode(Codes(torch.from_numpy(np.concatenate(decoded)[:, 0].T.copy())[None], wav.shape[-1]))
        timings["codec_ms_per_s"] = 1000 * (time.perf_counter() - start) / seconds
        for backend in ("cpp", "torch"):
            total = timings[f"entropy_{backend}_ms_per_s"] + timings["codec_ms_per_s"]
            timings[f"realtime_factor_{backend}"] = 1000 / total
        rounds.append({k: round(v, 2) for k, v in timings.items()})
        print(json.dumps(rounds[-1]))

    result = {
        "benchmark": "entropy_decode_speed",
        **run_info(),
        "settings": {**vars(args), "output": str(args.output), "audio_seconds": round(seconds, 3)},
        "prior_model_id": prior.model_id,
        "compiled_decoder": ops.exact_kernels() is not None,
        "rounds": rounds,
        "median": {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]},
    }
    write_json(args.output, result)
    print(json.dumps(result["median"]))


if __name__ == "__main__":
    main()
