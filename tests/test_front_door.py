"""The front door: thread choice, the demo's promises, scripts/test.sh selection, progress in logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dvcl.utils import threads

ROOT = Path(__file__).resolve().parents[1]


def test_choose_threads_leaves_busy_cores_alone():
    assert threads.choose_threads("train", cpus=2, load=0.0) == 2
    assert threads.choose_threads("train", cpus=2, load=1.6) == 1  # a second thread would wait for a core
    assert threads.choose_threads("train", cpus=2, load=7.0) == 1  # never fewer than one
    assert threads.choose_threads("train", cpus=16, load=3.2) == 13
    assert threads.choose_threads("prepare", cpus=16, load=0.0) == 1  # a process pool parallelises instead
    assert threads.choose_threads("evaluate", cpus=16, load=0.0) == 2


def test_cgroup_quota_is_read(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) == pytest.approx(1.5)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) is None
    assert threads.cgroup_cpu_limit(tmp_path / "missing") is None


def _threads_in_child(env_omp, argv_threads=None):
    """torch's thread count in a fresh process after the CLI's configure step (a real interpreter: torch reads
    OMP_NUM_THREADS once, at import)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if env_omp is not None:
        env["OMP_NUM_THREADS"] = env_omp
    code = ("import sys; from dvcl.utils.threads import configure_threads; "
            f"n = configure_threads('train', {argv_threads!r}); import torch; "
            "print(n, torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return tuple(int(x) for x in out.stdout.split())


def test_configure_threads_respects_the_user_and_reaches_torch():
    assert _threads_in_child("1") == (1, 1)  # the user's OMP_NUM_THREADS wins over the automatic choice
    assert _threads_in_child("2", argv_threads=1) == (1, 1)  # --threads wins over OMP_NUM_THREADS
    n, torch_n = _threads_in_child(None)
    assert n == torch_n and 1 <= n <= threads.usable_cpus()


# ------------------------------------------------------------------------------ the demo's schedule rule
def test_demo_refuses_to_reschedule_an_existing_run(tmp_path, capsys):
    """One rule with `train --resume`: a run's schedule is never changed midway; the message says how to start
    over. Checked before any work (no phantom is written)."""
    import json

    from dvcl.cli.main import main
    from dvcl.demo import DemoConfig, check_same_settings, default_config
    from dvcl.errors import ConfigError
    from dvcl.training.config import TrainConfig

    out = tmp_path / "demo_output"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps({"settings": DemoConfig().recorded()}))
    check_same_settings(default_config(out=out))  # the same settings continue
    with pytest.raises(ConfigError, match="iterations 160 \\(asked: 20\\)"):
        check_same_settings(default_config(out=out, iterations=20))
    assert main(["-q", "demo", "--out", str(out), "--iterations", "20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "never changed midway" in err[0] and "--overwrite" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["demo.json"]  # nothing was done

    # a demo folder from before demo.json: its run's config.yaml is compared
    (out / "demo.json").unlink()
    (out / "run").mkdir()
    TrainConfig(iterations=200, method="dvcl", labeled_fraction=0.5).save(out / "run" / "config.yaml")
    with pytest.raises(ConfigError, match="iterations 200 \\(asked: 160\\)"):
        check_same_settings(default_config(out=out))


def test_demo_overwrite_removes_only_the_demo_outputs(tmp_path):
    from dvcl.demo import clear_demo

    for name in ("run", "cache", "evaluation"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("x")
    (tmp_path / "demo.json").write_text("{}")
    (tmp_path / "my_notes.txt").write_text("keep")
    assert sorted(clear_demo(tmp_path)) == ["cache", "demo.json", "evaluation", "run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_notes.txt"]


def test_demo_first_line_says_what_and_how_long():
    from dvcl.demo import BUSY_MINUTES, EXPECTED_MINUTES, DemoConfig, default_config, describe

    line = describe(DemoConfig())
    assert line.startswith("dvcl demo: 14 synthetic abdomen CT phantoms -> prepared at 2.5x2.5x5 mm")
    assert f"about {EXPECTED_MINUTES} minutes on an idle 2-core CPU, up to {BUSY_MINUTES}" in line
    assert "160 iterations" in line and EXPECTED_MINUTES < BUSY_MINUTES
    assert "yours differs" in describe(default_config(iterations=20))
    assert default_config(method="supervised").options == {}  # no warm-up option outside DVCL/CPS


# -------------------------------------------------------------------- scripts/test.sh and redirected logs
def _test_sh(*args: str) -> list:
    """The commands scripts/test.sh runs for ``args`` (its dry run: printed, not run)."""
    env = {**os.environ, "DVCL_TEST_DRY_RUN": "1"}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "test.sh"), *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return [line[len("[test] "):] for line in out.stderr.splitlines() if line.startswith("[test] ")]


def test_test_sh_runs_the_selection_and_ci_options_run_everything():
    ruff, pytest_cmd = _test_sh("tests/test_segment.py")
    assert ruff.startswith(".venv/bin/ruff check backend")  # ruff still runs on everything
    assert pytest_cmd == ".venv/bin/python -m pytest tests/test_segment.py"  # only the selection
    assert _test_sh("-q", "tests/test_evaluate.py::test_quiet_shows_no_progress", "-x")[1].endswith(
        "pytest -q tests/test_evaluate.py::test_quiet_shows_no_progress -x")
    # .ci/run's options (note the option value 'no:cacheprovider', not a path): the whole suite
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test.sh -q -p no:cacheprovider --durations=15" in ci
    assert _test_sh("-q", "-p", "no:cacheprovider", "--durations=15")[1] == (
        ".venv/bin/python -m pytest tests -q -p no:cacheprovider --durations=15")


def test_redirected_progress_has_no_escape_codes(tmp_path):
    """Nested bars with stderr in a file: plain lines, no carriage returns, no cursor-movement codes."""
    code = ("from dvcl.utils import progress\n"
            "progress.LINE_INTERVAL_S = 0\n"
            "with progress.Progress('grid', total=2) as outer:\n"
            "    for run in range(2):\n"
            "        with progress.Progress('train', total=3) as inner:\n"
            "            for i in range(3):\n"
            "                inner.update(1, loss=0.5)\n"
            "        outer.update(1, message=f'run {run}')\n")
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        subprocess.run([sys.executable, "-c", code], stderr=err, check=True, timeout=60)
    text = log.read_text()
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "train: 1/3 it (33%), 0:00 elapsed, 0:00 left, loss=0.5"
    assert lines[-1] == "grid: 2/2 it (100%), 0:00 elapsed, run 1"


def test_threads_option_must_be_positive(capsys):
    from dvcl.cli.main import main

    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit) as exc:
            main(["--threads", bad, "info"])
        assert exc.value.code == 2 and "--threads: must be a positive integer" in capsys.readouterr().err


def test_test_modules_have_unique_names():
    """pytest imports test files by basename (rootdir mode): two ``test_x.py`` in different folders stop the whole
    run at collection, which only a whole-suite run (CI) shows."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
