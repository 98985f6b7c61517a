"""File-system access that cannot leave the canvas root.

Reads resolve the requested path (symlinks inside the root are allowed, anything that
resolves outside is refused), then open the *resolved* path one component at a time
with ``O_NOFOLLOW`` relative to the previous directory's descriptor. A symlink swapped
in between the check and the open therefore makes the open fail instead of escaping.
Writes never traverse symlinks at all and replace files atomically (temp file + rename
in the same directory), so readers never see half a file.

Everything here is blocking; the views call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

INDEX_FILE = "index.html"
TEMP_PREFIX = ".canvas-upload-"  # hidden, so never served and ignored by the watcher

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO someone placed in the root must not hang the server.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotServable(Exception):
    """Absent, outside the root, or not a regular file: the caller answers 404."""


class WriteConflict(Exception):
    """The write cannot happen as asked (a file or symlink is in the way): 409."""


@dataclass
class OpenFile:
    """A regular file opened for reading; close ``fd`` when done."""

    fd: int
    stat: os.stat_result
    name: str  # the final component, for the MIME type

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class Opened:
    """What a read request found: a file, or a directory (the caller decides)."""

    file: OpenFile | None
    is_dir: bool


def _walk_dirs(root: Path, parts: tuple[str, ...] | list[str], *, create: bool = False) -> int:
    """Open ``root/parts...`` as a directory fd without following any symlink."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for name in parts:
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _inside(root: Path, segments: tuple[str, ...]) -> tuple[str, ...]:
    """The resolved path's parts relative to ``root``; NotServable when it leaves the root."""
    real = Path(os.path.realpath(root.joinpath(*segments)))
    if not real.is_relative_to(root):
        raise NotServable("resolves outside the canvas root")
    return real.relative_to(root).parts


def open_for_read(root: Path, segments: tuple[str, ...]) -> Opened:
    """Open ``segments`` under ``root`` (a resolved directory path) for serving."""
    try:
        parts = _inside(root, segments)
        if any(p.startswith(".") for p in parts):
            # A symlink must not make a hidden file reachable under another name.
            raise NotServable("resolves to a hidden name")
        dfd = _walk_dirs(root, parts[:-1]) if parts else _walk_dirs(root, ())
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dfd) if parts else os.dup(dfd)
        finally:
            os.close(dfd)
    except (OSError, ValueError) as exc:
        raise NotServable(str(exc)) from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise NotServable(str(exc)) from None
    if stat.S_ISDIR(st.st_mode):
        os.close(fd)
        return Opened(file=None, is_dir=True)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotServable("not a regular file")
    return Opened(file=OpenFile(fd=fd, stat=st, name=parts[-1] if parts else ""), is_dir=False)


def read_all(fd: int, size_hint: int) -> bytes:
    """Read an open file to the end."""
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, max(size_hint, 65536))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def write_atomic(root: Path, segments: tuple[str, ...], data: bytes) -> bool:
    """Create or replace ``segments`` under ``root`` with ``data``; True when it was created.

    Parent directories are created. Raises :class:`WriteConflict` when a file or a
    symlink stands where a directory is needed, or a directory where the file goes.
    """
    *dirs, name = segments
    try:
        dfd = _walk_dirs(root, dirs, create=True)
    except (NotADirectoryError, FileExistsError) as exc:
        raise WriteConflict("a file stands where the path needs a directory") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise WriteConflict("the path goes through a symlink; writes never follow symlinks") from exc
        raise
    try:
        try:
            existing = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            existing = None
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise WriteConflict("a directory stands where the file would go")
        tmp = f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                # On disk before it replaces the old file: a crash right after the
                # answer must not leave an empty file where the client's data was.
                os.fsync(fh.fileno())
            # rename() replaces a symlink itself, never its target.
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        return existing is None
    finally:
        os.close(dfd)


def delete(root: Path, segments: tuple[str, ...]) -> None:
    """Remove a file (or an empty directory) under ``root``.

    Raises :class:`NotServable` when absent and :class:`WriteConflict` for a non-empty
    directory. Symlinks are removed themselves, never followed.
    """
    *dirs, name = segments
    try:
        dfd = _walk_dirs(root, dirs)
    except OSError as exc:
        raise NotServable(str(exc)) from None
    try:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError as exc:
            raise NotServable(str(exc)) from None
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(name, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise WriteConflict("the directory is not empty") from None
                raise
        else:
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError as exc:
                raise NotServable(str(exc)) from None
    finally:
        os.close(dfd)
