"""Baselines (Mean Teacher, UA-MT, U2PL): their specific losses on hand-computed cases, and two real training
iterations of each through the shared Trainer on a tiny prepared cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dvcl.losses.consistency import (
    consistency_loss,
    masked_consistency,
    mc_uncertainty,
    softmax_mse,
    uncertainty_mask,
    uncertainty_threshold,
)
from dvcl.losses.u2pl_contrast import (
    ClassMemoryBank,
    ContrastInputs,
    U2PLContrast,
    contrast_alpha,
    entropy_percentile_split,
    info_nce,
    keep_low_entropy,
    negative_masks,
    percentile,
    unreliable_percent,
    unsupervised_ce,
)
from dvcl.methods.ema import ema_update, make_teacher


# ------------------------------------------------------------------------------------------------ EMA
def test_ema_update_follows_the_ssl4mis_warmup():
    student = nn.Linear(1, 1, bias=False)
    teacher = make_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        student.weight.fill_(1.0)
        teacher.weight.fill_(-5.0)
    # step 0: a = min(1 - 1/1, 0.99) = 0 -> the teacher becomes the student
    assert ema_update(teacher, student, 0.99, step=0) == 0.0
    assert teacher.weight.item() == pytest.approx(1.0)
    with torch.no_grad():
        student.weight.fill_(3.0)
    # step 1: a = 0.5 -> 0.5 * 1 + 0.5 * 3
    assert ema_update(teacher, student, 0.99, step=1) == pytest.approx(0.5)
    assert teacher.weight.item() == pytest.approx(2.0)
    # late steps: a = decay -> 0.99 * 2 + 0.01 * 3
    assert ema_update(teacher, student, 0.99, step=10_000) == pytest.approx(0.99)
    assert teacher.weight.item() == pytest.approx(2.01)


def test_ema_update_averages_float_buffers_and_copies_counters():
    student, teacher = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        student.running_mean.fill_(4.0)
        teacher.running_mean.fill_(0.0)
        student.num_batches_tracked.fill_(7)
    ema_update(teacher, student, 0.75)  # no step: a = decay
    assert torch.allclose(teacher.running_mean, torch.full((2,), 1.0))
    assert int(teacher.num_batches_tracked) == 7


# ------------------------------------------------------------------------------------------------ MT / UA-MT
def test_softmax_mse_and_kl_by_hand():
    student = torch.zeros(1, 2, 1, 1, 1)  # softmax (0.5, 0.5)
    teacher = torch.tensor([math.log(3.0), 0.0]).reshape(1, 2, 1, 1, 1)  # softmax (0.75, 0.25)
    assert torch.allclose(softmax_mse(student, teacher).flatten(), torch.tensor([0.0625, 0.0625]))
    assert consistency_loss(student, teacher, "mse").item() == pytest.approx(0.0625)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert consistency_loss(student, teacher, "kl").item() == pytest.approx(kl, rel=1e-5)
    # the teacher gets no gradient
    s = student.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    consistency_loss(s, t).backward()
    assert t.grad is None and s.grad is not None


def test_uamt_threshold_uses_ln_c():
    assert uncertainty_threshold(0.0, 14) == pytest.approx(0.75 * math.log(14))
    assert uncertainty_threshold(1.0, 14) == pytest.approx(math.log(14))
    assert uncertainty_threshold(0.5, 2) == pytest.approx(0.875 * math.log(2))


def test_uamt_mask_and_masked_mse_on_three_voxels():
    # T = 2 MC samples, B = 1, C = 2, three voxels along x
    sample1 = torch.tensor([[1.0, 0.5, 0.9], [0.0, 0.5, 0.1]])
    sample2 = torch.tensor([[1.0, 0.5, 0.7], [0.0, 0.5, 0.3]])
    probs = torch.stack([sample1, sample2]).reshape(2, 1, 2, 1, 1, 3)
    unc = mc_uncertainty(probs).flatten()
    h_c = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    assert unc.tolist() == pytest.approx([0.0, math.log(2), h_c], abs=1e-6)

    thr = uncertainty_threshold(0.0, 2)  # 0.75 ln 2 = 0.5199 > h_c = 0.5004
    mask = uncertainty_mask(unc.reshape(1, 1, 1, 3), thr)
    assert mask.flatten().tolist() == [1.0, 0.0, 1.0]
    # at the end of the ramp the fully uncertain voxel (H = ln 2) still fails the strict test
    assert uncertainty_mask(unc, uncertainty_threshold(1.0, 2)).tolist() == [1.0, 0.0, 1.0]

    # squared softmax differences (B, C, 1, 1, 3); masked mean over classes and the two certain voxels
    dist = torch.tensor([[0.01, 0.5, 0.04], [0.03, 0.7, 0.02]]).reshape(1, 2, 1, 1, 3)
    expected = (0.01 + 0.03 + 0.04 + 0.02) / (2 * 2)
    assert masked_consistency(dist, mask).item() == pytest.approx(expected)
    assert masked_consistency(dist, torch.zeros_like(mask)).item() == 0.0


def test_uamt_mc_passes_average_the_teacher_softmax():
    from dvcl.methods.uamt import UAMTMethod
    from dvcl.networks import NetworkConfig
    from dvcl.training.config import TrainConfig

    torch.manual_seed(0)
    cfg = TrainConfig(network=NetworkConfig(channels=(4, 8), feature_dim=8), iterations=10,
                      method_params={"mc_samples": 3, "mc_chunk": 2, "noise_std": 0.0, "mc_dropout": 0.0})
    method = UAMTMethod(cfg, 3, torch.device("cpu"))
    method.setup()
    method.train()
    assert method.models["student"].training and not method.models["teacher"].training
    x = torch.randn(2, 1, 4, 8, 8)
    with torch.no_grad():
        expected = torch.softmax(method.models["teacher"](x)[0], dim=1)
    # without noise and dropout the 3 passes (chunks of 2 + 1 copies) are identical: the mean is the softmax
    assert torch.allclose(method.mc_mean_probability(x), expected, atol=1e-6)
    method.params.mc_dropout = 0.5
    noisy = method.mc_mean_probability(x)
    assert not torch.allclose(noisy, expected, atol=1e-4)
    assert torch.allclose(noisy.sum(dim=1), torch.ones(2, 4, 8, 8), atol=1e-5)


# ------------------------------------------------------------------------------------------------ U2PL
def test_percentile_matches_numpy_linear_interpolation():
    values = torch.tensor([3.0, 0.0, 9.0, 1.0, 7.0, 5.0, 2.0, 8.0, 4.0, 6.0])
    assert percentile(values, 20).item() == pytest.approx(1.8)  # pos 0.2 * 9 = 1.8 between 1 and 2
    assert percentile(values, 80).item() == pytest.approx(7.2)
    assert percentile(values, 0).item() == 0.0 and percentile(values, 100).item() == 9.0
    rng = np.random.default_rng(0)
    x = rng.normal(size=1001).astype(np.float32)
    for q in (0.5, 13.0, 50.0, 99.9):
        assert percentile(torch.from_numpy(x), q).item() == pytest.approx(float(np.percentile(x, q)), rel=1e-5)


def test_reliable_split_by_entropy_percentile_and_schedules():
    ent = torch.arange(10, dtype=torch.float32)  # entropies 0..9
    low, high = entropy_percentile_split(ent, contrast_alpha(0.0, 20.0))  # alpha_0 = 20 %
    assert torch.nonzero(low).flatten().tolist() == [0, 1]  # H <= 1.8
    assert torch.nonzero(high).flatten().tolist() == [8, 9]  # H >= 7.2
    assert contrast_alpha(0.5, 20.0) == pytest.approx(10.0)
    assert unreliable_percent(0.0, 80.0) == pytest.approx(20.0)
    assert unreliable_percent(0.75, 80.0) == pytest.approx(5.0)
    keep = keep_low_entropy(ent, 20.0)  # drops H >= P80 = 7.2
    assert keep.tolist() == [True] * 8 + [False] * 2
    # a tie at the minimum entropy is kept rather than dropping the whole batch
    assert keep_low_entropy(torch.zeros(10), 20.0).all()


def test_unsupervised_ce_drops_and_reweights():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.0, 1.0, 1.0, 1.0]]).reshape(1, 2, 1, 1, 4)
    pseudo = torch.tensor([0, 1, 0, 1]).reshape(1, 1, 1, 4)
    keep = torch.tensor([True, False, True, False]).reshape(1, 1, 1, 4)
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce2 = -math.log(math.e / (2 * math.e))
    expected = (ce0 + ce2) / 2 * (4 / 2)  # mean over kept voxels times total / kept (U2PL)
    assert unsupervised_ce(logits, pseudo, keep).item() == pytest.approx(expected, rel=1e-6)


def test_negative_masks_follow_the_papers_rank_rule():
    prob_l = torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]])  # ranks of classes 0..4: 0 1 2 3 4
    prob_u = torch.tensor([[0.04, 0.06, 0.1, 0.3, 0.5]])  # ranks: 4 3 2 1 0
    neg_l, neg_u = negative_masks(prob_l, torch.tensor([0]), prob_u, low_rank=2, high_rank=4)
    # labeled: label != c and rank(c) < 2 -> only class 1 (class 0 is its own label)
    assert neg_l[0].tolist() == [False, True, False, False, False]
    # unlabeled unreliable: 2 <= rank(c) < 4 -> classes 1 and 2
    assert neg_u[0].tolist() == [False, True, True, False, False]


def test_info_nce_by_hand():
    anchors = torch.tensor([[1.0, 0.0]])
    positive = torch.tensor([1.0, 1.0])
    negatives = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]])
    tau = 0.5
    pos = math.cos(math.pi / 4) / tau
    expected = -math.log(math.exp(pos) / (math.exp(pos) + math.exp(0.0) + math.exp(-1.0 / tau)))
    assert info_nce(anchors, positive, negatives, tau).item() == pytest.approx(expected, rel=1e-6)


def test_memory_bank_is_fifo_and_restorable():
    bank = ClassMemoryBank(2, 3, [4, 2], torch.device("cpu"))
    rows = torch.arange(15, dtype=torch.float32).reshape(5, 3)  # rows start with 0, 3, 6, 9, 12
    bank.push(1, rows[:3])
    assert bank.count(1) == 2 and bank.rows(1)[:, 0].tolist() == [3.0, 6.0]  # the oldest row was dropped
    bank.push(0, rows[:3])
    bank.push(0, rows[3:])  # 5 rows into a queue of 4: the ring wraps, row 0 leaves
    assert bank.count(0) == 4 and bank.rows(0)[:, 0].tolist() == [3.0, 6.0, 9.0, 12.0]
    assert set(bank.sample(0, 50, torch.Generator().manual_seed(0))[:, 0].tolist()) == {3.0, 6.0, 9.0, 12.0}
    other = ClassMemoryBank(2, 3, [4, 2], torch.device("cpu"))
    other.load_state_dict(bank.state_dict())
    assert torch.equal(other.rows(0), bank.rows(0)) and torch.equal(other.rows(1), bank.rows(1))


def _unit(v):
    n = math.hypot(*v)
    return (v[0] / n, v[1] / n)


def _cos(a, b):
    return (a[0] * b[0] + a[1] * b[1]) / (math.hypot(*a) * math.hypot(*b))


def test_u2pl_contrastive_loss_on_a_tiny_feature_set():
    # batch: one labeled and one unlabeled sample of 4 voxels each, C = 2, 2-d features, identity projection
    # labeled voxels v0..v3: labels 0 0 1 1; teacher probabilities chosen so that
    #   class-0 anchors (label 0, p0 > 0.3): v0 only;   class-1 anchors: v2 only
    #   negatives for class 1: v1 (label 0 but class 1 ranked first) and unreliable u0 (class 1 at rank 1)
    #   negatives for class 0: v3 (label 1 but class 0 ranked first)
    feats_l = [(1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 2.0)]
    feats_u = [(2.0, 2.0), (0.3, 0.1), (0.1, 0.3), (0.2, 0.2)]
    feats = torch.tensor([feats_l, feats_u]).permute(0, 2, 1).reshape(2, 2, 1, 1, 4)
    p1_l = [0.1, 0.75, 0.8, 0.25]
    p1_u = [0.45, 0.1, 0.9, 0.2]
    p1 = torch.tensor([p1_l, p1_u]).reshape(2, 1, 1, 4)
    prob = torch.stack([1 - p1, p1], dim=1)
    labels = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 0]]).reshape(2, 1, 1, 4)
    reliable = torch.tensor([[True] * 4, [False] * 4]).reshape(2, 1, 1, 4)
    unreliable = torch.tensor([[True] * 4, [True, False, False, False]]).reshape(2, 1, 1, 4)
    inputs = ContrastInputs(student_feats=feats.clone().requires_grad_(True), teacher_feats=feats, prob=prob,
                            labels=labels, reliable=reliable, unreliable=unreliable, num_labeled=1)
    loss_fn = U2PLContrast(2, 2, torch.device("cpu"), num_queries=8, num_negatives=5, temperature=0.5,
                           anchor_threshold=0.3, low_rank=1, high_rank=2, generator=torch.Generator().manual_seed(0))

    def project(v):
        return F.normalize(v, dim=1)

    pushed = loss_fn.push_negatives(inputs, project)
    assert pushed == {0: 1, 1: 2}
    loss, counts = loss_fn(inputs, project, project)
    assert counts == {"valid_classes": 2.0, "contrast_classes": 2.0}

    # independent computation: every anchor of a class is the same voxel and every negative has the same
    # direction (v1 and u0 are both along (1, 1)), so the sampled InfoNCE is deterministic
    def class_loss(anchor, members, negative, n_neg=5, tau=0.5):
        units = [_unit(m) for m in members]
        proto = (sum(u[0] for u in units) / len(units), sum(u[1] for u in units) / len(units))
        pos = math.exp(_cos(anchor, proto) / tau)
        return -math.log(pos / (pos + n_neg * math.exp(_cos(anchor, negative) / tau)))

    loss0 = class_loss(feats_l[0], [feats_l[0], feats_l[1]], feats_l[3])
    loss1 = class_loss(feats_l[2], [feats_l[2], feats_l[3]], feats_l[1])
    assert loss.item() == pytest.approx((loss0 + loss1) / 2, rel=1e-5)
    loss.backward()
    assert inputs.student_feats.grad is not None and inputs.student_feats.grad.abs().sum() > 0


def test_u2pl_contrastive_loss_is_zero_with_a_single_class():
    feats = torch.randn(2, 2, 1, 1, 4)
    prob = torch.stack([torch.full((2, 1, 1, 4), 0.9), torch.full((2, 1, 1, 4), 0.1)], dim=1)
    labels = torch.zeros(2, 1, 1, 4, dtype=torch.long)
    mask = torch.ones(2, 1, 1, 4, dtype=torch.bool)
    inputs = ContrastInputs(feats.requires_grad_(True), feats.detach(), prob, labels, mask, mask, 1)
    loss, counts = U2PLContrast(2, 2, torch.device("cpu"))(inputs, lambda v: v, lambda v: v)
    assert loss.item() == 0.0 and counts["valid_classes"] == 1.0


# ------------------------------------------------------------------------------------------------ training
def tiny_config(cache: Path, method: str, **overrides):
    from dvcl.networks import NetworkConfig
    from dvcl.training.config import TrainConfig

    values = dict(data=str(cache), method=method, labeled_fraction=0.5, iterations=2, batch_labeled=1,
                  batch_unlabeled=1, patch=(8, 16, 16), lr=0.01, val_every=0, val_roi=(8, 16, 16),
                  val_sw_batch=1, log_every=1, amp=False, num_workers=0,
                  network=NetworkConfig(channels=(4, 8), feature_dim=16), profile="quick", device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("method,params,terms", [
    ("mean_teacher", {}, ["sup", "consistency"]),
    ("uamt", {"mc_samples": 2}, ["sup", "consistency", "certain_fraction"]),
    ("u2pl", {"anchors_per_class": 16, "num_negatives": 4, "negative_pool": 64, "bank_size": 128,
              "background_bank_size": 128, "checkpoint_memory_bank": True}, ["sup", "unsup", "contrast"]),
])
def test_two_training_iterations_through_the_trainer(tiny_cache, tmp_path, method, params, terms):
    from dvcl.methods import get_method_class
    from dvcl.training.checkpoint import load_weights
    from dvcl.training.trainer import train

    assert get_method_class(method).name == method
    cfg = tiny_config(tiny_cache, method, method_params=params)
    result = train(cfg, tmp_path / "run", device="cpu", argv=["test"])
    assert result.status == "finished" and result.iteration == 2
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    expected_model = "teacher" if method == "u2pl" else "student"
    assert run["status"] == "finished" and run["inference_models"] == [expected_model]
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    for term in terms:
        assert term in header
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == 2
    for row in rows:
        values = dict(zip(header, row.split(",")))
        assert all(math.isfinite(float(values[t])) for t in terms)
    weights = load_weights(tmp_path / "run" / "checkpoints" / "last.safetensors")
    student, teacher = weights["student"], weights["teacher"]
    assert set(student) == set(teacher)
    # after the second step the teacher is the average of two student states, so it lags the student
    assert any(not torch.equal(student[k], teacher[k]) for k in student if student[k].is_floating_point())
    if method == "u2pl":  # the memory bank travels with the checkpoint (resume keeps the negatives)
        from dvcl.training.checkpoint import load_state

        extra = load_state(tmp_path / "run" / "checkpoints" / "last_state.pt")["method_extra"]
        assert sorted(extra) == ["u2pl_queue_0", "u2pl_queue_1", "u2pl_queue_2"]
        assert all(v.shape[1] == 16 and 0 < v.shape[0] <= 128 for v in extra.values())
