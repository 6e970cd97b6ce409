"""Memory banks and counters go through checkpoints by one mechanism (``Method.state_modules``)."""

from __future__ import annotations

import pytest
import torch

from dvcl.errors import ConfigError
from dvcl.methods.registry import get_method_class
from dvcl.networks.config import NetworkConfig
from dvcl.training.config import TrainConfig

CASES = {
    "bacon": {"bank_size": 8},
    "ugpcl": {"bank_size": 8},
    "dvcl": {"memory_bank": True, "memory_bank_size": 8, "feature_dim": 16},
}


def build(method: str, **overrides):
    cfg = TrainConfig(method=method, patch=(8, 16, 16), val_roi=(8, 16, 16), amp=False, device="cpu",
                      network=NetworkConfig(channels=(4, 8), feature_dim=16),
                      method_params={**CASES[method], **overrides})
    m = get_method_class(method)(cfg, 3, torch.device("cpu"))
    m.setup()
    return m


@pytest.mark.parametrize("method", sorted(CASES))
def test_banks_round_trip_and_mismatches_are_refused(method: str) -> None:
    torch.manual_seed(0)
    trained = build(method)
    for t in trained._state_tensors().values():  # what training would have written into the banks
        t.copy_(torch.randint(0, 5, t.shape) if not t.is_floating_point() else torch.randn(t.shape))
    state = trained.extra_state()
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    fresh = build(method)
    fresh.load_extra_state(state)
    for key, value in fresh.extra_state().items():
        assert torch.equal(value, state[key]), key
    state[next(iter(state))] = torch.zeros(1)  # a checkpoint of another configuration
    with pytest.raises(ConfigError, match="in the checkpoint has shape"):
        build(method).load_extra_state(state)
    with pytest.raises(ConfigError, match="does not know"):
        build(method).load_extra_state({**trained.extra_state(), "stray": torch.zeros(1)})


def test_a_method_without_banks_refuses_bank_state() -> None:
    plain = build("dvcl", memory_bank=False)
    assert plain.extra_state() == {}
    with pytest.raises(ConfigError, match="does not know"):
        plain.load_extra_state(build("dvcl").extra_state())
