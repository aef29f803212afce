"""Every module of the package imports as the first audiokit import of a process: an import cycle shows
only then (``from audiokit.streaming import MultiStreamBatcher`` in a fresh interpreter failed with
"cannot import name 'CodecStream' from partially initialized module", while every test, having imported
the models first, passed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "audiokit"

# Run in a fresh interpreter (this one has imported audiokit, and may hold threads that a fork would
# copy mid-lock): torch and numpy once, then one forked child per module, which imports only that module
CHECK = r"""
import json, os, sys
import numpy, torch

failures = {}
for name in json.loads(sys.argv[1]):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            __import__(name)
            os._exit(0)
        except BaseException as exc:
            os.write(write_end, f"{type(exc).__name__}: {exc}".encode()[:2000])
            os._exit(1)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    if os.waitpid(pid, 0)[1]:
        failures[name] = message
print(json.dumps(failures))
"""


def _module_names() -> list[str]:
    """Every module below the package, found on disk (pkgutil.walk_packages would import the packages)."""
    return sorted(
        ".".join(("audiokit", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts and path.name != "__main__.py"
    )


def test_every_module_imports_first():
    names = _module_names()
    assert len(names) > 100 and "audiokit.streaming" in names
    done = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(names)],
        capture_output=True, text=True, timeout=600, cwd=PACKAGE.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {}


# What the command line must not import to show its help or run a file command: each costs start-up on
# every command (scipy.signal, which the bwe card's narrowband helpers import, took about a second of
# `audiokit --help`'s three), and none of these commands uses them.
HEAVY = ("scipy.signal", "scipy.stats", "matplotlib", "pystoi", "fastapi", "uvicorn", "triton",
         "audiokit.train", "audiokit.serve")  # fmt: skip

STARTS = r"""
import json, sys
from audiokit.cli import build_parser, main
build_parser()
after_parser = sorted(sys.modules)
code = main(["enhance", "-q", sys.argv[1], sys.argv[2]])
print(json.dumps({"code": code, "parser": after_parser, "enhance": sorted(sys.modules)}))
"""


def test_help_and_file_commands_import_no_heavy_modules(tmp_path, speech_files):
    done = subprocess.run(
        [sys.executable, "-c", STARTS, str(speech_files[0]), str(tmp_path / "out.wav")],
        capture_output=True, text=True, timeout=300, cwd=PACKAGE.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["code"] == 0
    for stage in ("parser", "enhance"):
        assert [name for name in HEAVY if name in seen[stage]] == [], stage


# The program's start-up, watched from inside: full garbage collections, and the objects left out of them
COLLECTIONS = r"""
import atexit, gc, json, sys
full = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2 and full.append(1))
atexit.register(lambda: print(json.dumps({"full": len(full), "frozen": gc.get_freeze_count()})))
sys.argv = ["audiokit", "--version"]
from audiokit.cli import run
run()
"""


def test_start_up_walks_the_imported_objects_in_no_garbage_collection():
    # importing torch and the commands made three full collections, each walking a few 10^5
    # objects that live as long as the process: a third of a short file's command
    done = subprocess.run(
        [sys.executable, "-c", COLLECTIONS], capture_output=True, text=True, timeout=300, cwd=PACKAGE.parent
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["full"] == 0
    assert seen["frozen"] > 100_000  # the imports' objects, out of the collector's sight from then on
