"""Synthetic CT phantoms: determinism, anatomy (checked in physical LPS space), HU, geometry, data set, CLI."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from dvcl.cli.main import main
from dvcl.errors import ConfigError, OutputExistsError
from dvcl.io.datasets import discover_dataset
from dvcl.io.images import read_image, read_label, same_geometry
from dvcl.phantoms import case_seed, make_abdominal_phantom, make_cardiac_phantom, write_phantom_dataset
from dvcl.phantoms.shapes import DIRECTIONS as GRID_DIRECTIONS
from dvcl.phantoms.shapes import GridDraw
from dvcl.presets import PRESETS

FLARE = {name: cid for cid, name in PRESETS["flare22"].labels.items()}
MMWHS = {name: cid for cid, name in PRESETS["mmwhs"].labels.items()}
DIRECTIONS = tuple(GRID_DIRECTIONS)  # LPS, RAS, LPI, RAI


def arrays(img: sitk.Image, lab: sitk.Image):
    return sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(lab)


def centroid(img: sitk.Image, mask: np.ndarray) -> np.ndarray:
    """Physical (LPS, mm) centroid of a boolean (z, y, x) mask on ``img``'s grid."""
    zyx = np.argwhere(mask).mean(axis=0)
    return np.array(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in zyx[::-1]]))


def spine_centroid(img: sitk.Image) -> np.ndarray:
    """Vertebral column = the largest connected bone component (ribs are separate arcs)."""
    bone = sitk.GetArrayFromImage(img) > 300
    cc, n = ndimage.label(bone)
    assert n > 0, "no bone in the phantom"
    sizes = np.bincount(cc.ravel())[1:]
    return centroid(img, cc == 1 + int(np.argmax(sizes)))


# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def abd_by_direction():
    """One native-phase patient stored with each of the four direction matrices."""
    return {d: make_abdominal_phantom(21, size=(112, 112, 48), direction=d, phase="native") for d in DIRECTIONS}


@pytest.fixture(scope="module")
def abd_by_phase():
    return {p: make_abdominal_phantom(4, size=(112, 112, 48), phase=p) for p in ("native", "arterial", "portal")}


@pytest.fixture(scope="module")
def cardiac():
    return make_cardiac_phantom(2, phase="arterial")


# ---------------------------------------------------------------------------------------------------------------
def test_same_seed_same_phantom_and_different_seeds_differ():
    a_img, a_lab = make_abdominal_phantom(5, size=(96, 96, 40))
    b_img, b_lab = make_abdominal_phantom(5, size=(96, 96, 40))
    assert np.array_equal(sitk.GetArrayFromImage(a_img), sitk.GetArrayFromImage(b_img))
    assert np.array_equal(sitk.GetArrayFromImage(a_lab), sitk.GetArrayFromImage(b_lab))
    assert a_img.GetSpacing() == b_img.GetSpacing() and a_img.GetOrigin() == b_img.GetOrigin()
    c_img, c_lab = make_abdominal_phantom(6, size=(96, 96, 40))
    assert not np.array_equal(sitk.GetArrayFromImage(a_lab), sitk.GetArrayFromImage(c_lab))

    c1, _ = make_cardiac_phantom(3, size=(96, 96, 40))
    c2, _ = make_cardiac_phantom(3, size=(96, 96, 40))
    assert np.array_equal(sitk.GetArrayFromImage(c1), sitk.GetArrayFromImage(c2))


def test_seeds_vary_size_spacing_and_direction():
    imgs = [make_cardiac_phantom(s)[0] for s in range(4)]
    sizes = {im.GetSize() for im in imgs}
    spacings = {tuple(round(v, 4) for v in im.GetSpacing()) for im in imgs}
    assert len(sizes) >= 3 and len(spacings) >= 3
    for im in imgs:
        nx, ny, nz = im.GetSize()
        assert 96 <= nx <= 160 and 96 <= ny <= 160 and 40 <= nz <= 80
        sx, sy, _ = im.GetSpacing()
        assert 0.7 <= sx <= 1.5 and sx == sy
    # the direction drawn by a seed is one of the four; several seeds give several
    dirs = {GridDraw(np.random.default_rng(s)).direction for s in range(8)}
    assert dirs <= set(DIRECTIONS) and len(dirs) >= 2


def test_image_and_label_types_and_geometry(abd_by_phase, cardiac):
    for img, lab in [*abd_by_phase.values(), cardiac]:
        assert img.GetPixelID() == sitk.sitkInt16
        assert lab.GetPixelID() == sitk.sitkUInt8
        assert same_geometry(img, lab) is None
        assert img.GetDimension() == 3


def test_all_abdominal_organs_present(abd_by_phase, abd_by_direction):
    for img, lab in [*abd_by_phase.values(), *abd_by_direction.values()]:
        counts = np.bincount(sitk.GetArrayFromImage(lab).ravel(), minlength=14)
        assert counts.size == 14, "labels beyond the FLARE22 table"
        voxel_ml = np.prod(img.GetSpacing()) / 1000.0
        assert (counts[1:] >= 50).sum() >= 8
        assert (counts[1:] > 0).sum() == 13
        # the liver is the largest organ, adrenals are among the smallest
        assert counts[FLARE["liver"]] == counts[1:].max()
        assert counts[FLARE["liver"]] * voxel_ml > 20


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_abdominal_anatomy_in_physical_space(abd_by_direction, direction):
    img, lab = abd_by_direction[direction]
    seg = sitk.GetArrayFromImage(lab)
    c = {name: centroid(img, seg == cid) for name, cid in FLARE.items()}
    x, y, z = 0, 1, 2  # LPS: x to the patient's left, y posterior, z superior
    assert c["liver"][x] < c["spleen"][x]  # liver on the patient's right
    assert c["right kidney"][x] < c["left kidney"][x]
    assert c["inferior vena cava"][x] < c["aorta"][x]
    assert c["gallbladder"][x] < c["aorta"][x]
    assert c["stomach"][x] > c["aorta"][x]
    assert c["right adrenal gland"][x] < c["left adrenal gland"][x]
    for kidney in ("right kidney", "left kidney"):
        assert c[kidney][y] > c["aorta"][y]  # kidneys posterior, beside the spine
    assert c["pancreas"][y] < c["aorta"][y]  # pancreas in front of the aorta
    assert c["liver"][z] > c["right kidney"][z]
    assert c["right adrenal gland"][z] > c["right kidney"][z]
    assert c["left adrenal gland"][z] > c["left kidney"][z]
    assert c["esophagus"][z] > c["pancreas"][z]
    spine = spine_centroid(img)
    sep = c["left kidney"][x] - c["right kidney"][x]
    assert sep > 0
    assert c["aorta"][y] < spine[y]  # aorta anterior to the vertebra ...
    assert abs(c["aorta"][x] - spine[x]) < 0.4 * sep  # ... near the midline
    assert c["right kidney"][x] < spine[x] < c["left kidney"][x]


def test_anatomy_does_not_depend_on_direction(abd_by_direction):
    """The same patient on flipped grids: identical labels once reoriented, identical physical centroids."""
    ref_img, ref_lab = abd_by_direction["LPS"]
    ref = sitk.GetArrayFromImage(ref_lab)
    for d in ("RAS", "LPI", "RAI"):
        img, lab = abd_by_direction[d]
        assert img.GetDirection() != ref_img.GetDirection()
        back = sitk.DICOMOrient(lab, "LPS")
        assert np.allclose(back.GetOrigin(), ref_lab.GetOrigin(), atol=1e-3)
        agree = np.mean(sitk.GetArrayFromImage(back) == ref)
        assert agree > 0.999, f"{d}: only {agree:.4f} of voxels agree"
        for cid in (FLARE["liver"], FLARE["aorta"]):
            assert np.allclose(centroid(img, sitk.GetArrayFromImage(lab) == cid),
                               centroid(ref_img, ref == cid), atol=0.5)


def test_abdominal_hounsfield_units(abd_by_phase):
    med = {}
    for phase, (img, lab) in abd_by_phase.items():
        a, seg = arrays(img, lab)
        med[phase] = {name: float(np.median(a[seg == cid])) for name, cid in FLARE.items()}
        assert 30 <= med[phase]["liver"] <= 90
        assert 20 <= med[phase]["spleen"] <= 140
        for kidney in ("right kidney", "left kidney"):
            assert 15 <= med[phase][kidney] <= 230
        corner = a[:3, :3, :3]  # air outside the body
        assert np.median(corner) < -900
        assert a.max() >= 400  # vertebrae / ribs
        body = a > -500
        assert np.any((a > -130) & (a < -70) & body)  # fat
    assert 20 <= med["native"]["aorta"] <= 80
    assert med["arterial"]["aorta"] >= 150
    assert 90 <= med["portal"]["aorta"] <= 300
    assert med["portal"]["inferior vena cava"] >= 100
    assert med["arterial"]["aorta"] > med["native"]["aorta"] + 80
    assert med["portal"]["right kidney"] > med["native"]["right kidney"] + 60


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError):
        make_abdominal_phantom(0, phase="delayed")
    with pytest.raises(ConfigError):
        make_cardiac_phantom(0, phase="portal")
    with pytest.raises(ConfigError):
        make_abdominal_phantom(0, direction="XYZ")
    with pytest.raises(ConfigError):
        make_abdominal_phantom(0, direction=[1, 0, 0, 0, 2, 0, 0, 0, 1])  # not orthonormal
    with pytest.raises(ConfigError):
        make_cardiac_phantom(0, size=(0, 10, 10))
    with pytest.raises(ConfigError):
        make_cardiac_phantom(0, spacing=(1.0, 1.0, -2.0))


def test_oblique_grid_keeps_the_anatomy():
    """A grid rotated 25 degrees about z (gantry-tilt-like obliquity) still shows the liver on the right."""
    th = np.deg2rad(25.0)
    direction = [np.cos(th), -np.sin(th), 0.0, np.sin(th), np.cos(th), 0.0, 0.0, 0.0, 1.0]
    img, lab = make_abdominal_phantom(9, size=(112, 112, 48), direction=direction)
    assert np.allclose(img.GetDirection(), direction)
    seg = sitk.GetArrayFromImage(lab)
    liver, spleen = centroid(img, seg == FLARE["liver"]), centroid(img, seg == FLARE["spleen"])
    aorta, kidney = centroid(img, seg == FLARE["aorta"]), centroid(img, seg == FLARE["left kidney"])
    assert liver[0] < spleen[0] and kidney[1] > aorta[1]


def test_generation_is_fast():
    make_abdominal_phantom(1, size=(64, 64, 32))  # warm-up (imports, caches)
    start = time.process_time()
    make_abdominal_phantom(7, size=(128, 128, 64))
    cpu = time.process_time() - start
    assert cpu < 2.5, f"one 128x128x64 phantom took {cpu:.2f} s of CPU"


# ---------------------------------------------------------------------------------------------------------------
def test_cardiac_structures(cardiac):
    img, lab = cardiac
    a, seg = arrays(img, lab)
    counts = np.bincount(seg.ravel(), minlength=8)
    assert counts.size == 8 and np.all(counts[1:] >= 100)
    c = {name: centroid(img, seg == cid) for name, cid in MMWHS.items()}
    x, y, z = 0, 1, 2
    assert c["left ventricle"][x] > c["right atrium"][x]
    assert c["right ventricle"][y] < c["left atrium"][y]  # RV anterior, LA posterior
    assert c["left atrium"][y] > c["left ventricle"][y]
    assert c["ascending aorta"][z] > c["left ventricle"][z]
    assert c["pulmonary artery"][z] > c["right ventricle"][z]
    # the myocardium wraps the LV cavity (except at the open valve plane)
    lv = seg == MMWHS["left ventricle"]
    shell = ndimage.binary_dilation(lv) & ~lv
    assert np.mean(seg[shell] == MMWHS["left ventricle myocardium"]) > 0.5
    myo = float(np.median(a[seg == MMWHS["left ventricle myocardium"]]))
    assert 60 <= myo <= 160
    assert np.median(a[lv]) > myo + 100  # contrast-filled cavity (arterial timing)
    lung = (a > -950) & (a < -700)
    assert lung.mean() > 0.05


def test_cardiac_raw_values_map_to_class_ids():
    img_c, lab_c = make_cardiac_phantom(8)
    img_r, lab_r = make_cardiac_phantom(8, raw_values=True)
    raw = sitk.GetArrayFromImage(lab_r)
    assert lab_r.GetPixelID() == sitk.sitkUInt16
    assert set(np.unique(raw).tolist()) == {0, 205, 420, 500, 550, 600, 820, 850}
    lut = np.zeros(851, np.uint8)
    for value, cid in PRESETS["mmwhs"].raw_values.items():
        lut[value] = cid
    assert np.array_equal(lut[raw], sitk.GetArrayFromImage(lab_c))
    assert np.array_equal(sitk.GetArrayFromImage(img_r), sitk.GetArrayFromImage(img_c))


# ---------------------------------------------------------------------------------------------------------------
def test_write_dataset_layout_and_case_stability(tmp_path):
    a = write_phantom_dataset(tmp_path / "a", 1, 1, kind="abdomen", seed=3)
    b = write_phantom_dataset(tmp_path / "b", 2, 0, kind="abdomen", seed=3)
    assert a["labeled"] == ["phantom_abd_000"] and a["unlabeled"] == ["phantom_abd_u000"]
    assert b["labeled"] == ["phantom_abd_000", "phantom_abd_001"]
    root = tmp_path / "a"
    assert (root / "labeled" / "images" / "phantom_abd_000.nii.gz").is_file()
    assert (root / "labeled" / "labels" / "phantom_abd_000.nii.gz").is_file()
    assert (root / "unlabeled" / "phantom_abd_u000.nii.gz").is_file()
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["preset"] == "flare22" and meta["channel_names"] == {"0": "CT"}
    assert meta["file_ending"] == ".nii.gz" and meta["numTraining"] == 1
    assert meta["labels"]["background"] == 0 and meta["labels"]["liver"] == 1 and meta["labels"]["left kidney"] == 13
    # case 0 is the same phantom whatever the number of cases; written files round-trip exactly
    img_a = sitk.ReadImage(str(root / "labeled" / "images" / "phantom_abd_000.nii.gz"))
    img_b = sitk.ReadImage(str(tmp_path / "b" / "labeled" / "images" / "phantom_abd_000.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(img_a), sitk.GetArrayFromImage(img_b))
    assert case_seed(3, "abdomen", "labeled", 0) != case_seed(3, "abdomen", "unlabeled", 0)
    assert case_seed(3, "abdomen", "labeled", 0) != case_seed(4, "abdomen", "labeled", 0)
    # the data set reader of the product finds it, labels pass its checks
    spec = discover_dataset(root)
    assert [c.case_id for c in spec.labeled] == ["phantom_abd_000"]
    assert [c.case_id for c in spec.unlabeled] == ["phantom_abd_u000"]
    image = read_image(spec.labeled[0].image)
    read_label(spec.labeled[0].label, image, PRESETS["flare22"].allowed_raw_values)


def test_write_dataset_refuses_to_overwrite_and_validates(tmp_path):
    write_phantom_dataset(tmp_path, 0, 1, kind="cardiac", seed=1)
    target = tmp_path / "unlabeled" / "phantom_card_u000.nii.gz"
    before = target.stat().st_mtime_ns
    with pytest.raises(OutputExistsError):
        write_phantom_dataset(tmp_path, 1, 1, kind="cardiac", seed=1)
    assert target.stat().st_mtime_ns == before
    assert not (tmp_path / "labeled" / "images" / "phantom_card_000.nii.gz").exists()  # nothing written
    with pytest.raises(ConfigError):
        write_phantom_dataset(tmp_path / "x", 0, 0)
    with pytest.raises(ConfigError):
        write_phantom_dataset(tmp_path / "x", 1, 0, kind="brain")
    with pytest.raises(ConfigError):
        write_phantom_dataset(tmp_path / "x", 1, 0, kind="abdomen", raw_values=True)


def test_cli_writes_layout_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "ph"
    args = ["--progress", "none", "phantom", str(out), "--kind", "cardiac", "--labeled", "1", "--unlabeled", "1",
            "--seed", "5"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["labeled"] == 1 and summary["unlabeled"] == 1 and summary["preset"] == "mmwhs"
    label = out / "labeled" / "labels" / "phantom_card_000.nii.gz"
    assert label.is_file() and (out / "unlabeled" / "phantom_card_u000.nii.gz").is_file()
    assert json.loads((out / "dataset.json").read_text())["preset"] == "mmwhs"
    before = label.stat().st_mtime_ns
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert label.stat().st_mtime_ns == before
    # overwrite replaces the data set: fewer cases than before leaves no stale phantom behind
    args[args.index("--unlabeled") + 1] = "0"
    assert main(args[:-2] + ["--seed", "6", "--overwrite"]) == 0
    assert label.stat().st_mtime_ns != before
    assert not (out / "unlabeled" / "phantom_card_u000.nii.gz").exists()
    assert json.loads((out / "dataset.json").read_text())["numUnlabeled"] == 0


def test_the_cardiac_arch_has_unlabeled_branches_and_veins_above_it(monkeypatch):
    """Above the aortic arch a chest CT shows contrast-filled vessels that MM-WHS does not label (the arch's three
    branches, the brachiocephalic veins). The phantom paints them, unlabeled: the label map is the same with and
    without them, and the mediastinum above the arch holds several ml more bright voxels with them."""
    from dvcl.phantoms import cardiac

    def paint(seed):
        image, label = cardiac.make_cardiac_phantom(seed, size=(150, 150, 150), spacing=(2.0, 2.0, 2.0),
                                                    direction="LPS", phase="arterial", noise_sd=0.0)
        img, lab = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label)
        z = image.GetOrigin()[2] + image.GetSpacing()[2] * np.arange(img.shape[0])
        x = image.GetOrigin()[0] + image.GetSpacing()[0] * np.arange(img.shape[2])
        arch_top = z[np.nonzero((lab == cardiac.AO).any(axis=(1, 2)))[0].max()]
        above = (z > arch_top + 15)[:, None, None] & (np.abs(x - x.mean()) < 45)[None, None, :]
        centre = np.zeros(img.shape[1], bool)
        centre[img.shape[1] // 2 - 20:img.shape[1] // 2 + 20] = True  # the middle 80 mm front to back
        bright = (img > 200) & (lab == 0) & above & centre[None, :, None]
        return lab, int(bright.sum())

    for seed in (1, 2):
        with_vessels = paint(seed)
        with monkeypatch.context() as m:
            m.setattr(cardiac, "_paint_neck_vessels", lambda *args: None)
            without = paint(seed)
        assert np.array_equal(with_vessels[0], without[0]), "the neck vessels carry no label"
        # at least 3 ml of contrast-filled tubes (2 mm voxels) that were not there (the SVC's jet may be)
        assert with_vessels[1] - without[1] >= 400, (seed, with_vessels[1], without[1])
