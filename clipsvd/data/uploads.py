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
import tempfile
import time
import uuid
import weakref
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from clipsvd.errors import DataError

MAX_UNPACKED_BYTES = 2 * 1024**3
MAX_FILES = 200_000
UPLOAD_PREFIX = "clipsvd-upload-"  # <prefix><server pid>-<session id>-<random>, in the system temp folder
DEFAULT_QUOTA_MB = 2048  # per browser session: uploaded checkpoints plus unpacked archives
QUOTA_ENV = "CLIPSVD_UPLOAD_QUOTA_MB"
IDLE_GRACE_S = 600  # a folder of a session that is gone is swept once it has not been used for this long


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


def upload_quota_bytes() -> int:
    """The per-session upload quota: $CLIPSVD_UPLOAD_QUOTA_MB (set by `clipsvd dashboard --upload-quota-mb`)."""
    text = os.environ.get(QUOTA_ENV, "").strip()
    try:
        megabytes = float(text) if text else DEFAULT_QUOTA_MB
    except ValueError as exc:
        raise DataError(f"${QUOTA_ENV}={text!r} is not a number of megabytes") from exc
    return int(megabytes * 1024**2)


class UploadFolder:
    """One browser session's temporary folder: files written through it count against a quota, and the folder is
    deleted when the object is (the dashboard keeps it in the session's state, which Streamlit drops when the
    session ends), when `remove` is called, or at interpreter exit; `sweep_stale_uploads` removes what a killed
    server left."""

    def __init__(self, owner: str = "", quota_bytes: int | None = None, base: str | Path | None = None):
        tag = "".join(c for c in owner if c.isalnum() or c == "-")[:40]
        self.path = Path(tempfile.mkdtemp(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-{tag}-", dir=base))
        self.quota_bytes = upload_quota_bytes() if quota_bytes is None else int(quota_bytes)
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    @property
    def alive(self) -> bool:
        return self._finalizer.alive and self.path.is_dir()

    def used(self) -> int:
        """Bytes held now (what was written, unpacked archives included)."""
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file() and not p.is_symlink())

    def remaining(self) -> int:
        return max(0, self.quota_bytes - self.used())

    def reserve(self, size: int, what: str) -> None:
        """DataError when `size` more bytes would exceed the quota, before anything is written."""
        if size > self.remaining():
            raise DataError(f"{what}: {size / 1024**2:.1f} MiB would exceed this session's upload quota of "
                            f"{self.quota_bytes / 1024**2:.0f} MiB ({self.used() / 1024**2:.1f} MiB in use); "
                            "start a new session (close this tab) or ask for a larger --upload-quota-mb")

    def write(self, relative: str | Path, data: bytes, what: str = "upload") -> Path:
        """Write `data` under the folder once (an existing file is kept), within the quota."""
        target = self.path / relative
        if not target.resolve().is_relative_to(self.path.resolve()):
            raise DataError(f"{what}: '{relative}' would land outside the upload folder")
        if not target.exists():
            self.reserve(len(data), what)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return target

    def extract_zip(self, archive: bytes, folder: str, source: str) -> Path:
        """extract_zip into a subfolder, unpacking at most what is left of the quota (and never over the archive
        limit of MAX_UNPACKED_BYTES)."""
        limit = min(MAX_UNPACKED_BYTES, self.remaining())
        return extract_zip(archive, self.path / folder, source=source, max_bytes=limit)

    def touch(self) -> None:
        """Mark the folder as used now (the sweep leaves folders used within IDLE_GRACE_S alone)."""
        try:
            os.utime(self.path)
        except OSError:
            pass

    def remove(self) -> None:
        self._finalizer()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale_uploads(base: str | Path | None = None, live_owner=None, now: float | None = None) -> list[Path]:
    """Remove upload folders nothing will use again: those of servers no longer running (or of the old,
    pid-less naming), and, where `live_owner(tag)` says a folder's session of this server is gone, those unused
    for IDLE_GRACE_S (a session can reconnect for a while after its tab closes). Another user's folders, which
    cannot be removed, are left alone. Returns the folders removed."""
    base = Path(base or tempfile.gettempdir())
    now = time.time() if now is None else now
    removed = []
    for folder in base.glob(f"{UPLOAD_PREFIX}*"):
        if not folder.is_dir() or folder.is_symlink():
            continue
        try:
            if folder.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        pid_text, _, rest = folder.name[len(UPLOAD_PREFIX):].partition("-")
        stale = not pid_text.isdigit() or not _pid_alive(int(pid_text))
        if not stale and int(pid_text) == os.getpid() and live_owner is not None:
            tag = rest.rsplit("-", 1)[0]
            try:
                idle = now - folder.stat().st_mtime
            except OSError:
                continue
            stale = bool(tag) and not live_owner(tag) and idle > IDLE_GRACE_S
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed
