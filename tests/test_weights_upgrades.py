"""A later version of a codec's weights that writes the same codes (its decoder alone trained on) decodes
the files of earlier versions whose weights are not installed (docs/bitstream.md, "Weights across
upgrades"); weights whose codes differ never do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audiokit.cli import main
from audiokit.coding import decode_file, encode_file, load_codec
from audiokit.models import Codec
from audiokit.models.archive import ARCHIVE_ENV

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "speech_fr_16k_a.flac"


def _nudged(codec: Codec, prefix: str, path: Path) -> Codec:
    """A copy of ``codec`` whose tensors under ``prefix`` moved a little, saved at ``path``."""
    copy = Codec(codec.config).eval()
    state = codec.state_dict()
    generator = torch.Generator().manual_seed(1)
    for name, tensor in state.items():
        if name.startswith(prefix) and tensor.is_floating_point():
            state[name] = tensor + 0.05 * torch.randn(tensor.shape, generator=generator)
    copy.load_state_dict(state)
    copy.save_pretrained(path)
    return copy


def _with(loaded: tuple[Codec, str], source: Path, target: Path) -> tuple:
    """``decode_file``'s arguments for a loaded codec and its weights' sha256."""
    codec, sha256 = loaded
    return codec, source, target, sha256


def _entry(path: Path, version: int, codec: Codec) -> dict:
    return {
        "model": "speech-16k",
        "version": version,
        "file": path.name,
        "source": f"weights/{path.name}",
        "commit": "abc123",
        "codes": codec.codes_sha256(),
    }


# versions 90-92: clear of the shipped archive's, which is read too
def test_later_version_with_the_same_codes_decodes_earlier_files(
    tmp_path, tiny_codec_file, monkeypatch, capsys
):
    first = Codec.from_pretrained(tiny_codec_file).eval()
    v1_path, v2_path, other_path = (
        tmp_path / n for n in ("speech-16k@90.safetensors", "v2.safetensors", "o.safetensors")
    )
    first.save_pretrained(v1_path)
    v2 = _nudged(first, "decoder.", v2_path)
    other = _nudged(first, "encoder.", other_path)
    # the hash says what encoding does: the same codes from the decoder-trained copy, others from the other
    wav = torch.from_numpy(sf.read(SAMPLE, dtype="float32")[0][:16000]).view(1, 1, -1)
    with torch.inference_mode():
        codes = first.encode(wav).codes
        assert torch.equal(v2.encode(wav).codes, codes) and not torch.equal(other.encode(wav).codes, codes)
    assert first.codes_sha256() == v2.codes_sha256() != other.codes_sha256()

    archive = tmp_path / "archive.json"
    versions = ((v1_path, 90, first), (v2_path, 91, v2), (other_path, 92, other))
    entries = {load_codec(str(p))[1]: _entry(p, n, c) for p, n, c in versions}
    archive.write_text(json.dumps({"weights": entries}))
    monkeypatch.setenv(ARCHIVE_ENV, str(archive))
    v1, v1_hash = load_codec(str(v1_path))
    akc = tmp_path / "v1.akc"
    encode_file(v1, SAMPLE, akc, v1.bitrates[-1], v1_hash)
    by_v1, by_v2 = tmp_path / "by_v1.wav", tmp_path / "by_v2.wav"
    decode_file(v1, akc, by_v1, v1_hash)
    decode_file(*_with(load_codec(str(v2_path)), akc, by_v2))  # the archive says: the same codes
    assert by_v1.read_bytes() != by_v2.read_bytes()

    # installed, a version decodes its own files exactly
    assert main(["decode", str(akc), str(tmp_path / "a.wav"), "-q"]) == 0
    assert (tmp_path / "a.wav").read_bytes() == by_v1.read_bytes()
    # not installed: the newest version with the same codes decodes them; `info` says which
    v1_path.unlink()
    v1_path.with_suffix(".json").unlink()
    capsys.readouterr()
    assert main(["decode", str(akc), str(tmp_path / "b.wav"), "-q"]) == 0
    assert (tmp_path / "b.wav").read_bytes() == by_v2.read_bytes()
    assert main(["info", str(akc)]) == 0
    line = capsys.readouterr().out
    assert (
        "(speech-16k@90, weights" in line
        and "; decodes with speech-16k@91, which writes the same codes)" in line
    )
    # asked for by name, the missing version is an error saying how to restore it
    assert main(["decode", str(akc), str(tmp_path / "c.wav"), "--model", "speech-16k@90"]) != 0
    err = capsys.readouterr().err.strip()
    assert "git show abc123:weights/speech-16k@90.safetensors" in err and len(err.splitlines()) == 1
    # weights whose codes differ refuse the file, in one line, and write nothing
    assert main(["decode", str(akc), str(tmp_path / "d.wav"), "--model", str(other_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert "not known to write the same codes" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c.wav").exists() and not (tmp_path / "d.wav").exists()


def test_an_archived_version_codes_with_the_entropy_model_of_its_same_codes_successor(
    tmp_path, tiny_codec_file, monkeypatch
):
    """Entropy-coding models model the codes: ``encode -m <version without its own> --entropy`` takes
    those of the newest version that writes the same codes (was: "no entropy-coding model"), and the
    payload is the successor's byte for byte."""
    from audiokit.bitstream import AkcReader
    from audiokit.entropy import EntropyModel

    def read_akc_header(path: Path):
        with AkcReader(path) as reader:
            return reader.header

    first = Codec.from_pretrained(tiny_codec_file).eval()
    old_path, new_path = tmp_path / "speech-16k@93.safetensors", tmp_path / "speech-16k@94.safetensors"
    first.save_pretrained(old_path)
    newer = _nudged(first, "decoder.", new_path)
    counts = np.random.default_rng(0).integers(1, 50, (first.config.num_quantizers, first.codebook_size)) ** 2
    EntropyModel.from_counts(counts).save(new_path.with_name(new_path.stem + ".entropy.json"))
    versions = ((old_path, 93, first), (new_path, 94, newer))
    entries = {load_codec(str(p))[1]: _entry(p, n, c) for p, n, c in versions}
    (tmp_path / "archive.json").write_text(json.dumps({"weights": entries}))
    monkeypatch.setenv(ARCHIVE_ENV, str(tmp_path / "archive.json"))
    kbps = str(first.bitrates[-1] / 1000)
    for weights, out in ((old_path, "old.akc"), (new_path, "new.akc")):
        argv = ["encode", str(SAMPLE), str(tmp_path / out), "-m", str(weights), "-b", kbps, "--entropy", "-q"]
        assert main(argv) == 0
    old, new = (read_akc_header(tmp_path / name) for name in ("old.akc", "new.akc"))
    assert old.entropy_model == new.entropy_model is not None and old.weights_hash != new.weights_hash
    assert (tmp_path / "old.akc").stat().st_size == (tmp_path / "new.akc").stat().st_size
    assert main(["decode", str(tmp_path / "old.akc"), str(tmp_path / "old.wav"), "-q"]) == 0


def test_a_file_whose_weights_are_not_here_is_named_in_the_error(tmp_path, tiny_codec_file, capsys):
    """Decoding, without --model, a file written by weights never shipped: the one-line error names the
    file (it named only the weights, so a single file's error did not say which file)."""
    akc = tmp_path / "unshipped.akc"
    assert main(["encode", "-q", str(SAMPLE), str(akc), "-m", str(tiny_codec_file), "-b", "1.5"]) == 0
    capsys.readouterr()
    assert main(["decode", "-q", str(akc), str(tmp_path / "o.wav")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{akc}: " in err and "not a shipped version" in err, err
    assert not (tmp_path / "o.wav").exists()


def test_entropy_coding_with_weights_never_shipped_says_so(tmp_path, tiny_codec_file, capsys):
    """`encode --entropy -m <weights never shipped>`: one line saying those weights have no entropy-coding
    model (it told the user to pass the --model they had passed)."""
    argv = [
        "encode",
        str(SAMPLE),
        str(tmp_path / "o.akc"),
        "-m",
        str(tiny_codec_file),
        "-b",
        "1.5",
        "--entropy",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "never shipped" in err and "pass --model" not in err, err
    assert not (tmp_path / "o.akc").exists()
