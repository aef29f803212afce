"""Building a ``kernels/`` extension on first use with ``torch.utils.cpp_extension`` (shared by
:mod:`audiokit.ops.cpp` and :mod:`audiokit.ops.cuda`)."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType


def ninja_missing() -> str | None:
    """Why ``torch.utils.cpp_extension`` cannot build here for want of ninja (``None`` if it can)."""
    if shutil.which("ninja") is None:
        return "ninja not found (pip install ninja), which torch.utils.cpp_extension builds with"
    return None


def build_extension(
    name: str, sources: list[Path], build_dir: Path, **options
) -> tuple[ModuleType | None, str | None]:
    """``(module, None)``, built into ``build_dir`` (reused while the sources are unchanged), or
    ``(None, why)`` when the build fails; ``options`` go to ``torch.utils.cpp_extension.load``.

    One process builds at a time: the others wait on an ``flock`` of ``build_dir/build.flock``, which
    the system releases when its holder dies. So whoever holds it may remove torch's own lock file,
    which a killed build leaves behind and torch would wait on forever. A first build (a minute or so)
    is announced on an interactive terminal. A ``build_dir`` that cannot be written (a read-only file
    system) is a failed build too."""
    from torch.utils.cpp_extension import load

    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        held = open(build_dir / "build.flock", "w")
    except OSError as exc:
        why = exc.strerror or exc
        return None, f"the kernel cache {build_dir} is not writable ({why}; set AUDIOKIT_KERNELS_CACHE)"
    with held:
        fcntl.flock(held, fcntl.LOCK_EX)
        (build_dir / "lock").unlink(missing_ok=True)  # torch's: only a killed build leaves it now
        if sys.stderr.isatty() and not (build_dir / f"{name}.so").exists():
            print(f"audiokit: building {name} in {build_dir} (first use, about a minute)", file=sys.stderr)
        try:
            module = load(
                name, [str(s) for s in sources], build_directory=str(build_dir), verbose=False, **options
            )
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            return None, f"the build in {build_dir} failed: {str(exc).strip().splitlines()[-1]}"
    return module, None
