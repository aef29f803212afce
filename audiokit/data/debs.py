"""Fetch Debian packages with ``apt-get download`` (or from a local folder) and unpack them with dpkg-deb."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from audiokit.errors import AudiokitError, ToolMissingError, UsageError
from audiokit.io import atomic_path


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _tool(name: str, install: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ToolMissingError(f"{name} is needed to fetch the audio packages: {install}")
    return found


def _order_key(part: str) -> list[int]:
    """Sort key of a Debian upstream version or revision part (deb-version(7)): non-digit runs compare
    letters before non-letters and ``~`` before everything, even the end of the part; digit runs compare
    as numbers."""
    key: list[int] = []
    while part:
        digits_at = next((i for i, char in enumerate(part) if char.isdigit()), len(part))
        for char in part[:digits_at]:
            key.append(-1 if char == "~" else ord(char) if char.isalpha() else ord(char) + 256)
        key.append(0)  # the end of a non-digit run sorts after "~" and before any character
        part = part[digits_at:]
        number_end = next((i for i, char in enumerate(part) if not char.isdigit()), len(part))
        key.append(int(part[:number_end] or 0))
        part = part[number_end:]
    return key + [0]  # the part's end: after a "~", before any character


def debian_version_key(version: str) -> tuple[int, list[int], list[int]]:
    """Sort key giving Debian's version order (``1.10`` after ``1.9``, ``1.0~rc1`` before ``1.0``)."""
    epoch, _, rest = version.rpartition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
    return int(epoch or 0), _order_key(upstream), _order_key(revision)


def _find_deb(folder: Path, package: str) -> Path | None:
    """The .deb of ``package`` in ``folder`` with the highest version, in Debian's order."""
    found = [deb for deb in folder.glob(f"{package}_*.deb") if deb.name.count("_") == 2]
    return max(found, key=lambda deb: debian_version_key(package_version(deb)), default=None)


def _apt_download(package: str, folder: Path) -> Path:
    apt_get = _tool("apt-get", "run on Debian/Ubuntu or pass --deb-dir")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        result = subprocess.run([apt_get, "download", package], cwd=tmp, capture_output=True, text=True)
        if result.returncode != 0:
            subprocess.run([apt_get, "update"], capture_output=True, text=True)
            result = subprocess.run([apt_get, "download", package], cwd=tmp, capture_output=True, text=True)
        deb = _find_deb(Path(tmp), package)
        if result.returncode != 0 or deb is None:
            lines = result.stderr.strip().splitlines()
            raise AudiokitError(
                f"apt-get download {package} failed: {lines[-1] if lines else 'no .deb written'}"
            )
        target = folder / deb.name
        os.replace(deb, target)
    return target


def fetch_package(package: str, folder: Path, local_dir: Path | None = None) -> Path:
    """Return the .deb of ``package`` in ``folder``, copying it from ``local_dir`` or downloading it first.

    A .deb already in ``folder`` is reused (downloads are atomic, so a present file is complete).
    """
    folder.mkdir(parents=True, exist_ok=True)
    existing = _find_deb(folder, package)
    if existing is not None:
        return existing
    if local_dir is not None:
        source = _find_deb(local_dir, package)
        if source is None:
            raise UsageError(f"{local_dir}: no {package}_*.deb in the local package folder")
        target = folder / source.name
        with atomic_path(target) as tmp:  # an interrupted copy leaves nothing behind
            shutil.copyfile(source, tmp)
        return target
    return _apt_download(package, folder)


def package_version(deb: Path) -> str:
    """Version string of a .deb (from its file name ``name_version_arch.deb``, with ``%3a`` decoded)."""
    return deb.name.split("_")[1].replace("%3a", ":")


def extract_package(deb: Path, folder: Path, deb_sha256: str | None = None) -> Path:
    """Unpack ``deb`` into ``folder`` (once; an existing complete unpack of the same .deb, by sha256, is
    reused; one of another .deb, e.g. an earlier version, is replaced) and return ``folder``.

    ``deb`` is the cache's copy: one that dpkg-deb cannot read (a corrupt or cut download) is deleted, so
    that the next run fetches it anew instead of failing on it again; one it reads (the unpack failed for
    another reason, e.g. a full disk) is kept. ``deb_sha256``, when the caller has it, saves hashing the
    .deb again (seconds a gigabyte).
    """
    deb_sha256 = deb_sha256 or sha256_file(deb)
    complete = folder / ".complete"
    if complete.exists() and complete.read_text().strip() == deb_sha256:
        return folder
    dpkg_deb = _tool("dpkg-deb", "apt-get install dpkg")
    if folder.exists():
        shutil.rmtree(folder)
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        result = subprocess.run([dpkg_deb, "-x", str(deb), str(partial)], capture_output=True, text=True)
    except BaseException:  # an interruption: no half-unpacked folder (gigabytes for 0ad-data) is left
        shutil.rmtree(partial)
        raise
    if result.returncode != 0:
        shutil.rmtree(partial)
        problem = f"dpkg-deb -x failed: {result.stderr.strip()}"
        whole = [dpkg_deb, "--fsys-tarfile", str(deb)]  # reads the whole package, writes nothing
        if subprocess.run(whole, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            deb.unlink()
            problem = f"corrupt package, removed from the cache (run again to fetch it anew); {problem}"
        raise AudiokitError(f"{deb}: {problem}")
    (partial / ".complete").write_text(deb_sha256 + "\n")
    os.replace(partial, folder)
    return folder
