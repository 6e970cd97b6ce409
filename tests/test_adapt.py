"""`dvcl adapt`: a model package fine-tuned (DVCL) on unlabeled scans, on tiny real NIfTI cases and tiny U-Nets.

What is shown: the run starts from the package's weights (A<-A, B<-B; B<-A for a one-network package); a package
whose labels or network do not fit is refused; an empty or unreadable unlabeled folder is refused before anything
is written; the adapted package loads and segments through the real `dvcl segment` path; its card says what it
was adapted from and that scores on the scans are transductive; a stopped adaptation resumes exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from dvcl_test_cases import write_tiny_case

from dvcl.adapt import TRANSDUCTIVE_LINE, adapt_model, check_unlabeled_folder
from dvcl.errors import ConfigError, DatasetError, ModelError, OutputExistsError
from dvcl.inference.model_package import load_model_package, save_model_package
from dvcl.networks import NetworkConfig, build_network

LABELS = {1: "box", 2: "ball"}  # the classes write_tiny_case draws
#: tiny schedule: patches of the 12 x 12 x 12 cases on the package's 2.5 mm grid, one worker-less loader
TINY = {"patch": (8, 16, 16), "batch_labeled": 1, "batch_unlabeled": 1, "num_workers": 0, "log_every": 1,
        "val_sw_batch": 1}


def tiny_package(folder: Path, name: str = "src", models=("A", "B"), labels=None, channels=(4, 8)) -> Path:
    """A package of tiny U-Nets (differently initialised A and B) on a 2.5 mm grid with a 8x16x16 window."""
    cfg = NetworkConfig(num_classes=3, channels=channels, feature_dim=8)
    torch.manual_seed(7)
    nets = {m: build_network(cfg) for m in models}
    return save_model_package(nets, cfg, labels or LABELS, folder / name, name=name, preset="",
                              preprocessing={"spacing": [2.5, 2.5, 2.5]}, roi=(8, 16, 16), stride=(4, 8, 8))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """3 labeled cases (simple layout: images/ + labels/) and 2 unlabeled scans, real NIfTI."""
    root = tmp_path_factory.mktemp("adapt_data")
    rng = np.random.default_rng(0)
    for i in range(3):
        write_tiny_case(root / "labeled", f"lab{i}", rng, with_label=True)
    for i in range(2):
        write_tiny_case(root / "site", f"scan{i}", rng, with_label=False)
    return {"labeled": root / "labeled", "unlabeled": root / "site", "root": root}


def weights(pkg_dir: Path) -> dict:
    pkg = load_model_package(pkg_dir)
    return {m: {k: v.clone() for k, v in net.state_dict().items()} for m, net in pkg.models.items()}


def same(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def run_adapt(src: Path, data: dict, out: Path, **kw) -> Path:
    kw.setdefault("iterations", 2)
    kw.setdefault("options", TINY)
    return adapt_model(src, data["unlabeled"], out, labeled=data["labeled"], device="cpu", workers=1, **kw)


# ------------------------------------------------------------------------------------- starts from the package
def test_adapted_run_starts_from_the_package_and_then_learns(tmp_path, data):
    src = tiny_package(tmp_path)
    before = weights(src)
    assert not same(before["A"], before["B"])  # A and B differ, so A<-A and B<-B are told apart
    # a vanishing learning rate: what is exported is what the run started from
    still = run_adapt(src, data, tmp_path / "still", iterations=1, lr=1e-12)
    after = weights(still)
    assert same(after["A"], before["A"], atol=1e-6) and same(after["B"], before["B"], atol=1e-6)
    # a real learning rate: the weights move away from the package's
    moved = run_adapt(src, data, tmp_path / "moved", iterations=3, lr=1e-2)
    trained = weights(moved)
    assert not same(trained["A"], before["A"], atol=1e-4) and not same(trained["B"], before["B"], atol=1e-4)

    # the resolved config records the package and its network; DVCL trained A and B with every labeled case
    import yaml

    cfg = yaml.safe_load((tmp_path / "moved.adapt-work" / "run" / "config.yaml").read_text())
    assert cfg["init_model"] == str(src.resolve()) and cfg["method"] == "dvcl"
    assert cfg["network"]["channels"] == [4, 8] and cfg["network"]["feature_dim"] == 8
    assert cfg["val_roi"] == [8, 16, 16] and cfg["labeled_fraction"] == 1.0
    assert cfg["flip_prob"] == 0.0  # no mirrored anatomy: the label sets have left/right structures

    # the package: loads, keeps the source's window and preprocessing, and its card tells where it came from
    meta = json.loads((moved / "model.json").read_text())
    card = meta["card"]
    assert meta["name"] == "moved" and meta["models"] == ["A", "B"]
    assert meta["inference"] == {"roi": [8, 16, 16], "stride": [4, 8, 8]}
    assert meta["preprocessing"]["spacing"] == [2.5, 2.5, 2.5]
    assert card["adapted_from"]["name"] == "src" and len(card["adapted_from"]["sha256"]) == 64
    assert card["adaptation"]["unlabeled_scans"] == {"count": 2, "files": ["scan0.nii.gz", "scan1.nii.gz"]}
    assert card["adaptation"]["iterations"] == 3 and card["date"]
    assert TRANSDUCTIVE_LINE in card["transductive"]
    text = (moved / "MODEL_CARD.md").read_text()
    assert TRANSDUCTIVE_LINE in text and "scan0.nii.gz" in text and str(tmp_path) not in json.dumps(meta)

    # segments a scan through the real `dvcl segment` path, in the scan's own geometry
    from dvcl.inference.segment import segment_files

    scan = data["unlabeled"] / "scan0.nii.gz"
    seg_dir = tmp_path / "seg"
    segment_files([scan], seg_dir, moved, device="cpu", volumes=None)
    pred = sitk.ReadImage(str(seg_dir / "scan0.nii.gz"))
    assert pred.GetSize() == sitk.ReadImage(str(scan)).GetSize()
    assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1, 2}


def test_one_network_package_initialises_both_models(tmp_path, data):
    """B<-A: a one-network package starts both co-trained networks from its only network."""
    src = tiny_package(tmp_path, models=("A",))
    out = run_adapt(src, data, tmp_path / "out", iterations=1, lr=1e-12)
    before, after = weights(src), weights(out)
    assert sorted(after) == ["A", "B"]
    assert same(after["A"], before["A"], atol=1e-6) and same(after["B"], before["A"], atol=1e-6)


# ------------------------------------------------------------------------------------------------ refusals
def test_label_set_mismatch_is_refused(tmp_path, data):
    """`dvcl train --set init_model=...` on data whose labels differ from the package's: refused, nothing run."""
    from dvcl.data.cache import prepare_dataset
    from dvcl.presets import Preset
    from dvcl.training import TrainConfig, apply_profile, train

    cache, _ = prepare_dataset(data["labeled"], tmp_path / "cache", preset=Preset(name="tiny", labels=LABELS),
                               workers=1)
    src = tiny_package(tmp_path, labels={1: "liver", 2: "ball"})
    cfg = TrainConfig(data=str(cache.root), method="supervised", init_model=str(src), labeled_fraction=1.0)
    apply_profile(cfg, "quick")
    for k, v in TINY.items():
        setattr(cfg, k, v)
    cfg.iterations = 1
    with pytest.raises(ModelError, match="labels do not match.*liver"):
        train(cfg, tmp_path / "run", device="cpu")
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_network_mismatch_is_refused(tmp_path):
    """A method whose U-Nets differ from the package's network cannot take its weights."""
    from dvcl.methods import get_method_class
    from dvcl.training import TrainConfig
    from dvcl.training.trainer import init_from_model_package

    src = tiny_package(tmp_path)
    cfg = TrainConfig(method="dvcl", method_params={"feature_dim": 8})
    cfg.network = NetworkConfig(num_classes=3, channels=(4, 8, 16), feature_dim=8)
    method = get_method_class("dvcl")(cfg, 3, torch.device("cpu"))
    method.setup()
    with pytest.raises(ModelError, match="does not match the init model.*channels"):
        init_from_model_package(method, src)


def test_unlabeled_folder_must_hold_readable_scans(tmp_path, data):
    src = tiny_package(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a scan")
    with pytest.raises(DatasetError, match="holds no scans"):
        run_adapt(src, {**data, "unlabeled": empty}, tmp_path / "out")
    bad = tmp_path / "bad"
    bad.mkdir()
    sitk.WriteImage(sitk.ReadImage(str(data["unlabeled"] / "scan0.nii.gz")), str(bad / "good.nii.gz"))
    (bad / "broken.nii.gz").write_bytes(b"not an image at all")
    (bad / "short.nii").write_bytes((data["unlabeled"] / "scan1.nii.gz").read_bytes()[:200])
    with pytest.raises(DatasetError, match=r"2 unreadable scan\(s\): broken\.nii\.gz .*short\.nii"):
        run_adapt(src, {**data, "unlabeled": bad}, tmp_path / "out2")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out2.adapt-work").exists()
    assert [p.name for p in check_unlabeled_folder(data["unlabeled"])] == ["scan0.nii.gz", "scan1.nii.gz"]


def test_missing_labeled_data_existing_output_and_other_settings_are_refused(tmp_path, data):
    src = tiny_package(tmp_path)
    with pytest.raises(ConfigError, match="--labeled DATA is required.*no labeled-data generator.*synthetic_abdomen"):
        adapt_model(src, data["unlabeled"], tmp_path / "m", device="cpu")
    assert not (tmp_path / "m.adapt-work").exists()
    with pytest.raises(ConfigError, match="would replace the input model"):
        run_adapt(src, data, src)
    out = run_adapt(src, data, tmp_path / "m", iterations=1)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_adapt(src, data, out, iterations=1)
    (out / "model.json").rename(tmp_path / "kept.json")  # as if the export had not happened: the run is reused
    for p in out.iterdir():
        p.unlink()
    out.rmdir()
    with pytest.raises(ConfigError, match="iterations 1 .asked: 2."):
        run_adapt(src, data, out, iterations=2)
    # --overwrite starts over with the new settings
    run_adapt(src, data, out, iterations=2, overwrite=True)
    assert json.loads((out / "model.json").read_text())["card"]["adaptation"]["iterations"] == 2


# ------------------------------------------------------------------------------------------------- resume
def test_stopped_adaptation_resumes_exactly(tmp_path, data):
    """Stopped after its first iteration (the STOP file the Slicer module writes), the same command continues
    the run and exports what an uninterrupted adaptation exports (bit for bit on the CPU)."""
    src = tiny_package(tmp_path)
    whole = run_adapt(src, data, tmp_path / "whole", iterations=3, lr=1e-2)

    out = tmp_path / "stopped"
    run_dir = tmp_path / "stopped.adapt-work" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "STOP").write_text("")
    with pytest.raises(KeyboardInterrupt):
        run_adapt(src, data, out, iterations=3, lr=1e-2)
    assert not out.exists()
    assert json.loads((run_dir / "run.json").read_text())["iteration"] == 1
    run_adapt(src, data, out, iterations=3, lr=1e-2)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    rows = (run_dir / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3]
    assert same(weights(out)["A"], weights(whole)["A"]) and same(weights(out)["B"], weights(whole)["B"])


# ------------------------------------------------------------------------------------------------- the CLI
def test_cli_adapt_errors_in_one_line_and_help_is_torch_free(tmp_path, data):
    from dvcl.cli.main import main

    src = tiny_package(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["--progress", "none", "adapt", "--model", str(src), "--unlabeled", str(empty), "-o",
               str(tmp_path / "o"), "--labeled", str(data["labeled"])])
    assert rc == 2 and not (tmp_path / "o").exists()
    code = ("import sys\nfrom dvcl.cli.main import main\n"
            "try:\n    main(['adapt', '--help'])\nexcept SystemExit:\n    pass\n"
            "bad = sorted(m for m in ('torch', 'monai') if m in sys.modules)\nassert not bad, bad\nprint('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]
    assert "--unlabeled" in res.stdout and TRANSDUCTIVE_LINE in " ".join(res.stdout.split())


@pytest.mark.parametrize("generator,preset", [("synthetic_abdomen", "flare22"), ("synthetic_abdomen_adult", "flare22"),
                                              ("synthetic_abdomen_adult_fatty", "flare22"),
                                              ("synthetic_abdomen_adult_fatty_planes", "flare22"),
                                              ("synthetic_heart", "mmwhs")])
def test_a_model_whose_card_names_the_synthetic_generator_gets_its_synthetic_data(tmp_path, monkeypatch, generator,
                                                                                  preset):
    import json

    import dvcl.adapt as adapt_mod
    from dvcl.adapt import labeled_data_for

    monkeypatch.setattr(adapt_mod, "SYNTHETIC_LABELED_COUNT", 2)
    meta = {"name": "synthetic_model", "card": {"labeled_data_generator": generator}}
    folder = labeled_data_for(meta, tmp_path / "model", tmp_path / "work", seed=3)
    info = json.loads((folder / "dataset.json").read_text())
    assert folder == tmp_path / "work" / "labeled" and info["preset"] == preset and info["numTraining"] == 2
    assert len(list((folder / "labeled" / "labels").glob("*.nii.gz"))) == 2
    assert labeled_data_for(meta, tmp_path / "model", tmp_path / "work", seed=3) == folder  # reused, not redone
    sizes = info["synthesis"]["config"].get("organ_sizes")
    assert sizes == ("adult" if "_adult" in generator else "phantom")  # the anatomy the model learned
    assert info["synthesis"]["config"].get("fatty_pancreas_p", 0.0) == (0.33 if "_fatty" in generator else 0.0)
    assert info["synthesis"]["config"].get("fat_planes", False) is generator.endswith("_planes")
