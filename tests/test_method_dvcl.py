"""DVCL and CPS as training methods: real tiny U-Nets, real SGD steps on small synthetic patches."""

from __future__ import annotations

import math

import pytest
import torch
from dvcl_test_cases import two_box_batches

from dvcl.errors import ConfigError
from dvcl.methods import get_method_class
from dvcl.networks.config import NetworkConfig
from dvcl.training.config import TrainConfig

C = 3
SMALL = {"feature_dim": 16, "num_anchors": 16, "prototype_samples": 64, "negative_pool_per_class": 32,
         "num_negatives": 8, "num_queries": 32, "pool_size": 128}


def _cfg(method: str, **params) -> TrainConfig:
    net = NetworkConfig(channels=(4, 8), feature_dim=16, num_classes=C)
    return TrainConfig(method=method, iterations=10, network=net, method_params=params)




def _method(name: str, **params):
    torch.manual_seed(0)
    method = get_method_class(name)(_cfg(name, **params), C, torch.device("cpu"))
    method.setup()
    return method


def _proj_grad(model) -> float:
    return sum(float(p.grad.abs().sum()) for p in model.proj_head.parameters() if p.grad is not None)


def test_dvcl_two_training_iterations():
    method = _method("dvcl", **SMALL)
    a, b = method.models["A"], method.models["B"]
    assert method.inference_models() == ["A", "B"]
    assert not torch.equal(a.seg_head.weight, b.seg_head.weight)  # initialised differently
    start = {k: v.detach().clone() for k, v in a.state_dict().items()}
    opt = torch.optim.SGD(list(method.trainable_parameters()), lr=0.01, momentum=0.9)
    keys = None
    for it in range(2):
        batch_l, batch_u = two_box_batches(it)
        method.train()
        opt.zero_grad()
        loss, terms = method.compute_loss(batch_l, batch_u, it)
        assert torch.isfinite(loss)
        keys = keys or set(terms)
        assert set(terms) == keys  # the same columns at every iteration
        for name in ("sup", "sup_A", "sup_B", "cps", "cps_weight", "hqcl", "hqcl_A", "hqcl_B", "dvcl", "dvcl_A",
                     "dvcl_B", "contra", "unreliable_A", "unreliable_B", "loss"):
            assert isinstance(terms[name], float), name
        # defaults: lambda_cps 0.1 and lambda_c 0.1, both ramped over the whole run (exp(-5 (1 - it/10)^2))
        assert terms["contra_weight"] == pytest.approx(0.1 * math.exp(-5.0 * (1 - it / 10) ** 2))
        assert terms["cps_weight"] == pytest.approx(0.1 * math.exp(-5.0 * (1 - it / 10) ** 2))
        expected = (terms["sup"] + terms["cps_weight"] * terms["cps"]
                    + terms["contra_weight"] * (terms["hqcl"] + 0.3 * terms["dvcl"]))
        assert terms["loss"] == pytest.approx(expected, rel=1e-5)
        assert terms["loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
        assert terms["hqcl"] > 0 and terms["dvcl"] != 0.0 and 0 < terms["unreliable_A"] < 1
        loss.backward()
        for p in method.trainable_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all()
        assert _proj_grad(a) > 0 and _proj_grad(b) > 0  # HqCL trains both projection heads
        opt.step()
    assert any(not torch.equal(start[k], v) for k, v in a.state_dict().items())


def test_dvcl_terms_are_reproducible_under_a_seed():
    results = []
    for _ in range(2):
        method = _method("dvcl", **SMALL)
        torch.manual_seed(5)
        results.append(method.compute_loss(*two_box_batches(0), 3)[1])
    assert results[0] == results[1]


def test_dvcl_options_memory_bank_threshold_random_outsiders():
    params = dict(SMALL, memory_bank=True, memory_bank_size=64, anchor_threshold=0.3, outsider_mode="random",
                  cps_entropy_weighting=True, qds=False)
    method = _method("dvcl", **params)
    loss, _ = method.compute_loss(*two_box_batches(1), 0)
    assert torch.isfinite(loss)
    loss.backward()
    state = method.extra_state()
    assert int(state["bank.filled"].sum()) > 0  # the bank module's buffers, saved by Method.state_modules
    fresh = _method("dvcl", **params)
    fresh.load_extra_state(state)
    assert torch.equal(fresh.bank.bank, method.bank.bank)
    with pytest.raises(ConfigError):
        _method("dvcl", **SMALL).load_extra_state(state)  # no bank to load into


def test_dvcl_without_unlabeled_batch_and_bad_feature_dim():
    method = _method("dvcl", **SMALL)
    loss, terms = method.compute_loss(two_box_batches(0)[0], None, 0)
    assert torch.isfinite(loss) and terms["cps"] == 0.0 and terms["dvcl"] == 0.0
    loss.backward()
    with pytest.raises(ConfigError, match="feature_dim"):
        _method("dvcl", **dict(SMALL, feature_dim=32))
    with pytest.raises(ConfigError):
        _method("dvcl", no_such_param=1)


def test_cps_is_co_training_without_contrastive_terms():
    cls = get_method_class("cps")
    assert "Cross Pseudo" in cls.citation
    assert set(cls.default_params()) == {"lambda_cps", "cps_rampup_fraction", "warmup_fraction",
                                         "cps_entropy_weighting"}
    method = _method("cps")
    loss, terms = method.compute_loss(*two_box_batches(0), 5)
    assert not any(k.startswith(("hqcl", "dvcl", "contra")) for k in terms)
    assert terms["loss"] == pytest.approx(terms["sup"] + terms["cps_weight"] * terms["cps"], rel=1e-6)
    assert terms["cps"] > 0
    loss.backward()
    assert _proj_grad(method.models["A"]) == 0.0  # nothing contrastive touches the projection head
    with pytest.raises(ConfigError):
        _method("cps", lambda_c=0.1)  # CPS has no contrastive weight to set


def test_dvcl_through_the_trainer_on_real_ct(tmp_path, abdomen_simple_layout):
    """Two iterations of `dvcl train`'s code path on the real abdomen CT (labeled) and chest CT (unlabeled)."""
    import csv

    from dvcl.data.cache import prepare_dataset
    from dvcl.training.config import apply_profile
    from dvcl.training.trainer import train

    prepare_dataset(abdomen_simple_layout, tmp_path / "cache", preset="flare22", workers=1)
    cfg = TrainConfig(data=str(tmp_path / "cache"), method="dvcl")
    apply_profile(cfg, "quick")
    cfg.iterations, cfg.patch, cfg.val_every, cfg.val_roi = 2, (16, 32, 32), 0, (16, 32, 32)
    cfg.num_workers, cfg.batch_labeled, cfg.batch_unlabeled = 0, 1, 1
    cfg.network = NetworkConfig(channels=(4, 8), feature_dim=16)
    cfg.method_params = {"feature_dim": 16, "pool_size": 256, "num_queries": 64}
    result = train(cfg, tmp_path / "run", device="cpu")
    assert result.status == "finished" and result.iteration == 2
    with open(tmp_path / "run" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for key in ("sup", "cps", "hqcl", "dvcl", "contra", "cps_weight"):
        assert rows[-1][key] != "" and float(rows[-1][key]) == float(rows[-1][key])  # logged and not NaN
    saved = TrainConfig.load(tmp_path / "run" / "config.yaml").method_params
    assert saved["k"] == 10 and saved["k_out"] == 15 and saved["pool_size"] == 256  # resolved full parameter set


def test_warmup_trains_supervised_only_then_co_trains():
    """warmup_fraction=0.5 of 10 iterations: iterations 0-4 carry only L_sup, iteration 5 the full loss."""
    method = _method("dvcl", warmup_fraction=0.5, **SMALL)
    batch_l, batch_u = two_box_batches(0)
    loss, terms = method.compute_loss(batch_l, batch_u, 4)
    assert terms["cps_weight"] == 0.0 and terms["cps"] == 0.0 and terms["contra"] == 0.0
    assert loss.item() == pytest.approx(terms["sup"], rel=1e-6)
    loss.backward()
    assert _proj_grad(method.models["A"]) == 0.0  # the contrastive head is untouched during warm-up
    loss, terms = method.compute_loss(batch_l, batch_u, 5)
    assert terms["cps_weight"] > 0 and terms["cps"] > 0 and terms["hqcl"] != 0.0
    assert loss.item() > terms["sup"]
    with pytest.raises(ConfigError, match="warmup_fraction"):
        _method("cps", warmup_fraction=1.0)


def test_hqcl_weight_ablates_the_hqcl_term():
    """contra = hqcl_weight * L_hqcl + beta * L_dvcl; with hqcl_weight=0 only the DVCL term is left."""
    batch_l, batch_u = two_box_batches(0)
    _, full = _method("dvcl", **SMALL).compute_loss(batch_l, batch_u, 5)
    assert full["contra"] == pytest.approx(full["hqcl"] + 0.3 * full["dvcl"], rel=1e-5, abs=1e-6)
    _, ablated = _method("dvcl", hqcl_weight=0.0, **SMALL).compute_loss(batch_l, batch_u, 5)
    assert ablated["hqcl"] == pytest.approx(full["hqcl"], rel=1e-5)  # still computed and logged
    assert ablated["contra"] == pytest.approx(0.3 * ablated["dvcl"], rel=1e-5, abs=1e-6)
    with pytest.raises(ConfigError, match="hqcl_weight"):
        _method("dvcl", hqcl_weight=-1.0)
