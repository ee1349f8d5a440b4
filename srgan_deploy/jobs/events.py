"""What executors report to the coordinator while segments render (plain picklable records)."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class Note:
    message: str  # a worker's warning or notice, shown once
    warning: bool = True  # False: a status line (a worker came up, ...)


Event = Progress | Done | Failed | Note
