"""The synthetic-CT training recipe is one fact, read by `dvcl adapt` and by benchmarks/synthetic_model.sh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dvcl import adapt
from dvcl.synthetic_training import SYNTHETIC_TRAINING, main, set_arguments
from dvcl.training.config import TrainConfig, apply_options

ROOT = Path(__file__).resolve().parents[1]


def test_recipe_values_are_valid_train_options_that_differ_from_the_paper_protocol():
    cfg = TrainConfig()
    paper = {k: getattr(cfg, k) for k in SYNTHETIC_TRAINING}
    apply_options(cfg, dict(SYNTHETIC_TRAINING))
    assert {k: getattr(cfg, k) for k in SYNTHETIC_TRAINING} == SYNTHETIC_TRAINING
    assert paper["flip_prob"] == 0.5 and SYNTHETIC_TRAINING["flip_prob"] == 0.0
    assert set_arguments()[:2] == ["--set", "flip_prob=0.0"]
    assert adapt.FLIP_PROB == SYNTHETIC_TRAINING["flip_prob"]


def test_the_benchmark_script_reads_its_defaults_from_the_recipe(capsys):
    """The lines of synthetic_model.sh that set FLIP_PROB / OVERSAMPLE, run as the script runs them."""
    script = (ROOT / "benchmarks" / "synthetic_model.sh").read_text().splitlines()
    lines = [ln for ln in script if ln.startswith(("FLIP_PROB=", "OVERSAMPLE=", "OVERSAMPLE_MODE="))]
    assert len(lines) == 3
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT / "backend"))
    env.pop("FLIP_PROB", None)
    code = "\n".join(lines + ['echo "$FLIP_PROB $OVERSAMPLE $OVERSAMPLE_MODE"'])
    out = subprocess.run(["bash", "-c", f"PYTHON={sys.executable}\n{code}"], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["0.0", "0.33", "class"]
    env["FLIP_PROB"] = "0.5"  # the user's choice wins
    out = subprocess.run(["bash", "-c", f"PYTHON={sys.executable}\n{code}"], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "0.5"
    assert main(["no_such_setting"]) == 2
    assert "unknown setting" in capsys.readouterr().err


def test_the_benchmark_script_scores_on_the_real_scans_the_card_tool_uses():
    """synthetic_model.sh's real scan, reference and grouping come from tests/data/real_scans.json, as the card's."""
    import json

    scans = json.loads((ROOT / "tests" / "data" / "real_scans.json").read_text())
    script = (ROOT / "benchmarks" / "synthetic_model.sh").read_text()
    block = script[script.index("PRESET=flare22"):script.index("VARIANT=${ABLATE")]
    for kind, preset in (("abdomen", "flare22"), ("cardiac", "mmwhs")):
        code = f"ROOT={ROOT}\nPYTHON={sys.executable}\nKIND={kind}\n{block}\n" + \
            'echo "$REAL_CT"; echo "$REAL_LABEL"; printf "%s\\n" "${SCORE[@]}"'
        out = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
        entry = scans[preset]
        assert out[0] == str(ROOT / "tests" / "data" / entry["folder"] / "image.nii.gz")
        assert out[1] == str(ROOT / "tests" / "data" / entry["folder"] / entry["label_file"])
        expected = [a for g in entry["groups"] for a in ("--group", g)] or ["--preset", preset]
        assert out[2:] == expected
        assert Path(out[0]).is_file() and Path(out[1]).is_file()
