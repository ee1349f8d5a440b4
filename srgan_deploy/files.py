"""Writing files so that no reader, and no other writer, ever sees half of one.

Every file the package writes whole (a manifest, an engine and its sidecar, an image, weights, a cache
entry) goes to a temporary name beside its target and is renamed over it: a crash, a full disk or Ctrl-C
leaves the old file or none, never a truncated one that a later run would trust. Files that are streamed
while they are made (an encoded video, a segment) follow the same rule in their own code.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


def partial_path(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process or thread uses at the same time.

    Why pid and thread: ``--workers N`` (and a build thread beside the main one) write the same cached
    file at once; with one fixed temporary name one writer's rename takes the other's half-written file,
    and the other's rename then fails. Hidden (leading dot) so a folder listing shows only finished files."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.partial")


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` survive a power cut (where the filesystem lets a folder be synced)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = False) -> Path:
    """Write ``data`` to ``path`` whole or not at all. ``durable`` also syncs the file and its folder, for
    records a resumed run trusts (a job's manifest); caches and outputs can be made again and skip it."""
    tmp = partial_path(path)
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        # the user never asked for the temporary: a full disk is reported against the file they know
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path, text: str, durable: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), durable)


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``path`` (created if missing, never deleted).

    Why: N worker processes that all miss the engine cache would each build the same engine (minutes of
    GPU time, N times); under this lock the second one waits and then finds the first one's plan.
    ``on_wait`` runs once when the lock is taken by someone else (to say why nothing happens). POSIX
    ``flock``; where there is none (Windows) this is a no-op and concurrent builds are merely wasteful.
    The lock file is never removed: removing it would let a third process lock a new file while the
    second still holds the old one."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def captured_stderr() -> Iterator[Callable[[], str]]:
    """Send everything written to file descriptor 2 inside the block (C and C++ libraries included) to a
    scratch file; yields a function that returns what was written so far.

    Why: Ray's core worker and some encoders print their own warnings straight to the terminal (twenty lines
    of gRPC retries for one unreachable address); the caller says what went wrong in one line instead, and
    can quote the captured text where it helps."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as scratch:
        os.dup2(scratch.fileno(), 2)

        def text() -> str:
            sys.stderr.flush()
            scratch.seek(0)
            return scratch.read().decode("utf-8", "replace")

        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
