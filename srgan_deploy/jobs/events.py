"""What executors report to the coordinator while segments render (plain picklable records)."""

from __future__ import annotations

from dataclasses import dataclass, field

from srgan_deploy.errors import SrganDeployError
from srgan_deploy.jobs.render import SegmentResult


@dataclass(frozen=True)
class Progress:
    key: tuple[int, int]
    frames: int  # frames of this segment written so far


@dataclass(frozen=True)
class Done:
    key: tuple[int, int]
    result: SegmentResult


@dataclass(frozen=True)
class Failed:
    key: tuple[int, int]
    message: str
    # the exception itself, where the segment failed in this process (never sent between processes): a single
    # input's failure is re-raised as it was, so the command's exit code and --debug traceback stay right
    error: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Note:
    message: str  # a worker's warning or notice, shown once
    warning: bool = True  # False: a status line (a worker came up, ...)


Event = Progress | Done | Failed | Note


def describe(exc: BaseException) -> str:
    """One line for an error that stops one input, in the words the CLI would use for it.

    Why here: a queue reports each input's failure on its own line and goes on with the others, so any
    exception - ours, the system's, or a bug - has to become a line, not end the whole run."""
    if isinstance(exc, SrganDeployError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    text = " ".join(str(exc).split()) or type(exc).__name__
    return (
        f"internal error: {type(exc).__name__}: {text} (a bug: please report it with the output of the same "
        "command run with --debug)"
    )
