"""Writing output files: one atomic writer and the checks that an output can be written.

Every file the library writes (images, checkpoints, the data caches, metric tables) goes
through :func:`atomic_write`:

- the content goes to a temporary file beside the target (``.NAME.PID.RANDOM.tmp``: unique
  per process and call, so two processes never write one temporary file), is flushed to disk
  and then renamed over the target: a killed process or a full disk never leaves a
  half-written file, and a file that was there before stays intact until the new one is
  complete;
- the file gets the normal mode for the user's umask (0644 under umask 022), as ``open``
  would give it, not the private 0600 of ``tempfile.mkstemp``;
- a full disk or quota (ENOSPC, EDQUOT) removes the temporary file and raises one
  :class:`NoSpaceError` naming the file and the space it needs.

:func:`check_output_path` and :func:`check_output_dir` check, before any work is done, that
an output file or folder can be written: parent folders are created, and a path through a
regular file, a folder that cannot be created, or a folder that cannot be written gives one
:class:`OutputError` line saying which.
"""

from __future__ import annotations

import errno
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "NoSpaceError",
    "OutputError",
    "atomic_write",
    "check_output_dir",
    "check_output_path",
]

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}

Content = bytes | bytearray | memoryview | Callable[[BinaryIO], Any]


class OutputError(OSError):
    """An output file or folder that cannot be written; the message is one line."""

    def __init__(self, message: str, path: str | os.PathLike | None = None,
                 err: int | None = None) -> None:
        super().__init__(message)
        self.filename = None if path is None else str(path)
        self.errno = err

    def __str__(self) -> str:
        return str(self.args[0])


class NoSpaceError(OutputError):
    """The disk (or the user's quota) is full; the partial file has been removed."""


def _temp_name(path: Path, kind: str = "tmp") -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}")


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _make_folder(folder: Path, target: str) -> None:
    """Create ``folder`` (and its parents); OutputError naming a regular file in the way."""
    try:
        for part in [*reversed(folder.parents), folder]:
            if part.exists() and not part.is_dir():
                raise OutputError(f"{target}: {part} is a file, not a folder", part,
                                  errno.ENOTDIR)
        folder.mkdir(parents=True, exist_ok=True)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{target}: cannot create folder {folder} ({_reason(exc)})", folder,
                          exc.errno) from None


def _probe(folder: Path, target: str) -> None:
    """Create, write and remove a small file in ``folder``: the one test that does not lie.

    ``os.access`` answers yes to root for folders that refuse files (sysfs, read-only bind
    mounts, NFS with root squashing), so the folder is tried for real.
    """
    probe = _temp_name(folder / "write-test", "probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise NoSpaceError(f"no space left on device: {target} (folder {folder} is full)",
                               folder, exc.errno) from None
        raise OutputError(f"{target}: folder {folder} is not writable ({_reason(exc)})", folder,
                          exc.errno) from None


def check_output_path(path: str | os.PathLike) -> Path:
    """Check that the file ``path`` can be written, before any work; create its folders.

    Raises :class:`OutputError` ("cannot write PATH: ..."): when a part of the path is a
    regular file, the path is an existing folder, its folder cannot be created, or a file
    cannot be created in it. Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    target = f"cannot write {path}"
    if path.is_dir():
        raise OutputError(f"{target}: it is a folder", path, errno.EISDIR)
    _make_folder(path.parent, target)
    _probe(path.parent, target)
    return path


def check_output_dir(folder: str | os.PathLike) -> Path:
    """Check that files can be written into ``folder``, before any work; create it.

    Raises :class:`OutputError` ("cannot write into FOLDER: ...") when it or a part of its
    path is a regular file, it cannot be created, or a probe file cannot be created, written
    and removed in it. Returns ``folder`` as a ``Path``.
    """
    folder = Path(folder)
    target = f"cannot write into {folder}"
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{target}: it is a file, not a folder", folder, errno.ENOTDIR)
    _make_folder(folder, target)
    _probe(folder, target)
    return folder


class _Tracked:
    """A file wrapper that counts the bytes written and remembers a write's OSError.

    Some writers (``torch.save``) turn the OSError of a failed write into a RuntimeError
    without its errno; the wrapper keeps the original so that a full disk is recognised.
    """

    def __init__(self, f: BinaryIO | None) -> None:
        self._f = f
        self.written = 0
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if self._f is not None:
            try:
                self._f.write(data)
            except OSError as exc:
                self.error = exc
                raise
        self.written += size
        return size

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()


def _size_of(content: Content, written: int) -> int:
    """Bytes ``content`` makes: its length, or a second run of the writer into a counter."""
    if not callable(content):
        return memoryview(content).nbytes
    counter = _Tracked(None)
    try:
        content(counter)  # type: ignore[arg-type]
    except Exception:  # the writer cannot run twice: what it wrote is the best estimate
        return written
    return counter.written


def atomic_write(path: str | os.PathLike, content: Content, *, what: str = "the file") -> Path:
    """Write ``content`` to ``path`` atomically (see the module docstring); create folders.

    ``content`` is the bytes of the file or a function that writes them into the binary file
    object it is given (e.g. ``lambda f: torch.save(obj, f)``). After a full disk such a
    function is called once more, on a byte counter, to say how much space is needed.

    Raises :class:`NoSpaceError` on a full disk or quota, with the message
    ``no space left on device: PATH (needs about N MB: WHAT and its temporary copy)``
    (N: twice the file's size, since the file it replaces is only removed after the new one
    is complete), and :class:`OutputError` for a folder that cannot be created or written.
    Nothing is left behind on any error. Returns ``path`` as a ``Path``.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder", path, errno.EISDIR)
    _make_folder(path.parent, f"cannot write {path}")
    tmp = _temp_name(path)
    sink = _Tracked(None)
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            if exc.errno in _NO_SPACE:
                raise
            raise OutputError(f"cannot write {path}: folder {path.parent} is not writable "
                              f"({_reason(exc)})", path.parent, exc.errno) from None
        with open(fd, "wb") as f:
            sink = _Tracked(f)
            if callable(content):
                content(sink)  # type: ignore[arg-type]
            else:
                sink.write(content)
            f.flush()
            os.fsync(f.fileno())  # a full disk that shows only on flush says so here
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        err = sink.error if sink.error is not None else exc
        if isinstance(err, OSError) and err.errno in _NO_SPACE \
                and not isinstance(exc, OutputError):
            megabytes = max(1, math.ceil(2 * _size_of(content, sink.written) / 1e6))
            raise NoSpaceError(
                f"no space left on device: {path} (needs about {megabytes} MB: {what} and "
                f"its temporary copy)", path, err.errno) from None
        raise
    return path
