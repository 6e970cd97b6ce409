"""Plain-Python parts of the module: CLI argument building, validation messages, model packages, install
checks and the ``dvcl info`` device report (the last one through a real ``dvcl info`` process)."""

from __future__ import annotations

import json
import sys

import pytest
from dvcl_slicer_helpers import REPO, require_cli

from DVCLSegmentationLib.Backend import (
    ModelPackageError,
    dvcl_command,
    find_backend_dir,
    format_eta,
    read_model_info,
)
from DVCLSegmentationLib.InstallLogic import (
    InstallLogic,
    backend_dependencies,
    device_message,
    parse_info,
    requirement_name,
    version_at_least,
)
from DVCLSegmentationLib.ModelRegistry import ModelRegistry
from DVCLSegmentationLib.Parameter import (
    EvaluationParameters,
    ParameterError,
    SegmentationParameters,
    TrainingParameters,
)
from DVCLSegmentationLib.Process import SubprocessProcess
from DVCLSegmentationLib.Terminology import terminology_entry


def write_model(folder, labels=None, weights=True, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": "dvcl-model/1", "name": folder.name, "description": "test", "preset": "flare22",
            "labels": labels if labels is not None else {"2": {"name": "spleen", "color": [157, 108, 162]},
                                                         "1": {"name": "liver", "color": [255, 0, 0]}}}
    meta.update(extra)
    (folder / "model.json").write_text(json.dumps(meta))
    if weights:
        (folder / "weights.safetensors").write_bytes(b"x")
    return folder


def test_segmentation_arguments(tmp_path):
    params = SegmentationParameters(model_dir="/models/m", device="cuda:1", tta=True)
    assert params.cli_args(tmp_path / "in.nrrd", tmp_path / "out.nii.gz") == [
        "segment", str(tmp_path / "in.nrrd"), "-o", str(tmp_path / "out.nii.gz"), "--model", "/models/m",
        "--device", "cuda:1", "--format", "nii.gz", "--overwrite", "--tta"]
    fast = SegmentationParameters(model_dir="m", fast=True, uncertainty=True).cli_args(tmp_path / "i", tmp_path / "o")
    assert fast[-2:] == ["--fast", "--uncertainty"] and "--tta" not in fast
    with pytest.raises(ParameterError, match="unknown device 'gpu0'"):
        SegmentationParameters(model_dir="m", device="gpu0").validate()
    with pytest.raises(ParameterError, match="unknown output format 'png'"):
        SegmentationParameters(model_dir="m", output_format="png").validate()


def test_training_arguments_new_run_and_resume(tmp_path):
    data = tmp_path / "data"
    (data / "unl").mkdir(parents=True)
    params = TrainingParameters(data_dir=str(data), unlabeled_dir=str(data / "unl"), preset="amos", method="cps",
                                labeled_fraction=0.5, iterations=1000, batch_labeled=2, batch_unlabeled=3,
                                patch=(32, 96, 96), run_dir=str(tmp_path / "run"), device="cpu", profile="quick",
                                settings=("network.channels=[4,8]",), workers=0)
    assert params.cli_args(overwrite=True) == [
        "train", "--preset", "amos", "--data", str(data), "--profile", "quick", "--method", "cps",
        "--labeled-fraction", "0.5", "--iterations", "1000", "--batch-labeled", "2", "--batch-unlabeled", "3",
        "--patch", "32", "96", "96", "--out", str(tmp_path / "run"), "--device", "cpu",
        "--unlabeled", str(data / "unl"), "--set", "network.channels=[4,8]", "--workers", "0", "--overwrite"]
    assert not params.run_exists()
    with pytest.raises(ParameterError, match="nothing to resume"):
        params.cli_args(resume=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("method: cps\n")
    assert params.run_exists()
    # a resumed run keeps its own schedule: no schedule flags (the CLI refuses them)
    assert params.cli_args(resume=True) == ["train", "--resume", str(tmp_path / "run"), "--device", "cpu",
                                            "--workers", "0"]


@pytest.mark.parametrize("change, message", [
    ({"run_dir": ""}, "choose an output folder"),
    ({"data_dir": ""}, "choose the labeled data folder"),
    ({"data_dir": "/no/such/folder"}, "/no/such/folder: labeled data folder not found"),
    ({"unlabeled_dir": "/no/unl"}, "/no/unl: unlabeled folder not found"),
    ({"preset": "/no/dataset.json"}, "/no/dataset.json: dataset.json not found"),
    ({"labeled_fraction": 0.0}, r"labeled fraction must be in \(0, 1\], got 0.0"),
    ({"labeled_fraction": 1.5}, r"labeled fraction must be in \(0, 1\], got 1.5"),
    ({"iterations": 0}, "iterations must be at least 1"),
    ({"batch_unlabeled": -1}, "batch unlabeled must not be negative"),
    ({"patch": (4, 64, 64)}, "patch size must be three sizes"),
    ({"profile": "huge"}, "unknown profile 'huge'"),
    ({"settings": ("lr0.1",)}, "setting 'lr0.1' must look like KEY=VALUE"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
])
def test_training_validation_messages(tmp_path, change, message):
    base = dict(data_dir=str(tmp_path), run_dir=str(tmp_path / "run"))
    base.update(change)
    with pytest.raises(ParameterError, match=message):
        TrainingParameters(**base).validate()


def test_evaluation_arguments():
    params = EvaluationParameters(preset="btcv", out_dir="/r", plots=False)
    assert params.cli_args("p.nii.gz", "g.nii.gz") == [
        "evaluate", "p.nii.gz", "g.nii.gz", "--preset", "btcv", "--out", "/r", "--overwrite", "--no-plots"]
    EvaluationParameters(preset="btcv").validate()  # no report folder is fine: the logic picks a temporary one
    with pytest.raises(ParameterError, match="choose the preset"):
        EvaluationParameters(preset=" ").validate()


def test_parameters_round_trip_through_settings_json():
    params = TrainingParameters(data_dir="/d", patch=(16, 32, 48), labeled_fraction=0.25)
    again = TrainingParameters.from_json(params.to_json())
    assert again == params and again.patch == (16, 32, 48)
    assert TrainingParameters.from_json('{"iterations": 7, "unknown": 1}').iterations == 7
    assert TrainingParameters.from_json("not json") == TrainingParameters()


def test_read_model_info(tmp_path):
    info = read_model_info(write_model(tmp_path / "m"))
    assert [(lab.value, lab.name) for lab in info.labels] == [(1, "liver"), (2, "spleen")]  # sorted by value
    assert info.labels[0].color == (1.0, 0.0, 0.0)
    assert info.labels[1].color == pytest.approx((157 / 255, 108 / 255, 162 / 255))
    assert info.name == "m" and info.preset == "flare22" and info.path == (tmp_path / "m").resolve()


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "model folder not found"),
    (lambda p: (p.mkdir(), p)[1], "not a dvcl model package \\(model.json is missing\\)"),
    (lambda p: write_model(p, weights=False), "weights.safetensors is missing"),
    (lambda p: write_model(p, labels={}), "'labels' must map label ids"),
    (lambda p: write_model(p, labels={"x": {"name": "liver"}}), "label id 'x' is not an integer"),
    (lambda p: write_model(p, labels={"1": {"color": [1, 2, 3]}}), "label 1 has no name"),
    (lambda p: write_model(p, format="other/2"), "unknown format 'other/2'"),
])
def test_read_model_info_errors(tmp_path, make, message):
    folder = make(tmp_path / "model")
    with pytest.raises(ModelPackageError, match=message):
        read_model_info(folder)


def test_model_json_that_is_not_json(tmp_path):
    folder = write_model(tmp_path / "m")
    (folder / "model.json").write_text("{broken")
    with pytest.raises(ModelPackageError, match="model.json: not valid JSON"):
        read_model_info(folder)


def test_model_registry(tmp_path):
    good = write_model(tmp_path / "good")
    installed = write_model(tmp_path / "installed")
    registry = ModelRegistry(installed=lambda: [read_model_info(installed)])
    with pytest.raises(ModelPackageError):
        registry.add(tmp_path / "nothing")
    registry.add(good)
    registry.add(good)  # once only
    restored = ModelRegistry.from_json(registry.to_json(), installed=lambda: [read_model_info(installed)])
    assert [m.name for m in restored.models()] == ["installed", "good"]
    (good / "model.json").unlink()  # a folder that broke is skipped, not fatal
    assert [m.name for m in restored.models()] == ["installed"]
    assert ModelRegistry.from_json("[broken", installed=lambda: []).user_folders == []


def test_format_eta():
    assert format_eta(None) == "" and format_eta(float("nan")) == "" and format_eta(-1) == ""
    assert format_eta(59.6) == "1:00" and format_eta(125) == "2:05" and format_eta(3 * 3600 + 62) == "3:01:02"


def test_dvcl_command(monkeypatch):
    assert dvcl_command(["segment", "a"]) == [sys.executable, "-m", "dvcl.cli.main", "--progress", "json",
                                              "segment", "a"]
    monkeypatch.setenv("DVCL_PYTHON", "/opt/PythonSlicer")
    assert dvcl_command(["info"], progress="none")[:5] == ["/opt/PythonSlicer", "-m", "dvcl.cli.main",
                                                           "--progress", "none"]


def test_backend_folder_and_its_dependencies():
    backend = find_backend_dir()
    assert backend == REPO / "backend"
    deps = backend_dependencies(backend)
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11: the reference parser
    with open(backend / "pyproject.toml", "rb") as handle:
        assert deps == tomllib.load(handle)["project"]["dependencies"]
    assert {requirement_name(d).lower() for d in deps} >= {"torch", "monai", "simpleitk"}
    assert requirement_name("torch>=2.1,<2.15") == "torch" and requirement_name("monai[itk]>=1.3") == "monai"


def test_version_checks():
    assert version_at_least("2.13.0+cpu", "2.1") and version_at_least("1.6.1", "1.3")
    assert not version_at_least("1.2.9", "1.3") and not version_at_least("2.0.1", "2.1")


def test_install_check_sees_this_environment():
    statuses = {s.name: s for s in InstallLogic().check()}
    assert set(statuses) == {"torch", "monai", "SimpleITK", "dvcl"}
    assert statuses["dvcl"].exact and statuses["dvcl"].required == "0.1.0" and statuses["dvcl"].ok
    import monai

    assert statuses["monai"].installed == monai.__version__ and statuses["monai"].ok
    calls = []
    logic = InstallLogic(pip_install=calls.append, torch_installer=lambda: calls.append("torch"))
    if logic.is_ready():  # nothing missing: install() must not touch pip
        logic.install()
        assert calls == []


def test_device_message():
    gpu = {"torch": "2.13.0+cu128", "devices": {"cuda": True, "gpus": [{"name": "NVIDIA H100", "memory_gb": 79.1}]}}
    assert device_message(gpu) == "GPU available: NVIDIA H100 (79.1 GB). torch 2.13.0+cu128."
    cpu_build = device_message({"torch": "2.13.0+cpu", "devices": {"cuda": False, "gpus": []}})
    assert cpu_build.startswith("No CUDA GPU found (torch 2.13.0+cpu)") and "CPU-only build" in cpu_build
    assert "check its driver" in device_message({"torch": "2.13.0", "devices": {"cuda": False}})
    assert parse_info('noise\n{"a": {"b": 1}}\n') == {"a": {"b": 1}}


@pytest.mark.slow
def test_dvcl_info_reports_the_device_torch_sees():
    require_cli("info")
    torch = pytest.importorskip("torch")
    process = SubprocessProcess()
    process.start(InstallLogic.info_command())
    result = process.wait(120)
    assert result.ok, result.error
    info = parse_info(result.stdout)
    assert info["torch"] == torch.__version__
    message = device_message(info)
    assert message.startswith("GPU available") == torch.cuda.is_available()


def test_terminology_covers_every_preset_structure():
    presets = pytest.importorskip("dvcl.presets")
    missing = [name for preset in presets.PRESETS.values() for name in preset.labels.values()
               if terminology_entry(name) is None and name != "prostate/uterus"]
    assert missing == []
