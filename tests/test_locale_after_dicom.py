"""Reading DICOM must leave the process's locale alone.

GDCM switches LC_CTYPE to "C" while it reads a series; without restoring it, every later text file opened
without an explicit encoding is ASCII, and a report or sidecar with a non-ASCII character ("±", an organ name
in another language) fails after a DICOM input, in `dvcl segment` and in the test process alike.
"""

from __future__ import annotations

import locale
from pathlib import Path

from dvcl.io.dicom_names import series_case_name
from dvcl.io.images import is_dicom_dir, list_dicom_series, read_image

DICOM = Path(__file__).parent / "data" / "dicom_ct_3slice" / "dicom"


def test_dicom_reading_keeps_the_locale(tmp_path):
    before = (locale.getencoding(), locale.setlocale(locale.LC_ALL))
    assert is_dicom_dir(DICOM)
    assert len(list_dicom_series(DICOM)) == 1
    img = read_image(DICOM)
    assert img.GetSize()[2] == 3
    assert series_case_name(DICOM)
    assert (locale.getencoding(), locale.setlocale(locale.LC_ALL)) == before
    out = tmp_path / "report.md"
    out.write_text("Dice 84.1 ± 0.1\n")  # the default encoding, as a careless writer would use it
    assert out.read_bytes().decode("utf-8") == "Dice 84.1 ± 0.1\n"
