"""The paper's labeled splits (counts, MM-WHS 2:10) and the paired bootstrap of the experiment tables."""

from __future__ import annotations

import numpy as np
import pytest

from dvcl.data.splits import PAPER_LABELED_COUNTS, labeled_count, labeled_subset, make_splits
from dvcl.errors import ConfigError
from dvcl.experiment import check_selection_splits, inference_settings, plan_grid
from dvcl.paired_stats import paired_bootstrap


def test_mmwhs_ten_percent_is_two_labeled_to_ten_unlabeled():
    cases = [f"ct_{i:02d}" for i in range(20)]  # MM-WHS: 20 CT volumes
    splits = make_splits(cases, seed=0)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [12, 4, 4]  # 6:2:2
    labeled = labeled_subset(splits["train"], 0.1, seed=0, preset="mmwhs")
    assert len(labeled) == 2 and len(set(splits["train"]) - set(labeled)) == 10  # the paper's 2:10
    assert len(labeled_subset(splits["train"], 0.5, seed=0, preset="mmwhs")) == 6  # 6:6
    assert len(labeled_subset(splits["train"], 0.1, seed=0)) == 1  # a plain fraction rounds 1.2 to 1
    # labeled subsets are nested: the 2 cases of 10 % are among the 6 of 50 %
    assert set(labeled) <= set(labeled_subset(splits["train"], 0.5, seed=0, preset="mmwhs"))


def test_labeled_count_overrides_and_flare_protocol():
    assert labeled_count(12, 0.1, count=3) == 3
    assert labeled_count(42, 0.1, preset="flare22") == 42  # all 42 labeled; unlabeled from the extra folder
    assert labeled_count(42, 0.5, preset="FLARE22") == 42
    assert labeled_count(40, 0.1, preset="flare22") == 4  # not the paper's split size: the fraction rounds
    assert labeled_count(180, 0.1, preset="amos") == 18  # AMOS 18:162 is what rounding gives
    assert set(PAPER_LABELED_COUNTS) == {"mmwhs", "flare22"}
    for bad in (0, 13, True):
        with pytest.raises(ConfigError, match="labeled count"):
            labeled_count(12, 0.1, count=bad)
    with pytest.raises(ConfigError, match="fraction"):
        labeled_count(12, 0.0)
    assert labeled_subset([f"c{i}" for i in range(12)], 0.1, count=4) == labeled_subset(
        [f"c{i}" for i in range(12)], 0.9, count=4)  # the count decides, not the fraction


def test_grid_with_a_labeled_count_and_inference_settings():
    runs = plan_grid(["dvcl", "fully"], [0.1], [0, 1], labeled_count=2)
    assert [r.name for r in runs] == ["dvcl_n2_s0", "fully_f1_s0", "dvcl_n2_s1", "fully_f1_s1"]
    assert runs[0].setting == ("count", 2.0) and runs[1].setting == ("fraction", 1.0)
    with pytest.raises(ConfigError):
        plan_grid(["dvcl"], [0.1], [0], labeled_count=0)
    assert inference_settings(["A", "B"]) == [("A+B", None, "evaluation"), ("A", ["A"], "evaluation_A")]
    assert inference_settings(["student"]) == [("student", None, "evaluation")]
    with pytest.raises(Exception, match="share"):
        check_selection_splits({"val": ["a", "b"], "test": ["b", "c"]})
    check_selection_splits({"val": ["a"], "test": ["c"]})


def test_paired_bootstrap_by_hand():
    d = paired_bootstrap(np.full((3, 4), 0.02))
    assert d.mean == pytest.approx(0.02) and d.low == pytest.approx(0.02) and d.high == pytest.approx(0.02)
    assert d.excludes_zero and d.text(100) == "+2.00 [2.00, 2.00]"
    # two seeds x two cases: every bootstrap block mean lies between the smallest and largest difference
    d = paired_bootstrap(np.array([[1.0, 2.0], [3.0, 4.0]]), n_boot=2000)
    assert d.mean == pytest.approx(2.5) and 1.0 <= d.low < 2.5 < d.high <= 4.0
    # symmetric noise around 0: the interval contains 0
    rng = np.random.default_rng(1)
    d = paired_bootstrap(rng.normal(0.0, 1.0, size=(3, 30)))
    assert d.low < 0 < d.high and not d.excludes_zero
    # a clear shift: excluded, and the interval narrows with more cases
    small = paired_bootstrap(rng.normal(1.0, 1.0, size=(3, 10)))
    large = paired_bootstrap(rng.normal(1.0, 1.0, size=(3, 200)))
    assert large.excludes_zero and (large.high - large.low) < (small.high - small.low)
    # NaN pairs (a structure absent in a case) are skipped; one seed resamples cases only
    d = paired_bootstrap(np.array([[1.0, np.nan, 3.0]]))
    assert d.mean == pytest.approx(2.0) and d.n_seeds == 1
    with pytest.raises(ValueError):
        paired_bootstrap(np.array([1.0, 2.0]))
