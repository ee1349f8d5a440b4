"""``--ray``: segments render on Ray actors (one backend per actor), on an existing cluster or an embedded
local Ray.

Each actor opens its backend once and renders the segments it is handed, one at a time; the coordinator
(this process) keeps every actor busy, polls their progress, records finished segments in the manifest
and retries a segment whose actor died on another actor. Workers read the input and write segment files
by path, so the input and the output's folder must be on storage every node mounts at the same path
(NFS, a cluster filesystem) - or, with ``transfer="objects"``, the input travels once per worker through
Ray's object store and each finished segment comes back as bytes, which the coordinator writes (for
clusters without shared storage, and inputs and segments small enough for the object store).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from srgan_deploy.errors import BackendUnavailableError, SrganDeployError
from srgan_deploy.files import atomic_write_bytes
from srgan_deploy.jobs.events import Done, Failed, Note, Progress
from srgan_deploy.jobs.render import SegmentResult, SegmentTask, render_segment
from srgan_deploy.jobs.workers import OnEvent, Retries, ShouldRun, WorkerSpec

RAY_INSTALL = "pip install 'srgan-deploy[cluster]' (or pip install ray)"
LOCAL = "local"  # bare --ray: start an embedded Ray on this machine
TRANSFERS = ("shared", "objects")


def ray_address(value: str) -> str:
    """``value`` as a Ray address, or a ConfigError that says what one looks like."""
    from srgan_deploy.errors import ConfigError

    value = value.strip()
    if value in (LOCAL, "auto") or value.startswith("ray://") or (":" in value and "/" not in value):
        return value
    raise ConfigError(
        f"--ray '{value}' is not a Ray address; use bare --ray (after the paths) or --ray=local for a local Ray, "
        "--ray auto, or --ray ray://HOST:10001"
    )


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError(f"--ray needs Ray, which is not installed; {RAY_INSTALL}") from None
    return ray


class SegmentWorker:
    """The body of one Ray actor (wrapped by ``ray.remote`` at run time, so Ray stays an optional import)."""

    def __init__(self, spec: WorkerSpec) -> None:
        from srgan_deploy.backends.registry import create
        from srgan_deploy.jobs.workers import on_gpu, ray_gpu_index

        index = ray_gpu_index(import_ray().get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"))
        if index is not None:  # a GPU actor: its GPU is numbered as this process sees it, not as the coordinator did
            spec = on_gpu(spec, index)
        self.notes: list[str] = []
        self.frames = 0
        self.backend = create(spec.choice, spec.source, notify=self.notes.append)
        self.backend.open()
        self.scratch = Path(tempfile.mkdtemp(prefix="srgan-ray-"))  # inputs and segments in "objects" mode
        self.inputs: dict[str, Path] = {}

    def ready(self) -> str:
        import socket

        return socket.gethostname()

    def progress(self) -> tuple[int, list[str]]:
        notes, self.notes = self.notes, []
        return self.frames, notes

    def render(self, task: SegmentTask) -> SegmentResult | str:
        """A result, or the message of an error in the input (not worth retrying elsewhere)."""
        self.frames = 0

        def seen(n: int) -> None:
            self.frames = n

        try:
            return render_segment(task, self.backend, seen, self.notes.append)
        except SrganDeployError as exc:
            return str(exc)

    def render_bytes(self, task: SegmentTask, key: str, data: bytes | None) -> tuple[SegmentResult, bytes] | str:
        """ "objects" transfer: the input arrives as bytes (the first time this worker sees it), the segment
        is rendered into local scratch space and goes back as bytes."""
        if key not in self.inputs:
            if data is None:
                return "the input's bytes did not reach this Ray worker"
            path = self.scratch / f"input-{len(self.inputs)}{task.job.source.suffix}"
            path.write_bytes(data)
            self.inputs[key] = path
        work = self.scratch / "work"
        work.mkdir(exist_ok=True)
        local = dataclasses.replace(task, job=dataclasses.replace(task.job, source=self.inputs[key]), work_dir=work)
        outcome = self.render(local)
        if isinstance(outcome, str):
            return outcome
        segment = work / outcome.file
        try:
            return outcome, segment.read_bytes()
        finally:
            segment.unlink(missing_ok=True)

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "scratch", ""), ignore_errors=True)


class RayPool:
    def __init__(self, address: str, specs: list[WorkerSpec], transfer: str = "shared") -> None:
        if transfer not in TRANSFERS:
            from srgan_deploy.errors import ConfigError

            raise ConfigError(f"--ray-transfer {transfer}: use shared (a path every node sees) or objects")
        self.address = address
        self.specs = specs
        self.transfer = transfer

    def _init(self, ray: Any) -> bool:
        """Connect (or start); True when this process started Ray and must shut it down."""
        if ray.is_initialized():
            return False
        quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.address == LOCAL:
            # Ray runs its workers at nice 15 by default: on a machine doing anything else they would
            # crawl (measured here: 10x slower beside a training job). A local Ray is this user's own job.
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(num_cpus=os.cpu_count() or 1, object_store_memory=80 * 1024 * 1024, **quiet)
        else:
            try:
                ray.init(address=self.address, **quiet)
            except (ConnectionError, RuntimeError) as exc:
                raise BackendUnavailableError(
                    f"cannot connect to the Ray cluster at {self.address} ({exc}); is it running (ray status)? "
                    "Ray >= 2.59 clusters use token authentication: set RAY_AUTH_MODE=token here, with the "
                    "cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
                ) from exc
        return True

    def run(self, tasks: Iterable[SegmentTask], on_event: OnEvent, should_run: ShouldRun) -> None:
        ray = import_ray()
        started = self._init(ray)
        actors: list[Any] = []
        try:
            self._run(ray, tasks, on_event, should_run, actors)
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            if started:
                ray.shutdown()

    def _actor(self, ray: Any, spec: WorkerSpec) -> Any:
        from srgan_deploy.backends.registry import entry_for

        on_gpu = entry_for(spec.choice.name).device_of(spec.choice.options).startswith("cuda")
        threads = getattr(spec.choice.options, "threads", None) or 1
        remote = ray.remote(SegmentWorker).options(
            num_cpus=0 if on_gpu else threads,
            num_gpus=1 if on_gpu else 0,
            max_concurrency=2,
            scheduling_strategy="SPREAD",
        )
        return remote.remote(spec)

    def _run(
        self, ray: Any, tasks: Iterable[SegmentTask], on_event: OnEvent, should_run: ShouldRun, actors: list[Any]
    ) -> None:
        pending: deque[SegmentTask] = deque(tasks)
        retries = Retries(pending, on_event)
        idle: deque[Any] = deque()
        starting: dict[Any, Any] = {}  # ready() ref -> actor
        running: dict[Any, tuple[Any, SegmentTask]] = {}  # render() ref -> (actor, task)
        for spec in self.specs:
            actor = self._actor(ray, spec)
            actors.append(actor)
            starting[actor.ready.remote()] = actor
        open_errors: list[str] = []
        last_poll = 0.0
        inputs: dict[str, Any] = {}  # "objects" transfer: one object-store copy of each input
        given: set[tuple[Any, str]] = set()  # (actor, input) pairs whose bytes were already sent
        while pending or running:
            if not (idle or starting or running):
                raise SrganDeployError(open_errors[0] if open_errors else "no Ray worker could start")
            while idle and pending:
                task = pending.popleft()
                if not should_run(task):
                    continue
                actor = idle.popleft()
                if self.transfer == "objects":
                    key = str(task.job.source)
                    if key not in inputs:
                        inputs[key] = ray.put(task.job.source.read_bytes())
                    first = (actor, key) not in given
                    given.add((actor, key))
                    ref = actor.render_bytes.remote(task, key, inputs[key] if first else None)
                else:
                    ref = actor.render.remote(task)
                running[ref] = (actor, task)
            refs = list(starting) + list(running)
            done, _ = ray.wait(refs, num_returns=1, timeout=0.5)
            for ref in done:
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        host = ray.get(ref)
                        on_event(Note(f"ray worker {len(actors) - len(starting)} ready on {host}", warning=False))
                        idle.append(actor)
                    except Exception as exc:  # noqa: BLE001 - Ray wraps the actor's error; report its text
                        open_errors.append(f"a Ray worker could not open its backend: {_cause(exc)}")
                    continue
                actor, task = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - the actor died (node lost, OOM, crash): retry elsewhere
                    retries.again(task, _cause(exc))
                    replacement = self._actor(ray, self.specs[len(actors) % len(self.specs)])
                    actors.append(replacement)
                    starting[replacement.ready.remote()] = replacement
                    continue
                if isinstance(outcome, str):
                    on_event(Failed(task.key, outcome))
                elif isinstance(outcome, tuple):
                    result, data = outcome
                    atomic_write_bytes(task.work_dir / result.file, data, durable=True)
                    on_event(Done(task.key, result))
                else:
                    on_event(Done(task.key, outcome))
                idle.append(actor)
            now = time.monotonic()
            if running and now - last_poll > 0.5:
                last_poll = now
                polls = {a.progress.remote(): task for a, task in running.values()}
                ready, _ = ray.wait(list(polls), num_returns=len(polls), timeout=0.5)
                for ref in ready:
                    with contextlib.suppress(Exception):
                        frames, notes = ray.get(ref)
                        for note in notes:
                            on_event(Note(note))
                        on_event(Progress(polls[ref].key, frames))


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(cause).__name__
