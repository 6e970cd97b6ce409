"""Stopping and resuming `dvcl train`: SIGINT/SIGTERM save and exit 130, SIGKILL loses at most the steps since
the last checkpoint, and a resumed run ends exactly where the uninterrupted run ends (same weights, bit for bit,
on CPU), with metrics.csv continuing without gaps or duplicates."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_trainer import CoTrainForTest, make_tiny_cache, tiny_config

from dvcl.methods.registry import register_method
from dvcl.training import TrainConfig, train
from dvcl.training.checkpoint import load_state, load_weights


@register_method("test_interruptible")
class InterruptibleForTest(CoTrainForTest):
    """Sends itself SIGINT during step ``interrupt_at`` (0-based), like a user pressing Ctrl-C."""

    interrupt_at = None

    def compute_loss(self, batch_l, batch_u, iteration):
        if iteration == type(self).interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)
        return super().compute_loss(batch_l, batch_u, iteration)


def _iterations(run: Path):
    return [int(r["iteration"]) for r in csv.DictReader((run / "metrics.csv").open())]


def _assert_same_weights(a: Path, b: Path):
    wa, wb = load_weights(a), load_weights(b)
    assert set(wa) == set(wb)
    for m in wa:
        for k in wa[m]:
            assert torch.equal(wa[m][k], wb[m][k]), f"{m}.{k}"


def test_sigint_saves_and_resume_is_exact(tmp_path):
    cache = make_tiny_cache(tmp_path / "cache")
    cfg = tiny_config(cache, "test_interruptible", iterations=6, val_every=4)
    full, cut = tmp_path / "full", tmp_path / "cut"
    InterruptibleForTest.interrupt_at = None
    train(tiny_config(cache, "test_interruptible", iterations=6, val_every=4), full, device="cpu")

    # the signal arrives during step 4, a validation step: the step is finished and saved, the validation is
    # left to the resumed run (which must then pick the same best checkpoint)
    InterruptibleForTest.interrupt_at = 3
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, cut, device="cpu")
    finally:
        InterruptibleForTest.interrupt_at = None
    status = json.loads((cut / "run.json").read_text())
    assert status["status"] == "cancelled" and status["iteration"] == 4
    assert load_state(cut / "checkpoints" / "last_state.pt")["iteration"] == 4
    assert _iterations(cut) == [1, 2, 3, 4]
    assert [r["val_dice"] for r in csv.DictReader((cut / "metrics.csv").open())] == ["", "", "", ""]
    assert load_state(cut / "checkpoints" / "last_state.pt")["pending_validation"] is True

    res = train(TrainConfig.load(cut / "config.yaml"), cut, device="cpu", resume=True)
    assert res.iteration == 6 and res.status == "finished"
    assert _iterations(cut) == list(range(1, 7))
    _assert_same_weights(full / "checkpoints" / "last.safetensors", cut / "checkpoints" / "last.safetensors")
    _assert_same_weights(full / "checkpoints" / "best.safetensors", cut / "checkpoints" / "best.safetensors")
    rows_full = list(csv.DictReader((full / "metrics.csv").open()))
    rows_cut = list(csv.DictReader((cut / "metrics.csv").open()))
    assert [r["loss"] for r in rows_full] == [r["loss"] for r in rows_cut]
    assert [r["val_dice"] for r in rows_full] == [r["val_dice"] for r in rows_cut]
    assert int(load_state(cut / "checkpoints" / "last_state.pt")["method_extra"]["steps"]) == 6


def _cli(*args: str):
    return [sys.executable, "-m", "dvcl.cli.main", "--progress", "json", "train", *args]


def cmd_iterations(cmd) -> int:
    """The run's total iterations (40 in the test below; resumed commands inherit it from config.yaml)."""
    return int(cmd[cmd.index("--iterations") + 1]) if "--iterations" in cmd else 40


def _run_until(cmd, stop_at: int, sig: int, run: Path, log: Path) -> int:
    """Start `dvcl train`, check the checkpoints at every metrics event, send ``sig`` at iteration >= stop_at."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("a") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        sent = False
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] != "metrics":
                continue
            last = run / "checkpoints" / "last_state.pt"
            if last.exists():  # written atomically: whatever is on disk always loads, whole
                # (the run may already be past the event we are reading: stdout is read behind the writer)
                assert 1 <= load_state(last)["iteration"] <= int(cmd_iterations(cmd))
                load_weights(run / "checkpoints" / "last.safetensors")
            if event["iteration"] >= stop_at and not sent:
                proc.send_signal(sig)
                sent = True
        if not sent:
            rc = proc.wait(timeout=60)
            err.flush()
            tail = log.read_text(errors="replace")[-2000:]
            raise AssertionError(f"the run ended (exit {rc}) before it could be interrupted; its stderr:\n{tail}")
        return proc.wait(timeout=60)


@pytest.mark.slow
def test_sigterm_and_sigkill_then_resume_cli(tmp_path):
    cache = make_tiny_cache(tmp_path / "cache")
    run, log = tmp_path / "run", tmp_path / "stderr.log"
    n = 40
    args = ["--data", str(cache), "--out", str(run), "--method", "supervised", "--profile", "quick",
            "--labeled-fraction", "0.5", "--iterations", str(n), "--patch", "8", "16", "16",
            "--val-every", "10", "--workers", "1", "--device", "cpu", "--set", "val_roi=[8,16,16]",
            "--set", "checkpoint_every=3", "--set", "log_every=1", "--set", "network.channels=[4,8]",
            "--set", "batch_labeled=1"]

    rc = _run_until(_cli(*args), 4, signal.SIGTERM, run, log)
    assert rc == 130, log.read_text()[-2000:]
    status = json.loads((run / "run.json").read_text())
    stopped = load_state(run / "checkpoints" / "last_state.pt")["iteration"]
    assert status["status"] == "cancelled" and status["iteration"] == stopped >= 4
    assert _iterations(run) == list(range(1, stopped + 1))

    rc = _run_until(_cli("--resume", str(run), "--device", "cpu"), stopped + 8, signal.SIGKILL, run, log)
    assert rc == -signal.SIGKILL
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # killed: nothing could update it

    done = subprocess.run(_cli("--resume", str(run), "--device", "cpu"), capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and status["iteration"] == n
    assert _iterations(run) == list(range(1, n + 1))  # no gap, no duplicate across three processes
    assert load_state(run / "checkpoints" / "last_state.pt")["iteration"] == n
    load_weights(run / "checkpoints" / "best.safetensors")

    # the same schedule in one uninterrupted process ends with the same weights
    ref = tmp_path / "ref"
    cfg = TrainConfig.load(run / "config.yaml")
    cfg.num_workers = 0  # the data stream does not depend on worker processes
    train(cfg, ref, device="cpu")
    _assert_same_weights(ref / "checkpoints" / "last.safetensors", run / "checkpoints" / "last.safetensors")


def test_resume_refuses_schedule_changes_and_missing_state(tmp_path, capsys):
    from dvcl.cli.main import main

    cache = make_tiny_cache(tmp_path / "cache")
    assert main(["--progress", "none", "train", "--resume", str(tmp_path / "none")]) == 2
    run = tmp_path / "run"
    train(tiny_config(cache, iterations=1, val_every=0), run, device="cpu")
    assert main(["--progress", "none", "train", "--resume", str(run), "--iterations", "5"]) == 2
    assert "drop --iterations, or start over with another --out" in capsys.readouterr().err  # one rule: see
    # tests/test_front_door.py for the demo's side of it
    (run / "checkpoints" / "last_state.pt").write_bytes(b"not a checkpoint")
    assert main(["--progress", "none", "train", "--resume", str(run)]) == 2
