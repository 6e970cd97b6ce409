"""The 3D U-Net (MONAI blocks): shapes, projection head, config round trip, weight files, method registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dvcl.errors import ConfigError
from dvcl.methods import Method, available_methods, get_method_class
from dvcl.networks import NetworkConfig, build_network, voxel_features
from dvcl.training import checkpoint as ckpt


def _tiny(num_classes: int = 3, **kw) -> NetworkConfig:
    return NetworkConfig(channels=(4, 8, 16), num_classes=num_classes, **kw)


def test_forward_shapes_and_segment():
    torch.manual_seed(0)
    net = build_network(_tiny(3))
    x = torch.randn(2, 1, 8, 16, 12)
    logits, feats = net(x)
    assert logits.shape == (2, 3, 8, 16, 12)
    assert feats.shape == (2, 4, 8, 16, 12)  # F = channels[0]
    net.eval()
    with torch.no_grad():
        assert torch.equal(net.segment(x), net(x)[0])


def test_anisotropic_strides_and_divisibility():
    cfg = NetworkConfig(channels=(4, 8, 16), strides=((1, 2, 2), (2, 2, 2)), num_classes=2)
    assert cfg.divisor == (2, 4, 4)
    net = build_network(cfg)
    logits, _ = net(torch.randn(1, 1, 2, 4, 8))
    assert logits.shape == (1, 2, 2, 4, 8)
    with pytest.raises(ConfigError, match="divisible"):
        net(torch.randn(1, 1, 3, 4, 8))
    with pytest.raises(ConfigError, match=r"\(B, 1, Z, Y, X\)"):
        net(torch.randn(1, 2, 4, 4, 4))


def test_projection_is_unit_norm_256_and_trainable():
    torch.manual_seed(1)
    net = build_network(_tiny(3))
    v = torch.randn(37, 4) * 50.0
    z = net.project(v)
    assert z.shape == (37, 256)
    assert torch.allclose(z.norm(dim=1), torch.ones(37), atol=1e-5)
    z.sum().backward()
    assert net.proj_head.mlp[0].weight.grad is not None and net.proj_head.mlp[0].weight.grad.abs().sum() > 0
    assert net.stem[0].conv.weight.grad is None  # the head alone was used
    with pytest.raises(ConfigError, match="project"):
        net.project(torch.randn(5, 7))


def test_projection_head_is_linear_relu_linear():
    net = build_network(_tiny(3, feature_dim=32))
    layers = list(net.proj_head.mlp)
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear"]
    assert (layers[0].in_features, layers[0].out_features, layers[2].out_features) == (4, 32, 32)
    # by hand: W2 relu(W1 v + b1) + b2, then divided by its norm
    v = torch.randn(3, 4)
    h = torch.relu(v @ layers[0].weight.T + layers[0].bias) @ layers[2].weight.T + layers[2].bias
    assert torch.allclose(net.project(v), h / h.norm(dim=1, keepdim=True), atol=1e-6)


def test_voxel_features_gathers_flat_indices():
    feats = torch.arange(2 * 3 * 2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 3, 4)
    # flat index over (B, Z, Y, X): b=1, z=0, y=2, x=3 -> 1*24 + 0*12 + 2*4 + 3 = 35 ; b=0,z=1,y=0,x=1 -> 13
    got = voxel_features(feats, torch.tensor([35, 13]))
    assert torch.equal(got[0], feats[1, :, 0, 2, 3])
    assert torch.equal(got[1], feats[0, :, 1, 0, 1])


def test_different_initialisations_and_seeded_rebuild():
    torch.manual_seed(3)
    a, b = build_network(_tiny()), build_network(_tiny())
    torch.manual_seed(3)
    a2 = build_network(_tiny())
    wa, wb, wa2 = (m.stem[0].conv.weight for m in (a, b, a2))
    assert not torch.equal(wa, wb)
    assert torch.equal(wa, wa2)


def test_network_config_round_trip_and_errors():
    cfg = NetworkConfig(channels=(8, 16, 32, 64), strides=(2, (1, 2, 2), 2), num_classes=5, norm="batch")
    d = cfg.to_dict()
    assert d["channels"] == [8, 16, 32, 64] and d["strides"] == [2, [1, 2, 2], 2]
    assert NetworkConfig.from_dict(d) == cfg
    assert cfg.divisor == (4, 8, 8)
    with pytest.raises(ConfigError, match="unknown network option"):
        NetworkConfig.from_dict({**d, "chanels": [1, 2]})
    with pytest.raises(ConfigError, match="strides"):
        NetworkConfig(channels=(8, 16, 32), strides=(2,))
    with pytest.raises(ConfigError, match="norm"):
        NetworkConfig(norm="layer")
    with pytest.raises(ConfigError, match="num_classes"):
        build_network(NetworkConfig(channels=(4, 8), num_classes=1))


def test_norm_variants_build_and_run():
    for norm in ("instance", "batch", "group"):
        net = build_network(_tiny(2, norm=norm))
        assert net(torch.randn(2, 1, 8, 8, 8))[0].shape == (2, 2, 8, 8, 8)


def test_weights_file_keys_and_round_trip(tmp_path):
    torch.manual_seed(0)
    models = {"A": build_network(_tiny()), "B": build_network(_tiny())}
    path = tmp_path / "w.safetensors"
    ckpt.save_weights(path, models, {"iteration": 7})
    loaded = ckpt.load_weights(path)
    assert set(loaded) == {"A", "B"}
    assert "A.stem.conv_0.conv.weight" in {f"A.{k}" for k in loaded["A"]}
    assert ckpt.weights_metadata(path)["iteration"] == "7"
    fresh = {"A": build_network(_tiny()), "B": build_network(_tiny())}
    ckpt.load_models(fresh, loaded)
    x = torch.randn(1, 1, 4, 8, 8)
    for name in models:
        models[name].eval()
        fresh[name].eval()
        assert torch.equal(models[name](x)[0], fresh[name](x)[0])
    path.write_bytes(b"garbage")
    from dvcl.errors import ModelError

    with pytest.raises(ModelError, match="cannot read weights"):
        ckpt.load_weights(path)


def test_registry_and_param_parsing():
    names = available_methods()
    assert {"supervised", "fully"} <= set(names)
    sup = get_method_class("Supervised")
    assert issubclass(sup, Method) and sup.name == "supervised" and not sup.uses_unlabeled
    assert get_method_class("fully").labeled_fraction == 1.0
    with pytest.raises(ConfigError, match="available: .*supervised"):
        get_method_class("nosuch")
    params = sup.parse_params({"ce_weight": "0.25"})  # strings come from --set key=value
    assert dataclasses.asdict(params) == {"ce_weight": 0.25, "dice_weight": 0.5}
    with pytest.raises(ConfigError, match="unknown parameter"):
        sup.parse_params({"lambda_c": 0.1})
    with pytest.raises(ConfigError, match="number"):
        sup.parse_params({"ce_weight": "abc"})


def test_param_strings_are_converted_to_the_field_types():
    from typing import Optional

    @dataclasses.dataclass
    class P:
        rate: float = 0.1
        k: int = 10
        flag: bool = False
        threshold: Optional[float] = None
        mode: str = "farthest"

    class M(Method):
        name = "param_test"
        params_class = P

    p = M.parse_params({"rate": "0", "k": "5", "flag": "true", "threshold": "0.3", "mode": "random"})
    assert (p.rate, p.k, p.flag, p.threshold, p.mode) == (0.0, 5, True, 0.3, "random")
    assert isinstance(p.rate, float) and M.parse_params({"threshold": "null"}).threshold is None
    assert M.parse_params(p) is p
    assert M.default_params() == {"rate": 0.1, "k": 10, "flag": False, "threshold": None, "mode": "farthest"}
    with pytest.raises(ConfigError, match="integer"):
        M.parse_params({"k": "2.5"})
    with pytest.raises(ConfigError, match="true/false"):
        M.parse_params({"flag": "maybe"})
