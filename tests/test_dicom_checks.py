"""DICOM series geometry: a gappy, duplicated, uneven, tilted or mixed series is refused, or resampled onto a
uniform grid only when the user accepts it explicitly (``--accept-nonuniform``).

Every series is written here, slice by slice, with SimpleITK's ImageFileWriter and real DICOM tags
(ImagePositionPatient, ImageOrientationPatient, SeriesInstanceUID, ...), then read back through GDCM exactly
as a user's folder would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from dvcl.cli.main import main
from dvcl.errors import DicomSeriesError, ImageReadError
from dvcl.io.dicom import analyse_series, read_slice_infos
from dvcl.io.images import keep_locale, list_dicom_series, read_image

SIZE = 16
PIXEL = 0.8
UID_A = "1.2.826.0.1.3680043.2.1125.15.1"
UID_B = "1.2.826.0.1.3680043.2.1125.15.2"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def slice_values(z: float) -> np.ndarray:
    """A slice whose values encode its true position: HU = -600 + 10 * z (mm) plus an in-plane ramp."""
    ramp = np.add.outer(np.arange(SIZE), np.arange(SIZE)) * 2
    return (-600 + 10 * z + ramp).astype(np.int16)


def write_series(folder: Path, positions: Sequence[Tuple[float, float, float]], uid: str = UID_A,
                 orientation: Sequence[float] = AXIAL, values=None) -> Path:
    """Write one DICOM file per position (CT, int16, rescale 1/0) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i, pos in enumerate(positions):
        arr = slice_values(pos[2]) if values is None else values(i, pos)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((PIXEL, PIXEL))
        tags = {
            "0008|0060": "CT", "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{uid}.{i + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.15", "0020|000e": uid, "0020|0013": str(i + 1),
            "0020|0032": "\\".join(f"{p:.4f}" for p in pos),
            "0020|0037": "\\".join(f"{o:.6f}" for o in orientation),
            "0028|1052": "0", "0028|1053": "1",
        }
        for k, v in tags.items():
            img.SetMetaData(k, v)
        writer.SetFileName(str(folder / f"{uid.rsplit('.', 1)[-1]}_{i:03d}.dcm"))
        with keep_locale():  # GDCM's writer switches the process to the C locale as its reader does
            writer.Execute(img)
    return folder


def axial(zs: Sequence[float]):
    return [(0.0, 0.0, float(z)) for z in zs]


def test_regular_series_reads_on_its_true_grid(tmp_path):
    img = read_image(write_series(tmp_path / "ok", axial([0, 2, 4, 6, 8])))
    assert img.GetSize() == (SIZE, SIZE, 5)
    assert img.GetSpacing() == pytest.approx((PIXEL, PIXEL, 2.0))
    arr = sitk.GetArrayFromImage(img)
    assert arr[:, 0, 0].tolist() == [-600, -580, -560, -540, -520]


def test_missing_slice_refused_then_accepted_on_a_uniform_grid(tmp_path):
    folder = write_series(tmp_path / "gap", axial([0, 2, 4, 8, 10]))  # z = 6 missing
    with pytest.raises(DicomSeriesError, match="missing slice"):
        read_image(folder)
    img = read_image(folder, accept_nonuniform=True)
    assert img.GetSize() == (SIZE, SIZE, 6) and img.GetSpacing()[2] == pytest.approx(2.0)
    col = sitk.GetArrayFromImage(img)[:, 0, 0]
    # the missing slice is interpolated from its neighbours at 4 and 8 mm: -600 + 10 * 6
    assert col == pytest.approx([-600, -580, -560, -540, -520, -500], abs=1e-3)


def test_the_issue_series_is_not_read_on_an_invented_grid(tmp_path):
    """z = 0, 1, 2, 3.5, 6, 10 used to be read as 6 slices at a uniform 2.0 mm."""
    folder = write_series(tmp_path / "uneven", axial([0, 1, 2, 3.5, 6, 10]))
    with pytest.raises(DicomSeriesError, match="non-uniform slice spacing") as err:
        read_image(folder)
    assert "np.float64" not in str(err.value) and "--accept-nonuniform" in str(err.value)
    img = read_image(folder, accept_nonuniform=True)
    spacing = img.GetSpacing()[2]
    assert img.GetSize()[2] == round(10 / spacing) + 1
    # every output slice sits where it claims: its value is the linear interpolation of the true positions
    col = sitk.GetArrayFromImage(img)[:, 0, 0]
    z = np.arange(img.GetSize()[2]) * spacing
    assert col == pytest.approx(-600 + 10 * z, abs=1e-2)


def test_duplicate_slice_refused_even_when_accepting(tmp_path):
    folder = write_series(tmp_path / "dup", axial([0, 2, 2, 4, 6]))
    for accept in (False, True):
        with pytest.raises(DicomSeriesError, match="duplicate slice position"):
            read_image(folder, accept_nonuniform=accept)


def test_tilted_stack_refused_then_resampled(tmp_path):
    # gantry tilt: each slice shifts 0.4 mm along y per 2 mm in z (about 11 degrees)
    positions = [(0.0, 0.2 * z, z) for z in (0.0, 2.0, 4.0, 6.0)]
    folder = write_series(tmp_path / "tilt", positions, values=lambda i, pos: np.full((SIZE, SIZE), -500 + 100 * i,
                                                                                      np.int16))
    with pytest.raises(DicomSeriesError, match="gantry tilt"):
        read_image(folder)
    img = read_image(folder, accept_nonuniform=True)
    assert img.GetSize() == (SIZE, SIZE, 4)
    assert np.allclose(np.array(img.GetDirection()).reshape(3, 3), np.eye(3))
    arr = sitk.GetArrayFromImage(img)
    # inside the overlap every slice keeps its own value (the shift is corrected in-plane, not blended in z)
    assert arr[:, SIZE // 2, SIZE // 2].tolist() == pytest.approx([-500, -400, -300, -200])


def test_mixed_series_refused_and_explicit_choice_reads_one(tmp_path):
    folder = tmp_path / "mixed"
    write_series(folder, axial([0, 2, 4, 6]), uid=UID_A)
    write_series(folder, axial([0, 3, 6]), uid=UID_B)
    assert sorted(len(v) for v in list_dicom_series(folder).values()) == [3, 4]
    with pytest.raises(DicomSeriesError, match="2 DICOM series"):
        read_image(folder)
    assert read_image(folder, series_uid=UID_B).GetSize() == (SIZE, SIZE, 3)
    assert read_image(folder, series_uid=UID_A).GetSpacing()[2] == pytest.approx(2.0)


def test_mixed_orientation_and_single_slice_refused(tmp_path):
    folder = write_series(tmp_path / "ori", axial([0, 2]))
    write_series(folder, [(0.0, 0.0, 4.0)], orientation=(0, 1, 0, 1, 0, 0), values=lambda i, p: slice_values(4.0))
    infos = read_slice_infos(sorted(str(p) for p in folder.iterdir()))
    with pytest.raises(DicomSeriesError, match="different orientations"):
        analyse_series(infos, str(folder))
    one = write_series(tmp_path / "one", axial([0]))
    with pytest.raises(ImageReadError, match="at least 2"):
        read_image(one)


def test_cli_refuses_gappy_series_with_one_line_and_exit_2(tmp_path, capsys):
    folder = write_series(tmp_path / "gap", axial([0, 2, 4, 8, 10]))
    out = tmp_path / "out.nii.gz"
    rc = main(["-q", "segment", str(folder), "-o", str(out), "--model", "phantom_demo", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "missing slice" in err[0] and err[0].startswith("dvcl: error:")
    assert not out.exists()


def test_cli_accepts_gappy_series_explicitly(tmp_path, capsys):
    folder = write_series(tmp_path / "gap", axial([0, 2, 4, 8, 10]))
    out = tmp_path / "out.nii.gz"
    rc = main(["segment", str(folder), "-o", str(out), "--model", "phantom_demo", "--device", "cpu",
               "--accept-nonuniform"])
    assert rc == 0
    lab = sitk.ReadImage(str(out))
    assert lab.GetSize() == (SIZE, SIZE, 6) and lab.GetSpacing()[2] == pytest.approx(2.0)
