"""The work folder beside an output: its lock, its manifest, and the finished segment files.

The manifest is the single record of what is done. Only the coordinating process writes it, always
whole and atomically (temp file, fsync, rename), after the segment file it names is complete on disk, so
a kill at any instant leaves either the old or the new manifest, never a torn one, and never a
"done" entry without its file.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from srgan_deploy.errors import OutputError
from srgan_deploy.files import atomic_write_text

MANIFEST = "manifest.json"
LOCK = "lock"
FORMAT_VERSION = 1
# Segments are mp4: every packet keeps its pts and dts (NUT drops the first dts of a B-frame stream). The
# muxer may shift a segment's clock (its edit list, rounded to the movie timescale); the join undoes that
# from the first frame's time recorded with the segment.
SEGMENT_SUFFIX = ".mp4"


def work_dir_for(target: Path) -> Path:
    return target.parent / f".{target.name}.srgan-work"


def segment_name(index: int) -> str:
    return f"seg-{index:05d}{SEGMENT_SUFFIX}"


@dataclass
class Manifest:
    fingerprint: dict[str, Any]  # {"input": sha, "weights": sha, "options": {...}}
    segments: int
    frames: int
    done: dict[int, dict[str, Any]] = field(default_factory=dict)  # segment index -> its SegmentResult as a dict

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": FORMAT_VERSION,
                "fingerprint": self.fingerprint,
                "segments": self.segments,
                "frames": self.frames,
                "done": {str(k): v for k, v in sorted(self.done.items())},
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"manifest version {data.get('version')}")
        return cls(
            fingerprint=data["fingerprint"],
            segments=int(data["segments"]),
            frames=int(data["frames"]),
            done={int(k): dict(v) for k, v in data["done"].items()},
        )


def changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, in words a user can act on."""
    out: list[str] = []
    if saved.get("input") != now.get("input"):
        out.append("the input file changed")
    if saved.get("weights") != now.get("weights"):
        out.append("the model weights changed")
    old, new = saved.get("options", {}), now.get("options", {})
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key} {_show(old.get(key))} -> {_show(new.get(key))}")
    return out


def _show(value: Any) -> str:
    return "unset" if value is None else json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)


class WorkDir:
    """The hidden folder of one output; held under an exclusive lock while a run uses it."""

    def __init__(self, target: Path) -> None:
        self.path = work_dir_for(target)
        self._lock: IO[str] | None = None

    def acquire(self) -> None:
        import fcntl

        try:
            self.path.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the work folder {self.path}: {exc.strerror or exc}") from exc
        lock = (self.path / LOCK).open("a+")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            who = lock.read().strip() or "another process"
            lock.close()
            raise OutputError(
                f"{self.path.parent / self.path.name[1:].removesuffix('.srgan-work')} is being written by "
                f"{who}; wait for it or stop it first"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"srgan-deploy pid {os.getpid()}")
        lock.flush()
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def drop_partials(self) -> int:
        """Half-written segment files of a run that was killed (only the lock holder may call this)."""
        stale = list(self.path.glob(".seg-*.partial*"))
        for item in stale:
            item.unlink(missing_ok=True)
        return len(stale)

    def load(self) -> Manifest | None:
        """The saved manifest, or None when there is none or it cannot be read (then the work starts over)."""
        try:
            return Manifest.from_json((self.path / MANIFEST).read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, manifest: Manifest) -> None:
        atomic_write_text(self.path / MANIFEST, manifest.to_json(), durable=True)

    def clear(self) -> None:
        """Everything but the lock: the work starts over."""
        for item in self.path.iterdir():
            if item.name == LOCK:
                continue
            if item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)

    def remove(self) -> None:
        self.release()
        shutil.rmtree(self.path, ignore_errors=True)

    def segment_ok(self, record: dict[str, Any]) -> bool:
        """A recorded segment is reusable only if its file is there, whole."""
        try:
            return (self.path / record["file"]).stat().st_size == int(record["bytes"])
        except (OSError, KeyError, ValueError):
            return False
