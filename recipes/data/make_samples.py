"""Rebuild ``samples/`` from the validation packages (never training ones).

Usage: ``python recipes/data/make_samples.py`` (needs the .debs in ``$AUDIOKIT_DATA/debs`` or apt access).
Writes 16-bit FLAC/WAV clips; the list of sources and licences is in ``samples/LICENSES.md``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from audiokit.data.debs import extract_package, fetch_package
from audiokit.data.decode import decode, resample
from audiokit.data.mixing import mix_at_snr
from audiokit.data.paths import data_root
from audiokit.data.vad import trim_silence

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
JUNE = "usr/share/asterisk/sounds/fr_CA_f_June"
TUX = "usr/share/tuxpaint/stamps"
TUX_CA = [
    "animals/birds/magellanic_penguin",
    "animals/fish/bluegroper",
    "animals/mammals/equines/zebra",
    "food/vegetables/pumpkin_small",
    "household/tools/mallet_metal",
]


def write(name: str, wav: np.ndarray, sample_rate: int) -> None:
    soundfile.write(str(SAMPLES / name), wav.T, sample_rate, subtype="PCM_16")


def main() -> None:
    # no options: the parser gives --help (which rebuilt samples/)
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    debs = data_root() / "debs"
    with tempfile.TemporaryDirectory() as tmp:
        root = {}
        for package in [
            "asterisk-core-sounds-fr-g722",
            "asterisk-core-sounds-fr-wav",
            "tuxpaint-stamps-default",
            "endless-sky-data",
            "hyperrogue-music",
            "alsa-utils",
        ]:
            root[package] = extract_package(fetch_package(package, debs), Path(tmp) / package)
        names = ["vm-intro", "vm-nobodyavail", "something-terribly-wrong"]
        for letter, name in zip("abc", names, strict=True):
            wav, rate = decode(root["asterisk-core-sounds-fr-g722"] / JUNE / f"{name}.g722")
            write(f"speech_fr_16k_{letter}.flac", wav, rate)
        narrow, rate = decode(root["asterisk-core-sounds-fr-wav"] / JUNE / "vm-intro.wav")
        write("speech_fr_8k_a.wav", narrow, rate)

        parts = []
        for stem in TUX_CA:
            wav, rate = decode(root["tuxpaint-stamps-default"] / TUX / f"{stem}_desc_ca.ogg")
            parts += [trim_silence(wav, rate), np.zeros((1, rate // 5), dtype=np.float32)]
        write("speech_ca_44k.flac", np.concatenate(parts[:-1], axis=1), rate)

        wav, rate = decode(root["alsa-utils"] / "usr/share/sounds/alsa/Front_Center.wav")
        write("speech_en_48k.wav", wav, rate)

        clean, rate = decode(root["asterisk-core-sounds-fr-g722"] / JUNE / "vm-intro.g722")
        noise, noise_rate = decode(
            root["endless-sky-data"] / "usr/share/games/endless-sky/sounds/ambient/machinery.mp3"
        )
        noise = resample(noise.mean(axis=0, keepdims=True), noise_rate, rate)[:, 20 * rate :]
        _, noisy = mix_at_snr(clean, noise[:, : clean.shape[-1]], 5.0)
        write("noisy_speech_fr_16k_snr5.flac", noisy, rate)

        music_dir = root["hyperrogue-music"] / "usr/share/hyperrogue/music"
        wav, rate = decode(music_dir / "hr3-jungle.ogg")
        write("music_stereo_44k.flac", wav[:, 30 * rate : 38 * rate], rate)
        wav, rate = decode(music_dir / "hr-savino-ocean.ogg")
        write(
            "music_mono_16k.flac",
            resample(wav.mean(axis=0, keepdims=True), rate, 16000)[:, 20 * 16000 : 30 * 16000],
            16000,
        )


if __name__ == "__main__":
    main()
