"""`dvcl experiment`: a tiny real grid (2 methods x 1 fraction x 2 seeds, 2 iterations) trains, segments the
test split, evaluates, writes the tables; a rerun skips finished runs and resumes/evaluates unfinished ones."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import SimpleITK as sitk

from dvcl.cli.main import main
from dvcl.evaluation import load_summary

TINY = ["--set", "patch=[8,16,16]", "--set", "val_roi=[8,16,16]", "--set", "network.channels=[4,8]",
        "--set", "network.feature_dim=16", "--set", "batch_labeled=1", "--set", "batch_unlabeled=1",
        "--set", "val_sw_batch=1", "--set", "amp=false", "--set", "mean_teacher:noise_std=0.05"]


def _run(capsys, argv):
    capsys.readouterr()
    code = main(["--progress", "none", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _mtimes(out: Path):
    return {p: p.stat().st_mtime_ns for p in sorted(out.glob("*_s*/checkpoints/*.safetensors"))}


def test_tiny_grid_table_and_resume(tiny_cache, tmp_path, capsys):
    out = tmp_path / "grid"
    argv = ["experiment", "--data", str(tiny_cache), "--methods", "supervised,mean_teacher", "--fractions", "0.5",
            "--seeds", "0,1", "--out", str(out), "--profile", "quick", "--iterations", "2", "--device", "cpu",
            "--workers", "0", *TINY]
    code, stdout, err = _run(capsys, argv)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["runs"] == 4 and summary["trained"] == 4 and summary["evaluated"] == 4 and summary["skipped"] == 0

    names = ["supervised_f0.5_s0", "supervised_f0.5_s1", "mean_teacher_f0.5_s0", "mean_teacher_f0.5_s1"]
    per_run = {}
    for name in names:
        run = json.loads((out / name / "run.json").read_text())
        assert run["status"] == "finished" and run["iteration"] == 2
        assert (out / name / "model" / "model.json").is_file()
        preds = list((out / name / "test_predictions").glob("*.nii.gz"))
        assert len(preds) == 1  # the cache's single test case
        ref = sitk.ReadImage(str(tiny_cache.parent / "data" / "labeled" / "labels" / preds[0].name))
        pred = sitk.ReadImage(str(preds[0]))
        assert pred.GetSize() == ref.GetSize() and pred.GetSpacing() == pytest.approx(ref.GetSpacing())
        per_run[name] = load_summary(out / name / "evaluation" / "summary.json")  # fractions, as runs.csv

    # results.csv: mean and sample SD over the two seeds of each method's per-run mean Dice
    with open(out / "results.csv", newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"supervised", "mean_teacher"}
    for method in rows:
        vals = [per_run[f"{method}_f0.5_s{s}"]["mean_dice"] for s in (0, 1)]
        assert int(rows[method]["n_seeds"]) == 2 and rows[method]["fraction"] == "0.5"
        assert float(rows[method]["mean_dice"]) == pytest.approx(sum(vals) / 2, abs=1e-6)
        sd = abs(vals[0] - vals[1]) / math.sqrt(2)  # sample SD (ddof=1) of two values
        assert float(rows[method]["mean_dice_sd"]) == pytest.approx(sd, abs=1e-6)
    with open(out / "runs.csv", newline="") as f:
        case_rows = list(csv.DictReader(f))
    assert sorted({r["run"] for r in case_rows}) == sorted(names)
    for key in ("method", "fraction", "seed", "case", "structure", "dice", "jaccard", "split",
                "inference_model", "checkpoint_selected_on"):
        assert key in case_rows[0], key
    assert {r["split"] for r in case_rows} == {"test"} and {r["structure"] for r in case_rows} == {"box", "ball"}
    assert {r["checkpoint_selected_on"] for r in case_rows} == {"validation"}
    mt = [float(r["dice"]) for r in case_rows if r["run"] == "mean_teacher_f0.5_s0"]
    assert sum(mt) / len(mt) == pytest.approx(per_run["mean_teacher_f0.5_s0"]["mean_dice"], abs=5e-4)
    assert all(0.0 <= float(r["jaccard"]) <= float(r["dice"]) <= 1.0 for r in case_rows if r["dice"])
    selection = json.loads((out / "supervised_f0.5_s0" / "evaluation" / "selection.json").read_text())
    assert selection["test_reads"] == 1 and selection["checkpoint_selected_on"] == "validation"

    table = (out / "results.md").read_text()
    assert "## 50% labeled" in table
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| Method | box | ball | Mean Dice | Mean Jaccard")
    names_in_table = [line.split(" | ")[0] for line in lines[1:3]]
    assert names_in_table[0].startswith("| U-Net (labeled only) [") and names_in_table[1].startswith("| MT [")
    expected = f"{100 * float(rows['mean_teacher']['mean_dice']):.2f} ± "
    assert expected in lines[2]
    assert "Per-seed mean Dice" in table and "Paired differences" in table and "WARNING" not in table
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # rerun: everything is finished and evaluated -> nothing is trained or evaluated again
    before = _mtimes(out)
    code, stdout, err = _run(capsys, argv)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["skipped"] == 4 and summary["trained"] == 0 and summary["evaluated"] == 0
    assert _mtimes(out) == before

    # --tables-only rewrites the tables from the evaluated runs and touches nothing else
    table_before = (out / "results.md").read_text()
    for name in ("results.md", "results.csv", "runs.csv"):
        (out / name).unlink()
    code, stdout, err = _run(capsys, [*argv, "--tables-only"])
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["trained"] == 0 and summary["evaluated"] == 0 and summary["skipped"] == 4
    assert (out / "results.md").read_text() == table_before and (out / "runs.csv").is_file()
    assert _mtimes(out) == before
    code, _, err = _run(capsys, [*argv, "--tables-only", "--overwrite"])
    assert code == 2 and "--tables-only" in err and (out / "supervised_f0.5_s0" / "run.json").is_file()

    # dvcl compare: rows picked from grids give the grid's own paired difference (same pairs, same bootstrap)
    models = {r["method"]: r["inference_model"] for r in case_rows}
    code, _, err = _run(capsys, ["compare", "--row", f"Sup={out}:supervised:{models['supervised']}",
                                 "--row", f"Teacher study={out}:mean_teacher:{models['mean_teacher']}",
                                 "-o", str(tmp_path / "cmp" / "table.md")])
    assert code == 0, err
    grid_diff = [line for line in table_before.splitlines() if line.startswith("| MT [")][-1]
    cmp_diff = [line for line in (tmp_path / "cmp" / "table.md").read_text().splitlines()
                if line.startswith("| Teacher study |")][-1]
    assert cmp_diff.split(" | ")[1:] == grid_diff.split(" | ")[1:] and "[" in cmp_diff
    with open(tmp_path / "cmp" / "table.csv", newline="") as f:
        cmp_rows = list(csv.DictReader(f))
    assert [(r["label"], r["seed"]) for r in cmp_rows] == [("Sup", "0"), ("Sup", "1"), ("Teacher study", "0"),
                                                           ("Teacher study", "1")]
    assert float(cmp_rows[2]["mean_dice"]) == pytest.approx(per_run["mean_teacher_f0.5_s0"]["mean_dice"], abs=1e-6)
    # the validation column is each run's own best validation Dice, and the choice is the higher mean of it
    val = {(m, sd): json.loads((out / f"{m}_f0.5_s{sd}" / "run.json").read_text())
           for m in ("supervised", "mean_teacher") for sd in (0, 1)}
    assert float(cmp_rows[2]["best_val_dice"]) == pytest.approx(val["mean_teacher", 0]["best_val_dice"], abs=1e-6)
    assert int(cmp_rows[2]["best_iteration"]) == val["mean_teacher", 0]["best_iteration"]
    cmp_text = (tmp_path / "cmp" / "table.md").read_text()
    section = cmp_text.split("Best validation Dice", 1)[1].split("\n\n| Method |", 1)[0]
    sup_val = [line for line in section.splitlines() if line.startswith("| Sup |")][0]
    assert f"{100 * val['supervised', 1]['best_val_dice']:.1f} ({val['supervised', 1]['best_iteration']})" in sup_val
    means = {label: (val[m, 0]["best_val_dice"] + val[m, 1]["best_val_dice"]) / 2
             for label, m in (("Sup", "supervised"), ("Teacher study", "mean_teacher"))}
    assert f"Validation choice (highest mean over seeds 0, 1): **{max(means, key=means.get)}**" in cmp_text
    other = tmp_path / "other_grid"
    other.mkdir()
    info = json.loads((out / "experiment.json").read_text())
    (other / "experiment.json").write_text(json.dumps({**info, "iterations": 3}))
    code, _, err = _run(capsys, ["compare", "--row", f"A={out}:supervised:{models['supervised']}",
                                 "--row", f"B={other}:supervised:{models['supervised']}", "-o", str(tmp_path / "x.md")])
    assert code == 2 and "differs" in err and "iterations" in err and not (tmp_path / "x.md").exists()
    code, _, err = _run(capsys, ["compare", "--row", f"A={out}:supervised:teacher", "-o", str(tmp_path / "x.md")])
    assert code == 2 and "supervised:" in err  # says which rows the grid has
    # a run whose test split was read twice makes the comparison say so (and name it); the other row is clean
    sel_path = out / "mean_teacher_f0.5_s1" / "evaluation" / "selection.json"
    sel_text = sel_path.read_text()
    sel_path.write_text(json.dumps({**json.loads(sel_text), "test_reads": 2}))
    code, _, err = _run(capsys, ["compare", "--row", f"Sup={out}:supervised:{models['supervised']}",
                                 "--row", f"MT={out}:mean_teacher:{models['mean_teacher']}",
                                 "-o", str(tmp_path / "cmp" / "reread.md")])
    warning = [line for line in (tmp_path / "cmp" / "reread.md").read_text().splitlines() if "WARNING" in line]
    assert code == 0 and len(warning) == 1 and "mean_teacher_f0.5_s1/evaluation" in warning[0]
    assert "supervised_f0.5" not in warning[0]
    sel_path.write_text(sel_text)

    # an interrupted run (status running, last_state.pt present) resumes; a run missing its evaluation is
    # only evaluated; the table is rebuilt with both
    run_json = out / "mean_teacher_f0.5_s1" / "run.json"
    info = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**info, "status": "running"}))
    (out / "supervised_f0.5_s0" / "evaluation" / "summary.json").unlink()
    metrics_before = (out / "supervised_f0.5_s0" / "metrics.csv").read_text()
    code, stdout, err = _run(capsys, argv)
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["skipped"] == 2 and summary["trained"] == 1 and summary["evaluated"] == 2
    assert json.loads(run_json.read_text())["status"] == "finished"
    assert (out / "supervised_f0.5_s0" / "metrics.csv").read_text() == metrics_before
    assert (out / "supervised_f0.5_s0" / "evaluation" / "summary.json").is_file()

    # other settings in the same folder are refused, not mixed into the table
    code, _, err = _run(capsys, [a if a != "2" else "3" for a in argv])
    assert code == 2 and "iterations: 2 != 3" in err


def test_grid_plan_and_bad_input(tiny_cache, tmp_path, capsys):
    from dvcl.experiment import plan_grid

    runs = plan_grid(["cps", "fully"], [0.1, 0.5], [0, 1])
    # seed by seed: a grid stopped after the first seed holds that seed of every method
    assert [r.name for r in runs] == ["cps_f0.1_s0", "cps_f0.5_s0", "fully_f1_s0",
                                      "cps_f0.1_s1", "cps_f0.5_s1", "fully_f1_s1"]
    base = ["experiment", "--data", str(tiny_cache), "--out", str(tmp_path / "x"), "--seeds", "0"]
    code, _, err = _run(capsys, [*base, "--methods", "nonsense"])
    assert code == 2 and "unknown method 'nonsense'" in err
    code, _, err = _run(capsys, [*base, "--methods", "cps", "--fractions", "0,0.5"])
    assert code == 2 and "labeled fraction must be in (0, 1]" in err
    code, _, err = _run(capsys, [*base, "--methods", "u2pl", "--set", "u2pl:no_such_param=1"])
    assert code == 2 and "no_such_param" in err
    assert not (tmp_path / "x").exists()  # nothing written when the input is bad


def test_parallel_grid_matches_the_sequential_one(tiny_cache, tmp_path, capsys):
    """--jobs 2 trains the runs in two spawned processes; each run is the same run as a sequential grid's."""
    common = ["--data", str(tiny_cache), "--methods", "supervised", "--fractions", "0.5", "--seeds", "0,1",
              "--profile", "quick", "--iterations", "2", "--device", "cpu", "--workers", "0", *TINY]
    code, _, err = _run(capsys, ["experiment", *common, "--out", str(tmp_path / "seq")])
    assert code == 0, err
    code, stdout, err = _run(capsys, ["experiment", *common, "--out", str(tmp_path / "par"), "--jobs", "2"])
    assert code == 0, err
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["trained"] == 2 and summary["evaluated"] == 2 and summary["failed"] == []
    for seed in (0, 1):
        name = f"supervised_f0.5_s{seed}"
        seq = load_summary(tmp_path / "seq" / name / "evaluation" / "summary.json")
        par = load_summary(tmp_path / "par" / name / "evaluation" / "summary.json")
        assert par["mean_dice"] == pytest.approx(seq["mean_dice"], abs=1e-3)
        assert json.loads((tmp_path / "par" / name / "run.json").read_text())["status"] == "finished"
    assert (tmp_path / "par" / "results.md").is_file()
    # a rerun skips both; --jobs 0 is refused
    code, stdout, _ = _run(capsys, ["experiment", *common, "--out", str(tmp_path / "par"), "--jobs", "2"])
    assert code == 0 and json.loads(stdout.strip().splitlines()[-1])["skipped"] == 2
    code, _, err = _run(capsys, ["experiment", *common, "--out", str(tmp_path / "par"), "--jobs", "0"])
    assert code == 2 and "--jobs" in err


def test_a_run_made_under_another_default_is_refused():
    """The stored config lists every method parameter: a changed default is a different run, not a resume."""
    from dvcl.experiment import config_mismatch
    from dvcl.methods import get_method_class
    from dvcl.training.config import TrainConfig

    defaults = get_method_class("cps").default_params()
    wanted = TrainConfig(method="cps", method_params={})
    same = TrainConfig(method="cps", method_params=dict(defaults))
    assert config_mismatch(same, wanted) == []
    old = TrainConfig(method="cps", method_params={**defaults, "lambda_cps": defaults["lambda_cps"] * 10})
    assert config_mismatch(old, wanted) == [f"lambda_cps: {defaults['lambda_cps'] * 10} != {defaults['lambda_cps']}"]
    # a parameter the stored run predates is compared only when the request sets it
    older = TrainConfig(method="cps", method_params={k: v for k, v in defaults.items() if k != "warmup_fraction"})
    assert config_mismatch(older, wanted) == []
    assert config_mismatch(older, TrainConfig(method="cps", method_params={"warmup_fraction": "0.2"})) == [
        "warmup_fraction: None != 0.2"]


def test_stopping_a_parallel_grid_stops_every_run_and_keeps_their_checkpoints(tiny_cache, tmp_path):
    """SIGTERM to `dvcl experiment --jobs 2` (the Slicer Cancel, or kill): the two running cells save a checkpoint
    and stop, the queued cell never starts, and the command returns instead of training the rest in the
    background (before the fix the pool's shutdown waited for every queued cell)."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "grid"
    argv = [sys.executable, "-m", "dvcl", "--progress", "none", "experiment", "--data", str(tiny_cache),
            "--methods", "supervised", "--fractions", "0.5", "--seeds", "0,1,2", "--out", str(out),
            "--profile", "quick", "--iterations", "100000", "--device", "cpu", "--workers", "0", "--jobs", "2",
            "--keep-going", *TINY, "--set", "val_every=100000", "--set", "checkpoint_every=100000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group: nothing outlives the test
    try:
        running = [out / "supervised_f0.5_s0" / "metrics.csv", out / "supervised_f0.5_s1" / "metrics.csv"]
        deadline = time.monotonic() + 180
        while not all(p.is_file() for p in running):  # both cells are training (metrics are written every 10)
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the two cells did not start training"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by a failing grid, too
    assert proc.returncode != 0 and "cancelled" in err
    for name in ("supervised_f0.5_s0", "supervised_f0.5_s1"):
        info = json.loads((out / name / "run.json").read_text())
        assert info["status"] == "cancelled" and 0 < info["iteration"] < 100000
        assert (out / name / "checkpoints" / "last_state.pt").is_file()  # `dvcl experiment` again resumes it
    assert not (out / "supervised_f0.5_s2").exists()  # the queued cell never started
