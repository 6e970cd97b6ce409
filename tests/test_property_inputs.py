"""Property tests: random image headers, geometries and model.json fields never end in a traceback.

Whatever hypothesis draws, the reader, the preprocessing and the model-package validation either work or raise
a :class:`~dvcl.errors.DVCLError` (the CLI's one-line error, exit 2). Examples are bounded and derandomized so
the module runs in seconds and every run checks the same cases.
"""

from __future__ import annotations

import copy
import json
import math
import struct
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvcl.errors import DVCLError, ModelError
from dvcl.inference.model_package import default_model_dir, read_model_json
from dvcl.io.images import check_ct_intensities, read_image
from dvcl.networks.config import NetworkConfig
from dvcl.preprocessing.geometry import Grid
from dvcl.preprocessing.pipeline import PreprocessConfig, preprocess_image, restore_label

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

WEIRD_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([0.0, -0.0, -1.0, 1e-9, 1e9, 30.0, 1.25, 2.5]),
)


def _base_nifti(folder: Path, shape, dtype) -> Path:
    arr = (np.arange(int(np.prod(shape))) % 200 - 150).astype(dtype).reshape(shape)
    img = sitk.GetImageFromArray(arr)
    path = folder / "img.nii"
    sitk.WriteImage(img, str(path), False)
    return path


@st.composite
def nifti_headers(draw):
    """A small valid NIfTI whose header fields are then overwritten with drawn values, and maybe truncated."""
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=3, max_size=3)))
    dtype = draw(st.sampled_from([np.int16, np.uint8, np.float32, np.float64, np.int32]))
    patches = []
    if draw(st.booleans()):
        dims = draw(st.lists(st.integers(-3, 32767), min_size=8, max_size=8))
        dims[0] = draw(st.integers(-1, 8))
        patches.append((40, "<8h", dims))
    if draw(st.booleans()):
        patches.append((70, "<h", [draw(st.sampled_from([0, 2, 4, 8, 16, 64, 128, 256, 511, 512, 768, 1536,
                                                         2304, 7]))]))
    if draw(st.booleans()):
        patches.append((76, "<8f", draw(st.lists(WEIRD_FLOATS, min_size=8, max_size=8))))
    if draw(st.booleans()):
        patches.append((108, "<f", [draw(st.sampled_from([0.0, 352.0, -5.0, 1e12, 348.0, 100000.0]))]))
    if draw(st.booleans()):
        patches.append((252, "<2h", draw(st.lists(st.integers(-2, 5), min_size=2, max_size=2))))
    if draw(st.booleans()):
        patches.append((256, "<6f", draw(st.lists(WEIRD_FLOATS, min_size=6, max_size=6))))
    if draw(st.booleans()):
        patches.append((280, "<12f", draw(st.lists(WEIRD_FLOATS, min_size=12, max_size=12))))
    truncate = draw(st.one_of(st.none(), st.integers(0, 600)))
    return shape, dtype, patches, truncate


@SETTINGS
@given(nifti_headers())
def test_random_nifti_headers_never_traceback(case):
    shape, dtype, patches, truncate = case
    with tempfile.TemporaryDirectory() as tmp:
        path = _base_nifti(Path(tmp), shape, dtype)
        raw = bytearray(path.read_bytes())
        for offset, fmt, values in patches:
            raw[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
        if truncate is not None:
            raw = raw[:truncate]
        path.write_bytes(bytes(raw))
        _read_and_preprocess(path)


@st.composite
def nrrd_headers(draw):
    """A text NRRD header with drawn fields and a random amount of data."""
    dim = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(-1, 100000), min_size=dim, max_size=dim))
    lines = ["NRRD0004", f"type: {draw(st.sampled_from(['short', 'uchar', 'float', 'double', 'int', 'blob']))}",
             f"dimension: {dim}", "sizes: " + " ".join(str(s) for s in sizes),
             f"encoding: {draw(st.sampled_from(['raw', 'gzip', 'ascii']))}", "endian: little"]
    if draw(st.booleans()):
        lines.append("space: left-posterior-superior")
        vecs = [draw(st.lists(WEIRD_FLOATS, min_size=3, max_size=3)) for _ in range(dim)]
        lines.append("space directions: " + " ".join("(" + ",".join(repr(float(v)) for v in vec) + ")"
                                                     for vec in vecs))
    if draw(st.booleans()):
        lines.append("spacings: " + " ".join(repr(float(v)) for v in draw(
            st.lists(WEIRD_FLOATS, min_size=dim, max_size=dim))))
    data = draw(st.binary(min_size=0, max_size=400))
    return ("\n".join(lines) + "\n\n").encode() + data


@SETTINGS
@given(nrrd_headers())
def test_random_nrrd_headers_never_traceback(blob):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "img.nrrd"
        path.write_bytes(blob)
        _read_and_preprocess(path)


def _read_and_preprocess(path: Path) -> None:
    try:
        img = read_image(path)
        check_ct_intensities(img, path)
        preprocess_image(img, PreprocessConfig(spacing=(2.5, 2.5, 5.0)))
    except DVCLError:
        pass


@st.composite
def geometries(draw):
    size = tuple(draw(st.lists(st.integers(2, 6), min_size=3, max_size=3)))
    spacing = tuple(draw(st.lists(st.floats(0.05, 40.0), min_size=3, max_size=3)))
    origin = tuple(draw(st.lists(st.floats(-1e4, 1e4), min_size=3, max_size=3)))
    q = np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=4, max_size=4)))
    if np.linalg.norm(q) < 1e-3:
        q = np.array([1.0, 0.0, 0.0, 0.0])
    w, x, y, z = q / np.linalg.norm(q)
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    flips = np.diag(draw(st.lists(st.sampled_from([1.0, -1.0]), min_size=3, max_size=3)))
    return size, spacing, origin, tuple((rot @ flips).ravel())


@SETTINGS
@given(geometries())
def test_random_geometries_restore_onto_the_exact_input_grid(geo):
    size, spacing, origin, direction = geo
    arr = np.full(size[::-1], -100, np.int16)
    arr.flat[0] = -1000
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    try:
        net, record = preprocess_image(img, PreprocessConfig(spacing=(1.25, 1.25, 2.5)))
    except DVCLError:
        return
    assert np.all(np.isfinite(net))
    label = restore_label(np.zeros(net.shape, np.uint8), record)
    assert Grid.of(label) == Grid.of(img)


# ----------------------------------------------------------------------------------------------- model.json
BASE_META = json.loads((default_model_dir() / "model.json").read_text())
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.sampled_from([0, 1, 2, 3, 100000, -1]),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
              st.sampled_from(["LPI", "RAS", "XYZ", "", "LLL", "lpi"])),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=5), children,
                                                                                max_size=3)),
    max_leaves=8,
)
FIELDS = [("name",), ("description",), ("preset",), ("models",), ("labels",), ("labels", "1"),
          ("labels", "1", "color"), ("preprocessing",), ("preprocessing", "spacing"), ("preprocessing", "clip"),
          ("preprocessing", "orientation"), ("preprocessing", "percentiles"), ("network",),
          ("network", "channels"), ("network", "num_classes"), ("network", "in_channels"), ("network", "strides"),
          ("network", "norm"), ("network", "dropout"), ("network", "feature_dim"), ("inference",),
          ("inference", "roi"), ("inference", "stride"), ("format",), ("preprocessing", "extra")]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(FIELDS), JSON_VALUES), min_size=1, max_size=3))
def test_random_model_json_fields_raise_model_error_or_validate(mutations):
    meta = copy.deepcopy(BASE_META)
    for field, value in mutations:
        target = meta
        for key in field[:-1]:
            if not isinstance(target.get(key) if isinstance(target, dict) else None, dict):
                break
            target = target[key]
        else:
            target[field[-1]] = value
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.json").write_text(json.dumps(meta))
        try:
            out = read_model_json(tmp)
        except ModelError:
            return
    # what validates must build: no later traceback from these fields
    prep = PreprocessConfig.from_dict(out.get("preprocessing") or {})
    assert all(s > 0 and math.isfinite(s) for s in prep.spacing) and prep.clip[0] < prep.clip[1]
    assert 0 <= prep.percentiles[0] < prep.percentiles[1] <= 100
    cfg = NetworkConfig.from_dict(out["network"])
    assert cfg.num_classes >= 2 and max(cfg.channels) <= 1024
    assert math.prod(out["inference"]["roi"]) <= 128 * 256 * 256


def test_named_model_json_failures_from_the_issue(tmp_path):
    """The issue's examples, each one ModelError (it used to be a traceback)."""
    cases = {
        "spacing 0": ("preprocessing", "spacing", [0, 1.25, 2.5]),
        "spacing negative": ("preprocessing", "spacing", [-1, 1.25, 2.5]),
        "spacing two elements": ("preprocessing", "spacing", [1.25, 2.5]),
        "spacing a string": ("preprocessing", "spacing", "1.25"),
        "clip reversed": ("preprocessing", "clip", [325, -325]),
        "orientation XYZ": ("preprocessing", "orientation", "XYZ"),
        "percentiles above 100": ("preprocessing", "percentiles", [0.5, 150]),
        "channels 100000": ("network", "channels", [100000, 200000]),
        "roi 1024x2048x2048": ("inference", "roi", [1024, 2048, 2048]),
    }
    for what, (section, key, value) in cases.items():
        meta = copy.deepcopy(BASE_META)
        meta[section][key] = value
        folder = tmp_path / what.replace(" ", "_")
        folder.mkdir()
        (folder / "model.json").write_text(json.dumps(meta))
        try:
            read_model_json(folder)
        except ModelError as exc:
            assert "np.float64" not in str(exc) and "\n" not in str(exc), what
        else:
            raise AssertionError(f"{what}: accepted")
