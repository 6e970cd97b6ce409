"""Model packages: save/load round trip, safe loading, clear errors, installed models, export of a real run."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dvcl.errors import ModelError, OutputExistsError
from dvcl.inference.model_package import (
    FORMAT,
    default_model_dir,
    export_model,
    list_installed_models,
    load_model_package,
    read_model_json,
    resolve_model,
    save_model_package,
)
from dvcl.networks import NetworkConfig, build_network
from dvcl.preprocessing import PreprocessConfig
from dvcl.presets import get_preset

TINY = NetworkConfig(num_classes=14, channels=(4, 8), feature_dim=8)


def _tiny_pair(seed: int = 0):
    torch.manual_seed(seed)
    return {"A": build_network(TINY), "B": build_network(TINY)}


@pytest.fixture
def package(tmp_path) -> Path:
    flare = get_preset("flare22")
    return save_model_package(_tiny_pair(), TINY, flare.labels, tmp_path / "pkg", name="tiny", preset="flare22",
                              description="random weights")


def test_round_trip_same_weights_and_outputs(package):
    nets = _tiny_pair()  # same seed: the very networks that were saved
    pkg = load_model_package(package)
    assert pkg.model_names == ["A", "B"] and pkg.num_classes == 14 and pkg.name == "tiny"
    for name in ("A", "B"):
        saved, loaded = nets[name].state_dict(), pkg.models[name].state_dict()
        assert saved.keys() == loaded.keys()
        for k in saved:
            assert torch.equal(saved[k], loaded[k]), k
        assert not pkg.models[name].training
    # A and B really differ (different initialisation), so the package did not store one model twice.
    assert not torch.equal(nets["A"].seg_head.weight, nets["B"].seg_head.weight)
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        assert torch.equal(nets["A"].eval().segment(x), pkg.models["A"].segment(x))


def test_model_json_contents(package):
    meta = json.loads((package / "model.json").read_text())
    assert meta["format"] == FORMAT == "dvcl-model/1"
    assert meta["models"] == ["A", "B"]
    assert meta["inference"] == {"roi": [64, 160, 160], "stride": [32, 80, 80]}
    assert meta["labels"]["1"] == {"name": "liver", "color": [221, 130, 101]}
    assert meta["labels"]["13"]["name"] == "left kidney" and len(meta["labels"]) == 13
    assert meta["network"]["channels"] == [4, 8] and meta["network"]["num_classes"] == 14
    assert PreprocessConfig.from_dict(meta["preprocessing"]) == PreprocessConfig()
    # safetensors layout: 8-byte little-endian header length, then a JSON header naming "<model>.<param>" keys
    raw = (package / "weights.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert "A.seg_head.weight" in header and "B.seg_head.weight" in header
    assert header["A.seg_head.weight"]["shape"] == [14, 4, 1, 1, 1]


def test_save_refuses_to_overwrite(package):
    with pytest.raises(OutputExistsError, match="exists"):
        save_model_package(_tiny_pair(), TINY, get_preset("flare22").labels, package, name="again")
    save_model_package(_tiny_pair(1), TINY, get_preset("flare22").labels, package, name="again", overwrite=True)
    assert load_model_package(package).name == "again"


def test_a_only_package(tmp_path):
    nets = _tiny_pair()
    out = save_model_package(nets, TINY, get_preset("flare22").labels, tmp_path / "a", name="a", model_names=["A"])
    pkg = load_model_package(out)
    assert list(pkg.models) == ["A"]


def test_missing_folder_and_files(tmp_path, package):
    with pytest.raises(ModelError, match="model folder not found"):
        load_model_package(tmp_path / "nope")
    (package / "weights.safetensors").unlink()
    with pytest.raises(ModelError, match="weights file missing"):
        load_model_package(package)
    (package / "model.json").unlink()
    with pytest.raises(ModelError, match="model.json: missing"):
        load_model_package(package)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_weights(package, damage):
    w = package / "weights.safetensors"
    raw = w.read_bytes()
    w.write_bytes({"garbage": b"\x80\x04not a safetensors file" * 10, "truncated": raw[: len(raw) // 2],
                   "empty": b""}[damage])
    with pytest.raises(ModelError, match="corrupt or unreadable weights"):
        load_model_package(package)


def test_json_errors(package):
    mj = package / "model.json"
    good = json.loads(mj.read_text())
    mj.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model_package(package)
    mj.write_text(json.dumps({**good, "format": "dvcl-model/99"}))
    with pytest.raises(ModelError, match="unsupported format"):
        load_model_package(package)
    mj.write_text(json.dumps({k: v for k, v in good.items() if k != "network"}))
    with pytest.raises(ModelError, match="'network' is missing"):
        load_model_package(package)
    mj.write_text(json.dumps({**good, "labels": {"1": {"name": "liver"}}}))
    with pytest.raises(ModelError, match="do not match the network's 14 classes"):
        load_model_package(package)
    mj.write_text(json.dumps({**good, "inference": {"roi": [64, 160, 151], "stride": [32, 80, 80]}}))
    with pytest.raises(ModelError, match="not divisible"):
        load_model_package(package)


def test_weights_that_do_not_fit_the_config(package):
    mj = package / "model.json"
    good = json.loads(mj.read_text())
    mj.write_text(json.dumps({**good, "network": {**good["network"], "channels": [8, 16]}}))
    with pytest.raises(ModelError, match="wrong shape"):
        load_model_package(package)
    mj.write_text(json.dumps({**good, "network": {**good["network"], "channels": [4, 8, 16]}}))
    with pytest.raises(ModelError, match="missing"):
        load_model_package(package)
    mj.write_text(json.dumps({**good, "models": ["A", "B", "C"]}))
    with pytest.raises(ModelError, match="no weights for model 'C'"):
        load_model_package(package)
    mj.write_text(json.dumps({**good, "models": ["A"]}))
    with pytest.raises(ModelError, match="belong to no model"):
        load_model_package(package)


def test_installed_models_and_resolution(tmp_path, monkeypatch):
    user = tmp_path / "user_models"
    monkeypatch.setenv("DVCL_MODELS", str(user))
    save_model_package(_tiny_pair(), TINY, get_preset("flare22").labels, user / "mine", name="my_model",
                       preset="flare22")
    (user / "broken").mkdir()
    (user / "broken" / "model.json").write_text("{")
    infos = {i.name: i for i in list_installed_models()}
    assert infos["my_model"].source == "user" and infos["my_model"].labels[3] == "spleen"
    assert "broken" not in infos
    assert resolve_model("my_model") == user / "mine"
    assert resolve_model(str(user / "mine")) == user / "mine"
    with pytest.raises(ModelError, match="installed: .*my_model"):
        resolve_model("no_such_model")
    demo = default_model_dir()
    assert demo.name == "phantom_demo" and demo.parent.name == "models"
    assert (demo.parent.parent / "__init__.py").is_file()  # inside the dvcl package: shipped as package data
    if (demo / "model.json").is_file():  # once the lead has trained it
        assert read_model_json(demo)["format"] == FORMAT
        assert "phantom_demo" in {i.path.name for i in list_installed_models() if i.source == "builtin"}


def _tiny_cache(root: Path) -> Path:
    """A prepared cache (docs/architecture.md layout): a bright ball (class 1) in noise, 3 labeled + 1 unlabeled."""
    (root / "cases").mkdir(parents=True)
    shape = (8, 16, 16)
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    ids = {"train": ["t0", "t1"], "val": ["v0"], "test": [], "unlabeled": ["u0"]}
    cases = {}
    for split, lst in ids.items():
        for cid in lst:
            seg = ((z - 4) ** 2 + (y - 8) ** 2 + (x - 8) ** 2 < 9).astype(np.uint8)
            np.save(root / "cases" / f"{cid}_img.npy", (seg + 0.1 * rng.standard_normal(shape)).astype(np.float32))
            if split != "unlabeled":
                np.save(root / "cases" / f"{cid}_seg.npy", seg)
            cases[cid] = {"labeled": split != "unlabeled", "shape": list(shape)}
    preset = {"name": "ballset", "labels": {"1": "ball"}}
    prep = PreprocessConfig(spacing=(2.0, 2.0, 4.0)).to_dict()
    (root / "dataset.json").write_text(json.dumps({
        "format": "dvcl-cache/1", "preset": preset, "labels": {"0": "background", "1": "ball"}, "num_classes": 2,
        "preprocessing": prep, "cases": cases, "dvcl_version": "test"}))
    (root / "splits.json").write_text(json.dumps({"seed": 0, "ratios": [6, 2, 2], **ids}))
    return root


def test_export_real_training_run(tmp_path):
    from dvcl.training import TrainConfig, apply_profile, train

    cache = _tiny_cache(tmp_path / "cache")
    cfg = TrainConfig(data=str(cache), method="cps", labeled_fraction=1.0)
    apply_profile(cfg, "quick")
    cfg.network = NetworkConfig(channels=(4, 8), feature_dim=8)
    cfg.patch = cfg.val_roi = (8, 16, 16)
    cfg.iterations, cfg.batch_labeled, cfg.batch_unlabeled, cfg.val_every, cfg.num_workers = 2, 1, 1, 2, 0
    cfg.flip_prob = 0.0  # as models of synthetic CT train: test-time augmentation must not flip them
    run = tmp_path / "run"
    train(cfg, run, device="cpu")

    out = export_model(run, tmp_path / "exported", name="ball_model", checkpoint="last")
    pkg = load_model_package(out)
    assert pkg.meta["training"]["flip_axes"] == [] and pkg.flip_axes == ()
    assert pkg.name == "ball_model" and pkg.model_names == ["A", "B"] and pkg.labels == {1: "ball"}
    assert pkg.preprocessing.spacing == (2.0, 2.0, 4.0)  # taken from the run's cache, not the defaults
    assert pkg.roi == (8, 16, 16) and pkg.stride == (6, 12, 12)  # the run's validation window, overlap 0.25
    assert pkg.meta["training"]["method"] == "cps" and pkg.meta["training"]["checkpoint"] == "last"
    from safetensors.torch import load_file

    last = load_file(str(run / "checkpoints" / "last.safetensors"))
    for k, v in pkg.models["B"].state_dict().items():
        assert torch.equal(v, last[f"B.{k}"]), k

    with pytest.raises(OutputExistsError):
        export_model(run, out)
    with pytest.raises(ModelError, match="run directory not found"):
        export_model(tmp_path / "missing_run", tmp_path / "x")
    (run / "checkpoints" / "best.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelError, match="corrupt"):
        export_model(run, tmp_path / "y", checkpoint="best")
    assert not (tmp_path / "y").exists()  # nothing written when the input is bad
    # preprocessing is not guessed: without the cache (and no record in config.yaml) the export is refused
    cache.rename(tmp_path / "moved_cache")
    with pytest.raises(ModelError, match="preprocessing settings not recorded"):
        export_model(run, tmp_path / "z", checkpoint="last")


def test_export_of_a_stopped_run_falls_back_to_last(tmp_path, capsys):
    """A run stopped before its first validation has no best checkpoint: export says so and uses the last one;
    model.json names the run, not the absolute path of the machine it was trained on."""
    import threading
    import time

    from dvcl.cli.main import main
    from dvcl.training import TrainConfig, apply_profile, train
    from dvcl.training.trainer import STOP_FILE

    cache = _tiny_cache(tmp_path / "cache")
    cfg = TrainConfig(data=str(cache), method="supervised", labeled_fraction=1.0)
    apply_profile(cfg, "quick")
    cfg.network = NetworkConfig(channels=(4, 8), feature_dim=8)
    cfg.patch = cfg.val_roi = (8, 16, 16)
    cfg.iterations, cfg.batch_labeled, cfg.val_every, cfg.num_workers, cfg.log_every = 2000, 1, 1000, 0, 1
    run = tmp_path / "stopped_run"

    def stop_soon() -> None:  # what the Slicer Stop button does: a STOP file in the run folder
        for _ in range(3000):
            if (run / "metrics.csv").is_file():
                (run / STOP_FILE).write_text("")
                return
            time.sleep(0.01)

    threading.Thread(target=stop_soon, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):  # a stopped run ends like Ctrl-C (the CLI exits 130)
        train(cfg, run, device="cpu")
    assert (run / "checkpoints" / "last.safetensors").is_file()
    assert not (run / "checkpoints" / "best.safetensors").exists()  # stopped before the first validation
    capsys.readouterr()  # the training bar

    assert main(["-q", "export", str(run), "-o", str(tmp_path / "best_pkg"), "--checkpoint", "best"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no best checkpoint" in err[0] and "--checkpoint last" in err[0]
    assert not (tmp_path / "best_pkg").exists()

    assert main(["export", str(run), "-o", str(tmp_path / "pkg")]) == 0
    assert "no best checkpoint" in capsys.readouterr().err  # the CLI's log line on stderr
    assert export_model(run, tmp_path / "api_pkg").name == "api_pkg"  # the API falls back the same way
    pkg = load_model_package(tmp_path / "pkg")
    assert pkg.meta["training"]["checkpoint"] == "last" and pkg.meta["training"]["run"] == "stopped_run"
    text = (tmp_path / "pkg" / "model.json").read_text()
    assert str(tmp_path) not in text and "/tmp" not in text  # no absolute paths in a shareable package


def test_ensemble_of_packages_averages_their_networks(tmp_path):
    """`dvcl ensemble`: the members' networks side by side (A of the second member is A2), probabilities averaged
    over every network; members that do not share an input pipeline or mode are refused."""
    from dvcl.cli.main import main
    from dvcl.inference.model_package import ensemble_packages
    from dvcl.inference.predictor import Predictor

    labels = get_preset("flare22").labels
    window = {"roi": (8, 16, 16), "stride": (8, 16, 16)}
    one = save_model_package(_tiny_pair(1), TINY, labels, tmp_path / "one", name="one", preset="flare22",
                             model_names=["A"], **window)
    two = save_model_package(_tiny_pair(2), TINY, labels, tmp_path / "two", name="two", preset="flare22", **window)
    assert main(["ensemble", str(one), str(two), "-o", str(tmp_path / "both"), "--description", "seeds"]) == 0
    both = load_model_package(tmp_path / "both")
    assert both.model_names == ["A1", "A2", "B2"] and both.name == "both" and both.roi == (8, 16, 16)
    assert [m["name"] for m in both.meta["training"]["ensemble"]] == ["one", "two"]
    members = [load_model_package(one), load_model_package(two)]
    assert torch.equal(both.models["B2"].seg_head.weight, members[1].models["B"].seg_head.weight)
    x = np.random.default_rng(0).random((8, 32, 16), dtype=np.float32)
    p1, p2, pe = (Predictor(p, "cpu", engine="torch").predict_array(x) for p in (*members, both))
    np.testing.assert_allclose(pe, (p1 + 2 * p2) / 3, atol=1e-5)  # p2 is already the mean of A and B
    assert not np.allclose(pe, p1, atol=1e-3)

    other = save_model_package(_tiny_pair(3), TINY, labels, tmp_path / "coarse", name="coarse", preset="flare22",
                               preprocessing=PreprocessConfig(spacing=(4.0, 4.0, 6.0)), **window)
    with pytest.raises(ModelError, match="preprocessing differs"):
        ensemble_packages([one, other], tmp_path / "bad")
    fast = save_model_package(_tiny_pair(4), TINY, labels, tmp_path / "fast", name="fast", preset="flare22",
                              mode="fast", **window)
    with pytest.raises(ModelError, match="mode differs"):
        ensemble_packages([one, fast], tmp_path / "bad")
    with pytest.raises(ModelError, match="at least two"):
        ensemble_packages([one], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
