"""Safe handling of user uploads: zip archives of image folders.

Archives are checked entry by entry before anything is written: absolute paths, `..` components,
links and archives that unpack beyond a size or file-count limit are refused with the entry named.
Nothing uploaded is ever unpickled.
"""
from __future__ import annotations

import io
import os
import shutil
import stat
import uuid
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from clipsvd.errors import DataError

MAX_UNPACKED_BYTES = 2 * 1024**3
MAX_FILES = 200_000


def _checked_members(archive: zipfile.ZipFile, source: str, max_bytes: int, max_files: int) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    if len(members) > max_files:
        raise DataError(f"{source}: {len(members)} entries, more than the limit of {max_files}")
    total = 0
    for info in members:
        name = info.filename
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise DataError(f"{source}: entry '{name}' has an absolute path; refusing to extract")
        if ".." in path.parts:
            raise DataError(f"{source}: entry '{name}' climbs out of the folder ('..'); refusing to extract")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{source}: entry '{name}' is a symbolic link; refusing to extract")
        total += info.file_size
        if total > max_bytes:
            raise DataError(f"{source}: unpacks to more than {max_bytes / 1024**2:.0f} MiB; refusing to extract")
    return members


def extract_zip(
    archive: bytes | str | Path,
    destination: str | Path,
    source: str = "uploaded zip",
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_files: int = MAX_FILES,
) -> Path:
    """Extract a zip after checking every entry; returns the dataset root (the single top folder, if any).

    Entries are unpacked into a hidden staging folder beside `destination` and moved in only when every one of
    them unpacked: an archive whose headers lie about its data (bad CRC, a truncated or mislabelled entry) or a
    disk that fills raises DataError naming the entry, and leaves nothing behind."""
    destination = Path(destination)
    try:
        handle = zipfile.ZipFile(io.BytesIO(archive) if isinstance(archive, bytes) else archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{source}: not a readable zip archive ({exc})") from exc
    with handle:
        members = _checked_members(handle, source, max_bytes, max_files)
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = destination.parent / f".partial-{destination.name}-{uuid.uuid4().hex[:8]}"
        try:
            staging.mkdir()
            for info in members:
                target = (staging / info.filename).resolve()
                if not target.is_relative_to(staging.resolve()):
                    raise DataError(f"{source}: entry '{info.filename}' would land outside the folder")
                try:
                    handle.extract(info, staging)
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
                    raise DataError(f"{source}: entry '{info.filename}' cannot be unpacked: its headers do not match "
                                    f"its data ({exc}); nothing was extracted") from None
            destination.mkdir(exist_ok=True)
            for entry in staging.iterdir():
                os.rename(entry, destination / entry.name)
        except OSError as exc:
            raise DataError(f"{source}: cannot extract into {destination.parent}: {exc.strerror or exc}; nothing "
                            "was extracted") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    top = [p for p in destination.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    return top[0] if len(top) == 1 and top[0].is_dir() else destination
