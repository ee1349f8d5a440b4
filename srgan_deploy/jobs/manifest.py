"""The work folder beside an output: its lock, its manifest, and the finished segment files.

The manifest is the single record of what is done. Only the coordinating process writes it, always
whole and atomically (temp file, fsync, rename), after the segment file it names is complete on disk, so
a kill at any instant leaves either the old or the new manifest, never a torn one, and never a
"done" entry without its file.

The folder is evidence, not trust: a night-long batch resumes from whatever a crash, a full disk, a
sync tool or a person left there. A manifest is read only if it has exactly the expected shape, and a
segment is reused only if its bytes still hash to the checksum recorded when it was finished; anything
else is rendered again, and the run says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

from srgan_deploy.errors import OutputError
from srgan_deploy.files import atomic_write_text

MANIFEST = "manifest.json"
REJECTED = "manifest.rejected.json"  # a manifest that could not be used, kept for a look until the job ends
LOCK = "lock"
FORMAT_VERSION = 2  # 2: every finished segment's sha256 (1 recorded only its size)
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
        """Parse and check a saved manifest; ManifestError says what is wrong with it."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"it is not valid JSON ({getattr(exc, 'msg', exc)})") from None
        _expect(isinstance(data, dict), "it is not a JSON object")
        version = data.get("version")
        if version == 1:
            raise ManifestError("it was written by an older srgan-deploy that kept no segment checksums")
        _expect(version == FORMAT_VERSION, f"its format version is {version!r}, not {FORMAT_VERSION}")
        fingerprint = data.get("fingerprint")
        _expect(
            isinstance(fingerprint, dict)
            and isinstance(fingerprint.get("input"), str)
            and isinstance(fingerprint.get("weights"), str)
            and isinstance(fingerprint.get("options"), dict),
            "its fingerprint is not {input, weights, options}",
        )
        segments, frames, done = data.get("segments"), data.get("frames"), data.get("done")
        _expect(_is_int(segments) and segments >= 1, f"segments is {segments!r}, not a count >= 1")
        _expect(_is_int(frames) and frames >= 0, f"frames is {frames!r}, not a count >= 0")
        _expect(isinstance(done, dict), "done is not an object of segment records")
        records: dict[int, dict[str, Any]] = {}
        for key, record in done.items():
            _expect(key.isdigit() and int(key) < segments, f"done names segment {key!r} of {segments}")
            records[int(key)] = check_record(int(key), record)
        return cls(fingerprint=fingerprint, segments=segments, frames=frames, done=records)


class ManifestError(ValueError):
    """A saved manifest that cannot be trusted: unreadable, or not of the shape this version writes."""


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise ManifestError(problem)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_SHA256 = re.compile(r"[0-9a-f]{64}")
# field -> its check; a SegmentResult as a dict (jobs.render), which is what the coordinator records
RECORD_FIELDS: dict[str, Any] = {
    "index": _is_int,
    "file": lambda v: isinstance(v, str),
    "bytes": lambda v: _is_int(v) and v >= 0,
    "sha256": lambda v: isinstance(v, str) and _SHA256.fullmatch(v) is not None,
    "frames": lambda v: _is_int(v) and v >= 0,
    "duplicates": lambda v: _is_int(v) and v >= 0,
    "rotation": _is_number,
    "bad_packets": lambda v: _is_int(v) and v >= 0,
    "seconds": _is_number,
    "codec": lambda v: isinstance(v, str),
    "first_time": lambda v: v is None or (isinstance(v, str) and _is_fraction(v)),
}


def _is_fraction(text: str) -> bool:
    try:
        Fraction(text)
    except (ValueError, ZeroDivisionError):
        return False
    return True


def check_record(index: int, record: Any) -> dict[str, Any]:
    """One finished segment's record, checked field by field (ManifestError names the first bad one).

    Why so strict: the join trusts these values (file names, first-frame times); a record that names another
    file, or a time that is not a number, must not reach it."""
    _expect(isinstance(record, dict), f"segment {index}'s record is not an object")
    for name, ok in RECORD_FIELDS.items():
        _expect(name in record and ok(record[name]), f"segment {index}'s {name} is {record.get(name)!r}")
    _expect(record["index"] == index, f"segment {index}'s record says it is segment {record['index']}")
    _expect(record["file"] == segment_name(index), f"segment {index}'s file is {record['file']!r}")
    _expect(
        (record["first_time"] is None) == (record["frames"] == 0),
        f"segment {index} records {record['frames']} frame(s) and first_time {record['first_time']!r}",
    )
    return dict(record)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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

        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{self.path} is in the way of this job's work folder; remove it and run again")
        try:
            self.path.mkdir(exist_ok=True)
            lock = (self.path / LOCK).open("a+")
        except OSError as exc:
            raise OutputError(f"cannot create the work folder {self.path}: {exc.strerror or exc}") from exc
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
        stale = [*self.path.glob(".seg-*.partial*"), *self.path.glob(f".{MANIFEST}.*.partial")]
        for item in stale:
            item.unlink(missing_ok=True)
        return len(stale)

    def read(self) -> Manifest | None:
        """The saved manifest; None when there is none; ManifestError when there is one that cannot be used."""
        path = self.path / MANIFEST
        if not path.exists():
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"it cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        return Manifest.from_json(text)

    def load(self) -> Manifest | None:
        """The saved manifest, or None when there is none or it cannot be used (for onlookers: tests, tools)."""
        try:
            return self.read()
        except ManifestError:
            return None

    def save(self, manifest: Manifest) -> None:
        try:
            atomic_write_text(self.path / MANIFEST, manifest.to_json(), durable=True)
        except OSError as exc:
            raise OutputError(
                f"cannot record progress in {self.path}: {exc.strerror or exc}; free some space and run the same "
                "command again (finished segments are kept)"
            ) from exc

    def set_aside(self) -> Path:
        """Move an unusable manifest out of the way (kept for a look until the job is done)."""
        target = self.path / REJECTED
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(self.path / MANIFEST, target)
        return target

    def segment_files(self) -> list[Path]:
        return sorted(self.path.glob(f"seg-*{SEGMENT_SUFFIX}"))

    def clear(self) -> None:
        """Everything but the lock (and a rejected manifest): the work starts over."""
        for item in self.path.iterdir():
            if item.name in (LOCK, REJECTED):
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)

    def remove(self) -> None:
        self.release()
        shutil.rmtree(self.path, ignore_errors=True)

    def settle(self, finished: bool) -> None:
        """Let go of the folder at the end of a run: kept when it holds finished segments (a re-run resumes
        from them), removed when it holds nothing a re-run could use."""
        if finished:
            self.release()
        else:
            self.remove()

    def segment_problem(self, record: dict[str, Any], expected_frames: int) -> str | None:
        """Why a recorded segment cannot be reused (None: it can). Its bytes are hashed: a segment that a
        disk error or another program changed in the middle keeps its size, not its checksum."""
        path = self.path / record["file"]
        try:
            size = path.stat().st_size
        except OSError:
            return "is missing"
        if size != record["bytes"]:
            return f"has {size} bytes, the manifest says {record['bytes']}"
        if expected_frames and record["frames"] > expected_frames:
            return f"records {record['frames']} frames, more than the {expected_frames} of its range"
        try:
            digest = file_sha256(path)
        except OSError as exc:
            return f"cannot be read ({exc.strerror or exc})"
        if digest != record["sha256"]:
            return "does not match its checksum (it changed after it was written)"
        return None
