"""More training voices: the training split's narrowband speech extended to 16 kHz by the shipped
``bwe-8to16``, and a manifest of the wideband training speech plus those clips.

Usage: ``python benchmarks/bwe_speech_manifest.py`` (after
``audiokit data prepare --roles speech,speech_nb``).

1. ``audiokit bwe`` mirrors ``$AUDIOKIT_DATA/corpus/16000/train/speech_nb`` into ``.../train/speech_bwe``
   (skipped when every clip is there already; ~4 minutes on one thread for the 6 h).
2. ``$AUDIOKIT_DATA/manifests/train_speech_plus_bwe.jsonl``: every row of ``train_speech.jsonl``, then
   the extended clips of ``asterisk-prompt-*`` and ``fillets-ng-data-nl`` and every other clip of
   ``flight-of-the-amazon-queen`` (231 min, 44 % of the speech), each row the narrowband one's with the
   new path, 16 kHz and ``bwe`` naming the model.

Used by the session 18 enhancer fork (docs/training.md) and the entropy prior shipped since session 18
(``benchmarks/entropy_models.py --train-manifest train_speech_plus_bwe``, docs/bitstream.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from audiokit.data.paths import data_root

MODEL = "bwe-8to16"


def main() -> None:
    # no options: the parser gives --help (which ran the whole job, writing into the data folder)
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    root = data_root()
    source = root / "corpus" / "16000" / "train" / "speech_nb"
    target = source.with_name("speech_bwe")
    done = target.is_dir() and sum(1 for _ in target.rglob("*.flac")) == sum(
        1 for _ in source.rglob("*.flac")
    )
    if not done:
        command = [sys.executable, "-m", "audiokit", "bwe", "-q", "-f", "-m", MODEL, str(source), str(target)]
        subprocess.run(command, check=True)
    manifests = root / "manifests"
    rows = [json.loads(line) for line in open(manifests / "train_speech.jsonl")]
    queen = 0
    for line in open(manifests / "train_speech_nb.jsonl"):
        row = json.loads(line)
        if row["package"] == "flight-of-the-amazon-queen":
            queen += 1
            if queen % 2:
                continue
        path = row["path"].replace("/train/speech_nb/", "/train/speech_bwe/")
        if not (root / path).is_file():
            raise SystemExit(f"{root / path}: missing (audiokit bwe failed on it?)")
        row.pop("sha256", None)
        rows.append(dict(row, path=path, sample_rate=16000, role="speech", bandwidth_hz=8000.0, bwe=MODEL))
    out = manifests / "train_speech_plus_bwe.jsonl"
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{out}: {len(rows)} clips, {sum(r['seconds'] for r in rows) / 60:.1f} min")


if __name__ == "__main__":
    main()
