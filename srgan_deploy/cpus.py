"""How many CPUs this process may really use: its affinity, capped by a container's CPU quota, and how many
physical cores those are. Every place that sizes threads, streams or workers asks here, so a container given
2 CPUs on a 64-core host runs 2 threads, not 64 that queue.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"


def cpu_quota(path: Path | None = None) -> int | None:
    """CPUs' worth of time a container may use (``docker --cpus=2`` on a 64-core host: 2), or None when
    unlimited. Affinity still lists every host CPU there, and a thread per listed CPU would only queue."""
    try:
        quota, period = (path or CPU_MAX).read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, -(-int(quota) // int(period)))  # rounded up: 1.5 CPUs keep 2 threads busy half the time
    except (ValueError, ZeroDivisionError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on (affinity, SMT siblings included), capped by a container's CPU
    quota: threads for one call on every CPU, worker counts, the --threads limit."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = cpu_quota()
    return max(1, min(count, quota) if quota else count)


def physical_core_count() -> int:
    """Physical cores among the CPUs this process may run on (capped by the quota): how many one-thread
    frames a stream runs at once. Two on SMT siblings of one core would share its vector units and double
    the memory in flight for little gain. Falls back to usable_cpus where Linux's topology files are
    missing."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                ((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
            )
        except OSError:
            return usable_cpus()
    quota = cpu_quota()
    return max(1, min(len(cores), quota) if quota else len(cores))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


CPU_FEATURES = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx_vnni", "avx2")


def cpu_features() -> list[str]:
    """The CPU features that decide which kernels oneDNN, OpenVINO and onnxruntime run (most capable first)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FEATURES if f in flags]
    except OSError:
        pass
    return []


def cpu_report() -> dict[str, object]:
    """What `info` says about the CPU: a figure quoted from `bench` means little without it (kinds change)."""
    return {
        "name": cpu_name(),
        "usable_cpus": usable_cpus(),
        "physical_cores": physical_core_count(),
        "quota": cpu_quota(),
        "features": cpu_features(),
    }
