"""The fast restore (dvcl.preprocessing.restore) against the exact per-class probability resampling, on the real
abdomen CT in every orientation (oblique included), on a finer-than-network grid, on a phantom, on a 3-slice DICOM
grid (network axis of size 1) and on a record whose grids are not axis-aligned (fallback)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from dvcl.io.images import read_image, read_label
from dvcl.phantoms import make_abdominal_phantom
from dvcl.preprocessing import (
    GeometryRecord,
    Grid,
    PreprocessConfig,
    preprocess_image,
    preprocess_label,
    restore_probabilities,
)
from dvcl.preprocessing.restore import axis_maps, resample_linear, restore_argmax
from dvcl.presets import get_preset

FLARE = get_preset("flare22")
#: The shipped models' network spacing (x, y, z mm); the paper's finer grid only makes the tests slower.
CFG = PreprocessConfig(spacing=(2.5, 2.5, 5.0))


def _rotation(ax: float, az: float) -> np.ndarray:
    cx, sx, cz, sz = np.cos(ax), np.sin(ax), np.cos(az), np.sin(az)
    return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


def _soft_probabilities(seg: np.ndarray, num_classes: int = 14, seed: int = 0, noise: float = 0.6) -> np.ndarray:
    """Network-like probabilities from a label map: softmax of smoothed one-hot logits plus smooth noise, so
    borders are soft, several classes compete near junctions and exact ties are rare."""
    rng = np.random.default_rng(seed)
    logits = np.empty((num_classes,) + seg.shape, np.float32)
    for c in range(num_classes):
        logits[c] = 6.0 * gaussian_filter((seg == c).astype(np.float32), 1.0)
        logits[c] += noise * gaussian_filter(rng.standard_normal(seg.shape).astype(np.float32), 1.5) * 3
    logits -= logits.max(0, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(0, keepdims=True)


def _agreement(exact: sitk.Image, fast: sitk.Image):
    a, b = sitk.GetArrayViewFromImage(exact), sitk.GetArrayViewFromImage(fast)
    fg = (a > 0) | (b > 0)
    return float((a == b).mean()), float((a[fg] == b[fg]).mean())


def _check(img: sitk.Image, prob: np.ndarray, rec: GeometryRecord) -> None:
    exact = restore_probabilities(prob, rec)
    fast = restore_argmax(prob, rec)
    assert Grid.of(fast) == Grid.of(img)  # size, spacing, origin and direction, bit for bit
    assert fast.GetPixelID() == sitk.sitkUInt8
    voxel, foreground = _agreement(exact, fast)
    assert voxel >= 0.9999 and foreground >= 0.999, (voxel, foreground)


@pytest.fixture(scope="module")
def real_case(abdomen_image, abdomen_label):
    img = read_image(abdomen_image)
    return img, read_label(abdomen_label, img, FLARE.allowed_raw_values)


@pytest.mark.parametrize("variant", ["RAS", "LPS", "PIR", "oblique"])
def test_fast_restore_equals_exact_on_real_ct(real_case, variant):
    img, lab = real_case
    if variant == "oblique":
        direction = tuple((_rotation(np.deg2rad(10), np.deg2rad(25)) @ np.reshape(img.GetDirection(), (3, 3))).ravel())
        img, lab = sitk.Image(img), sitk.Image(lab)
        img.SetDirection(direction)
        lab.SetDirection(direction)
    elif variant != "RAS":
        img, lab = sitk.DICOMOrient(img, variant), sitk.DICOMOrient(lab, variant)
    _, rec = preprocess_image(img, CFG)
    assert axis_maps(rec) is not None  # preprocessing always yields axis-aligned grids, oblique or not
    _check(img, _soft_probabilities(preprocess_label(lab, rec, CFG), seed=1), rec)


def test_fast_restore_on_a_grid_finer_than_the_network(real_case):
    """An upsampled crop of the real CT (1 x 0.8 x 1.5 mm): many original voxels per network cell, as on a
    512 x 512 x 300 scan."""
    img, lab = real_case
    crop_img, crop_lab = img[20:80, 20:70, 30:70], lab[20:80, 20:70, 30:70]
    spacing = (1.0, 0.8, 1.5)
    size = [int(n * s / t) for n, s, t in zip(crop_img.GetSize(), crop_img.GetSpacing(), spacing)]
    fine = sitk.Resample(crop_img, size, sitk.Transform(), sitk.sitkLinear, crop_img.GetOrigin(), spacing,
                         crop_img.GetDirection(), -1000.0, sitk.sitkFloat32)
    fine_lab = sitk.Resample(crop_lab, fine, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    _, rec = preprocess_image(fine, CFG)
    _check(fine, _soft_probabilities(preprocess_label(fine_lab, rec, CFG), seed=2), rec)


def test_fast_restore_on_a_phantom():
    image, reference = make_abdominal_phantom(seed=4242)
    _, rec = preprocess_image(image, CFG)
    _check(image, _soft_probabilities(preprocess_label(reference, rec, CFG), seed=3), rec)


def test_fast_restore_with_a_single_network_slice(dicom_dir):
    """One real axial DICOM slice gives one network slice: the padded-axis path."""
    image = read_image(dicom_dir)[:, :, 1:2]
    _, rec = preprocess_image(image, CFG)
    assert 1 in rec.resampled.size
    seg = np.zeros(tuple(reversed(rec.resampled.size)), np.uint8)
    seg[..., 100:300, 150:350] = 1
    seg[..., 200:260, 200:280] = 3
    _check(image, _soft_probabilities(seg, seed=4), rec)


def test_fast_restore_falls_back_when_grids_are_not_axis_aligned(real_case):
    img, lab = real_case
    _, rec = preprocess_image(img, CFG)
    tilted = Grid(rec.resampled.size, rec.resampled.spacing, rec.resampled.origin,
                  tuple((_rotation(0.0, np.deg2rad(20)) @ np.reshape(rec.resampled.direction, (3, 3))).ravel()))
    odd = GeometryRecord(original=rec.original, resampled=tilted)
    assert axis_maps(odd) is None
    seg = preprocess_label(lab, rec, CFG)
    _check(img, _soft_probabilities(seg, seed=5), odd)


def test_resample_linear_matches_simpleitk(real_case):
    img, _ = real_case
    direction = tuple((_rotation(np.deg2rad(-15), np.deg2rad(40)) @ np.reshape(img.GetDirection(), (3, 3))).ravel())
    img = sitk.Image(img)
    img.SetDirection(direction)
    _, rec = preprocess_image(sitk.DICOMOrient(img, "PIR"), CFG)
    rng = np.random.default_rng(6)
    field = gaussian_filter(rng.random(tuple(reversed(rec.resampled.size))).astype(np.float32), 2.0)
    ours = resample_linear(field, rec)
    net = rec.resampled.apply(sitk.GetImageFromArray(field))
    o = rec.original
    ref = sitk.Resample(net, list(o.size), sitk.Transform(), sitk.sitkLinear, o.origin, o.spacing, o.direction,
                        0.0, sitk.sitkFloat32)
    assert Grid.of(ours) == o and ours.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(ours), sitk.GetArrayViewFromImage(ref), atol=1e-5)


def test_restore_rejects_wrong_shapes(real_case):
    img, _ = real_case
    _, rec = preprocess_image(img, CFG)
    with pytest.raises(ValueError):
        restore_argmax(np.zeros((14, 3, 3, 3), np.float32), rec)
    with pytest.raises(ValueError):
        restore_argmax(np.zeros((3, 3, 3), np.float32), rec)
    with pytest.raises(ValueError):
        resample_linear(np.zeros((3, 3, 3), np.float32), rec)
