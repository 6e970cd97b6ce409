"""Profiles as data, one override mechanism (profile -> preset -> flags -> --set), help texts from the data."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dvcl.errors import ConfigError
from dvcl.presets import get_preset
from dvcl.profiles import PROFILES, default_text, defaults_for, get_profile, profile_names
from dvcl.training.config import TrainConfig, apply_options, apply_preset_schedule, apply_profile, set_option


def test_profiles_are_data_applied_by_one_mechanism() -> None:
    assert profile_names() == ["paper", "quick"]
    for name in profile_names():
        cfg = TrainConfig()
        apply_preset_schedule(cfg, get_preset("mmwhs"))
        apply_profile(cfg, name)
        cfg.validate()
        for key, value in PROFILES[name].items():
            if key.startswith("network."):
                assert getattr(cfg.network, key.split(".", 1)[1]) == tuple(value), key
            else:
                assert getattr(cfg, key) == value, key
        assert cfg.profile == name
    paper = TrainConfig()
    apply_preset_schedule(paper, get_preset("mmwhs"))
    apply_profile(paper, "paper")  # the paper profile keeps the preset's schedule [given]
    assert (paper.batch_labeled, paper.iterations, paper.lr) == (2, 10000, 0.03)
    with pytest.raises(ConfigError, match="unknown profile 'fast': choose one of paper, quick"):
        get_profile("fast")


def test_override_strings_convert_with_one_rule() -> None:
    cfg = TrainConfig()
    apply_profile(cfg, "quick")
    apply_options(cfg, {"iterations": "2e3", "patch": "16,32,32", "amp": "0", "subset_seed": "none", "lr": "1"})
    assert (cfg.iterations, cfg.patch, cfg.amp, cfg.subset_seed, cfg.lr) == (2000, (16, 32, 32), False, None, 1.0)
    set_option(cfg, "network.strides", "[[1,2,2],2,2]")
    assert cfg.network.strides == ((1, 2, 2), 2, 2)
    with pytest.raises(ConfigError, match="option 'iterations' must be an integer, got '3.5'"):
        set_option(cfg, "iterations", "3.5")
    with pytest.raises(ConfigError, match="option 'amp' must be true/false"):
        set_option(cfg, "amp", "maybe")
    set_option(cfg, "lambda_c", "0.5")  # not a config field: a method parameter, converted by the method
    assert cfg.method_params == {"lambda_c": "0.5"}
    cfg.val_overlap = 1.0
    with pytest.raises(ConfigError, match=r"option 'val_overlap' must be in \[0, 1\), got 1.0"):
        cfg.validate()


def test_defaults_for_a_gui_and_help_texts() -> None:
    assert defaults_for("quick")["iterations"] == 300
    assert defaults_for("paper", "mmwhs")["iterations"] == 10000
    assert defaults_for("paper")["batch_labeled"] == 4
    assert default_text("iterations") == "paper: the preset's (amos/btcv/flare22 20000, mmwhs 10000); quick: 300"
    out = subprocess.run([sys.executable, "-m", "dvcl", "train", "--help"], capture_output=True, text=True,
                         timeout=60).stdout
    flat = " ".join(out.split())
    for text in ("quick: 300", "paper: 64x128x128; quick: 32x64x64", "quick: 0.003", "optimizer steps"):
        assert text in flat, text
    seg = " ".join(subprocess.run([sys.executable, "-m", "dvcl", "segment", "--help"], capture_output=True,
                                  text=True, timeout=60).stdout.split())
    assert "window stored in the package" in seg and "quick: window 32x64x64, stride 24x48x48" in seg
