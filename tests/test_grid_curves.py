"""benchmarks/grid_curves.py: validation curves of an experiment folder; the late rise flags unfinished runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dvcl_test_cases import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def grid_curves():
    return load_script(ROOT / "benchmarks" / "grid_curves.py", "grid_curves")


def _run(folder: Path, method: str, seed: int, rows) -> None:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"method": method, "seed": seed}), encoding="utf-8")
    lines = ["iteration,loss,val_dice"] + [f"{it},0.5,{'' if v is None else v}" for it, v in rows]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_curves_skip_rows_without_validation_and_group_by_method_and_seed(tmp_path, grid_curves):
    _run(tmp_path / "dvcl_s0", "dvcl", 0, [(10, None), (100, 0.2), (110, None), (200, 0.5)])
    _run(tmp_path / "dvcl_s1", "dvcl", 1, [(100, 0.3)])
    _run(tmp_path / "cps_s0", "cps", 0, [(10, None)])  # no validation point: not a curve
    curves = grid_curves.read_curves([tmp_path])
    assert curves == {"dvcl": {"seed 0": [(100, 0.2), (200, 0.5)], "seed 1": [(100, 0.3)]}}
    # several grids (an option study): each line names its folder
    _run(tmp_path / "opt" / "dvcl_s0", "dvcl", 0, [(100, 0.4)])
    two = grid_curves.read_curves([tmp_path, tmp_path / "opt"])
    assert two["dvcl"][f"{tmp_path.name}, seed 0"] == [(100, 0.2), (200, 0.5)]
    assert two["dvcl"]["opt, seed 0"] == [(100, 0.4)]


def test_late_rise_is_the_gain_over_the_last_quarter(grid_curves):
    points = [(100, 0.2), (200, 0.4), (300, 0.6), (400, 0.7)]
    # 75 % of 400 is 300: the rise is 0.7 - 0.6
    assert grid_curves.late_rise(points) == pytest.approx(0.1)
    assert grid_curves.late_rise([(500, 0.9)]) is None
    assert grid_curves.late_rise([(400, 0.5), (500, 0.4)]) == pytest.approx(-0.1)


def test_main_writes_the_figure_and_prints_every_run(tmp_path, grid_curves, capsys):
    _run(tmp_path / "g" / "dvcl_s0", "dvcl", 0, [(100, 0.2), (200, 0.5)])
    out = tmp_path / "curves.png"
    assert grid_curves.main([str(tmp_path / "g"), "-o", str(out)]) == 0
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    assert "dvcl | seed 0 | 200 | 50.0 | +30.0 | 50.0 (200)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        grid_curves.main([str(tmp_path / "empty"), "-o", str(out)])
