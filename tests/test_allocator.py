"""dvcl.utils.allocator: freed tensor memory stays in the process, so a training step stops faulting it in."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")

#: a step-like pattern: five 20 MB buffers alive at once, then all freed (the heap top exceeds glibc's default
#: trim threshold, so without the setting it is returned to the system and faulted in again next time)
CHILD = """
import json, resource, sys
import numpy as np
from dvcl.utils.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "1" else False
def step():
    bufs = [np.ones(5 * 2**20, dtype=np.float32) for _ in range(5)]
    del bufs
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _run(tune: bool, env_off: bool = False) -> dict:
    import os

    env = dict(os.environ)
    if env_off:
        env["DVCL_KEEP_FREED_MEMORY"] = "0"
    out = subprocess.run([sys.executable, "-c", CHILD, "1" if tune else "0"], capture_output=True, text=True,
                         check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_keep_freed_memory_stops_the_page_faults_of_a_repeated_step():
    default, tuned = _run(False), _run(True)
    if not tuned["applied"]:
        pytest.skip("not glibc: mallopt unavailable")
    # by default part of the freed heap goes back to the system and is faulted in again at every step (about
    # 10,000 pages over the 4 steps here); with the setting none of it
    assert default["faults"] > 4000, default
    assert tuned["faults"] < default["faults"] / 10, (default, tuned)


def test_the_environment_switch_turns_it_off():
    assert _run(True, env_off=True)["applied"] is False
