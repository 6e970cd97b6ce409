"""Image IO on the real CT test data and on every kind of bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from dvcl.errors import (
    DimensionError,
    GeometryMismatchError,
    ImageReadError,
    LabelValueError,
    NotCTError,
    OutputExistsError,
)
from dvcl.io.images import (
    check_ct_intensities,
    image_suffix,
    list_dicom_series,
    read_image,
    read_label,
    strip_suffix,
    write_image,
)
from dvcl.presets import get_preset


def test_read_real_nifti(abdomen_image):
    img = read_image(abdomen_image)
    assert img.GetSize() == (122, 101, 112)
    assert img.GetSpacing() == pytest.approx((3.0, 3.0, 3.0))
    arr = sitk.GetArrayViewFromImage(img)
    assert arr.min() == -1207 and arr.max() == 3382
    check_ct_intensities(img, abdomen_image)  # real CT passes


def test_read_real_chest_cta(chest_image):
    img = read_image(chest_image)
    assert img.GetSize() == (120, 126, 164)
    assert img.GetSpacing() == pytest.approx((1.5, 1.5, 1.5))
    # LPS: identity direction
    assert np.allclose(img.GetDirection(), np.eye(3).ravel())


def test_read_real_dicom_series(dicom_dir, data_dir):
    series = list_dicom_series(dicom_dir)
    assert len(series) == 1 and len(next(iter(series.values()))) == 3
    img = read_image(dicom_dir)
    assert img.GetSize() == (512, 512, 3)
    assert img.GetSpacing()[0] == pytest.approx(0.81, abs=0.01)
    lab = read_label(data_dir / "dicom_ct_3slice" / "label.nii.gz", img, allowed_values=[0, 1, 2, 3])
    assert set(np.unique(sitk.GetArrayViewFromImage(lab))) <= {0, 1, 2, 3}
    uid = next(iter(series))
    assert read_image(dicom_dir, series_uid=uid).GetSize() == (512, 512, 3)
    with pytest.raises(ImageReadError, match="SeriesInstanceUID"):
        read_image(dicom_dir, series_uid="1.2.3")


def test_formats_round_trip(tmp_path, abdomen_image):
    img = read_image(abdomen_image)
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        out = write_image(img, tmp_path / f"x{ext}")
        back = read_image(out)
        assert back.GetSize() == img.GetSize()
        assert np.allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-4)
        assert np.allclose(back.GetDirection(), img.GetDirection(), atol=1e-6)
        assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(img))


def test_suffix_helpers():
    assert image_suffix("a/b/case_1.nii.gz") == ".nii.gz"
    assert image_suffix("x.seg.nrrd") == ".seg.nrrd"
    assert strip_suffix("case_1.nii.gz") == "case_1"
    assert image_suffix("notes.txt") == ""


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.nii.gz")


def test_corrupt_file(tmp_path, abdomen_image):
    bad = tmp_path / "corrupt.nii.gz"
    bad.write_bytes(abdomen_image.read_bytes()[:5000])
    with pytest.raises(ImageReadError, match="corrupt.nii.gz"):
        read_image(bad)


def test_non_image_file(tmp_path):
    txt = tmp_path / "report.txt"
    txt.write_text("hello")
    with pytest.raises(ImageReadError, match="not a supported image"):
        read_image(txt)
    fake = tmp_path / "fake.nii.gz"
    fake.write_text("not an image")
    with pytest.raises(ImageReadError, match="fake.nii.gz"):
        read_image(fake)


def test_empty_dicom_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no DICOM series"):
        read_image(tmp_path / "empty")


def test_2d_and_4d_rejected(tmp_path):
    p2 = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.Image([32, 32], sitk.sitkInt16), str(p2))
    with pytest.raises(DimensionError, match="2D"):
        read_image(p2)
    p4 = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkInt16), str(p4))
    with pytest.raises(DimensionError, match="4D"):
        read_image(p4)
    pv = tmp_path / "vector.nrrd"
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3), str(pv))
    with pytest.raises(DimensionError, match="components"):
        read_image(pv)


def test_label_geometry_mismatch(tmp_path, abdomen_image, abdomen_label):
    img = read_image(abdomen_image)
    lab = sitk.ReadImage(str(abdomen_label))
    shifted = sitk.Image(lab)
    shifted.SetOrigin(tuple(np.array(lab.GetOrigin()) + np.array([5.0, 0, 0])))
    sitk.WriteImage(shifted, str(tmp_path / "shifted.nii.gz"))
    with pytest.raises(GeometryMismatchError, match="shifted.nii.gz.*origin"):
        read_label(tmp_path / "shifted.nii.gz", img)
    spaced = sitk.Image(lab)
    spaced.SetSpacing((3.0, 3.0, 2.0))
    sitk.WriteImage(spaced, str(tmp_path / "spaced.nii.gz"))
    with pytest.raises(GeometryMismatchError, match="spacing"):
        read_label(tmp_path / "spaced.nii.gz", img)
    cropped = lab[:, :, :50]
    sitk.WriteImage(cropped, str(tmp_path / "cropped.nii.gz"))
    with pytest.raises(GeometryMismatchError, match="size"):
        read_label(tmp_path / "cropped.nii.gz", img)
    tilted = sitk.Image(lab)
    tilted.SetDirection((1, 0, 0, 0, 0, 1, 0, 1, 0))
    sitk.WriteImage(tilted, str(tmp_path / "tilted.nii.gz"))
    with pytest.raises(GeometryMismatchError, match="direction"):
        read_label(tmp_path / "tilted.nii.gz", img)
    # within tolerance: a tiny float difference in the origin is accepted
    nudged = sitk.Image(lab)
    nudged.SetOrigin(tuple(np.array(lab.GetOrigin()) + 1e-5))
    sitk.WriteImage(nudged, str(tmp_path / "nudged.nii.gz"))
    read_label(tmp_path / "nudged.nii.gz", img)


def test_label_values_outside_preset(tmp_path, abdomen_image, abdomen_label):
    img = read_image(abdomen_image)
    lab = sitk.ReadImage(str(abdomen_label))
    arr = sitk.GetArrayFromImage(lab)
    arr[0, 0, 0] = 42
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(lab)
    sitk.WriteImage(bad, str(tmp_path / "bad.nii.gz"))
    flare = get_preset("flare22")
    with pytest.raises(LabelValueError, match="bad.nii.gz.*42.*0..13"):
        read_label(tmp_path / "bad.nii.gz", img, flare.allowed_raw_values)
    ok = read_label(abdomen_label, img, flare.allowed_raw_values)
    assert ok.GetPixelID() == sitk.sitkUInt8


def test_mmwhs_raw_values_remapped(tmp_path):
    mm = get_preset("mmwhs")
    arr = np.zeros((4, 4, 8), np.int16)
    for i, raw in enumerate([205, 420, 500, 550, 600, 820, 850]):
        arr[0, 0, i] = raw
    img = sitk.GetImageFromArray(np.full(arr.shape, -500, np.int16))
    lab = sitk.GetImageFromArray(arr)
    sitk.WriteImage(lab, str(tmp_path / "mm.nii.gz"))
    out = sitk.GetArrayFromImage(read_label(tmp_path / "mm.nii.gz", img, mm.allowed_raw_values, mm.raw_values))
    assert out[0, 0, :7].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert out[0, 0, 7] == 0
    arr[1, 1, 1] = 3  # a class id where raw values are expected
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "mm_bad.nii.gz"))
    with pytest.raises(LabelValueError, match="3"):
        read_label(tmp_path / "mm_bad.nii.gz", img, mm.allowed_raw_values, mm.raw_values)


def test_not_ct_intensities():
    zeros = sitk.Image([16, 16, 16], sitk.sitkInt16)
    with pytest.raises(NotCTError, match="constant"):
        check_ct_intensities(zeros, "zeros.nii.gz")
    mr = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 2000, (16, 16, 16)).astype(np.int16))
    with pytest.raises(NotCTError, match="MR"):
        check_ct_intensities(mr, "mr.nii.gz")


def test_write_refuses_overwrite(tmp_path, abdomen_image):
    img = read_image(abdomen_image)
    out = write_image(img, tmp_path / "o.nii.gz")
    before = out.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_image(img[:10, :10, :10], out)
    assert out.read_bytes() == before
    write_image(img[:10, :10, :10], out, overwrite=True)
    assert read_image(out).GetSize() == (10, 10, 10)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_dicom_dir_copy_is_read(tmp_path, dicom_dir):
    dst = tmp_path / "series"
    shutil.copytree(dicom_dir, dst)
    assert read_image(dst).GetSize() == (512, 512, 3)
