"""Where exported ONNX files and TensorRT engines are cached between runs."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


def cache_dir(override: Path | None = None) -> Path:
    """``override``, else $SRGAN_DEPLOY_CACHE, else the platform's user cache dir."""
    if override is not None:
        return override
    env = os.environ.get("SRGAN_DEPLOY_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("srgan-deploy"))


def partial_path(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process or thread uses at the same time.

    Why pid and thread: ``--workers N`` (and a build thread beside the main one) write the same cached
    file at once; with one fixed temporary name one writer's rename takes the other's half-written file,
    and the other's rename then fails. Hidden (leading dot) so a folder listing shows only finished files."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.partial")


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
