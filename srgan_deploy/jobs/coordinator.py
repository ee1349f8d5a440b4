"""The coordinator: one queue of segments over one or many inputs, resumable, with one progress count.

For each input: index it, plan its segments, open (or resume) its work folder, and queue the segments
not yet done; then let an executor render the queue, recording each finished segment in the manifest as
it arrives and joining an input's output as soon as its last segment is in. A bad input is reported
and skipped; the others finish.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from srgan_deploy.errors import Interrupted, VideoError
from srgan_deploy.interrupts import sigterm_as_interrupt
from srgan_deploy.jobs.events import Done, Event, Failed, Note, Progress, describe
from srgan_deploy.jobs.index import InputIndex, index_input
from srgan_deploy.jobs.join import join_segments
from srgan_deploy.jobs.manifest import Manifest, ManifestError, WorkDir, changes
from srgan_deploy.jobs.plan import DEFAULT_SEGMENT_SECONDS, Plan, check_segment_seconds, plan_segments
from srgan_deploy.jobs.render import SegmentResult, SegmentTask
from srgan_deploy.video import check_encoder, container_format
from srgan_deploy.video_job import VideoJob, check_paths


class Executor(Protocol):
    def run(
        self,
        tasks: list[SegmentTask],
        on_event: Callable[[Event], None],
        should_run: Callable[[SegmentTask], bool],
    ) -> None: ...


@dataclass(frozen=True)
class QueueOptions:
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS
    restart: bool = False  # discard any unfinished work and start over
    identity: tuple[tuple[str, Any], ...] = ()  # what else decides the output (backend, precision, tile, ...)
    weights: str = ""  # a digest of the model file

    def __post_init__(self) -> None:
        check_segment_seconds(self.segment_seconds)


@dataclass
class Outcome:
    job: VideoJob
    error: str | None = None
    frames: int = 0
    segments: int = 0
    reused: int = 0  # segments found done by an earlier run
    reused_frames: int = 0
    duplicates: int = 0
    bad_packets: int = 0
    bytes: int = 0
    codec: str = ""
    seconds: float = 0.0
    width: int = 0
    height: int = 0
    cause: BaseException | None = field(default=None, repr=False)  # the error itself, where this process saw it

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def fps(self) -> float:
        """Frames rendered by this run per second (frames an earlier run rendered do not count)."""
        return (self.frames - self.reused_frames) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Input:
    number: int
    job: VideoJob
    index: InputIndex
    plan: Plan
    work: WorkDir
    manifest: Manifest
    outcome: Outcome
    rendering: dict[int, int] = field(default_factory=dict)  # segment -> frames so far
    done_frames: int = 0  # frames of the segments in the manifest (kept as a count: progress comes per frame)
    started: float | None = None  # when its first segment began rendering (inputs wait their turn in a queue)


@dataclass
class Reporter:
    """How the coordinator speaks: progress (frames done, frames expected), status lines and warnings."""

    progress: Callable[[int, int], None] = lambda done, total: None
    status: Callable[[str], None] = lambda message: None
    warn: Callable[[str], None] = lambda message: None
    failed: Callable[[str], None] = lambda message: None  # an input failed (the others go on)


def fingerprint(job: VideoJob, index: InputIndex, options: QueueOptions) -> dict[str, Any]:
    encode = dataclasses.asdict(job.encode)
    settings: dict[str, Any] = {
        **{f"encode {k}": v for k, v in encode.items()},
        "side_by_side": job.side_by_side,
        "label": job.label if job.side_by_side else None,
        "dedup": dataclasses.asdict(job.dedup) if job.dedup else None,
        "start": job.start,
        "duration": job.duration,
        "max_frames": job.max_frames,
        "segment_seconds": options.segment_seconds,
        **{k: v for k, v in options.identity},
    }
    return {"input": index.fingerprint, "weights": options.weights, "options": settings}


def resolve_codec(job: VideoJob, warn: Callable[[str], None]) -> VideoJob:
    """Decide the codec once, for the output container (segments are all encoded the same way), and open
    it once with the job's settings: a preset or pixel format the encoder refuses fails here, in the
    option's words, not at the first segment."""
    codec = job.encode.resolved_codec(container_format(job.target), warn)
    check_encoder(codec, job.encode)
    return dataclasses.replace(job, encode=dataclasses.replace(job.encode, codec=codec))


def _open_input(number: int, job: VideoJob, options: QueueOptions, report: Reporter) -> _Input:
    report.status(f"indexing {job.source.name}")
    index = index_input(job.source)
    if not index.regular:
        report.warn(f"{job.source.name}: {index.reason}; it is upscaled as one segment (resumable only as a whole)")
    plan = plan_segments(index, options.segment_seconds, job.start, job.duration, job.max_frames)
    work = WorkDir(job.target)
    work.acquire()
    manifest = Manifest(fingerprint(job, index, options), len(plan.segments), plan.frames)
    try:
        work.drop_partials()
        if options.restart:
            work.clear()
        else:
            manifest.done = _reusable(job, plan, work, manifest, report)
        work.save(manifest)
    except BaseException:
        work.settle(finished=bool(manifest.done))
        raise
    outcome = Outcome(
        job,
        segments=len(plan.segments),
        reused=len(manifest.done),
        reused_frames=sum(int(r["frames"]) for r in manifest.done.values()),
    )
    return _Input(number, job, index, plan, work, manifest, outcome)


def _reusable(job: VideoJob, plan: Plan, work: WorkDir, now: Manifest, report: Reporter) -> dict[int, dict[str, Any]]:
    """The finished segments of an earlier run that this run can trust; the rest of the folder is cleared.

    Every doubt ends in rendering again, said in one line: a manifest that cannot be read or has the wrong
    shape is set aside, one from other settings is discarded, and each segment whose file is missing or
    whose bytes no longer match the checksum recorded when it was finished is rendered again."""
    name = job.source.name
    try:
        saved = work.read()
    except ManifestError as exc:
        aside = work.set_aside()
        report.warn(
            f"{name}: the manifest of the unfinished work in {work.path} cannot be used ({exc}); "
            f"it is set aside as {aside.name} and the job starts over"
        )
        work.clear()
        return {}
    if saved is None:
        leftovers = work.segment_files()
        if leftovers:
            report.warn(
                f"{name}: {work.path} holds {len(leftovers)} segment file(s) but no manifest to vouch for them; "
                "the job starts over"
            )
            work.clear()
        return {}
    if saved.fingerprint != now.fingerprint or (saved.segments, saved.frames) != (now.segments, now.frames):
        what = changes(saved.fingerprint, now.fingerprint) or ["the segment plan changed"]
        report.warn(f"{name}: unfinished work found but {'; '.join(what)}; starting over")
        work.clear()
        return {}
    done: dict[int, dict[str, Any]] = {}
    for k, record in sorted(saved.done.items()):
        problem = work.segment_problem(record, plan.segments[k].frames)
        if problem is None:
            done[k] = record
            continue
        report.warn(f"{name}: finished segment {k} ({record['file']}) {problem}; rendering it again")
        (work.path / record["file"]).unlink(missing_ok=True)
    if done:
        report.status(f"{name}: resuming, {len(done)} of {len(plan.segments)} segments already done (checksums match)")
    return done


def run_queue(
    jobs: list[VideoJob],
    options: QueueOptions,
    executor: Executor,
    report: Reporter | None = None,
) -> list[Outcome]:
    """Upscale every job; returns one outcome per job (failed ones carry their error).

    Whatever stops one input - our error, the system's, a bug - is that input's outcome and line; the
    others go on. A work folder outlives the run only if it holds finished segments to resume from."""
    coordinator = Coordinator(options, report or Reporter())
    try:
        with sigterm_as_interrupt():  # a scheduler's SIGTERM stops like Ctrl-C: finished segments are kept
            coordinator.open_all(jobs)
            tasks = coordinator.tasks()
            for item in coordinator.inputs.values():  # everything was done before (killed while joining): join now
                coordinator.join_if_complete(item)
            coordinator.report_progress()
            executor.run(tasks, coordinator.on_event, coordinator.should_run)
    except KeyboardInterrupt:
        raise coordinator.interrupted() from None
    finally:
        coordinator.settle()
    return coordinator.outcomes_after_run()


class Coordinator:
    """One run of the queue: its inputs, their outcomes and the one progress count. Executors report to
    ``on_event`` (segment progress, done, failed, and notices, each said once) and ask ``should_run``."""

    def __init__(self, options: QueueOptions, report: Reporter) -> None:
        self.options = options
        self.report = report
        self.inputs: dict[int, _Input] = {}
        self.outcomes: list[Outcome] = []
        self.total = 0  # frames expected over every input that opened
        self.said: set[str] = set()  # notices already shown (every worker says the same ones)

    def open_all(self, jobs: list[VideoJob]) -> None:
        """Check, index, plan and open (or resume) every input; one that fails is its outcome."""
        report = self.report
        for number, job in enumerate(jobs):
            try:
                check_paths(job)
                job = resolve_codec(job, report.warn)
                self.inputs[number] = _open_input(number, job, self.options, report)
                self.outcomes.append(self.inputs[number].outcome)
            except Exception as exc:  # noqa: BLE001 - this input's outcome; the others go on
                self.outcomes.append(Outcome(job, error=describe(exc), cause=exc))
                report.failed(_about(job, describe(exc)))
        self.total = sum(item.plan.frames for item in self.inputs.values())
        for item in self.inputs.values():
            item.done_frames = sum(int(r["frames"]) for r in item.manifest.done.values())

    def tasks(self) -> list[SegmentTask]:
        """The segments not done yet, input after input."""
        return [
            SegmentTask((item.number, seg.index), item.job, seg, item.work.path)
            for item in self.inputs.values()
            for seg in item.plan.segments
            if seg.index not in item.manifest.done
        ]

    def should_run(self, task: SegmentTask) -> bool:
        """A segment of an input that has failed meanwhile is skipped."""
        return self.inputs[task.key[0]].outcome.error is None

    def done_frames(self) -> int:
        return sum(item.done_frames + sum(item.rendering.values()) for item in self.inputs.values())

    def report_progress(self) -> None:
        self.report.progress(self.done_frames(), self.total)

    def on_event(self, event: Event) -> None:
        if isinstance(event, Note):
            if event.message not in self.said:
                self.said.add(event.message)
                (self.report.warn if event.warning else self.report.status)(event.message)
            return
        item = self.inputs[event.key[0]]
        if item.started is None:
            began = event.result.seconds if isinstance(event, Done) else 0.0
            item.started = time.perf_counter() - began
        if isinstance(event, Progress):
            item.rendering[event.key[1]] = event.frames
        elif isinstance(event, Failed):
            item.rendering.pop(event.key[1], None)
            self.fail(item, event.message, event.error)
        elif isinstance(event, Done):
            item.rendering.pop(event.key[1], None)
            if item.outcome.error is not None or not self.record(item, event.result):
                return
        self.report_progress()

    def record(self, item: _Input, result: SegmentResult) -> bool:
        """A finished segment goes into the manifest, and the input's last one joins it; False when the
        manifest could not be saved (not recorded: not done, and the input fails)."""
        item.manifest.done[result.index] = result.to_dict()
        item.done_frames += result.frames
        try:
            item.work.save(item.manifest)
        except Exception as exc:  # noqa: BLE001 - this input's outcome; the others go on
            del item.manifest.done[result.index]
            self.fail(item, describe(exc), exc)
            return False
        self.join_if_complete(item)
        return True

    def join_if_complete(self, item: _Input) -> None:
        if len(item.manifest.done) == len(item.plan.segments):
            try:
                self.finish(item)
            except Exception as exc:  # noqa: BLE001 - this input's outcome; the others go on
                self.fail(item, describe(exc), exc)

    def finish(self, item: _Input) -> None:
        """Join an input whose segments are all done into its output, fill in its outcome, remove its work."""
        joining = time.perf_counter()
        records = [item.manifest.done[n] for n in range(len(item.plan.segments))]
        out = item.outcome
        if all(r.get("first_time") is None for r in records):
            bad = sum(int(r["bad_packets"]) for r in records)
            item.work.remove()  # nothing a re-run could use: the input itself yields no picture
            raise VideoError(
                f"no video frame of {item.job.source} could be decoded"
                + (f" ({bad} damaged packet(s) skipped)" if bad else "")
                + " in the requested range; the file is damaged or holds no picture"
            )
        self.report.status(f"joining {len(records)} segment(s) into {item.job.target.name}")
        files = [(item.work.path / r["file"], r.get("first_time")) for r in records]
        rotation = float(records[0].get("rotation", 0.0))
        out.frames, out.width, out.height = join_segments(item.job, item.plan, files, rotation, self.report.warn)
        out.duplicates = sum(int(r["duplicates"]) for r in records)
        out.bad_packets = sum(int(r["bad_packets"]) for r in records)
        out.codec = str(records[0]["codec"])
        out.bytes = item.job.target.stat().st_size
        out.seconds = time.perf_counter() - (item.started or joining)
        item.work.remove()

    def fail(self, item: _Input, message: str, error: BaseException | None = None) -> None:
        if item.outcome.error is None:
            item.outcome.error = message
            item.outcome.cause = error
            item.work.settle(finished=bool(item.manifest.done))  # finished segments stay: a re-run resumes
            self.report.failed(_about(item.job, message))

    def interrupted(self) -> Interrupted:
        """What Ctrl-C (or SIGTERM) ends the run with: how much is kept for the next run."""
        kept = sum(len(item.manifest.done) for item in self.inputs.values() if item.outcome.error is None)
        planned = sum(len(item.plan.segments) for item in self.inputs.values())
        if not kept:
            return Interrupted("interrupted before any segment was finished; nothing is kept")
        return Interrupted(
            f"interrupted; {kept} of {planned} segments are done and kept - run the same command again to resume"
        )

    def settle(self) -> None:
        """However the run ends: a work folder stays only if it holds finished segments."""
        for item in self.inputs.values():
            if item.work.path.exists():
                item.work.settle(finished=bool(item.manifest.done))

    def outcomes_after_run(self) -> list[Outcome]:
        for item in self.inputs.values():
            if item.outcome.error is None and len(item.manifest.done) < len(item.plan.segments):
                item.outcome.error = "not all segments were rendered"  # an executor stopped early
        return self.outcomes


def _about(job: VideoJob, message: str) -> str:
    return message if str(job.source) in message or job.source.name in message else f"{job.source}: {message}"
