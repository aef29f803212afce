"""Building a ``kernels/`` extension on first use with ``torch.utils.cpp_extension`` (shared by
:mod:`audiokit.ops.cpp` and :mod:`audiokit.ops.cuda`)."""

from __future__ import annotations

import shutil
import subprocess
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
    ``(None, why)`` when the build fails; ``options`` go to ``torch.utils.cpp_extension.load``."""
    from torch.utils.cpp_extension import load

    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        module = load(
            name, [str(s) for s in sources], build_directory=str(build_dir), verbose=False, **options
        )
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        return None, f"the build in {build_dir} failed: {str(exc).strip().splitlines()[-1]}"
    return module, None
