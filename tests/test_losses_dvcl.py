"""The DVCL losses on small hand-computed cases, their gradients, and their edge cases.

Expected values come from independent numpy formulas written out here (not from the code under test).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dvcl.errors import ConfigError
from dvcl.losses import (
    ClassMemoryBank,
    DVCLParams,
    class_prototypes,
    cps_loss,
    dvcl_loss,
    dvcl_loss_from_sets,
    entropy,
    gather_voxels,
    hqcl_loss,
    nps_affinity,
    query_denoising,
    reliable_split,
    sample_from_mask,
    sample_per_class,
    select_dvcl_sets,
    sigmoid_rampup,
    supervised_loss,
)
from dvcl.utils.rampup import rampup_weight


def _np_softmax(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _unit(deg: float) -> list:
    r = math.radians(deg)
    return [math.cos(r), math.sin(r)]


def _finite_with_grad(loss: torch.Tensor, *leaves: torch.Tensor) -> None:
    assert torch.isfinite(loss).all(), loss
    loss.backward()
    for leaf in leaves:
        assert leaf.grad is not None
        assert torch.isfinite(leaf.grad).all()


# --------------------------------------------------------------------------------------------- supervised
def test_supervised_loss_matches_hand_ce_plus_dice():
    logits = np.array([[2.0, 0.5, -1.0, 0.0],
                       [0.0, 1.5, 0.3, 0.0],
                       [-1.0, 0.0, 2.0, 0.0]])  # (C=3, 4 voxels)
    label = np.array([0, 1, 2, 2])
    p = _np_softmax(logits, axis=0)
    ce = -np.mean(np.log(p[label, np.arange(4)]))
    g = np.eye(3)[label].T  # (C, 4)
    dice = np.mean([1 - (2 * (p[c] * g[c]).sum() + 1e-5) / (p[c].sum() + g[c].sum() + 1e-5) for c in range(3)])
    expected = 0.5 * ce + 0.5 * dice

    t_logits = torch.tensor(logits, dtype=torch.float32).reshape(1, 3, 1, 1, 4)
    t_label = torch.tensor(label).reshape(1, 1, 1, 1, 4)
    got = supervised_loss(t_logits, t_label)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_supervised_loss_absent_class_and_empty_batch_are_finite():
    logits = torch.randn(2, 3, 2, 2, 2, requires_grad=True)
    label = torch.zeros(2, 1, 2, 2, 2, dtype=torch.long)  # classes 1 and 2 absent
    _finite_with_grad(supervised_loss(logits, label), logits)
    empty = torch.zeros(0, 3, 2, 2, 2, requires_grad=True)
    loss = supervised_loss(empty, torch.zeros(0, 1, 2, 2, 2, dtype=torch.long))
    assert loss.item() == 0.0
    _finite_with_grad(loss, empty)


# --------------------------------------------------------------------------------------------- entropy
def test_entropy_and_reliable_split_by_hand():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.8, 0.1, 0.1]])
    h = np.array([-sum(q * math.log(q) for q in row if q > 0) for row in probs])
    t = h.mean() + 0.5 * h.std()  # population std
    got = entropy(torch.tensor(probs.T, dtype=torch.float32).unsqueeze(0), dim=1)[0]
    np.testing.assert_allclose(got.numpy(), h, rtol=1e-5, atol=1e-6)
    reliable, unreliable, thr = reliable_split(got, alpha=0.5)
    assert thr.item() == pytest.approx(t, rel=1e-5)
    np.testing.assert_array_equal(unreliable.numpy(), h > t)
    np.testing.assert_array_equal(reliable.numpy(), ~(h > t))
    assert unreliable.numpy().tolist() == [False, False, True, False]  # only the uniform voxel (ln 3 > t)


def test_reliable_split_all_equal_single_and_masked():
    flat = torch.full((2, 3, 4), 0.7)
    _, unreliable, _ = reliable_split(flat, 0.5)
    assert not unreliable.any()  # equal entropies: nobody is above mean + alpha * std
    one = torch.tensor([0.3])
    rel, unrel, thr = reliable_split(one, 0.5)
    assert torch.isfinite(thr) and rel.all() and not unrel.any()
    mask = torch.tensor([True, True, False, False])
    ent = torch.tensor([0.1, 0.9, 5.0, 5.0])
    rel, unrel, thr = reliable_split(ent, 0.5, mask=mask)
    assert thr.item() == pytest.approx(0.5 + 0.5 * 0.4)
    assert unrel.tolist() == [False, True, False, False] and rel.tolist() == [True, False, False, False]


# --------------------------------------------------------------------------------------------- CPS
def test_cps_loss_by_hand_plain_and_entropy_weighted():
    za = np.array([[2.0, 0.0, 0.1], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])  # (C, voxels)
    zb = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    pa, pb = _np_softmax(za, 0), _np_softmax(zb, 0)
    ya, yb = pa.argmax(0), pb.argmax(0)
    idx = np.arange(3)
    ce_a, ce_b = -np.log(pa[yb, idx]), -np.log(pb[ya, idx])
    ha, hb = -(pa * np.log(pa)).sum(0), -(pb * np.log(pb)).sum(0)
    wa, wb = np.exp(-hb / math.log(3)), np.exp(-ha / math.log(3))

    ta = torch.tensor(za, dtype=torch.float32).reshape(1, 3, 1, 1, 3).requires_grad_()
    tb = torch.tensor(zb, dtype=torch.float32).reshape(1, 3, 1, 1, 3).requires_grad_()
    assert cps_loss(ta, tb).item() == pytest.approx(ce_a.mean() + ce_b.mean(), rel=1e-5)
    weighted = cps_loss(ta, tb, entropy_weighting=True)
    assert weighted.item() == pytest.approx((wa * ce_a).mean() + (wb * ce_b).mean(), rel=1e-5)
    _finite_with_grad(weighted, ta, tb)

    empty = torch.zeros(0, 3, 1, 1, 3, requires_grad=True)
    _finite_with_grad(cps_loss(empty, empty.detach().clone()), empty)


def test_cps_rampup():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(5000, 100) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0
    assert rampup_weight(2.0, 500, 10000, rampup_fraction=0.1) == pytest.approx(2 * math.exp(-1.25))
    # supervised-only warm-up: weight 0 for the first 20 %, then the ramp starts from its beginning
    assert rampup_weight(1.0, 1999, 10000, rampup_fraction=0.1, warmup_fraction=0.2) == 0.0
    assert rampup_weight(1.0, 2000, 10000, rampup_fraction=0.1, warmup_fraction=0.2) == pytest.approx(
        math.exp(-5))
    assert rampup_weight(2.0, 2500, 10000, rampup_fraction=0.1, warmup_fraction=0.2) == pytest.approx(
        2 * math.exp(-1.25))


# --------------------------------------------------------------------------------------------- sampling
def test_sampling_helpers():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2, 0, 1])
    valid = torch.ones(10, dtype=torch.bool)
    valid[0] = False
    idx, cls = sample_per_class(labels, valid, num_classes=4, max_per_class=2, generator=g)
    assert torch.equal(labels[idx], cls)
    assert torch.bincount(cls, minlength=4).tolist() == [2, 2, 1, 0]  # class 3 absent, class 2 has 1 voxel
    assert 0 not in idx.tolist() and len(set(idx.tolist())) == idx.numel()
    idx_fg, cls_fg = sample_per_class(labels, valid, 4, 10, generator=g, first_class=1)
    assert sorted(idx_fg.tolist()) == [5, 6, 7, 9] and 0 not in cls_fg.tolist()
    assert sample_from_mask(torch.zeros(3, 3, dtype=torch.bool), 5, g).numel() == 0
    assert sorted(sample_from_mask(valid, 100, g).tolist()) == list(range(1, 10))

    vol = torch.arange(2 * 3 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2, 2)
    flat_idx = torch.tensor([0, 7, 8, 15])
    dense = vol.permute(0, 2, 3, 4, 1).reshape(-1, 3)
    assert torch.equal(gather_voxels(vol, flat_idx), dense[flat_idx])

    feats = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 1.0]])
    protos, present = class_prototypes(feats, torch.tensor([0, 0, 2]), 3)
    assert present.tolist() == [True, False, True]
    np.testing.assert_allclose(protos[0].numpy(), [1 / math.sqrt(2), 1 / math.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(protos[2].numpy(), [0.0, 1.0])


# --------------------------------------------------------------------------------------------- HqCL
def _info_nce(pos: float, negs, tau: float) -> float:
    logits = np.array([pos] + list(negs)) / tau
    return float(np.log(np.exp(logits).sum()) - logits[0])


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_hqcl_by_hand_and_own_class_never_negative(tau):
    # anchors: class 0 at 0 deg (x2) and class 1 at 90 deg; prototypes 0 -> 0 deg, 1 -> 60 deg
    anchors = torch.tensor([_unit(0), _unit(0), _unit(90)], requires_grad=True)
    anchor_cls = torch.tensor([0, 0, 1])
    protos = torch.tensor([_unit(0), _unit(60), [0.0, 0.0]])
    present = torch.tensor([True, True, False])
    # candidates: class 0 at 0 deg (identical to the class-0 anchors: drawing it for them would be a bug),
    # class 2 at 180 deg
    negatives = torch.tensor([_unit(0), _unit(180)])
    neg_cls = torch.tensor([0, 2])
    n = 4
    loss = hqcl_loss(anchors, anchor_cls, protos, present, negatives, neg_cls, n, tau,
                     generator=torch.Generator().manual_seed(1))
    # class 0 anchors only see the class-2 candidate (cos -1); the class-1 anchor sees both (cos 0 and cos -90deg=0)
    class0 = _info_nce(1.0, [-1.0] * n, tau)
    class1 = _info_nce(math.cos(math.radians(30)), [0.0] * n, tau)
    assert loss.item() == pytest.approx((class0 + class1) / 2, rel=1e-5)  # mean over classes, not anchors
    _finite_with_grad(loss, anchors)


def test_hqcl_draws_negatives_uniformly_from_other_classes():
    anchors = torch.tensor([_unit(0)])
    protos = torch.tensor([_unit(0), [0.0, 0.0], [0.0, 0.0]])
    present = torch.tensor([True, False, False])
    negatives = torch.tensor([_unit(90), _unit(90), _unit(180), _unit(180), _unit(0)])  # classes 1,1,2,2,0
    neg_cls = torch.tensor([1, 1, 2, 2, 0])
    n = 40000
    loss = hqcl_loss(anchors, torch.tensor([0]), protos, present, negatives, neg_cls, n, 1.0,
                     generator=torch.Generator().manual_seed(0))
    expected = math.log(math.e + n * (1 + math.exp(-1)) / 2) - 1  # half cos 0, half cos -1, never cos 1
    assert loss.item() == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("anchors", [1, 7, 300])  # one block, a partial last block, several blocks
def test_gathered_dot_equals_the_materialised_gather(anchors):
    from dvcl.losses.hqcl import gathered_dot

    g = torch.Generator().manual_seed(anchors)
    table = torch.randn(40, 256, generator=g)
    index = torch.randint(0, 40, (anchors, 50), generator=g)
    a = torch.randn(anchors, 256, generator=g, requires_grad=True)
    weights = torch.randn(anchors, 50, generator=g)
    out = gathered_dot(a, table, index)
    (out * weights).sum().backward()
    a_ref = a.detach().clone().requires_grad_()
    ref = (a_ref.unsqueeze(1) * table[index]).sum(-1)
    (ref * weights).sum().backward()
    assert torch.equal(out, ref)  # the same products summed in the same order
    assert torch.allclose(a.grad, a_ref.grad, rtol=1e-5, atol=1e-5)
    assert not table.requires_grad


def test_hqcl_edge_cases_are_finite():
    anchors = torch.randn(5, 4, requires_grad=True)
    protos, present = class_prototypes(torch.randn(5, 4), torch.tensor([0, 0, 1, 1, 1]), 3)
    # only the anchors' own class among the negatives (e.g. a labeled batch holding one class)
    loss = hqcl_loss(anchors, torch.zeros(5, dtype=torch.long), protos, present, torch.randn(3, 4),
                     torch.zeros(3, dtype=torch.long))
    assert loss.item() == 0.0
    _finite_with_grad(loss, anchors)
    # no negatives at all (empty labeled batch) and no anchors at all
    anchors.grad = None
    _finite_with_grad(hqcl_loss(anchors, torch.zeros(5, dtype=torch.long), protos, present, torch.zeros(0, 4),
                                torch.zeros(0, dtype=torch.long)), anchors)
    none = torch.zeros(0, 4, requires_grad=True)
    _finite_with_grad(hqcl_loss(none, torch.zeros(0, dtype=torch.long), protos, present, torch.randn(3, 4),
                                torch.tensor([0, 1, 2])), none)
    # an anchor class without prototype (class 2 absent from the prototype sample) is skipped
    anchors.grad = None
    loss = hqcl_loss(anchors, torch.full((5,), 2, dtype=torch.long), protos, present, torch.randn(3, 4),
                     torch.tensor([0, 1, 1]))
    assert loss.item() == 0.0


def test_memory_bank_keeps_newest_per_class():
    bank = ClassMemoryBank(num_classes=3, size_per_class=2, dim=2)
    bank.enqueue(torch.tensor([[1.0, 0], [2, 0], [3, 0]]), torch.tensor([0, 0, 1]))
    bank.enqueue(torch.tensor([[4.0, 0], [5, 0]]), torch.tensor([0, 0]))
    feats, cls = bank.contents()
    assert cls.tolist() == [0, 0, 1]
    assert sorted(feats[:2, 0].tolist()) == [4.0, 5.0] and feats[2, 0].item() == 3.0
    bank.enqueue(torch.tensor([[6.0, 0]]), torch.tensor([0]))
    assert sorted(bank.contents()[0][:2, 0].tolist()) == [5.0, 6.0]
    assert "bank" not in bank.state_dict()


# --------------------------------------------------------------------------------------------- DVCL
def _angle_pool():
    """Unit vectors at known angles: q=0, a=10, b=25, c=30, d=33, f=170, g=180, h=-90 (degrees)."""
    angles = [0, 10, 25, 30, 33, 170, 180, -90]
    return torch.tensor([_unit(a) for a in angles])


def test_dvcl_sets_neighbours_outsiders_and_nps_by_hand():
    pool = _angle_pool()
    sel = select_dvcl_sets(pool, torch.tensor([0]), k=2, k_out=2, qds=False, nps_oneway=0.1)  # NRC reading
    assert sel.neighbours[0].tolist() == [1, 2]  # a (10) and b (25)
    assert sorted(sel.outsiders[0].tolist()) == [5, 6]  # f (170) and g (180)
    # a's 2 nearest are q (10 deg) and b (15 deg): mutual -> 1.0; b's are c (5) and d (8), not q: one-way -> 0.1
    assert sel.affinity[0].tolist() == pytest.approx([1.0, 0.1])
    direct = nps_affinity(pool, torch.tensor([0]), torch.tensor([[1, 2]]), k=2, mutual=1.0, oneway=0.1)
    assert direct[0].tolist() == pytest.approx([1.0, 0.1])

    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        rnd = select_dvcl_sets(pool, torch.tensor([0, 3]), k=2, k_out=3, outsider_mode="random", qds=False,
                               generator=g)
        for row, q in enumerate([0, 3]):
            outs = set(rnd.outsiders[row].tolist())
            assert len(outs) == 3 and q not in outs and not outs & set(rnd.neighbours[row].tolist())


def test_dvcl_sets_match_brute_force_on_random_features():
    """C_i, D_i and NPS against an independent all-pairs numpy computation on 200 random 32-d features."""
    g = torch.Generator().manual_seed(7)
    feats = torch.randn(200, 32, generator=g)
    queries = torch.arange(0, 200, 7)
    sel = select_dvcl_sets(feats, queries, k=10, k_out=15, qds=False, nps_oneway=0.1)
    f = feats.numpy() / np.linalg.norm(feats.numpy(), axis=1, keepdims=True)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    knn = np.argsort(-sim, axis=1)[:, :10]
    np.fill_diagonal(sim, np.inf)
    far = np.argsort(sim, axis=1)[:, :15]
    for row, i in enumerate(queries.tolist()):
        assert sel.neighbours[row].tolist() == knn[i].tolist()
        assert sorted(sel.outsiders[row].tolist()) == sorted(far[i].tolist())
        expected = [1.0 if i in knn[n] else 0.1 for n in knn[i]]
        assert sel.affinity[row].tolist() == pytest.approx(expected)
    assert 0 < float((sel.affinity == 1.0).float().mean()) < 1  # both kinds occur


def test_dvcl_default_weights_every_neighbour_like_a_mutual_one():
    """The default one-way affinity (1.0, chosen on validation in issue 12): b, a one-way neighbour of q, counts
    fully, so the loss is -(p_q.p_a + p_q.p_b) + p_q.p_f + p_q.p_g."""
    pool = _angle_pool()
    probs = torch.tensor(_np_softmax(np.random.default_rng(1).normal(size=(8, 3)), axis=1), dtype=torch.float32)
    loss, sel = dvcl_loss(probs, pool, torch.tensor([0]), k=2, k_out=2, qds=False)
    assert sel.affinity[0].tolist() == [1.0, 1.0]
    p = probs.numpy()
    assert loss.item() == pytest.approx(-(p[0] @ p[1] + p[0] @ p[2]) + p[0] @ p[5] + p[0] @ p[6], rel=1e-5)
    assert DVCLParams().nps_oneway == 1.0


def test_equal_nps_affinities_skip_the_reciprocity_test_with_the_same_result():
    """``mutual == oneway`` returns the constant without ranking the neighbours' neighbours: the same as the full
    computation, whose reciprocal and one-way entries both carry that value."""
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(300, 16, generator=g)
    queries = torch.arange(0, 300, 11)
    sel = select_dvcl_sets(feats, queries, k=10, k_out=15, qds=False, nps_mutual=0.7, nps_oneway=0.7)
    full = nps_affinity(feats, queries, sel.neighbours, k=10, mutual=0.7, oneway=0.70001)
    assert sel.affinity.shape == sel.neighbours.shape and bool((sel.affinity == 0.7).all())
    assert torch.allclose(sel.affinity, full, atol=1e-4)


def test_dvcl_loss_value_by_hand():
    pool = _angle_pool()
    probs = torch.tensor(_np_softmax(np.random.default_rng(0).normal(size=(8, 3)), axis=1), dtype=torch.float32)
    probs.requires_grad_()
    loss, _ = dvcl_loss(probs, pool, torch.tensor([0]), k=2, k_out=2, qds=False, nps_oneway=0.1)
    p = probs.detach().numpy()
    expected = -(1.0 * p[0] @ p[1] + 0.1 * p[0] @ p[2]) + p[0] @ p[5] + p[0] @ p[6]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    _finite_with_grad(loss, probs)
    assert torch.count_nonzero(probs.grad[1:]) == 0  # neighbours and outsiders are detached

    q = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    nb = np.array([[[0.1, 0.1, 0.8], [0.3, 0.3, 0.4]], [[0.5, 0.4, 0.1], [0.2, 0.2, 0.6]]])
    aff = np.array([[1.0, 0.1], [0.1, 0.1]])
    out = np.array([[[0.9, 0.05, 0.05]], [[0.0, 0.0, 1.0]]])
    per_query = [-(aff[i] * (nb[i] @ q[i])).sum() + (out[i] @ q[i]).sum() for i in range(2)]
    tq, tnb, tout = (torch.tensor(v, requires_grad=True) for v in (q, nb, out))
    got = dvcl_loss_from_sets(tq, tnb, torch.tensor(aff), tout)
    assert got.item() == pytest.approx(np.mean(per_query), rel=1e-9)
    got.backward()
    assert tq.grad is not None and tnb.grad is None and tout.grad is None  # only the query is trained


def test_dvcl_gradient_pulls_towards_neighbours_and_pushes_from_outsiders():
    neighbours = torch.tensor([[[0.8, 0.1, 0.1], [0.7, 0.2, 0.1]]])
    outsiders = torch.tensor([[[0.1, 0.1, 0.8], [0.1, 0.2, 0.7], [0.2, 0.1, 0.7]]])
    affinity = torch.tensor([[1.0, 0.1]])
    z = torch.zeros(1, 3, requires_grad=True)  # the query's logits
    before = torch.softmax(z, 1).detach()
    dvcl_loss_from_sets(torch.softmax(z, 1), neighbours, affinity, outsiders).backward()
    with torch.no_grad():
        after = torch.softmax(z - 1.0 * z.grad, 1)  # one SGD step
    assert (torch.einsum("c,kc->k", after[0], neighbours[0]) > torch.einsum("c,kc->k", before[0], neighbours[0])).all()
    assert (torch.einsum("c,kc->k", after[0], outsiders[0]) < torch.einsum("c,kc->k", before[0], outsiders[0])).all()

    # the same through the full loss: features decide who is a neighbour, the step moves p accordingly
    pool = _angle_pool()
    logits = torch.zeros(8, 3)
    logits[1:5, 0] = 3.0  # the query's close voxels lean to class 0
    logits[5:7, 2] = 3.0  # its far voxels lean to class 2
    logits.requires_grad_()
    loss, sel = dvcl_loss(torch.softmax(logits, 1), pool, torch.tensor([0]), k=2, k_out=2, qds=False)
    loss.backward()
    with torch.no_grad():
        p0 = torch.softmax(logits, 1)
        p1 = torch.softmax(logits - logits.grad, 1)
    for n in sel.neighbours[0].tolist():
        assert p1[0] @ p0[n] > p0[0] @ p0[n]
    for k in sel.outsiders[0].tolist():
        assert p1[0] @ p0[k] < p0[0] @ p0[k]


def test_qds_drops_an_injected_outlier_query():
    scores = torch.tensor([0.9, 0.9, 0.9, 0.1])
    assert query_denoising(scores).tolist() == [True, True, True, False]  # threshold 0.7 - 0.346 = 0.354
    assert query_denoising(torch.tensor([0.5])).tolist() == [True]
    assert query_denoising(torch.full((4,), 0.3)).all()

    g = torch.Generator().manual_seed(0)
    cluster = torch.nn.functional.normalize(torch.tensor([1.0] + [0.0] * 7) + 0.05 * torch.randn(40, 8, generator=g))
    outlier = torch.tensor([[0.0] * 7 + [1.0]])
    pool = torch.cat([cluster, outlier])
    queries = torch.tensor(list(range(20)) + [40])
    sel = select_dvcl_sets(pool, queries, k=5, k_out=5, qds=True)
    assert sel.kept.tolist() == [True] * 20 + [False]
    assert 40 not in sel.queries.tolist()
    off = select_dvcl_sets(pool, queries, k=5, k_out=5, qds=False)
    assert off.kept.all()


def test_dvcl_edge_cases_are_finite():
    # fewer candidates than K + K': K shrinks to P - 1 and K' to what is left, sets never overlap
    probs = torch.softmax(torch.randn(5, 3), 1).requires_grad_()
    feats = torch.randn(5, 8)
    loss, sel = dvcl_loss(probs, feats, torch.arange(5), k=10, k_out=15)
    assert sel.neighbours.shape[1] == 4 and sel.outsiders.shape[1] == 0
    _finite_with_grad(loss, probs)
    probs2 = torch.softmax(torch.randn(7, 3), 1).requires_grad_()
    loss, sel = dvcl_loss(probs2, torch.randn(7, 8), torch.arange(3), k=4, k_out=15)
    assert sel.neighbours.shape[1] == 4 and sel.outsiders.shape[1] == 2
    for row in range(sel.queries.numel()):
        assert not set(sel.neighbours[row].tolist()) & set(sel.outsiders[row].tolist())
    _finite_with_grad(loss, probs2)
    # no unreliable voxel (empty pool) and a single one (no neighbour possible)
    for p in (0, 1):
        probs = torch.softmax(torch.randn(p, 3), 1).requires_grad_()
        loss, _ = dvcl_loss(probs, torch.randn(p, 8), torch.arange(p))
        assert loss.item() == 0.0
        _finite_with_grad(loss, probs)
    # identical features everywhere (ties): still finite
    probs = torch.softmax(torch.randn(30, 3), 1).requires_grad_()
    loss, _ = dvcl_loss(probs, torch.ones(30, 8), torch.arange(10), k=10, k_out=15)
    _finite_with_grad(loss, probs)


# --------------------------------------------------------------------------------------------- whole pipeline
@pytest.mark.parametrize("case", ["class_absent", "none_unreliable", "all_unreliable", "tiny_pool"])
def test_losses_finite_on_volume_edge_cases(case):
    """Sampling + every loss on a small volume, as the method chains them, in each edge case."""
    g = torch.Generator().manual_seed(3)
    C, F, D = 3, 6, 16
    logits = torch.randn(2, C, 4, 4, 4, generator=g).requires_grad_()
    feats = torch.randn(2, F, 4, 4, 4, generator=g).requires_grad_()
    proj = torch.nn.Linear(F, D)
    label = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    if case != "class_absent":
        label[0, 0, :2] = 1  # class 2 is absent in every case; class 1 too for "class_absent"
    n_l = 1
    probs = torch.softmax(logits, 1)
    _, unreliable, _ = reliable_split(entropy(probs[n_l:].detach(), 1), 0.5)
    if case == "none_unreliable":
        unreliable = torch.zeros_like(unreliable)
    elif case == "all_unreliable":
        unreliable = torch.ones_like(unreliable)
    elif case == "tiny_pool":
        unreliable = torch.zeros_like(unreliable)
        unreliable.view(-1)[:3] = True

    total = supervised_loss(logits[:n_l], label) + cps_loss(logits[n_l:], logits[n_l:].flip(0) * 0.5)
    labels_all = torch.cat([label[:, 0], probs[n_l:].argmax(1)])
    valid = torch.cat([torch.ones_like(label[:, 0], dtype=torch.bool), ~unreliable])
    a_idx, a_cls = sample_per_class(labels_all, valid, C, 8, g)
    p_idx, p_cls = sample_per_class(labels_all, valid, C, 32, g)
    n_idx, n_cls = sample_per_class(label[:, 0], torch.ones_like(label[:, 0], dtype=torch.bool), C, 16, g)
    protos, present = class_prototypes(proj(gather_voxels(feats, p_idx)).detach(), p_cls, C)
    total = total + hqcl_loss(torch.nn.functional.normalize(proj(gather_voxels(feats, a_idx))), a_cls, protos, present,
                              proj(gather_voxels(feats, n_idx)).detach(), n_cls, 5, 1.0, g)
    spatial = 4 * 4 * 4
    pool_idx = sample_from_mask(unreliable, 40, g) + n_l * spatial
    q = torch.randperm(pool_idx.numel(), generator=g)[:10]
    pool_probs = torch.softmax(gather_voxels(logits, pool_idx), 1)
    d_loss, _ = dvcl_loss(pool_probs, gather_voxels(feats, pool_idx).detach(), q, k=10, k_out=15, generator=g)
    total = total + 0.3 * d_loss
    if case == "none_unreliable":
        assert d_loss.item() == 0.0
    _finite_with_grad(total, logits, feats)


# --------------------------------------------------------------------------------------------- params
def test_params_defaults_roundtrip_and_validation():
    p = DVCLParams()
    expected = {"alpha": 0.5, "lambda_cps": 0.1, "cps_rampup_fraction": 1.0, "cps_entropy_weighting": False,
                "num_anchors": 256, "prototype_samples": 2048, "num_negatives": 50, "temperature": 1.0,
                "anchor_threshold": None, "memory_bank": False, "num_queries": 256, "pool_size": 4096, "k": 10,
                "k_out": 15, "outsider_mode": "farthest", "nps_mutual": 1.0, "nps_oneway": 1.0, "qds": True,
                "beta": 0.3, "lambda_c": 0.1, "feature_dim": 256}
    d = p.to_dict()
    for key, value in expected.items():
        assert d[key] == value, key
    assert DVCLParams.from_dict(d) == p
    assert DVCLParams.from_dict({"k": 5, "anchor_threshold": "0.3"}).anchor_threshold == 0.3
    with pytest.raises(ConfigError, match="unknown"):
        DVCLParams.from_dict({"kk": 5})
    with pytest.raises(ConfigError, match="outsider_mode"):
        DVCLParams(outsider_mode="nearest")
    with pytest.raises(ConfigError, match="temperature"):
        DVCLParams(temperature=0)
    with pytest.raises(ConfigError, match="num_queries"):
        DVCLParams(num_queries=10, pool_size=5)
