"""The bad-input table (docs/bad_inputs.md) stays true: its cheap cases run here through the same code.

``tools/bad_input_table.py`` builds each bad input, runs the real CLI and writes the table; this test runs the
image, intensity, model.json, output (aliasing, partial work, full or read-only folders) and cache-repair
cases (about 25 s) and requires every one to end as the table says:
exit 2 with one error line and a JSON ``error`` event, or success, and never an output that must not exist.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dvcl_test_cases import load_script

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bad_input_table.py"


def _load_tool():
    return load_script(TOOL, "bad_input_table")


@pytest.fixture(scope="module")
def tool():
    module = _load_tool()
    yield module
    for stack in module._LOCKS:  # locks and mounts the cases made (the tool's own run releases them too)
        stack.close()
    for mount in reversed(module._MOUNTS):
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_table_has_the_issue_cases(tool):
    assert len(tool.CASES) >= 40
    areas = {c.category for c in tool.CASES}
    assert {"image", "intensity", "dicom", "output", "model", "prepare", "cache", "train", "evaluate"} <= areas
    committed = (TOOL.parents[1] / "docs" / "bad_inputs.md").read_text(encoding="utf-8")
    assert all(f"| {c.name} |" in committed for c in tool.CASES), "docs/bad_inputs.md is stale: rerun the tool"


@pytest.mark.parametrize("area", ["image", "intensity", "model", "output", "cache", "memory"])
def test_cases_end_as_the_table_says(tool, area, tmp_path):
    cases = [c for c in tool.CASES if c.category == area]
    results = [(c, tool.run_case(c, tmp_path)) for c in cases]
    bad = [(c.name, r["rc"], r["line"]) for c, r in results if tool.verdict(c, r) != "yes"]
    assert not bad, bad
