"""What a codec card shows beside its quality table: the coded files' size with and without entropy
coding, and spectrograms of one validation clip coded at each bitrate next to Opus."""

from __future__ import annotations

import json
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from audiokit import io
from audiokit.coding import codec_bitrate, encode_file, entropy_model_file, entropy_model_for, load_codec
from audiokit.errors import ModelError
from audiokit.evaluation.baselines import opus
from audiokit.evaluation.card_markdown import shown_path
from audiokit.evaluation.plots import spectrogram_comparison
from audiokit.tools import OPUS_MIN_KBPS

MIN_FIGURE_SECONDS = 2.5
"""The spectrogram figure shows the first reference at least this long (seconds)."""


def entropy_section(weights: str, valid: str | Path, glob: str, bitrates: Sequence[float]) -> dict | None:
    """Real kbps of the references under ``valid`` matching ``glob`` coded by ``weights`` at each of
    ``bitrates`` (kbit/s) as ``.akc`` files with fixed-width codes and entropy-coded with the model
    ``audiokit encode --entropy`` uses, the same codes either way; None when the weights ship no
    entropy-coding model."""
    codec, sha256 = load_codec(weights)
    try:
        model = entropy_model_for(codec.name, sha256)
    except ModelError:
        return None
    files = io.find_audio(Path(valid), glob)
    rows = []
    with tempfile.TemporaryDirectory(prefix="audiokit-card-") as tmp:
        akc = Path(tmp, "coded.akc")
        for kbps in bitrates:
            size = {"fixed": 0, "entropy": 0}
            seconds = 0.0
            for path in files:
                for kind, entropy in (("fixed", None), ("entropy", model)):
                    done = encode_file(codec, path, akc, codec_bitrate(codec, kbps), sha256, entropy=entropy)
                    size[kind] += done["bytes"]
                seconds += done["seconds"]
            fixed, coded = (size[kind] * 8 / seconds / 1000 for kind in ("fixed", "entropy"))
            rows.append(
                {"kbps": kbps, "fixed_kbps": fixed, "entropy_kbps": coded, "saving": 1 - coded / fixed}
            )
    call = (
        "import json, os; from audiokit.evaluation.codec_card import entropy_section as e; "
        f"print(json.dumps(e({json.dumps(weights)}, "
        f"os.path.expandvars({json.dumps(shown_path(str(valid), quote=False))}), {json.dumps(glob)}, "
        f"{json.dumps(list(bitrates))}), indent=2))"
    )
    return {
        "model": entropy_model_file(codec.name, sha256, model.model_id),
        "files": len(files),
        "rows": rows,
        "command": "python -c " + shlex.quote(call),
    }


def spectrogram_section(
    weights: str, valid: str | Path, glob: str, bitrates: Sequence[float], png: Path
) -> dict:
    """Write ``png``: spectrograms of the first reference under ``valid`` matching ``glob`` that lasts
    :data:`MIN_FIGURE_SECONDS` (else the first), as it is, coded by ``weights`` at each of ``bitrates``
    (kbit/s) and by Opus at its minimum bitrate; returns what the figure shows."""
    codec, _ = load_codec(weights)
    files = io.find_audio(Path(valid), glob)
    source = next((path for path in files if io.info(path).duration >= MIN_FIGURE_SECONDS), files[0])
    wav, rate = io.load(source, sample_rate=codec.sample_rate, channels=codec.channels)
    with torch.inference_mode():
        ours = [codec.decode(codec.encode(wav[None], codec_bitrate(codec, kbps)))[0] for kbps in bitrates]
    by_opus = opus(wav, rate, OPUS_MIN_KBPS).wav
    titles = [
        "reference",
        *(f"{codec.name} {kbps:g} kbps" for kbps in bitrates),
        f"Opus {OPUS_MIN_KBPS:g} kbps",
    ]
    spectrogram_comparison([(source.stem, [wav, *ours, by_opus])], rate, png, titles)
    return {"source": shown_path(str(source), quote=False), "png": png.name, "titles": titles}
