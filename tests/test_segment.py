"""`dvcl segment` on the real CT test data: exact output geometry, label sets, .seg.nrrd metadata, progress
events, the sliding window (padding, window count, A+B ensemble, TTA) and bad input."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from dvcl_test_cases import tiny_ab_package
from torch import nn

from dvcl.cli.main import main
from dvcl.errors import ConfigError, DimensionError, ImageReadError, ModelError, OutputExistsError
from dvcl.inference import load_model_package, segment_files, segment_image
from dvcl.inference.model_package import ModelPackage, builtin_models_dir
from dvcl.inference.predictor import TTA_FLIPS, Predictor, count_windows, overlap_for_stride, tta_flips
from dvcl.io.images import read_image
from dvcl.io.segmentation import SegmentInfo, read_segmentation, write_seg_nrrd
from dvcl.networks import NetworkConfig
from dvcl.preprocessing import Grid

LABELS = {1: "liver", 2: "right kidney", 3: "spleen"}
COLORS = {1: (221, 130, 101), 2: (185, 102, 83), 3: (157, 108, 162)}


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory) -> Path:
    """Random tiny A+B U-Nets (4 classes), coarse 6 mm grid and a small window so CPU tests stay fast."""
    return tiny_ab_package(tmp_path_factory.mktemp("models"), "tiny", 0, LABELS)


class ThresholdNet(nn.Module):
    """A voxel-wise 'network': class 1 where the normalised intensity exceeds 0.9, else background.

    Being voxel-wise and flip-equivariant, its output is known exactly in advance, which makes it a probe for
    orientation, resampling and blending errors of the pipeline around the network.
    """

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), 40.0 * (x - 0.9)], dim=1)


def threshold_package(roi=(64, 160, 160), stride=(32, 80, 80)) -> ModelPackage:
    meta = {"name": "threshold", "labels": {"1": {"name": "bright", "color": [255, 0, 0]}}, "models": ["A"],
            "inference": {"roi": list(roi), "stride": list(stride)}, "preprocessing": {}}
    return ModelPackage(path=Path("."), meta=meta, network_config=NetworkConfig(num_classes=2, channels=(4, 8)),
                        models={"A": ThresholdNet()})


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("restore", ["probabilities", "label"])
def test_threshold_probe_lands_on_the_original_grid(abdomen_image, restore):
    """Paper window (64x160x160, stride 32x80x80) on the real CT plus an off-centre 1000 HU block: the result
    must be the thresholded input, voxel by voxel, in the input's own (RAS-stored) geometry."""
    img = sitk.ReadImage(str(abdomen_image))
    arr = sitk.GetArrayFromImage(img)
    arr[20:32, 10:22, 15:30] = 1000  # (z, y, x) block near one corner: any axis flip would move it
    probe = sitk.GetImageFromArray(arr)
    probe.CopyInformation(img)
    label = segment_image(probe, threshold_package(), device="cpu", restore=restore)
    assert Grid.of(label) == Grid.of(img)
    out = sitk.GetArrayFromImage(label)
    assert set(np.unique(out)) <= {0, 1}
    # The CT holds > 0.5 % air below -325 HU and > 0.5 % at or above +325 HU, so the clip limits are the
    # normalisation percentiles and 0.9 normalised is -325 + 0.9 * 650 = 260 HU.
    expected = arr > 260
    assert dice(out == 1, expected) > 0.85
    assert out[22:30, 12:20, 17:28].all()  # block interior
    for mirrored in (np.s_[20:32, 10:22, -30:-15], np.s_[-32:-20, 10:22, 15:30], np.s_[20:32, -22:-10, 15:30]):
        assert out[mirrored].mean() < 0.05


def test_segment_real_ct_cli_seg_nrrd(tmp_path, abdomen_image, tiny_package, capsys):
    out_dir = tmp_path / "out"
    rc = main(["--progress", "json", "segment", str(abdomen_image), "-o", str(out_dir), "--model", str(tiny_package),
               "--format", "seg.nrrd", "--volumes", "csv", "--device", "cpu"])
    assert rc == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert events[0] == {"event": "start", "task": "segment", "total": 4, "step": 0}
    messages = [e["message"] for e in events if e["event"] == "progress"]
    for stage in ("reading", "preprocessing", "network", "writing"):
        assert any(m.endswith(f": {stage}") for m in messages), stage
    windows = [e for e in events if e["event"] == "progress" and "window" in e]
    # 6 mm grid (z, y, x) = (57, 51, 62): 3 windows in z (starts 0, 16, 25), y and x padded to one window
    assert windows and windows[-1]["window"] == "3/3"
    outputs = {e["kind"]: e["path"] for e in events if e["event"] == "output"}
    seg_path = out_dir / "image.seg.nrrd"
    assert outputs == {"segmentation": str(seg_path.resolve()), "volumes": str((out_dir / "volumes.csv").resolve())}
    assert events[-1]["event"] == "done"

    image = read_image(abdomen_image)
    label, segments = read_segmentation(seg_path)
    assert Grid.of(label) == Grid.of(image)  # exactly, not within a tolerance
    values = sitk.GetArrayFromImage(label)
    assert set(np.unique(values)) <= {0, 1, 2, 3}
    assert {k: (s.name, s.color) for k, s in segments.items()} == {k: (LABELS[k], COLORS[k]) for k in LABELS}
    assert all(s.tags.get("DVCL.Model") == "tiny" for s in segments.values())
    # Extents in the header equal the voxel data's bounding boxes (i = x, j = y, k = z; inclusive).
    raw = sitk.ReadImage(str(seg_path))
    for i in range(3):
        lid = int(raw.GetMetaData(f"Segment{i}_LabelValue"))
        ext = [int(v) for v in raw.GetMetaData(f"Segment{i}_Extent").split()]
        nz = np.nonzero(values == lid)
        if len(nz[0]):
            assert ext == [nz[2].min(), nz[2].max(), nz[1].min(), nz[1].max(), nz[0].min(), nz[0].max()]
        else:
            assert ext == [0, -1, 0, -1, 0, -1]
    # Volumes: voxel count x 3 mm x 3 mm x 3 mm = 0.027 ml per voxel.
    with open(out_dir / "volumes.csv") as fh:
        row = next(csv.DictReader(fh))
    assert row["case"] == "image"
    for lid, name in LABELS.items():
        assert float(row[f"{name} [ml]"]) == pytest.approx((values == lid).sum() * 0.027, abs=1e-3)


def test_seg_nrrd_opens_in_slicer(tmp_path):
    """Slicer's own segmentation reader (slicer-core) gets names, colors and voxels from our file."""
    slicer = pytest.importorskip("slicer")
    from vtk.util.numpy_support import vtk_to_numpy

    arr = np.zeros((6, 7, 8), np.uint8)
    arr[1:3, 2:5, 3:7] = 1
    arr[4, 1:3, 0:2] = 3
    lab = sitk.GetImageFromArray(arr)
    lab.SetSpacing((0.8, 0.9, 2.5))
    lab.SetOrigin((12.0, -30.0, 5.0))
    path = write_seg_nrrd(lab, tmp_path / "x.seg.nrrd", {k: SegmentInfo(k, LABELS[k], COLORS[k]) for k in LABELS})
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    seg = node.GetSegmentation()
    assert seg.GetNumberOfSegments() == 3  # the empty "right kidney" segment is listed too
    for i in range(3):
        s = seg.GetNthSegment(i)
        lid = s.GetLabelValue()
        assert s.GetName() == LABELS[lid]
        assert np.allclose(s.GetColor(), np.array(COLORS[lid]) / 255.0, atol=1e-5)
        lm = s.GetRepresentation("Binary labelmap")
        voxels = vtk_to_numpy(lm.GetPointData().GetScalars())
        assert (voxels == lid).sum() == (arr == lid).sum()
        assert np.allclose(lm.GetSpacing(), (0.8, 0.9, 2.5))


def test_segment_dicom_series(tmp_path, dicom_dir, tiny_package):
    """The 3-slice DICOM series is smaller than the window in z (2 slices at 6 mm, padded by MONAI)."""
    image = read_image(dicom_dir)
    label = segment_image(image, load_model_package(tiny_package), device="cpu")
    assert Grid.of(label) == Grid.of(image)  # in memory: exactly the DICOM geometry (doubles)
    assert set(np.unique(sitk.GetArrayViewFromImage(label))) <= {0, 1, 2, 3}

    out = tmp_path / "ct.nii.gz"
    results = segment_files([dicom_dir], out, tiny_package, device="cpu", volumes="json")
    assert [r.output for r in results] == [str(out)]
    written = sitk.ReadImage(str(out))
    assert written.GetSize() == (512, 512, 3) and written.GetDirection() == image.GetDirection()
    # NIfTI stores spacing and origin as float32: equal to the input up to that precision
    assert np.allclose(written.GetSpacing(), image.GetSpacing(), rtol=1e-6, atol=0)
    assert np.allclose(written.GetOrigin(), image.GetOrigin(), rtol=1e-6, atol=1e-4)
    assert np.array_equal(sitk.GetArrayViewFromImage(written), sitk.GetArrayViewFromImage(label))
    vols = json.loads((tmp_path / "ct_volumes.json").read_text())
    assert set(vols["99000_series2"]) == set(LABELS.values())  # folder 'dicom' is generic: named from the header
    assert set(results[0].seconds) >= {"reading", "preprocessing", "network", "restore", "writing"}
    # NRRD keeps doubles: a .seg.nrrd output has the DICOM geometry exactly
    segment_files([dicom_dir], tmp_path / "ct.seg.nrrd", tiny_package, device="cpu")
    assert Grid.of(read_segmentation(tmp_path / "ct.seg.nrrd")[0]) == Grid.of(image)


def test_dicom_outputs_named_after_the_series(tmp_path, dicom_dir, tiny_package):
    """`.../<patient>/dicom/` is the usual layout: outputs are named from the series header, not 'dicom', and
    two series that would get one name are numbered instead of overwriting each other."""
    import shutil

    from dvcl.inference.segment import plan_jobs
    from dvcl.io.label_table import read_label_sidecar

    inputs = []
    for folder in ("p1/dicom", "p2/DICOM", "liver_study"):
        shutil.copytree(dicom_dir, tmp_path / "in" / folder)
        inputs.append(tmp_path / "in" / folder)
    out = tmp_path / "out"
    jobs, _ = plan_jobs(inputs, out)
    # PatientID 99000, no SeriesDescription, SeriesNumber 2
    assert [j.case for j in jobs] == ["99000_series2", "99000_series2_2", "liver_study"]
    assert [j.output.name for j in jobs] == ["99000_series2.nii.gz", "99000_series2_2.nii.gz", "liver_study.nii.gz"]
    results = segment_files(inputs[:2], out, tiny_package, device="cpu", models=["A"], restore="label")
    assert sorted(p.name for p in out.iterdir()) == ["99000_series2.labels.json", "99000_series2.nii.gz",
                                                     "99000_series2_2.labels.json", "99000_series2_2.nii.gz"]
    assert [r.case for r in results] == ["99000_series2", "99000_series2_2"]
    table = read_label_sidecar(out / "99000_series2.nii.gz")  # what dvcl evaluate reads the names from
    assert table.labels == LABELS and table.preset == "flare22"


def test_several_cases_read_ahead_with_one_engine(tmp_path, abdomen_image, tiny_package, monkeypatch):
    """Several inputs: the next image is read while one is segmented and one predictor (engine) serves all;
    the label maps are those of one-at-a-time runs (a memory budget turns reading ahead off)."""
    from dvcl.inference import predictor as predictor_module

    src = sitk.ReadImage(str(abdomen_image))
    folder = tmp_path / "in"
    folder.mkdir()
    sitk.WriteImage(src, str(folder / "a.nii.gz"))
    sitk.WriteImage(src[:, ::-1, :], str(folder / "b.nii.gz"))  # anterior-posterior flipped: another result
    sitk.WriteImage(src[10:-10, :, 20:], str(folder / "c.nii.gz"))
    built = []

    class CountingPredictor(predictor_module.Predictor):
        def __init__(self, *args, **kwargs):
            built.append(kwargs.get("sw_batch_size"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(predictor_module, "Predictor", CountingPredictor)
    ahead = segment_files([folder], tmp_path / "ahead", tiny_package, device="cpu", restore="label")
    assert len(built) == 1
    assert "loading" in ahead[0].seconds and all("loading" not in r.seconds for r in ahead[1:])
    assert all(r.seconds["reading"] > 0 for r in ahead)
    one_by_one = segment_files([folder], tmp_path / "single", tiny_package, device="cpu", restore="label",
                               max_memory=64.0)
    assert [r.case for r in ahead] == [r.case for r in one_by_one] == ["a", "b", "c"]
    for r, s in zip(ahead, one_by_one):
        a = sitk.GetArrayFromImage(sitk.ReadImage(r.output))
        b = sitk.GetArrayFromImage(sitk.ReadImage(s.output))
        assert a.shape == b.shape and np.array_equal(a, b)
    first, second = (sitk.GetArrayFromImage(sitk.ReadImage(r.output)) for r in ahead[:2])
    assert not np.array_equal(first, second)


def test_a_read_error_surfaces_at_its_case(tmp_path, abdomen_image):
    """The image read ahead fails: the error comes when that case is due (earlier cases are done), and
    leaving the reader does not hang on the failed read."""
    import shutil

    from dvcl.inference.segment import _ImageReader, plan_jobs

    inputs = [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]
    for p in inputs:
        shutil.copy(abdomen_image, p)
    jobs, _ = plan_jobs(inputs, tmp_path / "out")
    inputs[1].write_bytes(b"not an image")  # replaced after planning, as a disk or a user might
    with _ImageReader(jobs, accept_nonuniform=False, force=False, ahead=True) as reader:
        image, seconds = reader.get(0)
        assert image.GetSize() == sitk.ReadImage(str(abdomen_image)).GetSize() and seconds > 0
        with pytest.raises(ImageReadError):
            reader.get(1)


def test_dicom_is_read_when_due_on_the_calling_thread(tmp_path, abdomen_image, dicom_dir):
    """GDCM reads touch the process locale, as OpenVINO does while it loads a model on the calling thread;
    ``setlocale`` in two threads at once crashed a CI run, so DICOM inputs are never read ahead (files still are)."""
    import shutil
    import threading

    from dvcl.inference.segment import _ImageReader, plan_jobs

    shutil.copytree(dicom_dir, tmp_path / "series")
    shutil.copy(abdomen_image, tmp_path / "b.nii.gz")
    jobs, _ = plan_jobs([tmp_path / "series", tmp_path / "b.nii.gz", tmp_path / "series"], tmp_path / "out")
    with _ImageReader(jobs, accept_nonuniform=False, force=False, ahead=True) as reader:
        assert reader.pending == {}  # the first job is DICOM: nothing in flight while the model loads
        assert reader.get(0)[0].GetSize()[2] == 3
        assert list(reader.pending) == [1]  # the NIfTI file is read ahead
        assert reader.get(1)[0].GetSize() == sitk.ReadImage(str(abdomen_image)).GetSize()
        assert reader.pending == {}
        assert reader.get(2)[0].GetSize()[2] == 3
    assert [t.name for t in threading.enumerate() if t.name.startswith("dvcl-read")] == []


def test_output_exists_and_overwrite(tmp_path, abdomen_image, tiny_package, capsys):
    out = tmp_path / "abd.nii.gz"
    args = ["segment", str(abdomen_image), "-o", str(out), "--model", str(tiny_package), "--device", "cpu",
            "--models", "A", "--restore", "label"]
    assert main(args) == 0
    before = out.stat().st_mtime_ns
    assert main(args) == 2
    assert "exists (use --overwrite" in capsys.readouterr().err
    assert out.stat().st_mtime_ns == before
    with pytest.raises(OutputExistsError):
        segment_files([abdomen_image], out, tiny_package, device="cpu")
    assert main(args + ["--overwrite"]) == 0


def test_bad_inputs(tmp_path, abdomen_image, tiny_package, capsys):
    with pytest.raises(ImageReadError, match="file not found"):
        segment_files([tmp_path / "missing.nii.gz"], tmp_path / "o", tiny_package)
    with pytest.raises(ModelError, match="no installed model has this name"):
        segment_files([abdomen_image], tmp_path / "o", "no_such_model")
    with pytest.raises(ConfigError, match="contradicts"):
        segment_files([abdomen_image], tmp_path / "o.nii.gz", tiny_package, fmt="seg.nrrd")
    with pytest.raises(ConfigError, match="not in package"):
        segment_files([abdomen_image], tmp_path / "o", tiny_package, models=["C"], device="cpu")
    flat = sitk.Image(20, 20, sitk.sitkInt16)
    sitk.WriteImage(flat, str(tmp_path / "flat.nii.gz"))
    with pytest.raises(DimensionError):
        segment_files([tmp_path / "flat.nii.gz"], tmp_path / "o", tiny_package)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert main(["segment", str(empty), "-o", str(tmp_path / "o"), "--model", str(tiny_package)]) == 2
    assert "no DICOM series and no image files" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_non_ct_input_warns_but_segments(tiny_package, caplog):
    rng = np.random.default_rng(0)
    mr = sitk.GetImageFromArray(rng.uniform(0, 800, (20, 30, 30)).astype(np.float32))  # MR-like: all positive
    mr.SetSpacing((2.0, 2.0, 4.0))
    with caplog.at_level(logging.WARNING):
        label = segment_image(mr, load_model_package(tiny_package), device="cpu", name="mr.nii.gz")
    assert Grid.of(label) == Grid.of(mr)
    assert any("not CT Hounsfield units" in r.getMessage() for r in caplog.records)


def test_window_count_padding_and_ensemble(tiny_package):
    pkg = load_model_package(tiny_package)
    vol = np.random.default_rng(1).standard_normal((10, 20, 30)).astype(np.float32)
    seen = []
    probs = Predictor(pkg, "cpu", roi=(8, 16, 16), stride=(4, 8, 8), sw_batch_size=1).predict(
        vol, on_window=lambda d, t: seen.append((d, t)))
    # z: starts 0, 2 (2 windows); y: 0, 4 (2); x: 0, 8, 14 (3) -> 12 windows, each run once
    assert count_windows(vol.shape, (8, 16, 16), (4, 8, 8)) == 12
    assert seen[-1] == (12, 12) and len(seen) == 12
    assert probs.shape == (4, 10, 20, 30)
    assert torch.allclose(probs.sum(0), torch.ones(10, 20, 30), atol=1e-5)
    # Input smaller than the window: padded to one 32x64x64 window, cropped back.
    small = vol[:5, :7, :9]
    pa = Predictor(pkg, "cpu", models=["A"]).predict(small)
    pb = Predictor(pkg, "cpu", models=["B"]).predict(small)
    pab = Predictor(pkg, "cpu").predict(small)
    assert pab.shape == (4, 5, 7, 9) and count_windows(small.shape, pkg.roi, pkg.stride) == 1
    assert not torch.allclose(pa, pb, atol=1e-3)
    assert torch.allclose(pab, (pa + pb) / 2, atol=1e-5)  # softmax mean of A and B


def test_tta_undoes_its_flips():
    """The threshold probe is flip-equivariant, so TTA must return exactly the plain prediction."""
    vol = np.random.default_rng(2).uniform(0, 1.2, (12, 20, 24)).astype(np.float32)
    pkg = threshold_package(roi=(8, 16, 16), stride=(4, 8, 8))
    plain = Predictor(pkg, "cpu").predict(vol)
    tta = Predictor(pkg, "cpu", tta=True).predict(vol)
    assert torch.allclose(plain, tta, atol=1e-5)
    assert torch.equal(plain.argmax(0), torch.from_numpy((vol > 0.9).astype(np.int64)))


def test_tta_flips_only_the_axes_training_flipped():
    assert tta_flips((0, 1, 2)) == TTA_FLIPS and len(TTA_FLIPS) == 8
    assert tta_flips(()) == ((),)
    assert tta_flips((2,)) == ((), (4,))  # x only: the (B, C, Z, Y, X) tensor's last dim
    assert tta_flips((0, 2)) == ((), (4,), (2,), (2, 4))


def test_package_flip_axes_from_training_record(tiny_package):
    pkg = load_model_package(tiny_package, lazy=True)
    pkg.meta["training"].pop("flip_axes", None)
    assert pkg.flip_axes == (0, 1, 2)  # not recorded: TrainConfig's flips on every axis
    pkg.meta["training"]["flip_axes"] = [2, 0]
    assert pkg.flip_axes == (0, 2)
    # an ensemble may flip only along the axes every member was trained to be flipped along
    pkg.meta["training"] = {"ensemble": [{"name": "a", "flip_axes": [0, 1, 2]}, {"name": "b", "flip_axes": [1, 2]},
                                         {"name": "c"}]}
    assert pkg.flip_axes == (1, 2)
    for bad in ([3], [0, 0], "xyz", [True], [[0]], [1.0]):
        pkg.meta["training"] = {"flip_axes": bad}
        with pytest.raises(ModelError, match="flip_axes"):
            _ = pkg.flip_axes
    # a package whose model.json records a bad value is refused when it is loaded, not at the first --tta
    bad_copy = tiny_package.parent / "bad_flip_axes"
    shutil.copytree(tiny_package, bad_copy)
    meta = json.loads((bad_copy / "model.json").read_text())
    meta["training"]["flip_axes"] = [0, 3]
    (bad_copy / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"model\.json: training\.flip_axes"):
        load_model_package(bad_copy, lazy=True)
    # the shipped synthetic-CT models trained without flips (left and right organs); the phantom ones with them
    assert load_model_package(builtin_models_dir() / "synthetic_abdomen", lazy=True).flip_axes == ()
    assert load_model_package(builtin_models_dir() / "phantom_demo", lazy=True).flip_axes == (0, 1, 2)


def test_tta_of_a_model_trained_without_flips_is_the_plain_prediction(tiny_package, caplog):
    """A random network is not flip-equivariant: all eight flips change its output, none may when training never
    flipped (the default synthetic-CT model fell from 80 to 3 % mean Dice on a synthetic CT with them)."""
    vol = np.random.default_rng(3).standard_normal((10, 20, 24)).astype(np.float32)
    pkg = load_model_package(tiny_package)
    pkg.meta["training"]["flip_axes"] = [0, 1, 2]
    plain = Predictor(pkg, "cpu", engine="torch").predict(vol)
    flipped = Predictor(pkg, "cpu", engine="torch", tta=True).predict(vol)
    assert not torch.allclose(plain, flipped, atol=1e-4)
    pkg.meta["training"]["flip_axes"] = [2]
    x_only = Predictor(pkg, "cpu", engine="torch", tta=True)
    assert x_only.flips == ((), (4,))
    assert not torch.allclose(x_only.predict(vol), flipped, atol=1e-4)
    pkg.meta["training"]["flip_axes"] = []
    with caplog.at_level(logging.WARNING, logger="dvcl.inference.predictor"):
        none = Predictor(pkg, "cpu", engine="torch", tta=True)
    assert none.flips == ((),) and torch.equal(none.predict(vol), plain)
    assert any("trained without random flips" in r.getMessage() for r in caplog.records)


def test_overlap_gives_exact_stride():
    for roi, stride in (((64, 160, 160), (32, 80, 80)), ((160, 160, 96), (48, 112, 7))):
        ov = overlap_for_stride(roi, stride)
        assert [int(r * (1 - o)) for r, o in zip(roi, ov)] == list(stride)
    assert overlap_for_stride((64, 160, 160), (32, 80, 80)) == [0.5, 0.5, 0.5]


def test_sigterm_cancels_a_folder_run_cleanly(abdomen_image, tmp_path):
    """SIGTERM to `dvcl segment` on a folder (the Slicer module's Cancel) after the first case is written: exit
    130 with 'cancelled', the written case complete, no file of the cases not finished, no crash (the default
    engine, read-ahead on: the process holds an OpenVINO engine and a reading thread when the signal comes)."""
    import os
    import shutil
    import signal
    import subprocess
    import sys

    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        shutil.copy(abdomen_image, src / f"case{i}.nii.gz")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "backend"))
    proc = subprocess.Popen([sys.executable, "-m", "dvcl", "--progress", "json", "segment", str(src), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    written = []
    for line in proc.stdout:
        if line.startswith("{") and json.loads(line).get("event") == "output":
            written.append(Path(json.loads(line)["path"]))
            if json.loads(line).get("kind") == "segmentation":
                proc.send_signal(signal.SIGTERM)
                break
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "cancelled" in err and "Traceback" not in err
    segs = sorted(out.glob("*.nii.gz"))
    assert segs == [written[0]]  # the case written before the signal, and nothing of the others
    assert sitk.ReadImage(str(segs[0])).GetSize() == sitk.ReadImage(str(abdomen_image)).GetSize()
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.suffix in (".tmp", ".part")]
