"""Channels-last training on the CPU (dvcl.networks.memory_format): same arithmetic, same state dicts, same
packages; the fast instance norm is instance norm; the switch and the Trainer apply it."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from test_trainer import make_tiny_cache, tiny_config

from dvcl.errors import ConfigError
from dvcl.methods import get_method_class
from dvcl.networks import NetworkConfig, build_network
from dvcl.networks.blocks import InstanceNorm3d
from dvcl.networks.memory_format import (
    ENV,
    batch_to_channels_last,
    channels_last_enabled,
    is_channels_last,
    match_optimizer_state,
    to_channels_last,
)
from dvcl.training import TrainConfig, train
from dvcl.training.checkpoint import load_weights

CL = torch.channels_last_3d


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_fast_instance_norm_is_instance_norm(affine, dtype, tol):
    """Forward and every gradient equal nn.InstanceNorm3d's (same eps, biased variance, affine); stays channels-last."""
    torch.manual_seed(0)
    ref = torch.nn.InstanceNorm3d(6, affine=affine).to(dtype)
    fast = InstanceNorm3d(6, affine=affine).to(dtype)
    if affine:
        with torch.no_grad():
            ref.weight.normal_()
            ref.bias.normal_()
        fast.load_state_dict(ref.state_dict())
    x0 = (torch.randn(3, 6, 5, 7, 9, dtype=dtype) * 4 + 3)
    g0 = torch.randn_like(x0)
    x_ref = x0.clone().requires_grad_()
    x_cl = x0.to(memory_format=CL).requires_grad_()
    y_ref, y_cl = ref(x_ref), fast(x_cl)
    assert is_channels_last(y_cl)
    torch.testing.assert_close(y_cl, y_ref, atol=tol, rtol=tol)
    y_ref.backward(g0)
    y_cl.backward(g0.to(memory_format=CL))
    assert is_channels_last(x_cl.grad)
    torch.testing.assert_close(x_cl.grad, x_ref.grad, atol=tol, rtol=tol)
    if affine:
        torch.testing.assert_close(fast.weight.grad, ref.weight.grad, atol=tol * 100, rtol=tol)
        torch.testing.assert_close(fast.bias.grad, ref.bias.grad, atol=tol * 100, rtol=tol)
    # an in-place activation on the output (as in the U-Net) is allowed
    z = fast(x_cl)
    F.leaky_relu(z, 0.1, inplace=True).sum().backward()


def test_fast_instance_norm_falls_back_to_the_original_path():
    """Contiguous input (inference, ONNX export) and running statistics take nn.InstanceNorm3d bit for bit."""
    torch.manual_seed(1)
    ref = torch.nn.InstanceNorm3d(4, affine=True)
    fast = InstanceNorm3d(4, affine=True)
    assert isinstance(fast, torch.nn.InstanceNorm3d) and list(fast.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 4, 4, 6, 6)
    assert torch.equal(fast(x), ref(x))
    tracked = InstanceNorm3d(4, affine=True, track_running_stats=True)
    tracked_ref = torch.nn.InstanceNorm3d(4, affine=True, track_running_stats=True)
    assert torch.equal(tracked(x.to(memory_format=CL)), tracked_ref(x))
    assert torch.equal(tracked.running_mean, tracked_ref.running_mean)


def test_switch():
    assert channels_last_enabled("auto", "cpu") is True
    assert channels_last_enabled("auto", torch.device("cuda", 0)) is False
    assert channels_last_enabled("on", "cuda") is True and channels_last_enabled("off", "cpu") is False
    with pytest.raises(ConfigError, match="channels_last"):
        channels_last_enabled("sometimes", "cpu")
    cfg = TrainConfig()
    assert cfg.channels_last == "auto"
    cfg.channels_last = "maybe"
    with pytest.raises(ConfigError, match="channels_last"):
        cfg.validate()


def test_switch_environment(monkeypatch):
    monkeypatch.setenv(ENV, "off")
    assert channels_last_enabled("auto", "cpu") is False
    assert channels_last_enabled("on", "cpu") is True  # an explicit setting wins
    monkeypatch.setenv(ENV, "on")
    assert channels_last_enabled("auto", "cuda") is True
    monkeypatch.setenv(ENV, "bogus")
    with pytest.raises(ConfigError, match=ENV):
        channels_last_enabled("auto", "cpu")


def test_segnet_channels_last_same_keys_outputs_and_gradients():
    """Weights and every norm's activations channels-last; the same state dict keys and shapes as a fresh network;
    logits, features and gradients equal to float tolerance."""
    torch.manual_seed(0)
    cfg = NetworkConfig(channels=(8, 16, 32), num_classes=5, feature_dim=16)
    ref = build_network(cfg)
    net = build_network(cfg)
    net.load_state_dict(ref.state_dict())
    to_channels_last(net)
    assert [(k, v.shape) for k, v in net.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    assert all(is_channels_last(p) for p in net.parameters() if p.dim() == 5)
    norms_cl = []
    for m in net.modules():
        if isinstance(m, InstanceNorm3d):
            m.register_forward_hook(lambda mod, i, o: norms_cl.append(is_channels_last(i[0]) and is_channels_last(o)))
    x = torch.randn(2, 1, 8, 16, 16)
    xb = batch_to_channels_last({"image": x, "case": ["a", "b"]})
    assert is_channels_last(xb["image"]) and xb["case"] == ["a", "b"] and torch.equal(xb["image"], x)
    lr, fr = ref(x)
    lc, fc = net(xb["image"])
    assert norms_cl and all(norms_cl)
    torch.testing.assert_close(lc, lr, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fc, fr, atol=1e-5, rtol=1e-5)
    (lr.square().mean() + fr.mean()).backward()
    (lc.square().mean() + fc.mean()).backward()
    for (name, p), q in zip(ref.named_parameters(), net.parameters()):
        if p.grad is None:
            assert q.grad is None, name
            continue
        if p.dim() == 5:
            assert is_channels_last(q.grad), name
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)
    # a contiguous input to channels-last weights (sliding-window validation) gives the same logits too
    with torch.no_grad():
        torch.testing.assert_close(net.segment(x), ref.segment(x), atol=1e-5, rtol=1e-5)


def _step_loss(name: str, channels_last: bool, params: dict) -> tuple:
    from test_cotrain_pinned import _batches

    net = NetworkConfig(channels=(8, 16), feature_dim=16, num_classes=4)
    cfg = TrainConfig(method=name, iterations=100, network=net, method_params=params)
    torch.manual_seed(0)
    method = get_method_class(name)(cfg, 4, torch.device("cpu"))
    method.setup()
    batch_l, batch_u = _batches(4, (8, 16, 16), 3)
    if channels_last:
        to_channels_last(method.models)
        batch_l, batch_u = batch_to_channels_last(batch_l), batch_to_channels_last(batch_u)
    torch.manual_seed(5)
    loss, terms = method.compute_loss(batch_l, batch_u if method.uses_unlabeled else None, 50)
    loss.backward()
    grads = {f"{m}.{k}": p.grad for m, model in method.models.items() for k, p in model.named_parameters()
             if p.grad is not None}
    return float(loss.detach()), terms, grads


@pytest.mark.parametrize("name, params", [
    ("supervised", {}),
    ("cps", {}),
    ("dvcl", {"feature_dim": 16, "num_anchors": 16, "prototype_samples": 64, "negative_pool_per_class": 32,
              "num_negatives": 8, "num_queries": 32, "pool_size": 128}),
])
def test_fixed_seed_step_same_loss(name, params):
    """One step of a method on a fixed seed: the same loss terms and gradients in both layouts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        off = _step_loss(name, False, params)
        on = _step_loss(name, True, params)
    finally:
        torch.set_num_threads(threads)
    assert on[0] == pytest.approx(off[0], rel=2e-5, abs=1e-6)
    assert set(on[1]) == set(off[1])
    for key, value in off[1].items():
        assert on[1][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert set(on[2]) == set(off[2])
    for key, g in off[2].items():
        torch.testing.assert_close(on[2][key], g, atol=1e-5, rtol=1e-3, msg=key)


def test_optimizer_state_follows_the_parameters():
    net = build_network(NetworkConfig(channels=(4, 8), num_classes=2, feature_dim=8))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(1, 1, 4, 8, 8))[0].sum().backward()
    opt.step()
    saved = opt.state_dict()
    to_channels_last(net)
    opt2 = torch.optim.AdamW(net.parameters(), lr=1e-3)
    opt2.load_state_dict(saved)
    match_optimizer_state(opt2)
    for p in net.parameters():
        for v in opt2.state[p].values():
            if torch.is_tensor(v) and v.shape == p.shape:
                assert v.stride() == p.stride()


def test_trainer_channels_last_run_checkpoint_and_package(tmp_path, monkeypatch):
    """The Trainer trains channels-last on the CPU (run.json says so), the first step's loss equals the contiguous
    run's, checkpoints hold the same keys and shapes, a run resumes in the other layout, and the exported model
    package loads as plain contiguous networks that segment like the trained channels-last ones."""
    from safetensors.torch import load_file

    from dvcl.inference.model_package import export_model, load_model_package

    monkeypatch.delenv(ENV, raising=False)
    cache = make_tiny_cache(tmp_path / "cache")
    rows = {}
    for setting in ("off", "auto"):
        cfg = tiny_config(cache, method="cps", iterations=2, channels_last=setting)
        run = tmp_path / f"run_{setting}"
        train(cfg, run, device="cpu")
        assert json.loads((run / "run.json").read_text())["channels_last"] is (setting == "auto")
        rows[setting] = (run / "metrics.csv").read_text().splitlines()[1].split(",")
        header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    loss_col = header.index("loss")
    assert float(rows["auto"][loss_col]) == pytest.approx(float(rows["off"][loss_col]), rel=1e-5)
    w_off = load_weights(tmp_path / "run_off" / "checkpoints" / "last.safetensors")
    w_on = load_weights(tmp_path / "run_auto" / "checkpoints" / "last.safetensors")
    assert {m: {k: v.shape for k, v in s.items()} for m, s in w_on.items()} == \
        {m: {k: v.shape for k, v in s.items()} for m, s in w_off.items()}

    # resume the channels-last run contiguous (auto + the environment switch): optimiser state follows
    monkeypatch.setenv(ENV, "off")
    run = tmp_path / "run_auto"
    cfg = TrainConfig.load(run / "config.yaml")
    cfg.iterations = 3  # one more step, in the other layout
    res = train(cfg, run, device="cpu", resume=True)
    assert res.iteration == 3 and json.loads((run / "run.json").read_text())["channels_last"] is False
    monkeypatch.delenv(ENV)

    out = export_model(run, tmp_path / "pkg", name="cl_model", checkpoint="last")
    pkg = load_model_package(out)
    last = load_file(str(run / "checkpoints" / "last.safetensors"))
    x = torch.randn(1, 1, 8, 16, 16)
    for name, net in pkg.models.items():
        for k, v in net.state_dict().items():
            assert torch.equal(v, last[f"{name}.{k}"]), k
        assert all(p.is_contiguous() for p in net.parameters())
        twin = build_network(net.cfg)
        twin.load_state_dict(net.state_dict())
        to_channels_last(twin)
        net.eval()
        twin.eval()
        with torch.no_grad():
            torch.testing.assert_close(twin.segment(batch_to_channels_last({"image": x})["image"]), net.segment(x),
                                       atol=1e-5, rtol=1e-5)
