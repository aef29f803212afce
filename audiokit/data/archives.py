"""Members of archives found inside packages: zip/pk3 files and the QTBL resource file of FOTAQ."""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from audiokit.errors import AudioFormatError
from audiokit.io import atomic_path


@dataclass(frozen=True)
class QueenEntry:
    """One resource of a ``queen.1c`` file: name, bundle number, byte offset and size."""

    name: str
    bundle: int
    offset: int
    size: int


QTBL_HEADER = 4 + 6 + 2 + 1 + 2  # magic, version, padding, compression, entry count
QTBL_ENTRY = 12 + 1 + 4 + 4  # name, bundle, offset, size


def read_queen_table(path: Path) -> list[QueenEntry]:
    """Parse the resource table of a Flight of the Amazon Queen ``queen.1c`` file.

    Layout (big-endian): ``QTBL``, 6-byte version, 2 pad bytes, 1 compression byte, u16 entry count,
    then per entry a 12-byte NUL-padded name, u8 bundle, u32 offset, u32 size.
    """
    with open(path, "rb") as handle:
        header = handle.read(QTBL_HEADER)
        if len(header) < QTBL_HEADER or header[:4] != b"QTBL":
            raise AudioFormatError(path, "not a QTBL resource file (magic 'QTBL' missing at byte 0)")
        (count,) = struct.unpack(">H", header[13:15])
        table = handle.read(count * QTBL_ENTRY)
    if len(table) < count * QTBL_ENTRY:
        raise AudioFormatError(path, f"QTBL table truncated at byte {QTBL_HEADER + len(table)}")
    size_on_disk = path.stat().st_size
    entries = []
    for index in range(count):
        record = table[index * QTBL_ENTRY : (index + 1) * QTBL_ENTRY]
        raw_name, bundle, offset, size = struct.unpack(">12sBII", record)
        if offset + size > size_on_disk:
            raise AudioFormatError(
                path,
                f"QTBL entry {index} ends past the end of the file (offset {offset})",
            )
        entries.append(QueenEntry(raw_name.rstrip(b"\0").decode("ascii", "replace"), bundle, offset, size))
    return entries


def list_members(archive: Path) -> list[str]:
    """Names of the files inside a zip/pk3 or QTBL archive (directories left out)."""
    if archive.suffix.lower() == ".1c":
        return [entry.name for entry in read_queen_table(archive)]
    with _open_zip(archive) as handle:
        return [info.filename for info in handle.infolist() if not info.is_dir()]


@contextmanager
def _open_zip(archive: Path) -> Iterator[zipfile.ZipFile]:
    """``archive`` opened as a zip; a corrupt archive or member is an :class:`AudioFormatError`."""
    try:
        with zipfile.ZipFile(archive) as handle:
            yield handle
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise AudioFormatError(archive, f"corrupt zip archive ({exc})") from None


def extract_members(archive: Path, members: list[str], folder: Path) -> dict[str, Path]:
    """Write the chosen members below ``folder`` (skipping ones already there); return name -> path.

    QTBL speech entries (``*.SB``) are compressed MP3 data, so they are written with a ``.mp3`` suffix.
    """
    wanted = set(members)
    written: dict[str, Path] = {}
    if archive.suffix.lower() == ".1c":
        with open(archive, "rb") as handle:
            for entry in read_queen_table(archive):
                if entry.name not in wanted:
                    continue
                target = _member_path(archive, folder, entry.name + ".mp3")
                if not target.exists():
                    handle.seek(entry.offset)
                    _write_atomic(target, handle.read(entry.size))
                written[entry.name] = target
        return written
    with _open_zip(archive) as handle:
        for name in members:
            target = _member_path(archive, folder, name)
            if not target.exists():
                _write_atomic(target, handle.read(name))
            written[name] = target
    return written


def _member_path(archive: Path, folder: Path, name: str) -> Path:
    """``folder / name``, refusing names that would land outside ``folder`` (``..``, absolute paths)."""
    target = (folder / name).resolve()
    if Path(name).is_absolute() or ".." in Path(name).parts or not target.is_relative_to(folder.resolve()):
        raise AudioFormatError(archive, f"member {name!r} would be written outside the extraction folder")
    return target


def _write_atomic(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
