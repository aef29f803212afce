"""Building a ``kernels/`` extension on first use with ``torch.utils.cpp_extension`` (shared by
:mod:`audiokit.ops.cpp` and :mod:`audiokit.ops.cuda`)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch

RECORD = "build.json"
"""The record a finished build leaves beside its library: its byte count and sha256."""
KEEP_BUILDS = 8
"""Builds of one extension kept in a cache folder (each key has its own; the least recently used go
first): checkouts or versions that share the cache, and edits of the sources, each make one."""
HEADER_SUFFIXES = (".h", ".cuh", ".hpp")


def ninja_missing() -> str | None:
    """Why ``torch.utils.cpp_extension`` cannot build here for want of ninja (``None`` if it can)."""
    if shutil.which("ninja") is None:
        return "ninja not found (pip install ninja), which torch.utils.cpp_extension builds with"
    return None


def build_key(sources: list[Path], options: dict) -> str:
    """Hash of what a build depends on: the sources and the headers beside them (names and bytes), the
    options, the compiler, torch and Python's ABI."""
    compiler = os.environ.get("CXX", "c++")
    digest = hashlib.sha256(f"{torch.__version__}|{sys.implementation.cache_tag}|{compiler}".encode())
    digest.update(repr(sorted(options.items())).encode())
    headers = {p for s in sources for p in s.parent.glob("*") if p.suffix in HEADER_SUFFIXES}
    for path in [*sources, *sorted(headers)]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_extension(
    name: str, sources: list[Path], build_dir: Path, **options
) -> tuple[ModuleType | None, str | None]:
    """``(module, None)``, built into ``build_dir/<name>-<key>`` (:func:`build_key`: builds of other
    sources or options live beside it, so that checkouts sharing the cache do not rebuild each other's;
    the :data:`KEEP_BUILDS` last used are kept), or ``(None, why)`` when the build fails; ``options`` go
    to ``torch.utils.cpp_extension.load``.

    A build runs in a temporary folder, which is renamed to ``build_dir/<name>-<key>`` once its
    library's byte count and sha256 are recorded in it (:data:`RECORD`): a build killed half-way leaves
    nothing that looks finished. A cached library is loaded only if it matches its record; a damaged
    one (truncated, which ``dlopen`` would meet with SIGBUS) is built again, said in one line on stderr.

    One process builds at a time: the others wait on an ``flock`` of ``build_dir/build.flock``, which
    the system releases when its holder dies; its holder removes the temporary folders of killed builds.
    A first build (a minute or so) is announced on an interactive terminal. A ``build_dir`` that cannot
    be written (a read-only file system) is a failed build too."""
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        held = open(build_dir / "build.flock", "w")
    except OSError as exc:
        why = exc.strerror or exc
        return None, f"the kernel cache {build_dir} is not writable ({why}; set AUDIOKIT_KERNELS_CACHE)"
    with held:
        try:
            folder = build_dir / f"{name}-{build_key(sources, options)}"
        except OSError as exc:
            return None, f"the kernel sources cannot be read ({exc})"
        fcntl.flock(held, fcntl.LOCK_EX)
        for leftover in build_dir.glob(f"{name}-*.tmp"):  # only a killed build leaves one
            shutil.rmtree(leftover, ignore_errors=True)
        if folder.exists():
            damage = _damage(folder, name)
            if damage is None:
                with contextlib.suppress(OSError):  # a read-only cache stays as it is
                    os.utime(folder / RECORD)
                return _import(name, folder)
            print(
                f"audiokit: the kernel build in {folder} is damaged ({damage}): building it again",
                file=sys.stderr,
            )
        built = _build(name, sources, folder, options)
        _prune(build_dir, name, KEEP_BUILDS)
        return built


def _build(
    name: str, sources: list[Path], folder: Path, options: dict
) -> tuple[ModuleType | None, str | None]:
    """Build into a temporary folder beside ``folder``, record the library and rename it to ``folder``."""
    from torch.utils.cpp_extension import load

    if sys.stderr.isatty():
        print(f"audiokit: building {name} in {folder} (first use, about a minute)", file=sys.stderr)
    try:
        temporary = Path(tempfile.mkdtemp(prefix=f"{name}-", suffix=".tmp", dir=folder.parent))
    except OSError as exc:
        return None, f"the kernel cache {folder.parent} is not writable ({exc.strerror or exc})"
    try:
        temporary.chmod(0o755)  # as the folders torch made (mkdtemp's are private)
        module = load(
            name, [str(s) for s in sources], build_directory=str(temporary), verbose=False, **options
        )
        library = temporary / f"{name}.so"
        record = {"bytes": library.stat().st_size, "sha256": _sha256(library)}
        (temporary / RECORD).write_text(json.dumps(record))
        if folder.exists():
            shutil.rmtree(folder)
        temporary.rename(folder)
    except (RuntimeError, OSError, ImportError, subprocess.CalledProcessError) as exc:
        return None, f"the build in {folder} failed: {str(exc).strip().splitlines()[-1]}"
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return module, None


def _damage(folder: Path, name: str) -> str | None:
    """How the library of the build in ``folder`` differs from its record (``None``: it does not)."""
    library = folder / f"{name}.so"
    try:
        record = json.loads((folder / RECORD).read_text())
        expected, size = record["bytes"], library.stat().st_size
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"no readable record of its library: {exc}"
    if size != expected:
        return f"{library.name} has {size} bytes, {expected} were built"
    if _sha256(library) != record["sha256"]:
        return f"{library.name}'s sha256 differs from the one built"
    return None


def _prune(build_dir: Path, name: str, keep: int) -> None:
    """Delete all but the ``keep`` builds of ``name`` in ``build_dir`` most recently built or used
    (under the build lock; a process that loaded one keeps it mapped)."""
    builds = []
    for record in build_dir.glob(f"{name}-*/{RECORD}"):
        with contextlib.suppress(FileNotFoundError):
            builds.append((record.stat().st_mtime_ns, record.parent))
    for _, old in sorted(builds, reverse=True)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _import(name: str, folder: Path) -> tuple[ModuleType | None, str | None]:
    """The extension ``folder/name.so``, imported (as ``torch.utils.cpp_extension.load`` does)."""
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.so")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        return None, f"the build in {folder} does not load: {exc}"
    return module, None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
