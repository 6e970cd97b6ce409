"""A .nii.gz is checked for completeness through its gzip trailer first (cheap), and inflated in full only when
the trailer does not record the expected length: every truncation must still be refused."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from dvcl.errors import ImageReadError
from dvcl.io.images import _gzip_isize, read_image, write_image


@pytest.fixture()
def nifti_gz(tmp_path):
    arr = np.random.default_rng(0).integers(-1000, 1000, (12, 40, 40)).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    return write_image(img, tmp_path / "ct.nii.gz"), arr


def test_intact_file_reads_and_trailer_records_the_length(nifti_gz):
    path, arr = nifti_gz
    assert _gzip_isize(path) == 352 + arr.nbytes  # NIfTI-1 single file: 352-byte header, then the voxels
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(path)), arr)


@pytest.mark.parametrize("keep", [0.999, 0.9, 0.5, 0.05])
def test_every_truncation_is_refused(nifti_gz, tmp_path, keep):
    path, _ = nifti_gz
    raw = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: max(40, int(len(raw) * keep))])
    with pytest.raises(ImageReadError, match="truncated|corrupt"):
        read_image(cut)
