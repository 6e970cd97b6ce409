"""The options issue 12 asked for, each against a small hand-computed case, and CPS == DVCL at lambda_c = 0.

Options (paper-literal reading in brackets, ``dvcl.losses.params.PAPER_LITERAL``): a delay / ramp schedule for
lambda_c [constant], neighbour search in feature or probability space [features], outsider weighting and AaD
dispersion decay [1, none], the reliable split per image or per batch [batch], HqCL anchors from the model's own
or the other model's pseudo-labels [own].
"""

from __future__ import annotations

import math

import pytest
import torch
from dvcl_test_cases import two_box_batches

from dvcl.errors import ConfigError
from dvcl.losses import dvcl_loss, reliable_split
from dvcl.losses.dvcl import outsider_weight_at
from dvcl.losses.params import PAPER_LITERAL, DVCLParams
from dvcl.methods import get_method_class
from dvcl.methods.dvcl import anchor_voxels, contrastive_weight
from dvcl.networks.config import NetworkConfig
from dvcl.training.config import TrainConfig

C = 3
SMALL = {"feature_dim": 16, "num_anchors": 16, "prototype_samples": 64, "negative_pool_per_class": 32,
         "num_negatives": 8, "num_queries": 32, "pool_size": 128}


def _method(name: str, **params):
    net = NetworkConfig(channels=(4, 8), feature_dim=16, num_classes=C)
    torch.manual_seed(0)
    method = get_method_class(name)(TrainConfig(method=name, iterations=10, network=net, method_params=params), C,
                                    torch.device("cpu"))
    method.setup()
    return method




# ------------------------------------------------------------------------------------------- lambda_c schedule
def test_lambda_c_delay_and_ramp_by_hand():
    p = DVCLParams(lambda_c=0.1, lambda_c_delay_fraction=0.2, lambda_c_rampup_fraction=0.1)
    assert contrastive_weight(p, 19, 100) == 0.0  # inside the delay
    assert contrastive_weight(p, 20, 100) == pytest.approx(0.1 * math.exp(-5.0))  # ramp starts
    assert contrastive_weight(p, 25, 100) == pytest.approx(0.1 * math.exp(-5.0 * 0.5 ** 2))
    assert contrastive_weight(p, 30, 100) == pytest.approx(0.1)
    warm = DVCLParams(warmup_fraction=0.1, lambda_c_delay_fraction=0.2, lambda_c_rampup_fraction=0.0)
    assert contrastive_weight(warm, 29, 100) == 0.0 and contrastive_weight(warm, 30, 100) == pytest.approx(0.1)
    literal = DVCLParams(**PAPER_LITERAL)
    assert contrastive_weight(literal, 0, 100) == pytest.approx(0.1)  # full weight from iteration 0
    with pytest.raises(ConfigError, match="lambda_c_delay_fraction"):
        DVCLParams(warmup_fraction=0.5, lambda_c_delay_fraction=0.5)


def test_lambda_c_delay_skips_the_contrastive_terms_then_adds_them():
    method = _method("dvcl", lambda_c_delay_fraction=0.5, lambda_c_rampup_fraction=0.0, **SMALL)
    batch_l, batch_u = two_box_batches()
    loss, terms = method.compute_loss(batch_l, batch_u, 4)
    assert terms["contra_weight"] == 0.0 and terms["contra"] == 0.0 and terms["cps"] > 0
    assert loss.item() == pytest.approx(terms["sup"] + terms["cps_weight"] * terms["cps"], rel=1e-6)
    loss.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0
               for p in method.models["A"].proj_head.parameters())
    loss, terms = method.compute_loss(batch_l, batch_u, 5)
    assert terms["contra_weight"] == pytest.approx(0.1)
    assert loss.item() == pytest.approx(terms["sup"] + terms["cps_weight"] * terms["cps"]
                                        + 0.1 * (terms["hqcl"] + 0.3 * terms["dvcl"]), rel=1e-5)


# ------------------------------------------------------------------------------------------- neighbour space
def _unit(deg: float) -> list:
    r = math.radians(deg)
    return [math.cos(r), math.sin(r)]


# query 0 and five pool voxels whose feature order (by angle) and probability order (by p_0 . p_n) disagree
PROBS = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.15, 0.05, 0.8], [0.7, 0.2, 0.1], [0.6, 0.2, 0.2],
                      [0.2, 0.4, 0.4]])
FEATS = torch.tensor([_unit(a) for a in (0, 10, 20, 90, 120, 180)])
# p_0 . p_n for n = 1..5: 0.17, 0.205, 0.59, 0.52, 0.24


def _pool_loss(space: str, outsider_weight: float = 1.0) -> torch.Tensor:
    probs = PROBS.clone().requires_grad_(True)
    loss, _ = dvcl_loss(probs, FEATS, torch.tensor([0]), k=2, k_out=1, nps_mutual=1.0, nps_oneway=1.0, qds=False,
                        neighbour_space=space, outsider_weight=outsider_weight)
    return loss


def test_neighbour_space_features_or_probabilities_by_hand():
    # features: C = {1 (10 deg), 2 (20 deg)}, D = {5 (180 deg)}: -(0.17 + 0.205) + 0.24
    assert _pool_loss("features").item() == pytest.approx(-0.135, abs=1e-6)
    # probabilities (the supplementary's O_mn): C = {3 (0.59), 4 (0.52)}, D = {1 (0.17)}: -(0.59 + 0.52) + 0.17
    assert _pool_loss("probabilities").item() == pytest.approx(-0.94, abs=1e-6)
    with pytest.raises(ValueError):
        _pool_loss("logits")


def test_dvcl_method_runs_in_probability_space():
    method = _method("dvcl", neighbour_space="probabilities", **SMALL)
    loss, terms = method.compute_loss(*two_box_batches(), 5)
    assert torch.isfinite(loss) and terms["dvcl"] != 0.0
    loss.backward()


# ------------------------------------------------------------------------------------------- outsiders
def test_outsider_weight_and_aad_decay_by_hand():
    assert outsider_weight_at(1.0, 0.0, 70, 100) == 1.0  # the paper: no weight, no decay
    assert outsider_weight_at(2.0, 1.0, 50, 100) == pytest.approx(2.0 / 6.0)  # 2 (1 + 10 * 0.5)^-1
    assert outsider_weight_at(1.0, 5.0, 100, 100) == pytest.approx(11.0 ** -5)  # AaD VisDA at the end
    # -(0.17 + 0.205) + 0.5 * 0.24
    assert _pool_loss("features", outsider_weight=0.5).item() == pytest.approx(-0.255, abs=1e-6)
    assert _pool_loss("features", outsider_weight=0.0).item() == pytest.approx(-0.375, abs=1e-6)


def test_outsider_decay_changes_the_method_loss():
    batch_l, batch_u = two_box_batches()
    _, plain = _method("dvcl", outsider_decay=0.0, **SMALL).compute_loss(batch_l, batch_u, 9)
    _, decayed = _method("dvcl", outsider_decay=5.0, **SMALL).compute_loss(batch_l, batch_u, 9)
    assert decayed["dvcl"] < plain["dvcl"]  # less repulsion (a positive sum) at the end of the run
    assert decayed["hqcl"] == pytest.approx(plain["hqcl"], rel=1e-6)


# ------------------------------------------------------------------------------------------- reliable split
def test_reliable_split_per_image_or_per_batch_by_hand():
    ent = torch.tensor([[0.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 3.0]])
    # batch: mean 1.25, population std sqrt(9.5 / 8); t = 1.25 + 0.5 * 1.0897 = 1.795 -> all of image 1
    _, unreliable, t = reliable_split(ent, 0.5)
    assert t.item() == pytest.approx(1.25 + 0.5 * math.sqrt(9.5 / 8))
    assert unreliable.tolist() == [[False] * 4, [True] * 4]
    # per image: t = 0.25 + 0.5 * 0.433 and 2.25 + 0.5 * 0.433 -> the top voxel of each image
    _, unreliable, t = reliable_split(ent, 0.5, per_item=True)
    assert t.tolist() == pytest.approx([0.25 + 0.5 * math.sqrt(0.1875), 2.25 + 0.5 * math.sqrt(0.1875)])
    assert unreliable.tolist() == [[False, False, False, True], [False, False, False, True]]


def test_split_scope_image_changes_the_method_loss():
    batch_l, batch_u = two_box_batches()
    batch_u["image"][1] = batch_u["image"][1] * 3.0 + 1.0  # one unlabeled patch unlike the other
    _, batch = _method("dvcl", **SMALL).compute_loss(batch_l, batch_u, 5)
    _, image = _method("dvcl", split_scope="image", **SMALL).compute_loss(batch_l, batch_u, 5)
    assert image["unreliable_A"] != batch["unreliable_A"]
    assert image["sup"] == batch["sup"] and image["cps"] == batch["cps"]


# ------------------------------------------------------------------------------------------- HqCL anchors
def test_hqcl_anchor_source_own_or_other_by_hand():
    gt = torch.tensor([[[1, 0]]])
    pseudo = {"A": torch.tensor([[[2, 2]]]), "B": torch.tensor([[[0, 1]]])}
    split = {"A": (torch.tensor([[[True, False]]]), None, None), "B": (torch.tensor([[[False, True]]]), None, None)}
    labels, valid = anchor_voxels(gt, pseudo, split, "A", "own")
    assert labels.tolist() == [[[1, 0]], [[2, 2]]] and valid.tolist() == [[[True, True]], [[True, False]]]
    labels, valid = anchor_voxels(gt, pseudo, split, "A", "other")
    assert labels.tolist() == [[[1, 0]], [[0, 1]]] and valid.tolist() == [[[True, True]], [[False, True]]]
    labels, valid = anchor_voxels(gt, pseudo, split, "B", "other")
    assert labels.tolist() == [[[1, 0]], [[2, 2]]]
    labels, valid = anchor_voxels(gt, {}, {}, "A", "other")  # no unlabeled half: the labeled voxels only
    assert labels.tolist() == [[[1, 0]]] and valid.all()


def test_hqcl_anchor_source_changes_the_method_loss():
    batch_l, batch_u = two_box_batches()
    _, own = _method("dvcl", **SMALL).compute_loss(batch_l, batch_u, 5)
    _, other = _method("dvcl", hqcl_pseudo_source="other", **SMALL).compute_loss(batch_l, batch_u, 5)
    assert other["hqcl_A"] != own["hqcl_A"] and other["cps"] == own["cps"]


# ------------------------------------------------------------------------------------------- CPS == DVCL(0)
def test_cps_equals_dvcl_with_lambda_c_zero_on_the_same_code_path():
    batch_l, batch_u = two_box_batches(3)
    results = []
    for name, params in (("cps", {}), ("dvcl", {"lambda_c": 0.0})):
        method = _method(name, **params)
        torch.manual_seed(7)
        loss, terms = method.compute_loss(batch_l, batch_u, 6)
        loss.backward()
        grads = [p.grad.clone() for p in method.trainable_parameters() if p.grad is not None]
        results.append((loss.item(), terms, grads))
    (loss_c, terms_c, grads_c), (loss_d, terms_d, grads_d) = results
    assert loss_c == loss_d and terms_c == terms_d
    assert len(grads_c) == len(grads_d) and all(torch.equal(a, b) for a, b in zip(grads_c, grads_d))
    assert get_method_class("cps").compute_loss is get_method_class("dvcl").compute_loss  # one implementation
