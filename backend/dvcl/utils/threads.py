"""How many CPU threads a command uses: chosen here, from the machine and the workload, not by each script.

Why this exists: PyTorch starts one OpenMP thread per *logical CPU of the host*, whatever the process may
actually use (CPU affinity, a container's CPU quota) and whatever else runs. On a small or shared machine
that oversubscribes the cores and every parallel region waits for descheduled threads.

Measured on the project's 2-core machine while six other engineers' jobs kept it busy, DVCL at the quick
profile's size (patch 32x64x64, batch 2+2, U-Net 8..64), 4 timed iterations after one warm-up, 1 and 2 threads
alternated (``python benchmarks/bench_train_speed.py --device cpu --patch 32 64 64 --channels 8 16 32 64
--batch 2 2 --iterations 4 --threads N``, under ``nice -n 10``):

=====  =============  ==================  ===============
round  torch threads  load avg at start   s per iteration
=====  =============  ==================  ===============
1      1              3.2                 11.2 (min 9.6)
1      2              5.0                 49.7 (min 36.4)
2      1              7.9                 37.4 (min 16.4)
2      2              8.7                 212.6 (min 133.9)
=====  =============  ==================  ===============

Two threads were 4-6 times slower than one on the busy machine (the issue that started this measured 19.5 s
with torch's default and 6.9 s with one thread, back to back). On an idle machine all its cores are free and
the rule below uses them.

The rule (:func:`choose_threads`):

* an explicit choice wins: ``dvcl --threads N`` or an ``OMP_NUM_THREADS`` set by the user;
* otherwise the CPUs this process may use: the affinity mask (``os.sched_getaffinity``) capped by a
  cgroup CPU quota (``/sys/fs/cgroup/cpu.max`` or the cgroup v1 pair);
* minus what other processes already keep busy (the 1-minute load average), rounded, at least 1;
* workloads that parallelise across processes themselves (``prepare`` runs a process pool) get 1 thread per
  process; workloads whose tensors are small (``evaluate``, ``export``, ``phantom``, ``info``) get at most 2.

:func:`configure_threads` applies the choice: ``torch.set_num_threads`` when torch is already imported,
otherwise ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` in the environment, which torch reads when it is imported
(the CLI imports torch inside each command's ``run``) and which child processes (data-loading workers,
experiment jobs) inherit. :func:`configured_threads` reads the choice back for ONNX Runtime and OpenVINO
without importing torch.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Dict, Optional

log = logging.getLogger(__name__)

#: workload -> the most threads it benefits from (None: as many as are free). ``prepare`` parallelises with a
#: process pool, so each process should use one thread.
WORKLOAD_CAP: Dict[str, Optional[int]] = {
    "train": None,
    "experiment": None,
    "segment": None,
    "demo": None,
    "prepare": 1,
    "evaluate": 2,
    "export": 2,
    "phantom": 2,
    "info": 1,
}

#: environment variables torch / OpenMP / MKL read for their thread pools
_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: the value this module last wrote into the environment; an OMP_NUM_THREADS equal to it is ours, not the user's
_SET_BY_US: Optional[str] = None


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> Optional[float]:
    """The container's CPU quota in CPUs (e.g. 1.5), or None when there is none or it cannot be read."""
    try:
        quota_period = (root / "cpu.max").read_text().split()  # cgroup v2: "max 100000" or "150000 100000"
        if quota_period and quota_period[0] != "max":
            return float(quota_period[0]) / float(quota_period[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """CPUs this process may run on: the affinity mask, capped by a cgroup quota (rounded up), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def busy_cpus() -> float:
    """CPUs other processes keep busy now (1-minute load average); 0 where the platform has none."""
    try:
        return max(0.0, os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def choose_threads(workload: str, cpus: Optional[int] = None, load: Optional[float] = None) -> int:
    """The thread count for ``workload`` on a machine with ``cpus`` usable CPUs and ``load`` busy ones.

    Free CPUs are ``cpus - load`` rounded to the nearest integer, at least 1: on a 2-core machine with a
    load of 1.6 one thread beats two, because the second thread would wait for a core at every parallel
    region (see the module docstring for the measurement).
    """
    cpus = usable_cpus() if cpus is None else max(1, int(cpus))
    load = busy_cpus() if load is None else max(0.0, float(load))
    free = max(1, min(cpus, int(math.floor(cpus - load + 0.5))))
    cap = WORKLOAD_CAP.get(workload)
    return max(1, min(free, cap)) if cap is not None else free


def explicit_threads() -> Optional[int]:
    """The thread count the user asked for with OMP_NUM_THREADS (not one this module set), or None."""
    value = os.environ.get("OMP_NUM_THREADS")
    if value is None or value == _SET_BY_US:
        return None
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n > 0 else None


def thread_count(text: str) -> int:
    """``--threads N`` as argparse reads it: a positive integer, else a usage error."""
    import argparse

    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got '{text}'")
    return n


def configure_threads(workload: str, requested: Optional[int] = None) -> int:
    """Choose and apply the CPU thread count for ``workload``; returns it.

    ``requested`` (``dvcl --threads N``) wins, then a user-set ``OMP_NUM_THREADS``, then :func:`choose_threads`.
    """
    global _SET_BY_US
    user = explicit_threads()
    if requested is not None and requested > 0:
        n, why = int(requested), "--threads"
    elif user is not None:
        n, why = user, "OMP_NUM_THREADS"
    else:
        cpus, load = usable_cpus(), busy_cpus()
        n = choose_threads(workload, cpus, load)
        why = f"{cpus} usable CPU(s), load {load:.1f}, workload {workload}"
    for var in _ENV_VARS:
        os.environ[var] = str(n)
    if user is None or requested:  # a user's OMP_NUM_THREADS stays the user's for later calls in this process
        _SET_BY_US = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    log.debug("threads: %d (%s)", n, why)
    return n


def configured_threads(workload: str = "segment") -> int:
    """The thread count in force, for runtimes that keep their own pools (ONNX Runtime, OpenVINO).

    torch's count when torch is loaded (what :func:`configure_threads` or a caller set, so every runtime of a
    process uses the same number); otherwise the ``OMP_NUM_THREADS`` that :func:`configure_threads` (or the
    user) set, else :func:`choose_threads` for ``workload``. Never imports torch: a ``dvcl segment`` whose
    ONNX graph is cached runs without it.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, int(torch.get_num_threads()))
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        n = 0
    return n if n > 0 else choose_threads(workload)
