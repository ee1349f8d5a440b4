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
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from srgan_deploy.cpus import usable_cpus
from srgan_deploy.errors import BackendUnavailableError, SrganDeployError
from srgan_deploy.files import atomic_write_bytes, captured_stderr
from srgan_deploy.jobs.events import Done, Failed, Note, Progress, describe
from srgan_deploy.jobs.render import SegmentResult, SegmentTask, render_segment
from srgan_deploy.jobs.workers import OnEvent, Retries, ShouldRun, WorkerSpec, fit_to_work

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
        except Exception as exc:  # noqa: BLE001 - its input fails with this line; retrying elsewhere would not help
            return describe(exc)

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


DEFAULT_TIMEOUT = 60.0  # seconds for a cluster to answer before saying so


class RayPool:
    def __init__(
        self,
        address: str,
        specs: list[WorkerSpec],
        transfer: str = "shared",
        timeout: float = DEFAULT_TIMEOUT,
        respec: Callable[[int], list[WorkerSpec]] | None = None,
    ) -> None:
        if transfer not in TRANSFERS:
            from srgan_deploy.errors import ConfigError

            raise ConfigError(f"--ray-transfer {transfer}: use shared (a path every node sees) or objects")
        self.address = address
        self.specs = specs
        self.transfer = transfer
        self.timeout = check_timeout(timeout)
        self.respec = respec
        self._started: bool | None = None  # None: not connected yet; True: this process started Ray

    def connect(self) -> None:
        """Connect to the cluster (or start the local Ray) now or raise BackendUnavailableError naming the
        address and what to check; a cluster that does not answer within ``timeout`` seconds is given up on.
        Called before any work, so an unreachable cluster costs seconds and leaves nothing behind; idempotent."""
        if self._started is not None:
            return
        ray = import_ray()
        if ray.is_initialized():
            self._started = False
            return
        deadline = time.monotonic() + self.timeout
        quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if self.address == LOCAL:
            # Ray runs its workers at nice 15 by default: on a machine doing anything else they would
            # crawl (measured here: 10x slower beside a training job). A local Ray is this user's own job.
            os.environ.setdefault("RAY_worker_niceness", "0")
            kwargs: dict[str, Any] = {"num_cpus": usable_cpus(), "object_store_memory": 80 * 1024 * 1024}
        else:
            # ray.init retries an address that does not answer for minutes, printing gRPC warnings all along,
            # and cannot be stopped once called: a closed port is found by a plain TCP connection, and a
            # cluster that does not answer by a child process that connects first and is killed at the deadline
            _reachable(self.address, self.timeout)
            _probe(self.address, max(1.0, deadline - time.monotonic()), self.timeout)
            kwargs = {"address": self.address}
        handler = signal.getsignal(signal.SIGTERM)
        try:
            with captured_stderr():  # Ray's own start-up lines stay off the terminal
                ray.init(**kwargs, **quiet)  # the main thread only: a Ray started from another one dies in a minute
        except Exception as exc:
            if self.address == LOCAL:
                raise BackendUnavailableError(f"could not start a local Ray ({_cause(exc)})") from exc
            raise _refused(self.address, _cause(exc)) from exc
        finally:
            if handler is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, handler)  # ray.init's exits at once; ours stops like Ctrl-C
        self._started = True

    def run(self, tasks: Iterable[SegmentTask], on_event: OnEvent, should_run: ShouldRun) -> None:
        pending = list(tasks)
        if not pending:
            return
        self.specs = fit_to_work(self.specs, len(pending), self.respec, "Ray worker(s)", on_event)
        ray = import_ray()
        self.connect()
        actors: list[Any] = []
        try:
            self._run(ray, pending, on_event, should_run, actors)
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            self.close()

    def close(self) -> None:
        """Shut down the Ray this process started (a joined cluster is left alone)."""
        if self._started:
            with contextlib.suppress(Exception), captured_stderr():
                import_ray().shutdown()
        self._started = None

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


def check_timeout(seconds: float) -> float:
    from srgan_deploy.errors import ConfigError

    if not (math.isfinite(seconds) and 0 < seconds <= 86400):
        raise ConfigError(f"--ray-timeout {seconds:g} must be a number of seconds between 0 and 86400 (60 by default)")
    return seconds


def _host_port(address: str) -> tuple[str, int] | None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


def _what_to_check(address: str) -> str:
    if address == LOCAL:
        return "check that this machine has free memory and disk in /tmp (Ray's session folder)"
    if address == "auto":
        return "check that a Ray cluster runs on this machine (ray status) or set RAY_ADDRESS"
    port = "the Ray Client port, 10001 by default" if address.startswith("ray://") else "the GCS port, 6379 by default"
    return (
        f"check that Ray runs there (ray status on the head node), the address and the port ({port}), and the firewall"
    )


def _reachable(address: str, timeout: float) -> None:
    """A plain TCP connection first: a closed port or an unreachable host is known in milliseconds to seconds,
    where ray.init would retry it for minutes."""
    import socket

    target = _host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except TimeoutError:
        raise BackendUnavailableError(
            f"no answer from the Ray cluster at {address} within {timeout:g} s; {_what_to_check(address)}, "
            "or give it longer with --ray-timeout"
        ) from None
    except OSError as exc:
        raise BackendUnavailableError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); {_what_to_check(address)}"
        ) from None


_PROBE = """
import sys
import ray
try:
    ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False, configure_logging=False)
except Exception as exc:
    lines = str(getattr(exc, "cause", None) or exc).strip().splitlines() or [type(exc).__name__]
    print("srgan-deploy-probe:", lines[-1], flush=True)
    sys.exit(3)
ray.shutdown()
"""


def _probe(address: str, seconds: float, timeout: float) -> None:
    """Connect to ``address`` from a child process that is killed after ``seconds``."""
    import subprocess
    import sys

    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, address],
            capture_output=True,
            text=True,
            timeout=seconds,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
    except subprocess.TimeoutExpired:
        raise BackendUnavailableError(
            f"no answer from the Ray cluster at {address} within {timeout:g} s; {_what_to_check(address)}, "
            "or give it longer with --ray-timeout"
        ) from None
    if done.returncode != 0:
        said = [line for line in done.stdout.splitlines() if line.startswith("srgan-deploy-probe:")]
        reason = said[-1].partition(":")[2].strip() if said else f"the connection check exited with {done.returncode}"
        raise _refused(address, reason)


def _refused(address: str, reason: str) -> BackendUnavailableError:
    hint = ""
    if any(word in reason.lower() for word in ("auth", "token")):
        hint = (
            ". Ray >= 2.59 clusters use token authentication: set RAY_AUTH_MODE=token here, with the cluster's "
            "token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
        )
    return BackendUnavailableError(
        f"cannot connect to the Ray cluster at {address} ({reason}); {_what_to_check(address)}{hint}"
    )


def _cause(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(cause).__name__
