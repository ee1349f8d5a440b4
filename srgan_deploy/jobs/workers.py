"""Where segments render: in this process, or in N local worker processes each with its own backend.

Both take the same tasks and report the same events (``jobs.events``), so the coordinator does not know
which one runs. A worker process opens its backend once and renders segment after segment; the
coordinator hands each idle worker one task at a time, so it always knows which task a crashed worker
held and can give it to another (a segment file appears only when complete, so a retry is harmless).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from srgan_deploy.backends.base import Backend
from srgan_deploy.backends.registry import Choice, entry_for
from srgan_deploy.cpus import usable_cpus
from srgan_deploy.errors import ConfigError, SrganDeployError
from srgan_deploy.jobs.events import Done, Event, Failed, Note, Progress, describe
from srgan_deploy.jobs.render import SegmentTask, render_segment
from srgan_deploy.sources import EnginePlan, ModelSource

MAX_ATTEMPTS = 3  # a segment whose worker died is given to another worker at most this many times in all
PROGRESS_EVERY_S = 0.25

OnEvent = Callable[[Event], None]
ShouldRun = Callable[[SegmentTask], bool]


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to build its own backend (picklable: it crosses process and node borders)."""

    choice: Choice
    source: ModelSource


def parse_devices(device: str) -> list[str]:
    """``cuda:0,cuda:1`` -> one device per worker (round robin); a single value is shared by all."""
    items = [d.strip() for d in device.split(",") if d.strip()]
    if not items:
        raise ConfigError("--device is empty; use auto, cpu, cuda or cuda:0,cuda:1,...")
    if len(items) > 1 and not all(d.startswith("cuda:") and d[5:].isdigit() for d in items):
        raise ConfigError(f"--device '{device}': a list must name GPUs only, e.g. cuda:0,cuda:1")
    return items


def worker_specs(
    choice: Choice, source: ModelSource, workers: int, devices: list[str], explicit_threads: bool = False
) -> list[WorkerSpec]:
    """One spec per worker: its own GPU from ``devices``, and on CPU an equal share of the cores and of
    the memory budget, so N workers together use what one would. ``explicit_threads`` always sets the
    thread count (Ray actors: Ray pins OMP_NUM_THREADS to the CPUs an actor reserves)."""
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    specs = []
    cores = usable_cpus()
    entry = entry_for(choice.name)
    for n in range(workers):
        options: Any = choice.options
        if len(devices) > 1:
            options = entry.on_device(options, devices[n % len(devices)])
        on_cpu = entry.device_of(options) == "cpu"
        if (workers > 1 or explicit_threads) and on_cpu and hasattr(options, "threads") and options.threads is None:
            options = dataclasses.replace(options, threads=max(1, cores // workers))
        if workers > 1 and options.memory_budget is None:
            options = _shared_budget(
                options, on_cpu, workers, sum(1 for k in range(workers) if _same_gpu(devices, k, n))
            )
        specs.append(WorkerSpec(Choice(choice.name, options, choice.reason), source))
    return specs


def _same_gpu(devices: list[Any], a: int, b: int) -> bool:
    return len(devices) <= 1 or devices[a % len(devices)] == devices[b % len(devices)]


def _shared_budget(options: Any, on_cpu: bool, workers: int, sharing: int) -> Any:
    """Each worker's memory budget. CPU workers split the host's; GPU workers split their GPU's (60 % of its
    total memory, what one process would take) among the workers on that GPU, and leave it alone when they
    have a GPU each. Why not the host's for GPUs: it would size each TensorRT engine's profile by host RAM
    (12 workers on one H200 got 80-pixel profiles), and its run-to-run changes would change the engine's
    cache key."""
    if on_cpu:
        from srgan_deploy.memory import default_budget

        return dataclasses.replace(options, memory_budget=max(1, default_budget() // workers))
    if sharing <= 1:
        return options
    from srgan_deploy.errors import BackendUnavailableError, EngineError
    from srgan_deploy.gpu.cuda_rt import device_properties

    raw = getattr(options, "device", 0)
    index = raw if isinstance(raw, int) else int(str(raw).partition(":")[2] or 0)
    try:
        total = device_properties(index).total_memory
    except (BackendUnavailableError, EngineError):
        return options
    return dataclasses.replace(options, memory_budget=int(total * 0.6) // sharing)


def with_built_engines(specs: list[WorkerSpec], notify: Callable[[str], None]) -> list[WorkerSpec]:
    """The specs with each TensorRT engine resolved here, once per distinct option set, and handed to the
    workers as a plan: N workers that each missed the engine cache would each build the same engine (the
    cache's lock only makes them take turns), minutes of GPU time each; from a plan they only load it.

    Built for each worker's own GPU (the options carry the device). The coordinator keeps the CUDA
    context that building made until it exits."""
    from srgan_deploy import sources
    from srgan_deploy.cache import cache_dir

    plans: dict[Any, EnginePlan] = {}
    out: list[WorkerSpec] = []
    for spec in specs:
        options: Any = spec.choice.options
        if entry_for(spec.choice.name).model != "plan" or isinstance(spec.source, EnginePlan):
            out.append(spec)
            continue
        if options not in plans:
            root = cache_dir(options.cache_dir)
            load = sources.engine_loader(spec.source, options, spec.choice.name, root, notify)
            plans[options] = EnginePlan(load().path)
        out.append(dataclasses.replace(spec, source=plans[options]))
    return out


def ray_gpu_index(gpu_ids: Sequence[int | str], visible: str | None) -> int | None:
    """The CUDA device index, as this process numbers them, of the GPU Ray gave this actor; None without one.

    Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU(s), so inside the actor its one GPU is device 0 whatever
    ``--device cuda:N`` the coordinator was given; asking for N there fails, or runs on another actor's GPU.
    Where Ray leaves CUDA_VISIBLE_DEVICES alone (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES), its ID is
    looked up in the variable, or is the index itself when the variable is unset."""
    if not gpu_ids:
        return None
    wanted = str(gpu_ids[0]).strip()
    if visible is not None and visible.strip():
        listed = [item.strip() for item in visible.split(",")]
        if wanted in listed:
            return listed.index(wanted)
    return int(wanted) if wanted.isdigit() else 0


def on_gpu(spec: WorkerSpec, index: int) -> WorkerSpec:
    """``spec`` with its GPU backend told to use device ``index`` (CPU backends are left as they are)."""
    entry = entry_for(spec.choice.name)
    if not entry.device_of(spec.choice.options).startswith("cuda"):
        return spec
    options = entry.on_device(spec.choice.options, f"cuda:{index}")
    return WorkerSpec(Choice(spec.choice.name, options, spec.choice.reason), spec.source)


# What one worker process needs besides its memory budget: the interpreter, the libraries, the decoded and
# upscaled frames in its queues (measured here: 0.37 GB RSS for a torch worker, 0.45 GB for onnxruntime,
# on a 160x120 clip with the tiny test model).
WORKER_MEMORY = 512 * 2**20


def machine_cap(workers: int, budget: int | None) -> tuple[int, str]:
    """How many local worker processes this machine can run: (count, why fewer; "" when not capped).

    Each worker decodes and encodes on the CPU besides whatever its backend runs on, so more workers than
    cores only take turns; and each needs memory (its ``budget`` when one was given, else a share of the
    default). Why a cap and not an error: ``--workers 999`` on a laptop once started hundreds of processes
    and 7 GB before the first frame; fewer workers do the same work."""
    from srgan_deploy.memory import available_memory

    cores = usable_cpus()
    count, why = workers, ""
    if count > cores:
        count, why = cores, f"this machine has {cores} core(s)"
    free = available_memory()
    if free is not None:
        need = WORKER_MEMORY + (budget or 0)
        fits = max(1, free // need)
        if fits < count:
            count = fits
            why = f"{free / 2**30:.1f} GiB of memory is available and each worker needs about {need / 2**30:.1f} GiB"
    return count, why


def fit_to_work(
    specs: list[WorkerSpec],
    segments: int,
    respec: Callable[[int], list[WorkerSpec]] | None,
    what: str,
    on_event: OnEvent,
) -> list[WorkerSpec]:
    """At most one worker per segment to render (a 1-second clip is one segment: one worker)."""
    if segments >= len(specs):
        return specs
    on_event(Note(f"{segments} segment(s) to render: starting {segments} {what}, not {len(specs)}", warning=False))
    return respec(segments) if respec is not None else specs[:segments]


class Retries:
    """What happens to a segment whose worker died (process, actor or node): back to the front of the
    queue, at most MAX_ATTEMPTS tries in all, then the input fails. Shared by every executor."""

    def __init__(self, pending: deque[SegmentTask], on_event: OnEvent) -> None:
        self.pending = pending
        self.on_event = on_event
        self.attempts: dict[tuple[int, int], int] = {}

    def again(self, task: SegmentTask, why: str) -> None:
        tries = self.attempts[task.key] = self.attempts.get(task.key, 1) + 1
        if tries > MAX_ATTEMPTS:
            self.on_event(Failed(task.key, f"segment {task.key[1]} failed {MAX_ATTEMPTS} times: {why}"))
        else:
            self.on_event(Note(f"retrying segment {task.key[1]} of {task.job.source.name} ({why})"))
            self.pending.appendleft(task)


class Throttle:
    """Report progress at most every PROGRESS_EVERY_S (a queue message per frame would be wasteful)."""

    def __init__(self, report: Callable[[int], None]) -> None:
        self.report = report
        self.last = 0.0

    def __call__(self, frames: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self.report(frames)


class InProcess:
    """Renders in the calling thread with an already open backend (``--workers 1``, the default).

    While it renders, the backend's notices are events like a worker process's, so the coordinator shows
    them the same way (once each)."""

    def __init__(self, backend: Backend[Any]) -> None:
        self.backend = backend

    def run(self, tasks: Iterable[SegmentTask], on_event: OnEvent, should_run: ShouldRun) -> None:
        said = self.backend.notify
        self.backend.notify = lambda m: on_event(Note(m))
        try:
            self._run(tasks, on_event, should_run)
        finally:
            self.backend.notify = said

    def _run(self, tasks: Iterable[SegmentTask], on_event: OnEvent, should_run: ShouldRun) -> None:
        for task in tasks:
            if not should_run(task):
                continue
            key = task.key
            try:
                result = render_segment(
                    task,
                    self.backend,
                    lambda n, key=key: on_event(Progress(key, n)),  # type: ignore[misc]
                    lambda m: on_event(Note(m)),
                )
            except Exception as exc:  # noqa: BLE001 - this input fails, with its line; the queue goes on
                on_event(Failed(key, describe(exc), exc))
                continue
            on_event(Done(key, result))


# ------------------------------------------------------------------ local worker processes


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the coordinator dies (even by SIGKILL)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def worker_main(wid: int, spec: WorkerSpec, tasks: Any, events: Any, parent: int) -> None:
    """A worker process: open the backend once, then render tasks until told to stop (None).

    ``tasks`` and ``events`` are this worker's own pipe ends: a worker killed in the middle of a message
    can only break its own channel (a shared ``multiprocessing.Queue`` keeps the dead writer's lock and
    hangs every other worker - seen here)."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's; it stops the workers
    _die_with_parent()
    if os.getppid() != parent:
        return
    lock = threading.Lock()  # the pipeline's decode and encode threads report too

    def send(message: object) -> None:
        with lock:
            events.send(message)

    from srgan_deploy.backends.registry import create

    try:
        backend = create(spec.choice, spec.source, notify=lambda m: send(Note(m)))
        backend.open()
    except BaseException as exc:  # noqa: BLE001 - reported to the coordinator, which decides
        send(RuntimeError(f"worker {wid} could not open its backend: {exc}"))
        return
    send("ready")
    try:
        while True:
            task = tasks.recv()
            if task is None:
                break
            key = task.key
            try:
                result = render_segment(
                    task,
                    backend,
                    Throttle(lambda n, key=key: send(Progress(key, n))),  # type: ignore[misc]
                    lambda m: send(Note(m)),
                )
            except Exception as exc:  # noqa: BLE001 - its input fails, with its line; this worker goes on
                send(Failed(key, describe(exc)))
                continue
            send(Done(key, result))
    except EOFError:
        pass  # the coordinator is gone
    finally:
        backend.close()


@dataclass
class _Worker:
    wid: int
    proc: Any
    tasks: Any  # write end of its task pipe
    events: Any  # read end of its event pipe
    ready: bool = False
    task: SegmentTask | None = None


class ProcessPool:
    """``--workers N``: N local processes (spawned, not forked: CUDA and thread pools do not survive a fork).

    Never more processes than segments to render: ``respec(n)`` remakes the specs for fewer workers (each
    then gets a larger share of the cores and memory)."""

    def __init__(self, specs: list[WorkerSpec], respec: Callable[[int], list[WorkerSpec]] | None = None) -> None:
        self.specs = specs
        self.respec = respec

    def run(self, tasks: Iterable[SegmentTask], on_event: OnEvent, should_run: ShouldRun) -> None:
        pending: deque[SegmentTask] = deque(tasks)
        if not pending:
            return
        self.specs = fit_to_work(self.specs, len(pending), self.respec, "worker process(es)", on_event)
        specs = with_built_engines(self.specs, lambda m: on_event(Note(m, warning=False)))
        _PoolRun(specs, len(self.specs), pending, on_event, should_run).run()


class _PoolRun:
    """One ``ProcessPool.run``: the live workers, the queue they take tasks from, and the rule for
    replacing a worker that died (its task goes back through ``Retries``; once a worker could not open
    its backend, none is replaced: the next would fail the same way)."""

    def __init__(
        self,
        specs: list[WorkerSpec],
        size: int,
        pending: deque[SegmentTask],
        on_event: OnEvent,
        should_run: ShouldRun,
    ) -> None:
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        self.specs = specs
        self.size = size  # workers started at first; restarts are capped at MAX_ATTEMPTS per worker
        self.pending = pending
        self.on_event = on_event
        self.should_run = should_run
        self.retries = Retries(pending, on_event)
        self.workers: dict[int, _Worker] = {}
        self.open_errors: list[str] = []
        self.next_wid = 0
        self.restarts = 0

    def start(self) -> None:
        wid = self.next_wid
        self.next_wid += 1
        task_r, task_w = self.ctx.Pipe(duplex=False)
        event_r, event_w = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=worker_main,
            args=(wid, self.specs[wid % len(self.specs)], task_r, event_w, os.getpid()),
            name=f"srgan-worker-{wid}",
            daemon=True,
        )
        proc.start()
        task_r.close()  # the child holds its ends; ours are the other two
        event_w.close()
        self.workers[wid] = _Worker(wid, proc, task_w, event_r)

    def reap(self, worker: _Worker, why: str) -> None:
        if self.workers.pop(worker.wid, None) is None:
            return
        worker.proc.join(timeout=5)
        if worker.task is not None:
            self.retries.again(worker.task, why)
        for conn in (worker.tasks, worker.events):
            conn.close()
        if self.pending and self.restarts < MAX_ATTEMPTS * self.size and len(self.open_errors) == 0:
            self.restarts += 1
            self.start()

    def dispatch(self, worker: _Worker) -> None:
        worker.task = None
        while self.pending:
            task = self.pending.popleft()
            if self.should_run(task):
                worker.task = task
                try:
                    worker.tasks.send(task)
                except OSError:
                    self.reap(worker, f"worker {worker.wid} stopped taking work")
                return

    def handle(self, worker: _Worker, message: object) -> None:
        if isinstance(message, RuntimeError):
            self.open_errors.append(str(message))
            self.reap(worker, str(message))
        elif message == "ready":
            worker.ready = True
            self.dispatch(worker)
        elif isinstance(message, Done | Failed):
            self.on_event(message)
            self.dispatch(worker)
        elif isinstance(message, Progress | Note):
            self.on_event(message)

    def receive(self, worker: _Worker) -> bool:
        """One message from ``worker``; False when its pipe is closed or broken."""
        try:
            message = worker.events.recv()
        except (EOFError, OSError, ValueError, TypeError, AttributeError):
            return False
        self.handle(worker, message)
        return True

    def run(self) -> None:
        from multiprocessing.connection import wait

        workers = self.workers
        for _ in range(self.size):
            self.start()
        try:
            while self.pending or any(w.task is not None for w in workers.values()):
                if not workers:
                    raise SrganDeployError(self.open_errors[0] if self.open_errors else "every worker process exited")
                by_conn = {w.events: w for w in workers.values()}
                by_sentinel = {w.proc.sentinel: w for w in workers.values()}
                for ready in wait([*by_conn, *by_sentinel], timeout=0.5):
                    worker = by_conn.get(ready) or by_sentinel[ready]  # type: ignore[call-overload]
                    if worker.wid not in workers:
                        continue
                    if ready in by_conn:
                        if not self.receive(worker):
                            self.reap(worker, f"worker {worker.wid} exited with code {worker.proc.exitcode}")
                        continue
                    while worker.wid in workers and worker.events.poll() and self.receive(worker):
                        pass  # what it said before it exited (its last Done, say)
                    self.reap(worker, f"worker {worker.wid} exited with code {worker.proc.exitcode}")
        except BaseException:
            for worker in workers.values():  # Ctrl-C or an error: stop rendering now; the manifest keeps what is done
                worker.proc.kill()
            raise
        finally:
            self.stop()

    def stop(self) -> None:
        """Tell every live worker to stop, give them 10 s in all, then kill what is left."""
        for worker in self.workers.values():
            with contextlib.suppress(Exception):
                worker.tasks.send(None)
        deadline = time.monotonic() + 10
        for worker in self.workers.values():
            worker.proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if worker.proc.is_alive():
                worker.proc.kill()
                worker.proc.join()
