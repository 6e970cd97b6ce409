"""The paper's preprocessing on the real abdomen CT, and its exact inverse for every orientation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from dvcl.io.images import read_image, read_label
from dvcl.preprocessing import (
    GeometryRecord,
    PreprocessConfig,
    preprocess_image,
    preprocess_label,
    restore_label,
    restore_probabilities,
)
from dvcl.preprocessing.pipeline import normalise_percentiles, orient_canonical
from dvcl.presets import get_preset

FLARE = get_preset("flare22")


def _dice_per_label(a: np.ndarray, b: np.ndarray, labels) -> dict:
    out = {}
    for c in labels:
        s = (a == c).sum() + (b == c).sum()
        if s:
            out[c] = 2.0 * np.logical_and(a == c, b == c).sum() / s
    return out


def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx


def _variants(img: sitk.Image, lab: sitk.Image):
    """The file as it is (RAS), re-oriented copies (LPS, PIR), and an oblique copy."""
    yield "RAS", img, lab
    for code in ("LPS", "PIR"):
        yield code, sitk.DICOMOrient(img, code), sitk.DICOMOrient(lab, code)
    obl_dir = tuple((_rotation(np.deg2rad(10), np.deg2rad(25)) @ np.array(img.GetDirection()).reshape(3, 3)).ravel())
    oi, ol = sitk.Image(img), sitk.Image(lab)
    oi.SetDirection(obl_dir)
    ol.SetDirection(obl_dir)
    yield "oblique", oi, ol


@pytest.fixture(scope="module")
def real_case(abdomen_image, abdomen_label):
    img = read_image(abdomen_image)
    lab = read_label(abdomen_label, img, FLARE.allowed_raw_values)
    return img, lab


def test_preprocess_real_ct(real_case):
    img, lab = real_case
    arr, rec = preprocess_image(img)
    # spacing 1.25 x 1.25 x 2.5 (x, y, z), canonical LPI direction
    assert rec.resampled.spacing == (1.25, 1.25, 2.5)
    assert np.allclose(rec.resampled.direction, [1, 0, 0, 0, 1, 0, 0, 0, -1])
    assert arr.dtype == np.float32 and arr.shape == tuple(reversed(rec.resampled.size))
    # physical extent covered: 122 * 3 mm -> ceil(121*3/1.25)+1 = 292 voxels
    assert rec.resampled.size == (292, 241, 135)
    # percentile normalisation: p0.5 -> 0, p99.5 -> 1
    lo, hi = np.percentile(arr, [0.5, 99.5])
    assert lo == pytest.approx(0.0, abs=1e-3) and hi == pytest.approx(1.0, abs=1e-3)
    seg = preprocess_label(lab, rec)
    assert seg.shape == arr.shape and seg.dtype == np.uint8
    assert set(np.unique(seg)) == set(np.unique(sitk.GetArrayViewFromImage(lab)))
    # the liver (1) lies on the patient's right: small x index in LPI (x towards Left)
    zz, yy, xx = np.nonzero(seg == 1)
    z2, y2, x2 = np.nonzero(seg == 3)  # spleen: patient's left
    assert xx.mean() < x2.mean()


def test_clip_happens_before_normalisation():
    arr = np.full((8, 8, 8), 2000, np.int16)
    arr[:4] = -1000
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.25, 1.25, 2.5))
    out, _ = preprocess_image(img, PreprocessConfig())
    # after clipping to [-325, 325] the two plateaus normalise to exactly 0 and 1
    assert out.min() == pytest.approx(0.0) and out.max() == pytest.approx(1.0)


def test_normalise_percentiles_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 100, 100_000).astype(np.float32)
    p0, p1 = np.percentile(x, [0.5, 99.5])
    y = normalise_percentiles(x.copy())
    assert np.allclose(y, (x - p0) / (p1 - p0), atol=1e-5)


@pytest.mark.parametrize("variant", ["RAS", "LPS", "PIR", "oblique"])
def test_label_round_trip_exact_geometry(real_case, variant):
    img0, lab0 = real_case
    name, img, lab = next(v for v in _variants(img0, lab0) if v[0] == variant)
    arr, rec = preprocess_image(img)
    seg = preprocess_label(lab, rec)
    back = restore_label(seg, rec)
    assert back.GetSize() == lab.GetSize()
    assert back.GetSpacing() == lab.GetSpacing()
    assert back.GetOrigin() == lab.GetOrigin()
    assert back.GetDirection() == lab.GetDirection()
    dice = _dice_per_label(sitk.GetArrayViewFromImage(lab), sitk.GetArrayViewFromImage(back), range(1, 14))
    assert len(dice) == 12  # esophagus is absent from this scan
    assert min(dice.values()) > 0.99, dice


def test_reoriented_copies_preprocess_identically(real_case):
    img, _ = real_case
    ref, _ = preprocess_image(img)
    for code in ("LPS", "PIR", "LAI"):
        other, rec = preprocess_image(sitk.DICOMOrient(img, code))
        assert other.shape == ref.shape
        assert np.allclose(other, ref, atol=1e-4), code


def test_restore_probabilities_matches_geometry(real_case):
    img, lab = real_case
    arr, rec = preprocess_image(img)
    seg = preprocess_label(lab, rec)
    prob = np.stack([(seg == c).astype(np.float32) for c in range(14)])
    back = restore_probabilities(prob, rec)
    assert back.GetSize() == lab.GetSize() and back.GetDirection() == lab.GetDirection()
    dice = _dice_per_label(sitk.GetArrayViewFromImage(lab), sitk.GetArrayViewFromImage(back), range(1, 14))
    assert min(dice.values()) > 0.95, dice


def test_geometry_record_json_round_trip(real_case):
    img, _ = real_case
    _, rec = preprocess_image(img)
    assert GeometryRecord.from_dict(rec.to_dict()) == rec


def test_restore_rejects_wrong_shape(real_case):
    img, _ = real_case
    _, rec = preprocess_image(img)
    with pytest.raises(ValueError, match="network grid"):
        restore_label(np.zeros((3, 3, 3), np.uint8), rec)


def test_orientation_is_lpi(real_case):
    img, _ = real_case
    o = orient_canonical(img)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(o.GetDirection()) == "LPI"


@pytest.mark.parametrize("pixel", [sitk.sitkInt16, sitk.sitkInt32])
def test_integer_inputs_preprocess_like_float_inputs(real_case, pixel):
    """Integer CT is oriented and clamped before the float cast (less memory traffic): bit-identical."""
    img, _ = real_case
    cfg = PreprocessConfig(spacing=(2.5, 2.5, 5.0))
    as_int, rec_int = preprocess_image(sitk.Cast(img, pixel), cfg)
    as_float, rec_float = preprocess_image(sitk.Cast(img, sitk.sitkFloat32), cfg)
    assert rec_int == rec_float
    np.testing.assert_array_equal(as_int, as_float)
