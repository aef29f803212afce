"""audiokit.io: round trips per format, rate and channel count; bad files; block reader."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from audiokit import io
from audiokit.errors import AudioFormatError, UsageError


def _tone(channels: int, frames: int, rate: int) -> np.ndarray:
    t = np.arange(frames) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]).astype(
        np.float32
    )


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_wav_float_round_trip_is_exact(tmp_path, rate, channels):
    x = _tone(channels, 1234, rate)
    path = tmp_path / "x.wav"
    io.save(path, x, rate, subtype="FLOAT")
    y, r = io.load(path)
    assert r == rate and y.shape == (channels, 1234) and y.dtype == torch.float32
    np.testing.assert_array_equal(y.numpy(), x)


def test_a_name_that_is_not_utf8_is_written_and_read_by_libsndfile(tmp_path, monkeypatch):
    """Linux names are bytes; Python keeps undecodable ones as surrogates, which soundfile's str
    paths cannot encode (the writer failed with an internal error; the reader fell back to ffmpeg)."""
    path = tmp_path / os.fsdecode(b"caf\xe9.wav")
    x = _tone(1, 1600, 16000)
    io.save(path, x, 16000, subtype="FLOAT")
    assert os.listdir(os.fsencode(tmp_path)) == [b"caf\xe9.wav"]
    monkeypatch.setattr(io.ffmpeg, "open_reader", lambda *a: pytest.fail("read through ffmpeg"))
    assert io.info(path).frames == 1600
    np.testing.assert_array_equal(io.load(path)[0].numpy(), x)


@pytest.mark.parametrize("subtype,tol", [("PCM_16", 2**-15), ("PCM_24", 2**-23)])
def test_integer_pcm_round_trip_within_one_lsb(tmp_path, subtype, tol):
    x = _tone(2, 4000, 16000)
    io.save(tmp_path / "x.wav", x, 16000, subtype=subtype)
    y, _ = io.load(tmp_path / "x.wav")
    assert np.abs(y.numpy() - x).max() <= tol


@pytest.mark.parametrize(
    "ext,subtype,max_err", [("flac", None, 1e-4), ("ogg", "VORBIS", 0.1), ("opus", None, 0.1)]
)
def test_compressed_formats_round_trip(tmp_path, ext, subtype, max_err):
    rate = 48000
    x = _tone(2, rate, rate)
    path = tmp_path / f"x.{ext}"
    io.save(path, x, rate, subtype=subtype)
    y, r = io.load(path)
    assert r == rate and y.shape[0] == 2
    n = min(y.shape[1], x.shape[1])
    assert abs(y.shape[1] - x.shape[1]) < 0.02 * rate
    # lossy codecs: compare energy-normalised error on the common part
    err = np.sqrt(np.mean((y.numpy()[:, :n] - x[:, :n]) ** 2)) / np.sqrt(np.mean(x**2))
    assert err < max_err


def test_mp3_decodes(tmp_path):
    x = _tone(1, 44100, 44100)
    io.save(tmp_path / "x.mp3", x, 44100)
    y, r = io.load(tmp_path / "x.mp3")
    assert r == 44100 and y.shape[0] == 1 and y.shape[1] >= 44100 and torch.isfinite(y).all()


def test_a_cut_or_damaged_mp3_is_an_error_not_a_shorter_file(tmp_path, capfd):
    """libmpg123 stops quietly at damaged frames: without the check a 3 s file came back as 0.7 s (and
    its own warnings went to stderr beside the one-line error)."""
    x = _tone(1, 48000, 16000)
    io.save(tmp_path / "x.mp3", x, 16000)  # libsndfile writes a Xing tag: the exact length
    whole = (tmp_path / "x.mp3").read_bytes()
    (tmp_path / "cut.mp3").write_bytes(whole[: len(whole) // 3])
    damaged = bytearray(whole)
    for i in range(2000, len(damaged), 97):
        damaged[i] ^= 0x5A
    (tmp_path / "damaged.mp3").write_bytes(bytes(damaged))
    assert io.load(tmp_path / "x.mp3")[0].shape[1] == 48000
    for name in ("cut.mp3", "damaged.mp3"):
        with pytest.raises(
            AudioFormatError, match=rf"{name}: truncated or corrupt MP3 data: decoding stopped"
        ):
            io.load(tmp_path / name)
        with pytest.raises(AudioFormatError, match="of 48000"):
            list(io.iter_blocks(tmp_path / name, block_frames=4096))
    assert capfd.readouterr().err == ""
    # without a Xing/Info tag the header's length is an estimate: no error from it
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(tmp_path / "x.mp3"),
            "-write_xing",
            "0",
            str(tmp_path / "n.mp3"),
        ],
        check=True,
    )
    y, rate = io.load(tmp_path / "n.mp3")
    assert rate == 16000 and abs(y.shape[1] - 48000) < 2 * 1152


def test_a_file_that_is_mostly_not_mp3_is_refused(tmp_path):
    """libmpg123 finds frame headers by chance in other files: a program renamed .mp3 decoded to 48 ms
    of silence and enhanced "successfully". Bytes far beyond what the decoded audio fills are an error;
    a real MP3 with a large ID3v2 tag (cover art) is not."""
    x = _tone(1, 8000, 16000)
    io.save(tmp_path / "x.mp3", x, 16000)
    whole = (tmp_path / "x.mp3").read_bytes()
    (tmp_path / "padded.mp3").write_bytes(whole + bytes(200_000))
    tag_body = bytes(300_000)
    size = len(tag_body)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    (tmp_path / "art.mp3").write_bytes(b"ID3\x03\x00\x00" + syncsafe + tag_body + whole)
    assert io.load(tmp_path / "art.mp3")[0].shape[1] == 8000
    shutil.copy("/bin/ls", tmp_path / "ls.mp3")
    for name in ("padded.mp3", "ls.mp3"):
        with pytest.raises(AudioFormatError, match=rf"{name}: (not an MP3 file|not a readable audio file)"):
            io.load(tmp_path / name)
        with pytest.raises(AudioFormatError):
            list(io.iter_blocks(tmp_path / name, block_frames=4096))


def test_resampling_matches_soxr_directly(tmp_path):
    x = _tone(2, 22050, 22050)
    io.save(tmp_path / "x.wav", x, 22050, subtype="FLOAT")
    y, r = io.load(tmp_path / "x.wav", sample_rate=16000)
    expected = soxr.resample(x.T, 22050, 16000, quality="HQ").T
    assert r == 16000
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-7)


def test_channel_mixing(tmp_path):
    x = _tone(2, 1000, 8000)
    io.save(tmp_path / "s.wav", x, 8000, subtype="FLOAT")
    mono, _ = io.load(tmp_path / "s.wav", channels=1)
    np.testing.assert_allclose(mono.numpy()[0], x.mean(0), atol=1e-7)
    io.save(tmp_path / "m.wav", x[:1], 8000, subtype="FLOAT")
    six, _ = io.load(tmp_path / "m.wav", channels=6)
    assert six.shape == (6, 1000) and torch.equal(six[5], six[0])
    with pytest.raises(AudioFormatError, match="s.wav"):
        io.load(tmp_path / "s.wav", channels=6)


def test_one_sample_file(tmp_path):
    io.save(tmp_path / "one.wav", np.array([[0.25]], dtype=np.float32), 16000, subtype="FLOAT")
    y, _ = io.load(tmp_path / "one.wav")
    assert y.shape == (1, 1) and y.item() == 0.25


def _bad_files(tmp_path):
    good = tmp_path / "good.wav"
    io.save(good, _tone(1, 16000, 16000), 16000)
    data = good.read_bytes()
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "truncated.wav").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.wav").write_text("this is not audio at all\n" * 10)
    sf.write(tmp_path / "nan.wav", np.full(100, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    sf.write(tmp_path / "zero.wav", np.zeros((0,), dtype=np.float32), 16000)
    io.save(tmp_path / "good.ogg", _tone(1, 16000, 16000), 16000)
    ogg = (tmp_path / "good.ogg").read_bytes()
    (tmp_path / "truncated.ogg").write_bytes(ogg[: len(ogg) // 2])
    return {
        "empty.wav": "empty",
        "truncated.wav": "truncated",
        "text.wav": "not a readable audio file",
        "nan.wav": "NaN",
        "zero.wav": "no audio samples",
        "truncated.ogg": "truncated",
        "missing.wav": "no such file or directory",
    }


def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path):
    for name, problem in _bad_files(tmp_path).items():
        with pytest.raises(AudioFormatError) as info:
            io.load(tmp_path / name)
        message = str(info.value)
        assert name in message and problem in message and "\n" not in message


@pytest.mark.parametrize("placeholder", [0x7FFFFF00, 0x7FFFF000, 0xFFFFFFFF])
def test_a_wav_of_unknown_length_from_a_pipe_reads_whole(tmp_path, placeholder):
    """Writers that record into a pipe cannot go back to write the length: `arecord` leaves 0x7fffff00 as
    the data size, ffmpeg and sox 0xffffffff. Such a file reads whole (it was refused as truncated);
    a size that is not a placeholder and runs past the end is still truncation."""
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 4000)).astype(np.float32)
    io.save(tmp_path / "whole.wav", x, 16000, subtype="PCM_16")
    data = bytearray((tmp_path / "whole.wav").read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = placeholder.to_bytes(4, "little")
    (tmp_path / "piped.wav").write_bytes(bytes(data))
    wav, rate = io.load(tmp_path / "piped.wav")
    np.testing.assert_allclose(wav.numpy(), x, atol=1 / 32768)
    data[at : at + 4] = (len(data) + 100).to_bytes(4, "little")
    (tmp_path / "cut.wav").write_bytes(bytes(data))
    with pytest.raises(AudioFormatError, match="cut.wav: truncated"):
        io.load(tmp_path / "cut.wav")


def test_find_audio_globs_match_the_relative_path_or_its_last_parts(tmp_path):
    """`--glob` patterns: the last parts (`*.wav`, `alsa/*`) or the whole relative path with `*` crossing
    folders (`alsa-utils/*`, which matched nothing when only the last parts were compared)."""
    for name in ("alsa-utils/alsa/a.wav", "alsa-utils/b.wav", "other/alsa/c.wav", "d.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")

    def found(pattern: str) -> list[str]:
        return [p.relative_to(tmp_path).as_posix() for p in io.find_audio(tmp_path, pattern)]

    assert found("alsa-utils/*") == ["alsa-utils/alsa/a.wav", "alsa-utils/b.wav"]
    assert found("alsa/*") == ["alsa-utils/alsa/a.wav", "other/alsa/c.wav"]
    assert found("*.wav") == sorted(found("*"))
    assert found("d*") == ["d.wav"]
    assert found("alsa-utils/**/*.wav") == ["alsa-utils/alsa/a.wav"]


def test_a_cut_flac_file_names_where_its_audio_stops(tmp_path):
    """A FLAC file cut in half fails to decode about half-way: the message says at which sample (to
    within the search's 1024), whether read whole or in blocks."""
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 48000)).astype(np.float32)
    io.save(tmp_path / "whole.flac", noise, 16000)
    data = (tmp_path / "whole.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 2])
    for read in (io.load, lambda path: list(io.iter_blocks(path, block_frames=1 << 16))):
        with pytest.raises(AudioFormatError, match="cut.flac: truncated or corrupt") as info:
            read(tmp_path / "cut.flac")
        sample = int(str(info.value).split("at sample ")[1].split()[0])
        assert 15000 <= sample <= 25000  # not 0 (where the read began), not past the cut


def test_save_is_atomic_on_failure(tmp_path):
    target = tmp_path / "out.wav"
    with pytest.raises(ValueError):
        io.save(target, np.full((1, 10), np.nan, dtype=np.float32), 16000)
    with pytest.raises(ValueError):
        io.save(target, np.zeros((1, 10), dtype=np.float32), 16000, subtype="NOT_A_SUBTYPE")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_into_the_temporary_file_names_the_output(tmp_path):
    """An error while the temporary file is written (a full device: ``write`` names no file; a copy into
    it: ``shutil`` names the source first) names the output, not nothing or the source; an error naming
    another file (an input) is left as it is. Nothing is left behind."""
    out, source = tmp_path / "out.json", tmp_path / "source.json"
    full = errno.ENOSPC, os.strerror(errno.ENOSPC)
    errors = [
        (lambda tmp: OSError(*full), out),
        (lambda tmp: OSError(*full, str(source), None, str(tmp)), out),  # (errno, strerror, src, -, dst)
        (lambda tmp: OSError(errno.EIO, os.strerror(errno.EIO), str(source)), source),
    ]
    for error, named in errors:
        with pytest.raises(OSError) as info, io.atomic_path(out) as tmp:
            raise error(tmp)
        assert info.value.filename == str(named)
        assert info.value.strerror == os.strerror(info.value.errno)  # "No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_a_file_cut_short_while_it_is_read_is_an_error(tmp_path):
    """A WAV that shrinks while it is read block by block (a copy still running, a full disk) is an
    error naming it, not a short output that passes for the whole file (was: exit 0, 53 s of 1830)."""
    path = tmp_path / "long.wav"
    io.save(path, np.zeros((1, 100_000), np.float32), 16000)
    blocks = io.iter_blocks(path, block_frames=4096)
    next(blocks)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(AudioFormatError, match=r"cut short \(on disk or while being read\): it ended at"):
        list(blocks)


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    """Writing over a private (0600) or read-only-for-others file keeps its mode; a new file gets the
    usual 0666 less the umask, not mkstemp's 0600."""
    x = np.zeros((1, 100), np.float32)
    io.save(tmp_path / "new.wav", x, 16000)
    assert stat.S_IMODE((tmp_path / "new.wav").stat().st_mode) == 0o666 & ~io.UMASK
    for mode in (0o600, 0o640):
        os.chmod(tmp_path / "new.wav", mode)
        io.save(tmp_path / "new.wav", x, 16000)
        assert stat.S_IMODE((tmp_path / "new.wav").stat().st_mode) == mode


def test_block_reader_equals_load(tmp_path):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 100_003)).astype(np.float32)
    io.save(tmp_path / "x.wav", x, 44100, subtype="FLOAT")
    blocks = list(io.iter_blocks(tmp_path / "x.wav", block_frames=4096))
    assert all(b.shape[1] <= 4096 for b in blocks)
    np.testing.assert_array_equal(torch.cat(blocks, 1).numpy(), x)
    resampled = torch.cat(list(io.iter_blocks(tmp_path / "x.wav", 4096, sample_rate=16000, channels=1)), 1)
    offline, _ = io.load(tmp_path / "x.wav", sample_rate=16000, channels=1)
    assert resampled.shape == offline.shape
    np.testing.assert_allclose(resampled.numpy(), offline.numpy(), atol=1e-5)


def test_hour_long_file_streams_in_constant_memory(tmp_path):
    """Measured in a process of its own: in the test process, the peak that earlier tests left (500-700
    MiB under xdist) hid any growth below it."""
    rate, seconds = 16000, 3600
    path = tmp_path / "hour.wav"
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:
        block = (_tone(1, rate * 60, rate)[0] * 0.5)[:, None]
        for _ in range(seconds // 60):
            f.write(block)
    script = (
        "import resource, sys\n"
        "from audiokit import io\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "total = sum(b.shape[1] for b in io.iter_blocks(sys.argv[1], 1 << 16))\n"
        "print(total, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    total, grown_mib = done.stdout.split()
    assert int(total) == rate * seconds
    assert float(grown_mib) < 50, f"reading an hour grew peak memory by {float(grown_mib):.0f} MiB"


def test_a_codec_stream_is_named_as_such_and_a_missing_file_as_everywhere_else(tmp_path):
    """An .akc given where audio is read (enhance, eval) said 'not a readable audio file: Invalid
    argument'; a missing file read 'file not found' here and 'no such file or directory' in encode."""
    (tmp_path / "talk.akc").write_bytes(b"AKC0" + bytes(60))
    with pytest.raises(
        AudioFormatError, match="talk.akc: an audiokit codec stream, not audio: decode it first"
    ):
        io.load(tmp_path / "talk.akc")
    with pytest.raises(AudioFormatError, match="nosuch.wav: no such file or directory"):
        io.info(tmp_path / "nosuch.wav")


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8])
def test_save_refuses_integer_pcm_rather_than_clip_it_to_full_scale(tmp_path, dtype):
    """Integer samples went through a float conversion unscaled: int16 PCM of a quiet tone became a
    full-scale square wave in the file, without a word."""
    pcm = (_tone(1, 1600, 16000) * 8000).astype(dtype)
    for wav in (pcm, torch.from_numpy(pcm)):
        with pytest.raises(UsageError, match=r"x\.wav: .*got dtype .*scale integer PCM"):
            io.save(tmp_path / "x.wav", wav, 16000)
    assert list(tmp_path.iterdir()) == []


def test_save_names_audio_laid_out_samples_by_channels(tmp_path):
    """soundfile's (samples, channels) layout read as thousands of channels failed inside libsndfile
    with "Format not recognised"."""
    with pytest.raises(UsageError, match=r"\(1600, 2\): more than 1024 channels.*\(samples, channels\)"):
        io.save(tmp_path / "x.wav", _tone(2, 1600, 16000).T, 16000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rate", [0, -5, 44100.7, float("nan"), "16000", True])
def test_a_rate_that_is_no_whole_number_of_hz_is_refused_before_writing(tmp_path, rate):
    """0 Hz failed inside libsndfile ("SF_INFO struct incomplete"), -5 Hz as "Format not recognised",
    and 44100.7 Hz was written as 44100 Hz."""
    with pytest.raises(UsageError, match=r"x\.wav: sample_rate must be a whole number of Hz"):
        io.save(tmp_path / "x.wav", _tone(1, 1600, 16000), rate)
    assert list(tmp_path.iterdir()) == []


def test_whole_rates_of_any_number_type_are_written(tmp_path):
    for rate in (16000, 16000.0, np.int64(16000), torch.tensor(16000)):
        io.save(tmp_path / "x.wav", _tone(1, 1600, 16000), rate)
        assert io.info(tmp_path / "x.wav").sample_rate == 16000


def test_resample_refuses_channels_by_samples_rather_than_crash_or_mangle_it():
    """``resample`` takes (samples, channels); (channels, samples) audio, as ``load`` gives it, was
    resampled along the channel axis (3 x 2000 -> 1 x 2000) or, from ~40,000 samples, killed the
    interpreter inside soxr (SIGSEGV). Run in a child process: before the fix it crashed."""
    code = (
        "import numpy as np, sys\n"
        "from audiokit import io\n"
        "from audiokit.errors import UsageError\n"
        "for shape in [(1, 44100), (3, 2000)]:\n"
        "    try:\n"
        "        io.resample(np.zeros(shape, np.float32), 44100, 16000)\n"
        "        sys.exit(f'{shape} resampled')\n"
        "    except UsageError as exc:\n"
        "        assert 'needs .T' in str(exc), exc\n"
        "    try:\n"
        "        io.remix(np.zeros(shape, np.float32), 1)\n"
        "        sys.exit(f'{shape} remixed')\n"
        "    except UsageError as exc:\n"
        "        assert 'needs .T' in str(exc), exc\n"
        "assert io.resample(np.zeros((44100, 2), np.float32), 44100, 16000).shape == (16000, 2)\n"
        "assert io.resample(np.zeros(44100, np.float32), 44100, 16000).shape == (16000,)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's audiokit
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])


@pytest.mark.parametrize(
    "options,problem",
    [
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": -16000}, "sample_rate"),
        ({"sample_rate": 10**9}, "sample_rate"),
        ({"sample_rate": 16000.5}, "sample_rate"),
        ({"channels": 0}, "channels"),
        ({"channels": -1}, "channels"),
        ({"channels": 1.0}, "channels"),
    ],
)
def test_load_refuses_rates_and_channel_counts_no_audio_has(tmp_path, options, problem):
    """soxr answered 10^9 Hz with std::bad_alloc, 16000.5 Hz came back as a float rate, channels=0 as
    an empty tensor and -1 as an error blaming the file."""
    path = tmp_path / "x.wav"
    io.save(path, _tone(1, 1600, 16000), 16000)
    for read in (lambda: io.load(path, **options), lambda: list(io.iter_blocks(path, **options))):
        with pytest.raises(UsageError, match=rf"x\.wav: {problem} must be a whole number"):
            read()


def test_load_takes_whole_rates_of_any_number_type(tmp_path):
    path = tmp_path / "x.wav"
    io.save(path, _tone(1, 1600, 16000), 16000)
    for rate in (8000.0, np.int64(8000), torch.tensor(8000)):
        wav, got = io.load(path, sample_rate=rate, channels=np.int64(2))
        assert type(got) is int and got == 8000 and wav.shape == (2, 800)


@pytest.mark.parametrize("ext", io.WRITABLE_EXTENSIONS)
def test_every_writable_extension_is_written(tmp_path, ext):
    """Each extension the commands accept is written (``.aif`` was an internal error: libsndfile
    names no format after it)."""
    wav = torch.linspace(-0.5, 0.5, 1600)[None]
    io.save(tmp_path / f"out{ext}", wav, 16000)
    info = sf.info(str(tmp_path / f"out{ext}"))
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 1600)
