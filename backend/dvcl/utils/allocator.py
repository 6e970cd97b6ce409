"""Keep freed tensor memory in the process between training steps (glibc's allocator, Linux).

Why: glibc serves a large allocation (above a threshold that adapts up to 32 MiB) with ``mmap`` and hands it back
to the operating system when it is freed; the heap top is trimmed the same way. A training step allocates and frees
the same activation and gradient tensors every iteration (4 x 14 x 32 x 64 x 64 floats = 29 MB for the logits at the
quick profile), so every step faults its memory in again. Measured on the 2-core machine, DVCL and CPS at the
quick profile (the models and batch of ``benchmarks/bench_cotrain_step.py``, CPU time per step, one thread): about
75,000 minor page faults and 0.19 s of system time per step; with the thresholds below, 0-1,000 faults, 0.01-0.02 s,
and 3-5 % less CPU time per step for both methods (DVCL 4.32 -> 4.18 s, CPS 3.64 -> 3.46 s, machine under load).

This is what PyTorch's CPU performance guides get from jemalloc or tcmalloc, without a preloaded library. The
cost: up to ``TRIM_THRESHOLD`` bytes of freed memory stay with the process instead of returning to the system,
which a training process reuses at the next step anyway. ``DVCL_KEEP_FREED_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

#: mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's ceiling for the mmap threshold on 64-bit systems (HEAP_MAX_SIZE / 2)
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30
ENV = "DVCL_KEEP_FREED_MEMORY"

_applied = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they are in effect.

    A no-op (False) on other systems or C libraries (macOS, Windows, musl) and when ``DVCL_KEEP_FREED_MEMORY=0``.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV, "1").strip() in ("0", "false", "no") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _applied = ok
    if ok:
        log.debug("glibc malloc: mmap threshold %d MiB, trim threshold %d MiB", MMAP_THRESHOLD >> 20,
                  TRIM_THRESHOLD >> 20)
    return ok
