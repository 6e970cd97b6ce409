"""The shared Trainer on a tiny cache: every run-dir file, the Method contract, data streams, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dvcl.errors import ConfigError, DatasetError, OutputExistsError
from dvcl.methods.base import Method
from dvcl.methods.registry import register_method
from dvcl.preprocessing import PreprocessConfig
from dvcl.presets import Preset
from dvcl.training import TrainConfig, apply_profile, train
from dvcl.training.checkpoint import load_state, load_weights
from dvcl.training.loaders import CaseItem, PatchStream, SpatialAugmentation, StreamSampler
from dvcl.training.schedules import poly_lr, sigmoid_rampup

SHAPE = (12, 20, 20)


def make_tiny_cache(root: Path, n_train: int = 4, n_val: int = 1, n_unl: int = 2, shape=SHAPE, seed: int = 0) -> Path:
    """A cache in the layout of docs/architecture.md: a bright ball (class 1) and a brighter box (class 2)."""
    root = Path(root)
    (root / "cases").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ids = {"train": [f"t{i}" for i in range(n_train)], "val": [f"v{i}" for i in range(n_val)], "test": ["s0"],
           "unlabeled": [f"u{i}" for i in range(n_unl)]}
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    cases = {}
    for split, lst in ids.items():
        for cid in lst:
            seg = np.zeros(shape, np.uint8)
            c = rng.integers(4, [s - 4 for s in shape])
            seg[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < 9] = 1
            seg[1:4, 1:5, 1:5] = 2
            img = (0.5 * (seg == 1) + 1.0 * (seg == 2) + 0.1 * rng.standard_normal(shape)).astype(np.float32)
            np.save(root / "cases" / f"{cid}_img.npy", img)
            if split != "unlabeled":
                np.save(root / "cases" / f"{cid}_seg.npy", seg)
            cases[cid] = {"labeled": split != "unlabeled", "shape": list(shape)}
    preset = Preset(name="tiny", labels={1: "ball", 2: "box"})
    meta = {"format": "dvcl-cache/1", "preset": preset.to_dict(),
            "labels": {"0": "background", "1": "ball", "2": "box"}, "num_classes": 3,
            "preprocessing": PreprocessConfig().to_dict(), "cases": cases, "dvcl_version": "test"}
    (root / "dataset.json").write_text(json.dumps(meta))
    (root / "splits.json").write_text(json.dumps({"seed": 0, "ratios": [6, 2, 2], **ids}))
    return root


def tiny_config(cache: Path, method: str = "supervised", iterations: int = 4, **kw) -> TrainConfig:
    cfg = TrainConfig(data=str(cache), method=method, labeled_fraction=0.5)
    apply_profile(cfg, "quick")
    cfg.network.channels = (4, 8)
    cfg.network.feature_dim = 16
    cfg.patch = (8, 16, 16)
    cfg.val_roi = (8, 16, 16)
    cfg.iterations = iterations
    cfg.batch_labeled = 1
    cfg.batch_unlabeled = 1
    cfg.val_every = 2
    cfg.log_every = 1
    cfg.num_workers = 0
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@register_method("test_cotrain")
class CoTrainForTest(Method):
    """A minimal two-model method: supervised CE on A and B, a projection term on unlabeled voxels, a counter.

    It exercises what DVCL needs from the Trainer: two models, the unlabeled batch, ``project`` outside
    ``forward``, ``after_step`` and ``extra_state`` through checkpoints.
    """

    def build_models(self):
        self.steps = torch.zeros((), dtype=torch.long)
        self.seen_iterations = []
        return {"A": self.new_network(), "B": self.new_network()}

    def compute_loss(self, batch_l, batch_u, iteration):
        assert batch_u is not None and "label" not in batch_u
        self.seen_iterations.append(iteration)
        loss = 0.0
        for m in self.models.values():
            logits, _ = m(batch_l["image"])
            loss = loss + torch.nn.functional.cross_entropy(logits, batch_l["label"][:, 0])
            _, feats_u = m(batch_u["image"])
            v = feats_u.permute(0, 2, 3, 4, 1).reshape(-1, feats_u.shape[1])[:32]
            loss = loss + 0.01 * m.project(v).sum(dim=1).var()
        return loss, {"sup": float(loss.detach())}

    def after_step(self, iteration):
        self.steps += 1

    def extra_state(self):
        return {"steps": self.steps}

    def load_extra_state(self, state):
        self.steps = state["steps"].clone()

    def inference_models(self):
        return ["A", "B"]


# ----------------------------------------------------------------------------------------------- full runs
def test_tiny_run_writes_every_file(tmp_path):
    cache = make_tiny_cache(tmp_path / "cache")
    cfg = tiny_config(cache, "test_cotrain", iterations=4)
    run = tmp_path / "run"
    res = train(cfg, run, device="cpu", argv=["dvcl", "train", "test"])
    assert res.status == "finished" and res.iteration == 4
    for rel in ("config.yaml", "environment.json", "metrics.csv", "run.json", "checkpoints/best.safetensors",
                "checkpoints/last.safetensors", "checkpoints/last_state.pt"):
        assert (run / rel).is_file(), rel
    assert list((run / "tb").glob("events.out.tfevents.*"))

    # config.yaml is the resolved config and loads back
    back = TrainConfig.load(run / "config.yaml")
    assert back.to_dict() == cfg.to_dict()
    assert back.network.num_classes == 3 and back.preset == "tiny"
    extra = yaml.safe_load((run / "config.yaml").read_text())["run"]
    assert len(extra["labeled_cases"]) == 2 and extra["val_cases"] == ["v0"]
    assert extra["unlabeled_cases"] == 4  # 2 train cases without labels + 2 unlabeled-only cases

    env = json.loads((run / "environment.json").read_text())
    for key in ("python", "torch", "monai", "SimpleITK", "dvcl", "git_commit", "device", "argv"):
        assert key in env
    assert env["device"] == "cpu" and env["argv"] == ["dvcl", "train", "test"]

    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "finished" and status["iteration"] == 4
    assert status["inference_models"] == ["A", "B"]
    assert status["best_val_dice"] == pytest.approx(res.best_val_dice)

    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert {"lr", "loss", "sup", "val_dice", "val_dice_ball", "val_dice_box"} <= set(rows[0])
    assert float(rows[0]["lr"]) == pytest.approx(cfg.lr)  # iteration 0 of the poly schedule
    assert float(rows[2]["lr"]) == pytest.approx(cfg.lr * (1 - 2 / 4) ** 0.9)
    assert rows[0]["val_dice"] == "" and rows[1]["val_dice"] != "" and rows[3]["val_dice"] != ""
    vals = [float(r["val_dice"]) for r in rows if r["val_dice"]]
    assert status["best_val_dice"] == pytest.approx(max(vals), abs=1e-5)

    weights = load_weights(run / "checkpoints" / "last.safetensors")
    assert set(weights) == {"A", "B"} and any(k.startswith("proj_head.") for k in weights["A"])
    state = load_state(run / "checkpoints" / "last_state.pt")  # weights_only=True inside
    assert state["iteration"] == 4 and int(state["method_extra"]["steps"]) == 4
    assert torch.equal(state["models"]["B"]["seg_head.weight"], weights["B"]["seg_head.weight"])
    assert len(state["optimizer"]["state"]) > 0  # momentum buffers are saved

    # a second run into the same folder is refused without --overwrite, and nothing is touched
    mtime = (run / "metrics.csv").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--resume"):
        train(cfg, run, device="cpu")
    assert (run / "metrics.csv").stat().st_mtime_ns == mtime


def test_supervised_learns_the_tiny_task(tmp_path):
    """Real training steps: the loss falls and the validation Dice of the ball rises well above chance."""
    cache = make_tiny_cache(tmp_path / "cache", n_train=2)
    cfg = tiny_config(cache, "supervised", iterations=30, val_every=30, lr=0.05, labeled_fraction=1.0)
    cfg.network.channels = (8, 16)
    res = train(cfg, tmp_path / "run", device="cpu")
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    first = np.mean([float(r["loss"]) for r in rows[:3]])
    last = np.mean([float(r["loss"]) for r in rows[-3:]])
    assert last < 0.7 * first
    assert res.best_val_dice > 0.3


def test_fully_forces_all_labels_and_no_unlabeled_stream(tmp_path):
    cache = make_tiny_cache(tmp_path / "cache", n_unl=0)
    cfg = tiny_config(cache, "fully", iterations=1, val_every=0)
    train(cfg, tmp_path / "run", device="cpu")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["labeled_fraction"] == 1.0 and len(saved["run"]["labeled_cases"]) == 4


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_rejected_before_writing(tmp_path):
    cache = make_tiny_cache(tmp_path / "cache", n_unl=0)
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="preset 'tiny', not 'flare22'"):
        train(tiny_config(cache, preset="flare22"), run, device="cpu")
    with pytest.raises(DatasetError, match="needs unlabeled cases"):
        train(tiny_config(cache, "test_cotrain", labeled_fraction=1.0), run, device="cpu")
    with pytest.raises(ConfigError, match="divisible"):
        train(tiny_config(cache, patch=(8, 15, 16)), run, device="cpu")
    with pytest.raises(ConfigError, match="unknown method 'nosuch'"):
        train(tiny_config(cache, "nosuch"), run, device="cpu")
    with pytest.raises(ConfigError, match="unknown parameter"):
        train(tiny_config(cache, method_params={"lambda_x": 1}), run, device="cpu")
    with pytest.raises(DatasetError, match="not a prepared cache"):
        train(tiny_config(tmp_path / "nothing"), run, device="cpu")
    assert not run.exists()


def test_config_yaml_round_trip_and_errors(tmp_path):
    cfg = TrainConfig(method="dvcl", method_params={"lambda_c": 0.0})
    apply_profile(cfg, "quick")
    assert cfg.patch == (32, 64, 64) and cfg.network.channels == (8, 16, 32, 64)
    assert (cfg.batch_labeled, cfg.batch_unlabeled) == (2, 2)
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == cfg
    paper = TrainConfig()
    apply_profile(paper, "paper")
    assert paper.patch == (64, 128, 128) and paper.network.channels == (16, 32, 64, 128, 256)
    assert (paper.momentum, paper.weight_decay, paper.poly_power, paper.network.feature_dim) == (0.9, 1e-4, 0.9, 256)
    (tmp_path / "bad.yaml").write_text("iterashuns: 5\n")
    with pytest.raises(ConfigError, match="iterashuns"):
        TrainConfig.load(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="profile"):
        apply_profile(cfg, "fast")


# ----------------------------------------------------------------------------------------------- schedules, streams
def test_poly_lr_and_rampup_values():
    assert poly_lr(0.1, 0, 100) == pytest.approx(0.1)
    assert poly_lr(0.1, 50, 100, 0.9) == pytest.approx(0.1 * 0.5**0.9)  # 0.053589
    assert poly_lr(0.1, 50, 100, 0.9) == pytest.approx(0.0535887, abs=1e-7)
    assert poly_lr(0.1, 100, 100) == 0.0
    assert sigmoid_rampup(0, 10) == pytest.approx(np.exp(-5))
    assert sigmoid_rampup(5, 10) == pytest.approx(np.exp(-5 * 0.25))
    assert sigmoid_rampup(20, 10) == 1.0


def _items(cache: Path, ids, labeled=True):
    return [CaseItem(c, str(cache / "cases" / f"{c}_img.npy"),
                     str(cache / "cases" / f"{c}_seg.npy") if labeled else None) for c in ids]


def test_streams_are_deterministic_sharded_and_cover_cases(tmp_path):
    cache = make_tiny_cache(tmp_path / "cache")
    ids = ["t0", "t1", "t2", "t3"]
    s1 = PatchStream(_items(cache, ids), (8, 16, 16), seed=3, stream=1, labeled=True)
    s2 = PatchStream(_items(cache, ids), (8, 16, 16), seed=3, stream=1, labeled=True)
    a, b = s1[7], s2[7]
    assert a["image"].shape == (1, 8, 16, 16) and a["label"].dtype == torch.long
    assert torch.equal(a["image"], b["image"]) and a["case"] == b["case"]
    assert not torch.equal(s1[7]["image"], s1[8]["image"])
    # one pass over the stream visits every case once
    assert sorted(s1.case_for(k).case_id for k in range(4)) == ids
    assert sorted(s1.case_for(k).case_id for k in range(4, 8)) == ids
    # two ranks draw disjoint, interleaved slices of one global stream
    r0, r1 = StreamSampler(2, 0, 0, 2), StreamSampler(2, 0, 1, 2)
    assert r0.indices_for(0) == [0, 1] and r1.indices_for(0) == [2, 3] and r0.indices_for(1) == [4, 5]
    resumed = iter(StreamSampler(2, 5, 1, 2))
    assert [next(resumed) for _ in range(4)] == r1.indices_for(5) + r1.indices_for(6)


def test_padding_and_foreground_oversampling(tmp_path):
    cache = make_tiny_cache(tmp_path / "cache")
    big = PatchStream(_items(cache, ["t0"]), (16, 24, 24), seed=0, stream=1, labeled=True, flip_prob=0.0)
    s = big[0]
    assert s["image"].shape == (1, 16, 24, 24)  # padded up from (12, 20, 20)
    assert int((s["label"] > 0).sum()) == int((np.load(cache / "cases" / "t0_seg.npy") > 0).sum())
    fg = PatchStream(_items(cache, ["t0", "t1"]), (4, 4, 4), seed=0, stream=1, labeled=True,
                     foreground_oversample=1.0)
    rnd = PatchStream(_items(cache, ["t0", "t1"]), (4, 4, 4), seed=0, stream=1, labeled=True)
    fg_hits = sum(bool((fg[k]["label"] > 0).any()) for k in range(20))
    rnd_hits = sum(bool((rnd[k]["label"] > 0).any()) for k in range(20))
    assert fg_hits == 20 and rnd_hits < 20


def test_class_balanced_oversampling_finds_the_small_organ(tmp_path):
    """``oversample_mode=class`` (nnU-Net): a 1-voxel organ next to a 1000-voxel one is a crop centre about half
    the time; ``any`` foreground voxel almost never picks it."""
    label = np.zeros((16, 24, 24), np.uint8)
    label[2:12, 2:12, 2:12] = 1  # 1000 voxels
    label[14, 21, 21] = 2  # 1 voxel, far from organ 1
    img = tmp_path / "c_img.npy"
    seg = tmp_path / "c_seg.npy"
    np.save(img, label.astype(np.float32))
    np.save(seg, label)
    items = [CaseItem("c", str(img), str(seg))]

    def hits(mode: str) -> int:
        stream = PatchStream(items, (4, 4, 4), seed=0, stream=1, labeled=True, foreground_oversample=1.0,
                             flip_prob=0.0, oversample_mode=mode, num_classes=3)
        return sum(bool((stream[k]["label"] == 2).any()) for k in range(40))

    assert 10 <= hits("class") <= 30
    assert hits("any") <= 2
    with pytest.raises(DatasetError, match="number of classes"):
        PatchStream(items, (4, 4, 4), seed=0, stream=1, labeled=True, foreground_oversample=1.0,
                    oversample_mode="class")


def test_spatial_augmentation_scales_and_rotates_crops(tmp_path):
    """``affine_prob``: a crop taken larger and scaled/rotated down to the patch; untouched crops are exact
    blocks of the image (no resampling blur), transformed ones are not, labels stay in the label set."""
    shape = (20, 40, 40)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    image = (z * 10000 + y * 100 + x).astype(np.float32)  # each voxel's value says where it came from
    label = np.zeros(shape, np.uint8)
    label[5:15, 10:30, 10:30] = 1
    label[8:12, 15:25, 15:25] = 2
    np.save(tmp_path / "a_img.npy", image)
    np.save(tmp_path / "a_seg.npy", label)
    items = [CaseItem("a", str(tmp_path / "a_img.npy"), str(tmp_path / "a_seg.npy"))]
    patch = (8, 16, 16)
    assert SpatialAugmentation(1.0, 0.25, 0.0).crop_size(patch) == (10, 20, 20)
    assert SpatialAugmentation(1.0, 0.0, 15.0).crop_size(patch) == (8, 20, 20)  # 16 (cos 15 + sin 15) = 19.6
    assert SpatialAugmentation(1.0, 0.0, 90.0).crop_size(patch) == (8, 23, 23)  # 45 degrees on the way: 16 x 1.414

    def stream(prob: float) -> PatchStream:
        return PatchStream(items, patch, seed=0, stream=1, labeled=True, flip_prob=0.0,
                           spatial=SpatialAugmentation(prob, 0.25, 15.0))

    def is_block(img: torch.Tensor) -> bool:
        a = img[0].numpy()
        k, j, i = np.meshgrid(*[np.arange(s) for s in patch], indexing="ij")
        return bool(np.allclose(a - a[0, 0, 0], k * 10000 + j * 100 + i))

    never, always = stream(0.0), stream(1.0)
    assert all(is_block(never[k]["image"]) for k in range(10))
    touched = [always[k] for k in range(10)]
    assert all(t["image"].shape == (1, *patch) and t["label"].shape == (1, *patch) for t in touched)
    assert sum(is_block(t["image"]) for t in touched) == 0
    assert set(np.unique(np.concatenate([t["label"].numpy().ravel() for t in touched]))) <= {0, 1, 2}
    assert torch.equal(stream(1.0)[3]["image"], touched[3]["image"])  # reproducible from (seed, stream, k)
    assert float(touched[0]["image"].min()) >= 0.0 and float(touched[0]["image"].max()) <= float(image.max())


# ----------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_prepares_raw_data_then_trains(tmp_path, abdomen_simple_layout, capsys):
    """`dvcl train --data RAW`: the real abdomen CT is preprocessed into RUN_DIR/cache, then trained on."""
    from dvcl.cli.main import main

    run = tmp_path / "run"
    rc = main(["--progress", "none", "train", "--data", str(abdomen_simple_layout), "--preset", "flare22",
               "--out", str(run), "--method", "supervised", "--profile", "quick", "--labeled-fraction", "1.0",
               "--iterations", "2", "--patch", "16", "32", "32", "--workers", "0", "--device", "cpu",
               "--set", "network.channels=[4,8]", "--set", "log_every=1", "--set", "num_workers=0"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "finished" and summary["iteration"] == 2
    assert summary["best_val_dice"] is None  # one labeled case: it is the training case, nothing to validate on
    assert (run / "cache" / "dataset.json").is_file() and (run / "cache" / "cases" / "abd_img.npy").is_file()
    cfg = TrainConfig.load(run / "config.yaml")
    assert cfg.preset == "flare22" and cfg.network.num_classes == 14 and cfg.patch == (16, 32, 32)
    # the quick profile: AdamW at 3e-3 (the paper's SGD at 0.1 learns nothing in a few hundred CPU iterations)
    assert cfg.optimizer == "adamw" and cfg.lr == 3e-3 and (cfg.batch_labeled, cfg.batch_unlabeled) == (2, 2)
    assert set(load_weights(run / "checkpoints" / "best.safetensors")) == {"A"}
    # bad option values are one-line errors (exit 2), not tracebacks
    assert main(["--progress", "none", "train", "--data", str(run / "cache"), "--out", str(tmp_path / "r2"),
                 "--set", "lambda_c"]) == 2
    assert main(["--progress", "none", "train", "--data", str(tmp_path / "missing"), "--out",
                 str(tmp_path / "r3")]) == 2
    assert "dvcl: error:" in capsys.readouterr().err


def test_optimizer_choice_follows_the_profile():
    """paper -> SGD with momentum 0.9 and weight decay 1e-4 [given]; quick -> AdamW; anything else is refused."""
    import torch

    from dvcl.errors import ConfigError
    from dvcl.training.trainer import build_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    cfg = TrainConfig()
    apply_profile(cfg, "paper")
    sgd = build_optimizer(cfg, params)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["weight_decay"] == 1e-4
    apply_profile(cfg, "quick")
    assert isinstance(build_optimizer(cfg, params), torch.optim.AdamW)
    cfg.optimizer = "lion"
    with pytest.raises(ConfigError, match="optimizer"):
        cfg.validate()
