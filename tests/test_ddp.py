"""Multi-process training through torchrun (2 CPU processes, gloo): sharded streams, averaged gradients, only
rank 0 writes, and the result equals one process training on both ranks' samples at once."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from test_trainer import make_tiny_cache

from dvcl.training import TrainConfig, train
from dvcl.training.checkpoint import load_state, load_weights


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    cache = make_tiny_cache(tmp_path / "cache")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "dvcl.cli.main", "--progress", "none", "train", "--data", str(cache), "--out", str(run),
           "--method", "supervised", "--profile", "quick", "--labeled-fraction", "1.0", "--iterations", "2",
           "--batch-labeled", "1", "--patch", "8", "16", "16", "--val-every", "2", "--workers", "0",
           "--device", "cpu", "--set", "val_roi=[8,16,16]", "--set", "log_every=1",
           "--set", "network.channels=[4,8]",
           # SGD: equivalence with one process holds for any optimizer in exact arithmetic, but Adam turns the
           # float noise of gradients that are zero by construction (conv bias before instance norm) into steps
           "--set", "optimizer=sgd", "--lr", "0.1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]

    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and status["iteration"] == 2 and status["world_size"] == 2
    assert [int(r["iteration"]) for r in csv.DictReader((run / "metrics.csv").open())] == [1, 2]
    assert len(list((run / "tb").iterdir())) == 1  # one writer: rank 0
    assert json.loads((run / "environment.json").read_text())["world_size"] == 2
    assert done.stdout.count('"run_dir"') == 1  # one summary line, from rank 0
    assert load_state(run / "checkpoints" / "last_state.pt")["iteration"] == 2

    # rank r draws samples 2*it + r: together exactly the samples of one process with a batch of 2, and the
    # averaged gradients equal that process's gradient (per-sample Dice and CE means over equal halves)
    cfg = TrainConfig.load(run / "config.yaml")
    cfg.batch_labeled = 2
    train(cfg, tmp_path / "single", device="cpu")
    ddp_w = load_weights(run / "checkpoints" / "last.safetensors")["A"]
    one_w = load_weights(tmp_path / "single" / "checkpoints" / "last.safetensors")["A"]
    assert set(ddp_w) == set(one_w)
    for k in ddp_w:
        assert torch.allclose(ddp_w[k], one_w[k], atol=2e-5, rtol=1e-4), k
    # ... and not the result of rank 0's samples alone (rank 1's gradients did contribute)
    cfg.batch_labeled = 1
    train(cfg, tmp_path / "rank0_only", device="cpu")
    r0_w = load_weights(tmp_path / "rank0_only" / "checkpoints" / "last.safetensors")["A"]
    assert max(float((ddp_w[k] - r0_w[k]).abs().max()) for k in ddp_w) > 1e-3
