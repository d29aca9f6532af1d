"""Fair use of a shared CPU: how many threads torch computes with, and how they wait.

torch computes on OpenMP threads that, by default, spin while they wait for the next piece of
work. On a machine where another process is busy, a spinning thread takes the core that the
thread it waits for needs: the demo trained 10 to 20 times slower beside one other busy process.
``sef`` therefore starts OpenMP with ``OMP_WAIT_POLICY=PASSIVE`` (a waiting thread sleeps) and
``OMP_NUM_THREADS`` set to the CPUs this process may use (its CPU affinity, and its cgroup's CPU
quota in a container), unless the user set them: OpenMP reads both once, when torch is imported,
so :func:`configure` runs at the start of the command, before any torch import. A library user
keeps torch's defaults and whatever ``torch.set_num_threads`` they call.
The cost and the gain are measured by ``benchmarks/busy.py`` (docs/performance.md).
"""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

WAIT_POLICY, THREADS = "OMP_WAIT_POLICY", "OMP_NUM_THREADS"


def _cgroup_cpus() -> float | None:
    """The CPUs the cgroup's quota allows (cgroup v2 cpu.max, v1 cfs quota), or None."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        base = Path("/sys/fs/cgroup/cpu")
        quota = int((base / "cpu.cfs_quota_us").read_text())
        period = int((base / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity, capped by its cgroup's quota."""
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:  # macOS, Windows
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def configure(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set OpenMP's wait policy to passive and its threads to :func:`available_cpus` in
    ``environ``, each unless already set; return what was set. Effective only before torch is
    imported (sef's command calls it first thing)."""
    chosen = {}
    if not environ.get(WAIT_POLICY):
        chosen[WAIT_POLICY] = "PASSIVE"
    if not environ.get(THREADS):
        chosen[THREADS] = str(available_cpus())
    environ.update(chosen)
    return chosen


def loader_workers(requested: int) -> int:
    """Data-loading processes to start for ``requested``: never more than the CPUs available,
    where more only compete with each other and with training."""
    return min(requested, available_cpus())
