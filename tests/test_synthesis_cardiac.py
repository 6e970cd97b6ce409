"""Synthetic cardiac CT (``dvcl synth --kind cardiac``): MM-WHS labels, blood pools that follow the contrast timing
as the cardiac HU table says, the tissues behind each label, sternotomy wires, bad input, the command and a folder
that `dvcl prepare` accepts. Small grids (3 mm anatomy): each case takes a second or two."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from dvcl.errors import ConfigError
from dvcl.presets import PRESETS
from dvcl.synthesis import SynthesisConfig, synthesize, write_synthetic_dataset
from dvcl.synthesis.config import KINDS
from dvcl.synthesis.priors import CARDIAC_HU, CARDIAC_PHASES, T

IDS = {name: cid for cid, name in PRESETS["mmwhs"].labels.items()}
LV, RV, MYO, AO, PA = (IDS[n] for n in ("left ventricle", "right ventricle", "left ventricle myocardium",
                                         "ascending aorta", "pulmonary artery"))
#: a small case: 3 mm anatomy, 2-3 mm pixels, 3-4 mm slices
SMALL = SynthesisConfig(anatomy_mm=3.0, body_fov_mm=(300.0, 320.0), heart_z_extent_mm=(130.0, 140.0),
                        in_plane_mm=(2.0, 3.0), slice_mm=(3.0, 4.0), fixed_spacing=(2.5, 2.5, 3.0), matrix=160)
#: nothing that varies the intensity inside a tissue, and the whole body in view
FLAT = SMALL.without("noise", "texture", "bias", "streaks", "fov")


def arrays(case):
    return sitk.GetArrayFromImage(case.image), sitk.GetArrayFromImage(case.label)


def core(case, label: int, tissue: str) -> np.ndarray:
    """Voxels of ``label`` carrying ``tissue``, one voxel away from anything else (no partial volume)."""
    _, lab = arrays(case)
    return ndimage.binary_erosion((lab == label) & (case.tissue == T[tissue]), structure=np.ones((3, 3, 3), bool))


def test_same_seed_same_case_all_seven_structures_and_ct_values():
    a, b = synthesize(2, SMALL, kind="cardiac"), synthesize(2, SMALL, kind="cardiac")
    (ia, la), (ib, lb) = arrays(a), arrays(b)
    assert np.array_equal(ia, ib) and np.array_equal(la, lb)
    assert {k: v for k, v in a.info.items() if k != "seconds"} == {k: v for k, v in b.info.items() if k != "seconds"}
    assert la.dtype == np.uint8 and ia.dtype == np.int16
    assert set(np.unique(la)) == set(range(8))  # background + the 7 MM-WHS structures, nothing else
    assert ia.min() >= -1024 and ia.max() <= 3071
    assert a.info["kind"] == "cardiac" and a.info["phase"] in CARDIAC_PHASES
    other = synthesize(3, SMALL, kind="cardiac")
    assert other.info["means"] != a.info["means"]


def test_each_structure_is_made_of_its_tissue():
    case = synthesize(4, FLAT, kind="cardiac", phase="arterial")
    _, lab = arrays(case)
    expected = {LV: "blood_left", AO: "blood_left", RV: "blood_right", PA: "blood_right", MYO: "myocardium"}
    for label, tissue in expected.items():
        share = float(np.mean(case.tissue[lab == label] == T[tissue]))
        assert share > 0.85, (label, tissue, share)
    # what surrounds the heart is there too: lungs, fat, bone, and no labeled voxel is lung or bone
    for tissue in ("lung", "fat", "bone_cortical", "myocardium"):
        assert (case.tissue == T[tissue]).sum() > 50, tissue
    assert not np.isin(case.tissue[lab > 0], [T["lung"], T["bone_cortical"], T["air"]]).any()


@pytest.mark.parametrize("phase", ["arterial", "pulmonary", "native"])
def test_blood_pools_follow_the_contrast_timing_of_the_table(phase):
    case = synthesize(5, FLAT, kind="cardiac", phase=phase)
    img, _ = arrays(case)
    left, right = img[core(case, LV, "blood_left")], img[core(case, RV, "blood_right")]
    assert left.size > 20 and right.size > 20
    for values, tissue in ((left, "blood_left"), (right, "blood_right")):
        lo, hi = CARDIAC_HU[tissue][phase]
        assert lo - 15 <= np.median(values) <= hi + 15, (tissue, phase, np.median(values))
    if phase == "arterial":  # coronary CTA: the table puts the left heart above 300 HU; the drawn case says so
        assert np.median(left) >= 285 and case.info["means"]["blood_left"] > case.info["means"]["myocardium"]
    elif phase == "pulmonary":
        assert np.median(right) >= 235


def test_sternal_wires_come_with_streaks_and_stay_out_of_the_labels():
    wired = SMALL.without("fov")
    wired = SynthesisConfig(**{**wired.to_dict(), "metal_p": 1.0})
    case = synthesize(6, wired, kind="cardiac")
    _, lab = arrays(case)
    metal = case.tissue == T["metal"]
    assert case.info["metal"] is True and metal.sum() > 10 and not (metal & (lab > 0)).any()
    # in front of the heart: the wires' rows lie anterior (smaller y in LPS) to the heart's centre
    assert np.argwhere(metal)[:, 1].mean() < np.argwhere(lab > 0)[:, 1].mean()
    off = synthesize(6, SynthesisConfig(**{**wired.without("streaks").to_dict()}), kind="cardiac")
    assert off.info["metal"] is False and not (off.tissue == T["metal"]).any()


def test_bad_kind_or_a_phase_of_the_other_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="kind"):
        synthesize(0, SMALL, kind="brain")
    with pytest.raises(ConfigError, match="pulmonary"):
        synthesize(0, SMALL, phase="portal", kind="cardiac")
    with pytest.raises(ConfigError):
        synthesize(0, SMALL, phase="pulmonary")  # an abdominal case has no pulmonary timing
    with pytest.raises(ConfigError, match="kind"):
        write_synthetic_dataset("unused", 1, kind="brain")


def test_dvcl_synth_kind_cardiac_writes_an_mmwhs_data_set_that_prepare_accepts(tmp_path, capsys):
    from dvcl.cli.main import build_parser, main
    from dvcl.data.cache import Cache, prepare_dataset
    from dvcl.preprocessing.pipeline import PreprocessConfig

    synth = build_parser()._subparsers._group_actions[0].choices["synth"]
    kinds = next(a for a in synth._actions if a.dest == "kind")
    assert tuple(kinds.choices) == KINDS  # the CLI repeats the list (no heavy import for --help)

    out = tmp_path / "heart"
    assert main(["--progress", "none", "synth", str(out), "--count", "1", "--seed", "3", "--kind", "cardiac",
                 "--no-resolution"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["labeled"] == 1 and summary["preset"] == "mmwhs"
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["name"] == "synthetic_heart" and meta["synthesis"]["kind"] == "cardiac"
    label = sitk.ReadImage(str(out / "labeled" / "labels" / "synth_heart_000.nii.gz"))
    # the files hold the raw MM-WHS values, as the real data set's do; the preset maps them to 1..7
    assert set(np.unique(sitk.GetArrayViewFromImage(label))) == {0, *PRESETS["mmwhs"].raw_values}
    assert meta["raw_values"] == {str(raw): cid for raw, cid in PRESETS["mmwhs"].raw_values.items()}
    cache, counts = prepare_dataset(out, tmp_path / "cache", cfg=PreprocessConfig(spacing=(2.0, 2.0, 3.0)),
                                    workers=1)
    assert counts["processed"] == 1
    seg = np.load(Cache(tmp_path / "cache").label_path("synth_heart_000"))
    assert seg.max() == 7 and (seg == LV).any()
