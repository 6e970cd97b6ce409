"""Run every bad input of the robustness campaign through the real `dvcl` CLI and write docs/bad_inputs.md.

Each case builds its input in a scratch folder (real files through SimpleITK, real DICOM slices, real model
packages and caches), runs ``dvcl --progress json -q <command> ...`` in this process (the same ``main`` the
console script calls), and records what happened: the exit status, the one ``dvcl: error:`` line, whether a
JSON ``error`` event was emitted, and whether an output that must not exist was written. Nothing in the table
is typed by hand; rerun it after a change:

    .venv/bin/python tools/bad_input_table.py            # writes docs/bad_inputs.md
    .venv/bin/python tools/bad_input_table.py --only dicom   # a subset, printed only

Where this process may mount file systems (root), disk-full and read-only cases use a real tmpfs; otherwise they
use chmod and are marked as such.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "backend"))
sys.path.insert(0, str(ROOT / "tests"))

from dvcl.cli.main import main  # noqa: E402
from dvcl.inference.model_package import default_model_dir  # noqa: E402

DATA = ROOT / "tests" / "data"
OUT_MD = ROOT / "docs" / "bad_inputs.md"


@dataclass
class Case:
    category: str
    name: str
    expected: str  # "exit 2", "exit 0", "exit 0, warning"
    build: Callable[[Path], List[str]]  # scratch folder -> CLI arguments (after the global options)
    must_not_exist: Callable[[Path], List[Path]] = lambda w: []
    check: Optional[Callable[[Path], str]] = None  # extra observation appended to the outcome
    fsize_limit: Optional[int] = None  # bytes: RLIMIT_FSIZE while the command runs (a disk full mid-write)


CASES: List[Case] = []


def case(category: str, name: str, expected: str, must_not_exist=None, check=None, fsize_limit=None):
    def deco(fn):
        CASES.append(Case(category, name, expected, fn, must_not_exist or (lambda w: []), check, fsize_limit))
        return fn
    return deco


# ----------------------------------------------------------------------------------------------- builders
def ct_array(shape=(12, 24, 24), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = np.full(shape, -100.0, np.float32)
    arr[0] = -1000.0
    arr[shape[0] // 4: 3 * shape[0] // 4, 5:15, 5:15] = 60.0
    return arr + rng.normal(0, 5, shape).astype(np.float32)


def write(arr: np.ndarray, path: Path, spacing=(2.5, 2.5, 5.0), dtype=np.int16) -> Path:
    img = sitk.GetImageFromArray(arr.astype(dtype))
    if img.GetDimension() == 3:
        img.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


def ct(w: Path, name="ct.nii.gz") -> Path:
    return write(ct_array(), w / "in" / name)


def seg(*args: str) -> List[str]:
    return ["segment", *args, "--model", "phantom_demo", "--device", "cpu"]


def out_file(w: Path) -> List[Path]:
    return [w / "out" / "seg.nii.gz"]


def dicom_series(folder: Path, zs, uid="1.2.826.0.1.3680043.2.1125.15.1", shift_y=0.0) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_dicom_checks import write_series

    return write_series(folder, [(0.0, shift_y * z, float(z)) for z in zs], uid=uid)


def model_with(w: Path, section: str, key: Optional[str], value) -> Path:
    src = default_model_dir()
    dst = w / "model"
    shutil.copytree(src, dst)
    meta = json.loads((dst / "model.json").read_text())
    if key is None:
        meta[section] = value
    else:
        meta[section][key] = value
    (dst / "model.json").write_text(json.dumps(meta))
    return dst


def tiny_dataset(w: Path, n: int = 3) -> Path:
    from dvcl_test_cases import write_tiny_case as _write_case

    rng = np.random.default_rng(0)
    root = w / "data"
    for i in range(n):
        _write_case(root / "labeled", f"case{i}", rng, True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "box": 1, "ball": 2}}))
    return root


def tiny_cache(w: Path) -> Path:
    from dvcl.data.cache import prepare_dataset

    cache, _ = prepare_dataset(tiny_dataset(w, 5), w / "cache", workers=1)
    return cache.root


TRAIN = ["--method", "supervised", "--profile", "quick", "--labeled-fraction", "0.5", "--iterations", "2",
         "--val-every", "2", "--patch", "8", "16", "16", "--workers", "0", "--device", "cpu",
         "--set", "val_roi=[8,16,16]", "--set", "network.channels=[4,8]", "--set", "batch_labeled=1"]


# --------------------------------------------------------------------------------- mounts (root) or chmod
_MOUNTS: List[Path] = []


def tmpfs(where: Path, size: str, read_only: bool = False) -> Optional[Path]:
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        return None
    _MOUNTS.append(where)
    return where


def read_only(where: Path) -> Path:
    if os.geteuid() == 0 and tmpfs(where, "1m", read_only=True):
        return where
    where.mkdir(parents=True, exist_ok=True)
    where.chmod(0o555)
    return where


# ----------------------------------------------------------------------------------------------- cases
@case("image", "input file missing", "exit 2", out_file)
def _(w):
    return seg(str(w / "nope.nii.gz"), "-o", str(w / "out" / "seg.nii.gz"))


@case("image", "empty (0-byte) .nii.gz", "exit 2", out_file)
def _(w):
    (w / "e.nii.gz").write_bytes(b"")
    return seg(str(w / "e.nii.gz"), "-o", str(w / "out" / "seg.nii.gz"))


@case("image", "truncated .nii.gz (first half)", "exit 2", out_file)
def _(w):
    p = ct(w)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return seg(str(p), "-o", str(w / "out" / "seg.nii.gz"))


@case("image", "truncated .nii (uncompressed, data cut)", "exit 2", out_file)
def _(w):
    p = ct(w, "ct.nii")
    p.write_bytes(p.read_bytes()[:2000])
    return seg(str(p), "-o", str(w / "out" / "seg.nii.gz"))


@case("image", "corrupt gzip stream (bytes flipped)", "exit 2", out_file)
def _(w):
    p = ct(w)
    raw = bytearray(p.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0xFF
    p.write_bytes(bytes(raw))
    return seg(str(p), "-o", str(w / "out" / "seg.nii.gz"))


@case("image", "text file named .nii.gz", "exit 2", out_file)
def _(w):
    (w / "t.nii.gz").write_text("not an image\n")
    return seg(str(w / "t.nii.gz"), "-o", str(w / "out" / "seg.nii.gz"))


@case("image", "unsupported extension (.txt)", "exit 2", out_file)
def _(w):
    (w / "ct.txt").write_text("1 2 3")
    return seg(str(w / "ct.txt"), "-o", str(w / "out" / "seg.nii.gz"))


@case("image", "2D image", "exit 2", out_file)
def _(w):
    return seg(str(write(ct_array()[0], w / "in" / "2d.nii.gz")), "-o", str(w / "out" / "seg.nii.gz"))


@case("image", "4D image", "exit 2", out_file)
def _(w):
    vol = sitk.GetImageFromArray(ct_array().astype(np.int16))
    sitk.WriteImage(sitk.JoinSeries([vol, vol]), str(w / "4d.nii.gz"))
    return seg(str(w / "4d.nii.gz"), "-o", str(w / "out" / "seg.nii.gz"))


@case("image", "RGB (vector) volume", "exit 2", out_file)
def _(w):
    img = sitk.GetImageFromArray(np.zeros((4, 8, 8, 3), np.uint8), isVector=True)
    sitk.WriteImage(img, str(w / "rgb.nrrd"))
    return seg(str(w / "rgb.nrrd"), "-o", str(w / "out" / "seg.nii.gz"))


@case("image", "one-slice volume (24 x 24 x 1)", "exit 2", out_file)
def _(w):
    return seg(str(write(ct_array((1, 24, 24)), w / "in" / "one.nii.gz")), "-o", str(w / "out" / "seg.nii.gz"))


@case("image", "tiny .nii.gz (header only) claiming 2048 x 2048 x 1024", "exit 2", out_file,
      check=lambda w: f"file of {(w / 'in' / 'big.nii.gz').stat().st_size} bytes")
def _(w):
    p = write(ct_array((4, 4, 4)), w / "in" / "big.nii.gz")
    hdr = bytearray(sitk_header_bytes(p))
    hdr[40:56] = struct.pack("<8h", 3, 2048, 2048, 1024, 1, 1, 1, 1)
    import gzip

    p.write_bytes(gzip.compress(bytes(hdr) + b"\0" * 4))
    return seg(str(p), "-o", str(w / "out" / "seg.nii.gz"))


def sitk_header_bytes(p: Path) -> bytes:
    import gzip

    return gzip.open(p).read(352)


@case("image", "header spacing 30 mm on a 512 x 512 x 40 scan (resampling explosion)", "exit 2", out_file)
def _(w):
    arr = np.full((40, 512, 512), -100, np.int16)
    arr[0] = -1000
    return seg(str(write(arr, w / "in" / "coarse.nii.gz", spacing=(30.0, 30.0, 30.0))), "-o",
               str(w / "out" / "seg.nii.gz"))


@case("image", "NIfTI header with infinite sform (ITK never returns)", "exit 2", out_file)
def _(w):
    p = write(ct_array(), w / "in" / "inf.nii", dtype=np.int16)
    raw = bytearray(p.read_bytes())
    raw[254:256] = struct.pack("<h", 1)
    raw[280:328] = struct.pack("<12f", float("inf"), 0, 0, 0, 0, 1e17, 0, 0, 0, 0, 1, 0)
    p.write_bytes(bytes(raw))
    return seg(str(p), "-o", str(w / "out" / "seg.nii.gz"))


@case("image", "NIfTI header with voxel size 0", "exit 2", out_file)
def _(w):
    p = write(ct_array(), w / "in" / "zero.nii", dtype=np.int16)
    raw = bytearray(p.read_bytes())
    raw[80:84] = struct.pack("<f", 0.0)
    p.write_bytes(bytes(raw))
    return seg(str(p), "-o", str(w / "out" / "seg.nii.gz"))


@case("intensity", "all-zero volume", "exit 2", out_file)
def _(w):
    return seg(str(write(np.zeros((12, 24, 24)), w / "in" / "z.nii.gz")), "-o", str(w / "out" / "seg.nii.gz"))


@case("intensity", "all-NaN volume (.mha; ITK's NIfTI reader turns NaN into 0)", "exit 2", out_file)
def _(w):
    return seg(str(write(np.full((12, 24, 24), np.nan), w / "in" / "n.mha", dtype=np.float32)), "-o",
               str(w / "out" / "seg.nii.gz"))


@case("intensity", "CT with some NaN voxels (.mha)", "exit 2", out_file)
def _(w):
    arr = ct_array()
    arr[5, 5:8, 5:8] = np.nan
    return seg(str(write(arr, w / "in" / "somenan.mha", dtype=np.float32)), "-o", str(w / "out" / "seg.nii.gz"))


@case("intensity", "constant volume (-100 everywhere)", "exit 2", out_file)
def _(w):
    return seg(str(write(np.full((12, 24, 24), -100.0), w / "in" / "c.nii.gz")), "-o", str(w / "out" / "seg.nii.gz"))


@case("intensity", "MR-like range (0..800, no air or fat)", "exit 2", out_file)
def _(w):
    arr = np.random.default_rng(0).uniform(0, 800, (12, 24, 24))
    return seg(str(write(arr, w / "in" / "mr.nii.gz")), "-o", str(w / "out" / "seg.nii.gz"))


@case("intensity", "MR-like range with --force", "exit 0, warning")
def _(w):
    arr = np.random.default_rng(0).uniform(0, 800, (12, 24, 24))
    return seg(str(write(arr, w / "in" / "mr.nii.gz")), "-o", str(w / "out" / "seg.nii.gz"), "--force")


@case("image", "non-ASCII path (Ünïcødé/日本)", "exit 0")
def _(w):
    return seg(str(write(ct_array(), w / "Ünïcødé" / "日本.nii.gz")), "-o", str(w / "out" / "日本.nii.gz"))


@case("dicom", "empty folder", "exit 2", out_file)
def _(w):
    (w / "empty").mkdir()
    return seg(str(w / "empty"), "-o", str(w / "out" / "seg.nii.gz"))


@case("dicom", "missing slice (z = 0, 2, 4, 8, 10)", "exit 2", out_file)
def _(w):
    return seg(str(dicom_series(w / "d", [0, 2, 4, 8, 10])), "-o", str(w / "out" / "seg.nii.gz"))


@case("dicom", "missing slice with --accept-nonuniform", "exit 0, warning")
def _(w):
    return seg(str(dicom_series(w / "d", [0, 2, 4, 8, 10])), "-o", str(w / "out" / "seg.nii.gz"),
               "--accept-nonuniform")


@case("dicom", "non-uniform spacing (z = 0, 1, 2, 3.5, 6, 10)", "exit 2", out_file)
def _(w):
    return seg(str(dicom_series(w / "d", [0, 1, 2, 3.5, 6, 10])), "-o", str(w / "out" / "seg.nii.gz"))


@case("dicom", "duplicate slice position", "exit 2", out_file)
def _(w):
    return seg(str(dicom_series(w / "d", [0, 2, 2, 4, 6])), "-o", str(w / "out" / "seg.nii.gz"))


@case("dicom", "duplicate slice with --accept-nonuniform", "exit 2", out_file)
def _(w):
    return seg(str(dicom_series(w / "d", [0, 2, 2, 4, 6])), "-o", str(w / "out" / "seg.nii.gz"),
               "--accept-nonuniform")


@case("dicom", "tilted stack (gantry tilt 11 degrees)", "exit 2", out_file)
def _(w):
    return seg(str(dicom_series(w / "d", [0, 2, 4, 6], shift_y=0.2)), "-o", str(w / "out" / "seg.nii.gz"))


@case("dicom", "two series in one folder", "exit 2", out_file)
def _(w):
    dicom_series(w / "d", [0, 2, 4, 6], uid="1.2.826.0.1.3680043.2.1125.15.1")
    dicom_series(w / "d", [0, 3, 6], uid="1.2.826.0.1.3680043.2.1125.15.2")
    return seg(str(w / "d"), "-o", str(w / "out" / "seg.nii.gz"))


@case("output", "segment a folder into itself with --overwrite", "exit 2",
      check=lambda w: "input intact" if _reads(w / "in" / "ct.nii.gz") else "INPUT DESTROYED")
def _(w):
    ct(w)
    return seg(str(w / "in"), "-o", str(w / "in"), "--overwrite")


def _reads(p: Path) -> bool:
    try:
        return sitk.ReadImage(str(p)).GetPixelID() == sitk.sitkInt16
    except RuntimeError:
        return False


@case("output", "output exists, no --overwrite", "exit 2",
      check=lambda w: "old output kept" if (w / "out" / "seg.nii.gz").read_bytes() == b"old" else "REPLACED")
def _(w):
    (w / "out").mkdir()
    (w / "out" / "seg.nii.gz").write_bytes(b"old")
    return seg(str(ct(w)), "-o", str(w / "out" / "seg.nii.gz"))


@case("output", "several inputs, the last one corrupt", "exit 2",
      must_not_exist=lambda w: [w / "out" / "a.nii.gz", w / "out" / "b.nii.gz"])
def _(w):
    a, b = ct(w, "a.nii.gz"), ct(w, "b.nii.gz")
    (w / "in" / "z.nii.gz").write_bytes(b"\x1f\x8b garbage")
    return seg(str(a), str(b), str(w / "in" / "z.nii.gz"), "-o", str(w / "out"))


@case("output", "several inputs, the last one not CT", "exit 2",
      must_not_exist=lambda w: [w / "out" / "a.nii.gz"])
def _(w):
    a = ct(w, "a.nii.gz")
    z = write(np.zeros((12, 24, 24)), w / "in" / "zz.nii.gz")
    return seg(str(a), str(z), "-o", str(w / "out"))


@case("output", "read-only output folder", "exit 2", out_file)
def _(w):
    return seg(str(ct(w)), "-o", str(read_only(w / "ro") / "seg.nii.gz"))


@case("output", "disk full (256 KiB tmpfs)", "exit 2")
def _(w):
    small = tmpfs(w / "small", "256k") if os.geteuid() == 0 else None
    target = (small or Path("/dev/full")) / "seg.nii.gz"
    return seg(str(ct(w)), "-o", str(target))


@case("output", "output path is an existing file, several inputs", "exit 2")
def _(w):
    (w / "o.txt").write_text("x")
    return seg(str(ct(w, "a.nii.gz")), str(ct(w, "b.nii.gz")), "-o", str(w / "o.txt"))


@case("memory", "--max-memory 0.001 GiB", "exit 2", out_file)
def _(w):
    return seg(str(ct(w)), "-o", str(w / "out" / "seg.nii.gz"), "--max-memory", "0.001")


@case("memory", "--max-memory 0.3 GiB (work split to fit)", "exit 0, warning")
def _(w):
    return seg(str(ct(w)), "-o", str(w / "out" / "seg.nii.gz"), "--max-memory", "0.3")


for _label, _section, _key, _value in [
    ("spacing 0", "preprocessing", "spacing", [0, 2.5, 5.0]),
    ("spacing negative", "preprocessing", "spacing", [-2.5, 2.5, 5.0]),
    ("spacing with two elements", "preprocessing", "spacing", [2.5, 5.0]),
    ("spacing a string", "preprocessing", "spacing", "2.5"),
    ("clip window reversed", "preprocessing", "clip", [325, -325]),
    ("orientation 'XYZ'", "preprocessing", "orientation", "XYZ"),
    ("percentiles outside [0, 100]", "preprocessing", "percentiles", [-5, 150]),
    ("channels 100000", "network", "channels", [100000, 200000, 300000, 400000]),
    ("inference.roi 1024 x 2048 x 2048", "inference", "roi", [1024, 2048, 2048]),
    ("labels a list", "labels", None, ["liver"]),
    ("models empty", "models", None, []),
]:
    def _make(label=_label, section=_section, key=_key, value=_value):
        @case("model", f"model.json: {label}", "exit 2", out_file)
        def _(w):
            return seg(str(ct(w)), "-o", str(w / "out" / "seg.nii.gz"))[:-4] + [
                "--model", str(model_with(w, section, key, value)), "--device", "cpu"]
    _make()


@case("model", "model.json not valid JSON", "exit 2", out_file)
def _(w):
    m = model_with(w, "name", None, "x")
    (m / "model.json").write_text("{not json")
    return ["segment", str(ct(w)), "-o", str(w / "out" / "seg.nii.gz"), "--model", str(m)]


@case("model", "weights file truncated", "exit 2", out_file)
def _(w):
    m = model_with(w, "name", None, "x")
    p = m / "weights.safetensors"
    p.write_bytes(p.read_bytes()[:1000])
    return ["segment", str(ct(w)), "-o", str(w / "out" / "seg.nii.gz"), "--model", str(m)]


@case("prepare", "nnU-Net dataset.json invalid JSON", "exit 2")
def _(w):
    root = w / "nn"
    write(ct_array(), root / "imagesTr" / "c_0000.nii.gz")
    (root / "dataset.json").write_text("{broken")
    return ["prepare", str(root), "-o", str(w / "cache")]


@case("prepare", "nnU-Net dataset.json is a list", "exit 2")
def _(w):
    root = w / "nn"
    write(ct_array(), root / "imagesTr" / "c_0000.nii.gz")
    (root / "dataset.json").write_text("[1, 2]")
    return ["prepare", str(root), "-o", str(w / "cache")]


@case("prepare", "label map on another grid", "exit 2")
def _(w):
    root = tiny_dataset(w, 1)
    lab = root / "labeled" / "labels" / "case0.nii.gz"
    write(np.zeros((12, 20, 24)), lab, spacing=(1.25, 1.25, 2.5), dtype=np.uint8)
    return ["prepare", str(root), "-o", str(w / "cache"), "--workers", "1"]


@case("prepare", "label values outside the label table", "exit 2")
def _(w):
    root = tiny_dataset(w, 1)
    lab = root / "labeled" / "labels" / "case0.nii.gz"
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(lab)))
    arr[0, 0, 0] = 9
    write(arr, lab, spacing=(1.25, 1.25, 2.5), dtype=np.uint8)
    return ["prepare", str(root), "-o", str(w / "cache"), "--workers", "1"]


@case("cache", "corrupt cache splits.json (prepare repairs)", "exit 0")
def _(w):
    c = tiny_cache(w)
    (c / "splits.json").write_text("{oops")
    return ["prepare", str(w / "data"), "-o", str(c), "--workers", "1"]


@case("cache", "corrupt cache dataset.json (prepare repairs)", "exit 0")
def _(w):
    c = tiny_cache(w)
    (c / "dataset.json").write_text("{oops")
    return ["prepare", str(w / "data"), "-o", str(c), "--workers", "1"]


@case("cache", "truncated cached .npy, then train", "exit 2")
def _(w):
    c = tiny_cache(w)
    p = c / "cases" / "case0_img.npy"
    p.write_bytes(p.read_bytes()[:200])
    return ["train", "--data", str(c), "--out", str(w / "run"), *TRAIN]


@case("cache", "truncated cached .npy (prepare repairs)", "exit 0",
      check=lambda w: "array whole again" if _npy_ok(w / "cache" / "cases" / "case0_img.npy") else "STILL BROKEN")
def _(w):
    c = tiny_cache(w)
    p = c / "cases" / "case0_img.npy"
    p.write_bytes(p.read_bytes()[:200])
    return ["prepare", str(w / "data"), "-o", str(c), "--workers", "1"]


def _npy_ok(p: Path) -> bool:
    from dvcl.data.cache import npy_problem

    return npy_problem(p) is None


@case("cache", "stale staging folder of a killed prepare", "exit 0",
      check=lambda w: "stale staging removed" if not (w / ".cache.staging-999999-x").exists() else "LEFT BEHIND")
def _(w):
    tiny_dataset(w)
    (w / ".cache.staging-999999-x").mkdir()
    (w / ".cache.staging-999999-x" / "junk.npy").write_bytes(b"x" * 1000)
    return ["prepare", str(w / "data"), "-o", str(w / "cache"), "--workers", "1"]


_LOCKS: List[contextlib.ExitStack] = []


@case("train", "second train into a folder in use", "exit 2")
def _(w):
    from dvcl.utils.runlock import claim_folder

    c = tiny_cache(w)
    stack = contextlib.ExitStack()
    stack.enter_context(claim_folder(w / "run"))  # held like a live run would
    _LOCKS.append(stack)
    return ["train", "--data", str(c), "--out", str(w / "run"), *TRAIN]


@case("train", "read-only --out", "exit 2")
def _(w):
    return ["train", "--data", str(tiny_cache(w)), "--out", str(read_only(w / "ro") / "run"), *TRAIN]


@case("export", "read-only output", "exit 2")
def _(w):
    c = tiny_cache(w)
    assert main(["-q", "--progress", "none", "train", "--data", str(c), "--out", str(w / "run"), *TRAIN]) == 0
    return ["export", str(w / "run"), "-o", str(read_only(w / "ro") / "model")]


@case("phantom", "read-only output", "exit 2")
def _(w):
    return ["phantom", str(read_only(w / "ro") / "ph"), "--labeled", "1", "--unlabeled", "0"]


def _full(w: Path) -> Path:
    """A full file system: a 256 KiB tmpfs as root, else /dev/full's folder stands in (not writable)."""
    return (tmpfs(w / "small", "256k") if os.geteuid() == 0 else None) or Path("/dev/full")


@case("prepare", "disk full (256 KiB tmpfs)", "exit 2")
def _(w):
    return ["prepare", str(tiny_dataset(w)), "-o", str(_full(w) / "cache"), "--workers", "1"]


@case("train", "disk full (256 KiB tmpfs)", "exit 2")
def _(w):
    return ["train", "--data", str(tiny_cache(w)), "--out", str(_full(w) / "run"), *TRAIN]


@case("export", "disk full (256 KiB tmpfs)", "exit 2")
def _(w):
    c = tiny_cache(w)
    assert main(["-q", "--progress", "none", "train", "--data", str(c), "--out", str(w / "run"), *TRAIN]) == 0
    return ["export", str(w / "run"), "-o", str(_full(w) / "model")]


@case("phantom", "disk full (256 KiB tmpfs)", "exit 2")
def _(w):
    return ["phantom", str(_full(w) / "ph"), "--labeled", "1", "--unlabeled", "0"]


@case("evaluate", "read-only --out", "exit 2")
def _(w):
    args = _eval_pair(w, np.zeros((12, 24, 24), np.uint8))
    return args[:args.index("--out") + 1] + [str(read_only(w / "ro") / "eval")] + args[args.index("--out") + 2:]


MID = "the disk fills part-way through a write (file-size limit)"


@case("midwrite", f"segment to .nii.gz, {MID}", "exit 2", out_file, fsize_limit=300)
def _(w):
    big = write(ct_array((40, 96, 96)), w / "in" / "big.nii.gz")
    return seg(str(big), "-o", str(w / "out" / "seg.nii.gz"))


@case("midwrite", f"segment to .seg.nrrd, {MID}", "exit 2", lambda w: [w / "out" / "seg.seg.nrrd"],
      fsize_limit=300)
def _(w):
    big = write(ct_array((40, 96, 96)), w / "in" / "big.nii.gz")
    return seg(str(big), "-o", str(w / "out" / "seg.seg.nrrd"))


@case("midwrite", f"prepare, {MID}", "exit 2", lambda w: [w / "cache" / "dataset.json"], fsize_limit=20_000)
def _(w):
    return ["prepare", str(tiny_dataset(w)), "-o", str(w / "cache"), "--workers", "1"]


@case("midwrite", f"train, {MID}", "exit 2", lambda w: [w / "run" / "checkpoints" / "best.safetensors"],
      fsize_limit=30_000)
def _(w):
    return ["train", "--data", str(tiny_cache(w)), "--out", str(w / "run"), *TRAIN]


@case("midwrite", f"export, {MID}", "exit 2", lambda w: [w / "model" / "model.json"], fsize_limit=20_000)
def _(w):
    c = tiny_cache(w)
    assert main(["-q", "--progress", "none", "train", "--data", str(c), "--out", str(w / "run"), *TRAIN]) == 0
    return ["export", str(w / "run"), "-o", str(w / "model")]


def _eval_pair(w: Path, pred: np.ndarray, ref_values=(0, 1, 2, 3), suffix: str = ".nii.gz") -> List[str]:
    ref = np.zeros((12, 24, 24), np.uint8)
    for i, v in enumerate(ref_values[1:]):
        ref[2 + 3 * i: 4 + 3 * i, 4:20, 4:20] = v
    write(ref, w / "gt" / f"c{suffix}", dtype=np.uint8)
    write(pred, w / "pred" / f"c{suffix}", dtype=pred.dtype)
    return ["evaluate", str(w / "pred"), str(w / "gt"), "--out", str(w / "eval"), "--no-plots"]


@case("evaluate", "float prediction with 1.5", "exit 2")
def _(w):
    pred = np.zeros((12, 24, 24), np.float32)
    pred[2:4, 4:20, 4:20] = 1.5
    return _eval_pair(w, pred)


@case("evaluate", "probability map as prediction", "exit 2")
def _(w):
    return _eval_pair(w, np.random.default_rng(0).random((12, 24, 24)).astype(np.float32))


@case("evaluate", "all-NaN prediction (.mha)", "exit 2")
def _(w):
    return _eval_pair(w, np.full((12, 24, 24), np.nan, np.float32), suffix=".mha")


@case("evaluate", "reference labels 1..3 scored with the MM-WHS preset (label sets differ)", "exit 2")
def _(w):
    args = _eval_pair(w, np.zeros((12, 24, 24), np.uint8))
    (w / "gt" / "c.seg.nrrd").unlink(missing_ok=True)
    return args + ["--preset", "mmwhs"]


# ----------------------------------------------------------------------------------------------- running
@contextlib.contextmanager
def file_size_limit(limit: Optional[int]):
    """Lower this process's soft RLIMIT_FSIZE (writes beyond it fail with EFBIG, like a full disk) and restore it."""
    if limit is None:
        yield
        return
    import resource
    import signal

    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


def run_case(c: Case, scratch: Path) -> dict:
    w = scratch / f"{len(list(scratch.iterdir())):02d}"
    w.mkdir()
    t0 = time.perf_counter()
    err, out = io.StringIO(), io.StringIO()
    try:
        argv = c.build(w)
    except Exception:  # noqa: BLE001 - a broken case builder is reported, not hidden
        return {"rc": "builder failed", "line": traceback.format_exc().splitlines()[-1], "json": False,
                "written": [], "seconds": 0.0, "note": ""}
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), file_size_limit(c.fsize_limit):
        try:
            rc = main(["-q", "--progress", "json", *argv])
        except SystemExit as exc:
            rc = exc.code
        except BaseException:  # noqa: BLE001 - exactly what the table must expose
            rc = "traceback"
            err.write(traceback.format_exc())
    stderr = err.getvalue()
    lines = [ln for ln in stderr.splitlines() if ln.startswith("dvcl: error:")]
    if rc == "traceback":
        line = stderr.strip().splitlines()[-1]
    elif lines:
        line = lines[0][len("dvcl: error: "):]
    else:
        warn = [ln for ln in stderr.splitlines() if "WARNING" in ln or "warning" in ln.lower()]
        line = ("warning: " + warn[0].split(":", 3)[-1].strip()) if warn else ""
    events = [json.loads(ln) for ln in out.getvalue().splitlines() if ln.startswith("{")]
    written = [str(p.relative_to(w)) for p in c.must_not_exist(w) if p.exists()]
    note = c.check(w) if c.check else ""
    return {"rc": rc, "line": line.replace(str(w), "…"), "json": any(e.get("event") == "error" for e in events),
            "written": written, "seconds": round(time.perf_counter() - t0, 1), "note": note,
            "tracebacks": "Traceback" in stderr, "error_lines": len(lines)}


def verdict(c: Case, r: dict) -> str:
    want_rc = 2 if c.expected.startswith("exit 2") else 0
    ok = r["rc"] == want_rc and not r["written"] and not r.get("tracebacks")
    if want_rc == 2:
        ok = ok and r["error_lines"] == 1 and r["json"]
    if r["note"] and r["note"].isupper():
        ok = False
    return "yes" if ok else "**NO**"


MOUNT_NOTE = "as root: disk-full and read-only cases on real tmpfs mounts"


def write_markdown(rows: List[tuple], path: Path, seconds: float) -> None:
    ok = sum(1 for _, _, v in rows if v == "yes")
    lines = [
        "# Bad inputs: what `dvcl` does with them",
        "",
        "Generated by `tools/bad_input_table.py` (do not edit by hand): every row builds its bad input in a scratch",
        "folder, runs the real CLI (`dvcl -q --progress json ...`) and records the observed exit status, the one",
        "`dvcl: error:` line (or the warning), whether the JSON `error` event was emitted, and whether any output",
        "that must not exist was written. Paths of the scratch folder are shown as `…`.",
        "",
        f"{len(rows)} cases, {ok} as expected; run took {seconds:.0f} s "
        f"({MOUNT_NOTE if os.geteuid() == 0 else 'read-only by chmod'}).",
        "",
        "## What counts as CT",
        "",
        "`dvcl segment` and `dvcl prepare` accept a volume as CT when its values are finite (no NaN or infinity), it",
        "is not constant, and its minimum lies below -50 HU (body CT always holds fat at about -100 HU or air at",
        "-1000 HU; MR, PET and CT stored without its rescale intercept do not). Anything else exits 2 unless",
        "`--force` (segment) or `--no-ct-check`/`--force` (prepare) is given. A volume also needs at least 2 voxels",
        "along every axis, a header whose size matches the file, at most `DVCL_MAX_VOXELS` voxels (default 2^30),",
        "and a plausible spacing (the resampled grid must stay under a quarter of that budget).",
        "",
        "| # | area | bad input | expected | observed | as expected |",
        "|---|---|---|---|---|---|",
    ]
    for i, (c, r, v) in enumerate(rows, 1):
        obs = f"exit {r['rc']}" if isinstance(r["rc"], int) else str(r["rc"])
        if r["line"]:
            obs += ": " + r["line"].replace("|", "\\|")[:220]
        if r["json"]:
            obs += " (JSON error event)"
        if r["written"]:
            obs += f"; WROTE {', '.join(r['written'])}"
        if r["note"]:
            obs += f"; {r['note']}"
        lines.append(f"| {i} | {c.category} | {c.name} | {c.expected} | {obs} | {v} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main_cli(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="run only cases whose area or name contains this text")
    ap.add_argument("--out", type=Path, default=OUT_MD, help=f"markdown file (default {OUT_MD})")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cases = [c for c in CASES if not args.only or args.only in c.category or args.only in c.name]
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dvcl-bad-inputs-") as tmp:
        scratch = Path(tmp)
        try:
            for c in cases:
                r = run_case(c, scratch)
                v = verdict(c, r)
                rows.append((c, r, v))
                print(f"[{v:>6}] {c.category:9} {c.name}: exit {r['rc']} {r['line'][:120]}", flush=True)
        finally:
            for stack in _LOCKS:
                stack.close()
            for m in reversed(_MOUNTS):
                subprocess.run(["umount", "-l", str(m)], capture_output=True)
            for p in scratch.rglob("*"):
                with contextlib.suppress(OSError):
                    if p.is_dir():
                        p.chmod(0o755)
    seconds = time.perf_counter() - t0
    if args.only is None:
        write_markdown(rows, args.out, seconds)
        print(f"wrote {args.out} ({len(rows)} cases, {seconds:.0f} s)")
    return 0 if all(v == "yes" for _, _, v in rows) else 1


if __name__ == "__main__":
    sys.exit(main_cli())
