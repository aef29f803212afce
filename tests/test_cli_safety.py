"""No command loses a user's data: no overwrite without ``-f/--force``, never an input, no rename onto a
FIFO or device, no temporary files left by a signal or a killed run (issue 19, deliverable 1)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from file_support import one_line_error as _one_line_error
from file_support import run_cli as _run

from audiokit import io
from audiokit.bitstream import AkcReader


def _wav(path: Path, seconds: float = 0.5, rate: int = 16000, seed: int = 0) -> Path:
    noise = np.random.default_rng(seed).standard_normal(int(seconds * rate)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, 0.1 * noise, rate, subtype="PCM_16")
    return path


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if io.TEMP_NAME.match(p.name)]


def test_encode_onto_its_input_is_refused_even_through_a_link(capsys, tmp_path):
    source = _wav(tmp_path / "a.wav")
    before = source.read_bytes()
    code, _, err = _run(capsys, "encode", str(source), str(source))
    assert code == 1
    _one_line_error(err, f"{source}: the output would overwrite the input {source}")
    link = tmp_path / "a.akc"
    link.symlink_to(source)
    code, _, err = _run(capsys, "encode", str(source), str(link), "--force")
    assert code == 1
    _one_line_error(err, str(link), str(source))
    assert source.read_bytes() == before and link.is_symlink() and not _temps(tmp_path)


@pytest.mark.parametrize("command", ["encode", "enhance", "bwe"])
def test_a_file_redirected_into_stdin_is_an_input_too(tmp_path, command):
    """`audiokit enhance - a.wav -f < a.wav` would replace the file it reads (stdin was not counted as an
    input, as `/dev/stdin` was): refused even with --force, the file untouched."""
    source = _wav(tmp_path / "a.wav")
    before = source.read_bytes()
    with open(source, "rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "audiokit", command, "-q", "-f", "-", str(source)],
            stdin=stdin,
            capture_output=True,
            timeout=600,
        )
    assert done.returncode == 1 and source.read_bytes() == before
    _one_line_error(done.stderr.decode(), f"{source}: the output would overwrite the input <stdin>")
    assert not _temps(tmp_path)


def test_a_reader_that_goes_away_mid_output_is_not_a_success(tmp_path):
    """Output to a pipe whose reader stops after a few bytes: the copy must not end with success (CPython's
    buffered write returns a short count there without raising, and the summary said "1 done"); the
    program stops as for `| head`, exit 141, and says nothing of success."""
    source = _wav(tmp_path / "a.wav", seconds=10.0)  # 320 KB of output: more than a pipe holds
    script = (
        f"{sys.executable} -m audiokit enhance {source} - | (sleep 3; head -c 100 > /dev/null);"
        f" echo ${{PIPESTATUS[0]}} > {tmp_path / 'rc'}"
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rc").read_text().strip() == "141", done.stderr
    assert b"done" not in done.stderr, done.stderr


def test_decode_into_the_source_folder_is_refused(capsys, tmp_path):
    folder = tmp_path / "d"
    original = _wav(folder / "talk.wav").read_bytes()
    assert _run(capsys, "encode", "-q", str(folder), str(folder / "enc"))[0] == 0
    code, _, err = _run(capsys, "decode", "-q", str(folder / "enc"), str(folder))
    assert code == 1
    _one_line_error(err, str(folder / "talk.wav"), "already exists", "--force")
    assert (folder / "talk.wav").read_bytes() == original
    # an .akc decoded onto itself is refused even with --force: .akc is no audio extension to write
    coded = (folder / "enc" / "talk.akc").read_bytes()
    code, _, err = _run(capsys, "decode", "-f", str(folder / "enc"), str(folder / "enc"), "--suffix", ".akc")
    assert code == 1
    _one_line_error(err, "--suffix '.akc'", "write one of .wav")
    assert (folder / "enc" / "talk.akc").read_bytes() == coded


def test_an_output_folder_inside_the_input_folder_can_be_run_again(capsys, tmp_path, monkeypatch):
    """`bwe . out` from inside the folder worked once; every later run took out/'s outputs for inputs
    and refused them as outputs that would overwrite inputs, with or without -f."""
    folder = tmp_path / "talks"
    _wav(folder / "a.wav", rate=8000)
    monkeypatch.chdir(folder)
    assert _run(capsys, "bwe", "-q", ".", "out")[0] == 0
    first = (folder / "out" / "a.wav").read_bytes()
    code, _, err = _run(capsys, "bwe", ".", "out")
    assert code == 1
    _one_line_error(err, "out/a.wav: already exists", "-f/--force")
    assert _run(capsys, "bwe", "-q", "-f", ".", "out")[0] == 0
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.wav")) == ["a.wav", "out/a.wav"]
    assert (folder / "out" / "a.wav").read_bytes() == first


def test_two_inputs_with_one_output_are_refused_before_writing(capsys, tmp_path):
    folder = tmp_path / "d"
    _wav(folder / "x.wav")
    _wav(folder / "x.flac")
    _wav(folder / "a.wav")  # sorted first: would have been written before the clash was found
    out = tmp_path / "out"
    code, _, err = _run(capsys, "encode", str(folder), str(out))
    assert code == 1
    _one_line_error(err, str(folder / "x.flac"), str(folder / "x.wav"), str(out / "x.akc"))
    assert not out.exists()


def test_existing_output_needs_force(capsys, tmp_path):
    source = _wav(tmp_path / "a.wav")
    target = tmp_path / "a.akc"
    target.write_bytes(b"precious")
    code, _, err = _run(capsys, "encode", str(source), str(target))
    assert code == 1
    _one_line_error(err, f"{target}: already exists", "-f/--force")
    assert target.read_bytes() == b"precious"
    assert _run(capsys, "encode", "-q", "-f", str(source), str(target))[0] == 0
    with AkcReader(target) as reader:
        assert reader.header.num_samples == 8000
    decoded = tmp_path / "b.wav"
    decoded.write_bytes(b"precious")
    code, _, err = _run(capsys, "decode", str(target), str(decoded))
    assert code == 1 and decoded.read_bytes() == b"precious"
    _one_line_error(err, f"{decoded}: already exists")
    assert _run(capsys, "decode", "--force", str(target), str(decoded))[0] == 0
    assert sf.info(decoded).frames == 8000


def test_eval_output_files_follow_the_same_rules(capsys, tmp_path):
    ref = _wav(tmp_path / "ref.wav")
    table = tmp_path / "scores.csv"
    table.write_text("precious")
    code, _, err = _run(capsys, "eval", "-q", str(ref), str(ref), "--csv", str(table))
    assert code == 1 and table.read_text() == "precious"
    _one_line_error(err, f"{table}: already exists", "--force")
    code, _, err = _run(capsys, "eval", "-q", "-f", str(ref), str(ref), "--csv", str(ref))
    assert code == 1
    _one_line_error(err, "the output would overwrite the input")
    code, _, err = _run(capsys, "eval", "-q", str(ref), str(ref), "--csv", str(table), "--plot", str(table))
    assert code == 1
    _one_line_error(err, "--csv and --plot would both be written to")
    assert _run(capsys, "eval", "-q", "-f", str(ref), str(ref), "--csv", str(table))[0] == 0
    assert table.read_text().startswith("file,")
    # the kept files of a baseline never go into the reference folder (the next run would pair them)
    folder = tmp_path / "valid"
    _wav(folder / "talk.wav")
    for keep in (folder, folder / "kept"):
        code, _, err = _run(capsys, "eval", "-q", str(folder), "--baseline", "identity", "--keep", str(keep))
        assert code == 1
        _one_line_error(err, f"--keep {keep}: is REF_DIR {folder} or inside it")
    assert [p.name for p in folder.rglob("*")] == ["talk.wav"]


def _drain(fifo: Path, into: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(fifo, "rb") as reader:
            into.append(reader.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_a_fifo_and_a_link_to_it_are_written_to_not_replaced(capsys, tmp_path):
    source = _wav(tmp_path / "a.wav")
    regular = tmp_path / "regular.akc"
    assert _run(capsys, "encode", "-q", str(source), str(regular))[0] == 0
    fifo = tmp_path / "pipe.akc"
    os.mkfifo(fifo)
    link = tmp_path / "link.akc"
    link.symlink_to(fifo)
    for target in (fifo, link):  # existing, but not data: no --force needed
        got: list[bytes] = []
        reader = _drain(fifo, got)
        assert _run(capsys, "encode", "-q", str(source), str(target))[0] == 0
        reader.join(10)
        assert got == [regular.read_bytes()]
        assert stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()
    wav_fifo = tmp_path / "pipe.wav"  # libsndfile cannot write a WAV to a pipe: it is copied in
    os.mkfifo(wav_fifo)
    got = []
    reader = _drain(wav_fifo, got)
    assert _run(capsys, "decode", "-q", str(regular), str(wav_fifo))[0] == 0
    reader.join(10)
    (tmp_path / "got.wav").write_bytes(got[0])
    assert sf.info(tmp_path / "got.wav").frames == 8000
    assert stat.S_ISFIFO(wav_fifo.lstat().st_mode) and not _temps(tmp_path)


def test_writes_in_place():
    assert io.writes_in_place("/dev/null") and io.writes_in_place("/dev/stdout")
    assert not io.writes_in_place(__file__) and not io.writes_in_place("/nonexistent/x.akc")


def test_dev_stdout_carries_the_codes_and_the_summary_goes_to_stderr(tmp_path):
    """``audiokit encode a.wav /dev/stdout | audiokit decode - b.wav`` (the README's pattern): the
    summary line was appended to the codes on standard output, and decode found no trailer."""
    source = _wav(tmp_path / "a.wav")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    encode = [sys.executable, "-m", "audiokit", "encode", str(source), "/dev/stdout"]
    done = subprocess.run(encode, capture_output=True, env=env, timeout=300)
    assert done.returncode == 0 and b"encode: 1 done" in done.stderr, done.stderr
    decode = [sys.executable, "-m", "audiokit", "decode", "-", str(tmp_path / "b.wav")]
    decoded = subprocess.run(decode, input=done.stdout, capture_output=True, env=env, timeout=300)
    assert decoded.returncode == 0, decoded.stderr
    assert sf.info(tmp_path / "b.wav").frames == sf.info(source).frames
    assert io.carries_stdout("-") and not io.carries_stdout(source)


def test_sigterm_mid_encode_removes_the_temporary_file(tmp_path):
    source = _wav(tmp_path / "long.wav", seconds=600)  # ~10 s of encoding on one busy core
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "audiokit", "encode", str(source), str(out / "long.akc")]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size for p in _temps(tmp_path)):  # the .akc header is written
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    _one_line_error(err, "audiokit encode: interrupted (SIGTERM)")
    assert list(out.iterdir()) == []


def test_sigint_removes_temporary_files_and_restores_handlers(capsys, tmp_path, monkeypatch):
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    source, target = _wav(tmp_path / "a.wav"), tmp_path / "a.akc"

    def interrupted_encode(codec, src, dst, *args, **kwargs):
        with io.atomic_path(dst) as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        pytest.fail("the signal did not interrupt")

    monkeypatch.setattr("audiokit.cli.coding.encode_file", interrupted_encode)
    code, _, err = _run(capsys, "encode", str(source), str(target))
    assert code == 130
    _one_line_error(err, "audiokit encode: interrupted (SIGINT)")
    assert not target.exists() and not _temps(tmp_path)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_interrupt_while_importing_is_one_line(capsys, monkeypatch):
    def slow_import():
        raise KeyboardInterrupt

    monkeypatch.setattr("audiokit.cli.build_parser", slow_import)
    code, _, err = _run(capsys, "encode", "a.wav", "a.akc")
    assert code == 130
    _one_line_error(err, "audiokit: interrupted (SIGINT)")


def test_a_rerun_cleans_stale_temporary_files(capsys, tmp_path):
    source = _wav(tmp_path / "a.wav")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a.k3_9zq0x.tmp.akc"  # what a killed run leaves
    stale.write_bytes(b"half")
    others = [out / ".b.k3_9zq0x.tmp.akc", out / ".a.notours.tmp.akc", out / "a.tmp.akc"]
    for other in others:
        other.write_bytes(b"keep")
    assert _run(capsys, "encode", "-q", str(source), str(out / "a.akc"))[0] == 0
    assert not stale.exists() and all(p.read_bytes() == b"keep" for p in others)


def test_a_run_writing_the_same_output_keeps_its_temporary_file(capsys, tmp_path):
    """A second run to an output another run is still writing left that run's temporary file in place
    only if it was this process's: it removed the live file, and the first run failed at its rename
    ("No such file or directory"). A live run's file is locked; once its process is gone it is stale."""
    source = _wav(tmp_path / "a.wav")
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from audiokit import io; "
            f"print(io._new_temp(Path({str(out)!r}), Path('a.akc')), flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        live = Path(holder.stdout.readline().strip())
        assert live.exists() and io.TEMP_NAME.match(live.name)
        assert _run(capsys, "encode", "-q", "-f", str(source), str(out / "a.akc"))[0] == 0
        assert live.exists()  # the other run still has it
    finally:
        holder.kill()
        holder.wait()
    assert _run(capsys, "encode", "-q", "-f", str(source), str(out / "a.akc"))[0] == 0
    assert not live.exists()  # its run was killed: stale now


def test_after_an_interruption_the_program_ignores_further_signals():
    """``audiokit`` (:func:`audiokit.cli.run`) interrupted while it reads standard input exits 130, and
    from then on a second SIGINT cannot break into the interpreter's shutdown (checked at exit)."""
    code = (
        "import atexit, signal, sys; "
        "atexit.register(lambda: print('ignored' if signal.getsignal(signal.SIGINT) is signal.SIG_IGN "
        "else 'not ignored')); "
        "sys.argv = ['audiokit', 'info', '-']; "
        "from audiokit.cli import run; print('ready', flush=True); run()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stdout.readline() == b"ready\n"
    time.sleep(1.0)  # main() installs its handlers and blocks reading standard input
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert out.decode().strip() == "ignored" and b"Traceback" not in err


def _decode_folder_under(limit: str, tmp_path: Path, out: Path) -> subprocess.CompletedProcess:
    """``audiokit decode`` of two 3 s .akc files (96 KB of audio each) into ``out``, in a child whose
    writes fail: beyond ``RLIMIT_FSIZE`` 4 KiB (``limit="fsize"``, SIGXFSZ ignored), or on a full
    device (``out`` there)."""
    import resource

    sources = tmp_path / "akc"
    for name in ("a", "b"):
        _run_checked("encode", str(_wav(tmp_path / f"{name}.wav", seconds=3.0)), str(sources / f"{name}.akc"))

    def limited() -> None:
        if limit == "fsize":
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    command = [sys.executable, "-m", "audiokit", "decode", str(sources), f"{out}/"]
    return subprocess.run(command, capture_output=True, text=True, preexec_fn=limited, timeout=300)


def _run_checked(*argv: str) -> None:
    done = subprocess.run([sys.executable, "-m", "audiokit", *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_failing_audio_write_is_one_line_per_file_and_leaves_nothing(tmp_path):
    """libsndfile's write errors (its "System error." hides the errno) name the output, every file of a
    folder is tried, nothing half-written stays (was: "internal error: LibsndfileError", exit 70)."""
    out = tmp_path / "out"
    done = _decode_folder_under("fsize", tmp_path, out)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    for name in ("a", "b"):
        assert f"{out / name}.wav: cannot write the audio" in done.stderr, done.stderr
    assert "0 done, 2 failed" in done.stdout + done.stderr
    assert not any(p.is_file() for p in out.rglob("*")) if out.exists() else True


def test_a_full_device_is_named_as_such(tmp_path):
    """On a full device (a 64 KiB tmpfs), the message is the system's "No space left on device"."""
    small = tmp_path / "small"
    small.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root and a mount namespace that allows it")
    try:
        done = _decode_folder_under("none", tmp_path, small / "out")
        assert done.returncode == 1, done.stderr
        for name in ("a", "b"):
            assert f"{small / 'out' / name}.wav: No space left on device" in done.stderr, done.stderr
        assert not [p for p in small.rglob("*") if p.is_file()]
    finally:
        subprocess.run(["umount", str(small)])


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_printed_results_that_cannot_be_written_name_stdout(extra):
    """`audiokit info FILE > /dev/full` (or a full disk behind `>`) said "error: No space left on device",
    naming nothing: the results printed on standard output now name <stdout>, as audio written there does."""
    sample = Path(__file__).resolve().parent.parent / "samples" / "speech_fr_8k_a.wav"
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "audiokit", "info", str(sample), *extra],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    assert (done.returncode, done.stderr) == (1, "audiokit info: error: <stdout>: No space left on device\n")


def test_a_closed_stdout_is_not_an_error():
    """With stdout closed (`>&-`, a daemon) Python's sys.stdout is None and print() writes nothing; the
    wrapper naming <stdout> in write errors made that an internal error (AttributeError)."""
    sample = Path(__file__).resolve().parent.parent / "samples" / "speech_fr_8k_a.wav"
    code = f"import sys; from audiokit.cli import main; sys.exit(main(['info', {str(sample)!r}]))"
    done = subprocess.run(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, timeout=120,
        preexec_fn=lambda: os.close(1),  # as `>&-` leaves it
    )
    assert (done.returncode, done.stderr) == (0, "")
