"""The remaining baselines of the paper's tables: DAN, SASSnet, DTC, CLD, DHC, MagicNet, UGPCL, BaCon, CCL.

For each, its specific loss or mechanism on a small hand-computed case, then two training iterations of each
through the shared Trainer on a tiny prepared cache (real NIfTI files, real network, real optimiser steps).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dvcl.losses import sdf as sdf_mod
from dvcl.losses.adversarial import DiscriminatorTrainer, discriminator_loss, generator_loss
from dvcl.losses.balanced_contrast import bacon_loss, balanced_temperature, reliable_negative_mask
from dvcl.losses.class_weighting import DiffDW, DistDW, frequency_weights, weighted_ce, weighted_dice
from dvcl.losses.complementary_contrast import ccl_loss, complementary_labels
from dvcl.losses.confidence_sampling import ConfidenceBank, sampling_mask, sampling_rate
from dvcl.losses.cube_mix import (
    ClassDistribution,
    magic_dice_loss,
    partition,
    random_cube_permutation,
    recover,
    split_cubes,
    stitch_cubes,
)
from dvcl.losses.pixel_contrast import SegmentQueue, certainty_labels, pixel_contrast_loss, sample_anchors
from dvcl.networks import NetworkConfig

NEW_METHODS = ("dan", "sassnet", "dtc", "cld", "dhc", "magicnet", "ugpcl", "bacon", "ccl")


# ------------------------------------------------------------------------------------------ SDF (SASSnet, DTC)
def test_sdf_of_a_1d_segment_matches_the_analytic_map():
    # mask at x = 2..4 of 7 voxels: inside distance to background 1,2,1; outside distance to the mask 2,1,1,2
    mask = torch.zeros(1, 1, 1, 7, dtype=torch.bool)
    mask[..., 2:5] = True
    sdf = sdf_mod.normalized_sdf(mask)[0, 0, 0]
    assert torch.allclose(sdf, torch.tensor([1.0, 0.5, 0.0, -1.0, 0.0, 0.5, 1.0]))


def test_sdf_matches_scipy_and_skimage_on_3d_masks():
    from scipy.ndimage import distance_transform_edt
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(1)
    masks = np.zeros((3, 7, 9, 11), dtype=bool)
    masks[0, 1:5, 2:7, 3:9] = True
    masks[1] = rng.random((7, 9, 11)) > 0.6
    masks[2, 3, 4, 5] = True
    got = sdf_mod.normalized_sdf(torch.from_numpy(masks)).numpy()
    for m, g in zip(masks, got):
        pos, neg = distance_transform_edt(m), distance_transform_edt(~m)
        ref = neg / neg.max() - pos / pos.max()
        ref[find_boundaries(m, mode="inner")] = 0
        np.testing.assert_allclose(g, ref, atol=1e-6)
    # anisotropic squared distances against SciPy's sampling
    d = sdf_mod.squared_edt(torch.from_numpy(~masks[1:2]), (2.5, 1.25, 1.0))[0].numpy()
    np.testing.assert_allclose(d, distance_transform_edt(masks[1], sampling=(2.5, 1.25, 1.0)) ** 2, rtol=1e-5)


def test_sdf_of_absent_and_full_classes_and_channel_order():
    label = torch.zeros(1, 1, 2, 3, 4, dtype=torch.long)
    label[0, 0, :, :, :] = 2  # class 2 fills the patch, class 1 is absent
    maps = sdf_mod.signed_distance_maps(label, num_classes=3)
    assert maps.shape == (1, 2, 2, 3, 4)
    assert torch.all(maps[0, 0] == 1.0) and torch.all(maps[0, 1] == -1.0)
    assert torch.all(sdf_mod.signed_distance_maps(label, 3, absent_value=0.0)[0, 0] == 0.0)


def test_dtc_transform_and_consistency_by_hand():
    k = 1500.0
    sdf = torch.tensor([0.0, 0.001, -0.001])
    prob = sdf_mod.sdf_to_probability(sdf, k)
    expected = [0.5, 1 / (1 + math.exp(1.5)), 1 / (1 + math.exp(-1.5))]
    assert torch.allclose(prob, torch.tensor(expected), atol=1e-6)
    p = torch.tensor([0.5, 0.0, 1.0]).view(1, 1, 3)
    cons = sdf_mod.dual_task_consistency(sdf.view(1, 1, 3), p, k)
    assert cons.item() == pytest.approx((0.0 + expected[1] ** 2 + (1 - expected[2]) ** 2) / 3, rel=1e-5)


# ------------------------------------------------------------------------------------------ DAN / SASSnet
def test_discriminator_and_generator_losses_on_known_logits():
    ln3 = math.log(3.0)
    d_lab = torch.tensor([[0.0, ln3]])    # P(labeled) = 3/4, target labeled
    d_unl = torch.tensor([[ln3, 0.0]])    # P(unlabeled) = 3/4, target unlabeled
    assert discriminator_loss(d_lab, d_unl).item() == pytest.approx(-math.log(0.75), rel=1e-6)
    assert generator_loss(d_unl).item() == pytest.approx(math.log(4.0), rel=1e-6)  # wants P(labeled) = 1/4 up


def test_discriminator_step_and_optimizer_state_round_trip():
    from dvcl.networks.heads import FCDiscriminator3D

    torch.manual_seed(0)
    disc = FCDiscriminator3D(map_channels=2, ndf=4)
    trainer = DiscriminatorTrainer(disc, lr=1e-2)
    assert not any(p.requires_grad for p in disc.parameters())  # kept out of the network's optimiser
    before = [p.detach().clone() for p in disc.parameters()]
    maps, img = torch.rand(2, 2, 16, 16, 16), torch.rand(2, 1, 16, 16, 16)
    trainer.step(maps[:1], img[:1], maps[1:], img[1:])
    assert any(not torch.equal(b, p) for b, p in zip(before, disc.parameters()))
    assert not any(p.requires_grad for p in disc.parameters())
    state = trainer.state()
    assert "disc_opt.0.exp_avg" in state and "disc_opt.0.step" in state
    twin = FCDiscriminator3D(map_channels=2, ndf=4)
    twin.load_state_dict(disc.state_dict())
    twin_trainer = DiscriminatorTrainer(twin, lr=1e-2)
    twin_trainer.load_state(state)
    torch.manual_seed(5)
    trainer.step(maps[:1], img[:1], maps[1:], img[1:])
    torch.manual_seed(5)
    twin_trainer.step(maps[:1], img[:1], maps[1:], img[1:])
    for a, b in zip(disc.parameters(), twin.parameters()):
        assert torch.allclose(a, b)


def test_dan_keeps_the_discriminator_out_of_the_network_step():
    from dvcl.methods import get_method_class
    from dvcl.training.config import TrainConfig

    torch.manual_seed(0)
    cfg = TrainConfig(patch=(16, 16, 16), iterations=10, network=NetworkConfig(channels=(4, 8), feature_dim=8),
                      method_params={"disc_channels": 4})
    method = get_method_class("dan")(cfg, 3, torch.device("cpu"))
    method.setup()
    trainable = {id(p) for p in method.trainable_parameters()}
    assert not any(id(p) in trainable for p in method.models["D"].parameters())
    x = torch.rand(2, 1, 16, 16, 16)
    y = torch.randint(0, 3, (1, 1, 16, 16, 16))
    method.train()
    loss, terms = method.compute_loss({"image": x[:1], "label": y}, {"image": x[1:]}, 5)
    loss.backward()
    assert all(p.grad is None for p in method.models["D"].parameters())
    assert method.models["A"].seg_head.weight.grad is not None
    before = [p.detach().clone() for p in method.models["D"].parameters()]
    method.after_step(5)
    assert any(not torch.equal(b, p) for b, p in zip(before, method.models["D"].parameters()))


# ------------------------------------------------------------------------------------------ CLD
def test_cld_frequency_weights_and_weighted_losses_by_hand():
    w = frequency_weights(torch.tensor([1000.0, 8.0, 1.0]))
    assert torch.allclose(w, torch.tensor([1.0, 5.0, 10.0], dtype=torch.float64))
    # two voxels: CE = [ln 2, ln(4/3)], class weights [1, 3]
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3.0)]]).t().reshape(1, 2, 2)
    target = torch.tensor([[0, 1]])
    cw = torch.tensor([1.0, 3.0])
    ce = [math.log(2.0), math.log(4.0 / 3.0)]
    assert weighted_ce(logits, target, cw).item() == pytest.approx((ce[0] + 3 * ce[1]) / 4, rel=1e-6)
    mask = torch.tensor([[1.0, 0.0]])
    assert weighted_ce(logits, target, cw, mask, "voxels").item() == pytest.approx(ce[0] / 2, rel=1e-6)
    assert weighted_ce(logits, target, torch.tensor([0.0, 3.0]), mask).item() == 0.0  # 0/0 guarded, not NaN
    # weighted Dice of the foreground class: p1 = [1/2, 3/4], onehot = [0, 1], smooth 1
    tp, fp, fn = 0.75, 0.5, 0.25
    dice1 = (2 * tp + 1) / (2 * tp + fp + fn + 1)
    assert weighted_dice(logits, target, cw).item() == pytest.approx(3 * (1 - dice1), rel=1e-5)


def test_cld_confidence_bank_and_sampling_rates_by_hand():
    bank = ConfidenceBank(3, momentum=0.5, update_every=2, confs=torch.zeros(3))
    label = torch.tensor([[0, 0, 1]])
    probs = torch.tensor([[[0.9, 0.7, 0.2], [0.05, 0.2, 0.6], [0.05, 0.1, 0.2]]])  # (1, C=3, 3 voxels)
    bank.record(probs, label)
    assert torch.equal(bank.confs, torch.zeros(3))  # no refresh before update_every records
    bank.record(probs, label)
    # first refresh replaces: class 0 -> mean(0.9, 0.7), class 1 -> 0.6, class 2 unseen keeps 0
    assert torch.allclose(bank.confs, torch.tensor([0.8, 0.6, 0.0]))
    probs2 = torch.tensor([[[0.4, 0.4, 0.1], [0.3, 0.3, 0.8], [0.3, 0.3, 0.1]]])
    bank.record(probs2, label)
    bank.record(probs2, label)
    assert torch.allclose(bank.confs, torch.tensor([0.5 * 0.8 + 0.5 * 0.4, 0.5 * 0.6 + 0.5 * 0.8, 0.0]))
    rates = sampling_rate(torch.tensor([0.9, 0.6, 0.8]))
    assert torch.allclose(rates, torch.tensor([0.5, 1.0, math.sqrt(0.5)]))
    pred = torch.tensor([[0, 1, 1, 0]])
    assert torch.equal(sampling_mask(pred, torch.tensor([0.0, 1.0])), torch.tensor([[0.0, 1.0, 1.0, 0.0]]))


def test_cld_and_dhc_accept_labeled_set_class_counts():
    from dvcl.methods import get_method_class
    from dvcl.training.config import TrainConfig

    torch.manual_seed(0)
    cfg = TrainConfig(patch=(8, 8, 8), iterations=10, network=NetworkConfig(channels=(4, 8), feature_dim=8))
    cld = get_method_class("cld")(cfg, 3, torch.device("cpu"))
    cld.setup()
    cld.set_class_counts(torch.tensor([1000.0, 8.0, 1.0]))
    x, y = torch.rand(2, 1, 8, 8, 8), torch.randint(0, 3, (1, 1, 8, 8, 8))
    cld.compute_loss({"image": x[:1], "label": y}, {"image": x[1:]}, 0)
    assert torch.allclose(cld.class_weights(), torch.tensor([1.0, 5.0, 10.0]))  # frozen: the batch is not counted
    dhc = get_method_class("dhc")(cfg, 3, torch.device("cpu"))
    dhc.setup()
    dhc.set_class_counts(torch.tensor([100.0, 10.0, 1.0]))
    assert torch.allclose(dhc.distdw.weights, torch.tensor([0.0, 1.5, 3.0], dtype=torch.float64))


# ------------------------------------------------------------------------------------------ DHC
def test_distdw_weights_and_the_absent_class_fix():
    dist = DistDW(3, momentum=0.99)
    # log(100/100) = 0, log(100/10), log(100/1) -> normalised [0, 0.5, 1] * C
    w0 = dist.init(torch.tensor([100.0, 10.0, 1.0]))
    assert torch.allclose(w0, torch.tensor([0.0, 1.5, 3.0], dtype=torch.float64))
    # class 2 absent: present classes renormalise to [0, 1] * 3, the absent class keeps its weight
    w = dist.update(torch.tensor([100.0, 10.0, 0.0]))
    assert torch.allclose(w, torch.tensor([0.0, 0.99 * 1.5 + 0.01 * 3.0, 3.0], dtype=torch.float64))
    assert torch.equal(dist.update(torch.tensor([5.0, 0.0, 0.0])), w)  # a single present class: no update
    released = DistDW(3, fix_absent=False).current(torch.tensor([100.0, 10.0, 0.0]))
    # the released 1e-8 makes the absent class the maximum and squashes the others
    ratio = math.log((100 + 1e-8) / (10 + 1e-8)) / math.log((100 + 1e-8) / 1e-8)
    assert torch.allclose(released, torch.tensor([0.0, 3 * ratio, 3.0], dtype=torch.float64))


def test_diffdw_weights_on_a_tiny_confusion():
    diff = DiffDW(2, accumulate_iters=2)  # EMA momentum 0.5
    label = torch.tensor([0, 0, 1, 1])
    w1 = diff.update(torch.tensor([0, 0, 1, 1]), label)  # Dice 1 for both classes
    assert torch.allclose(w1, torch.tensor([2.0, 2.0], dtype=torch.float64))
    w2 = diff.update(torch.tensor([0, 1, 1, 1]), label)  # Dice 2/3 (background) and 4/5 (class 1)
    learn = 0.5 * (0.5 * (1 - 1e-8) * math.log(1 / 1e-8))  # two EMA steps of the first iteration's gain
    un0 = 0.5 * (-(1 / 3) * math.log(2 / 3))
    un1 = 0.5 * (-0.2 * math.log(0.8))
    dw0, dw1 = 0.5 * 0.5 + 0.5 * (1 / 3), 0.5 * 0.5 + 0.5 * 0.2
    raw = [((un0 + 1e-8) / (learn + 1e-8)) ** 0.2 * dw0, ((un1 + 1e-8) / (learn + 1e-8)) ** 0.2 * dw1]
    expected = torch.tensor([2 * r / max(raw) for r in raw], dtype=torch.float64)
    assert torch.allclose(w2, expected, rtol=1e-4)
    # a class in neither prediction nor label keeps its statistics (released code: Dice 0.5, fake steps)
    tri = DiffDW(3, accumulate_iters=2)
    tri.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1]))
    assert tri.cls_learn[2].item() == 0.0 and tri.last_dice[2].item() == pytest.approx(1e-8)
    released = DiffDW(3, accumulate_iters=2, fix_absent=False)
    released.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1]))
    assert released.last_dice[2].item() == pytest.approx(0.5) and released.cls_learn[2].item() > 0


# ------------------------------------------------------------------------------------------ MagicNet
def test_magic_cube_partition_by_hand_and_exact_recovery():
    x = torch.arange(2 * 1 * 2 * 2 * 2, dtype=torch.float32).view(2, 1, 2, 2, 2)
    cube = (1, 2, 1)  # grid (2, 1, 2): K = 4 cubes per sample, 2 voxels each
    perm = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]])
    mixed = partition(x, perm, cube)
    # cube k = (z, x) in row-major order: k0 = (0, 0), k1 = (0, 1), k2 = (1, 0), k3 = (1, 1)
    assert torch.equal(mixed[0, 0, 0, :, 0], x[1, 0, 0, :, 0])  # k0 from sample 1
    assert torch.equal(mixed[0, 0, 0, :, 1], x[0, 0, 0, :, 1])  # k1 from sample 0
    assert torch.equal(mixed[1, 0, 1, :, 1], x[0, 0, 1, :, 1])  # k3 of sample 1 from sample 0
    assert torch.equal(recover(mixed, perm, cube), x)
    rand = torch.rand(3, 5, 4, 8, 8)
    p = random_cube_permutation(3, 8, rand.device)
    assert torch.equal(torch.sort(p, dim=0).values, torch.arange(3).view(3, 1).expand(3, 8))
    assert torch.equal(recover(partition(rand, p, (2, 4, 4)), p, (2, 4, 4)), rand)
    cubes, loc = split_cubes(rand, (2, 4, 4))
    assert cubes.shape == (24, 5, 2, 4, 4) and loc.tolist() == list(range(8)) * 3
    assert torch.equal(cubes[9], rand[1, :, 0:2, 0:4, 4:8])  # sample 1, cube 1 = (z0, y0, x1)
    assert torch.equal(stitch_cubes(cubes, 3, (2, 2, 2)), rand)


def test_magic_dice_and_class_distribution_by_hand():
    probs = torch.tensor([[0.8, 0.4], [0.2, 0.6]]).view(1, 2, 2)  # two voxels, labels [0, 1]
    target = torch.tensor([[0, 1]])
    d0 = 1 - (2 * 0.8) / (0.8 ** 2 + 0.4 ** 2 + 1)
    d1 = 1 - (2 * 0.6) / (0.2 ** 2 + 0.6 ** 2 + 1)
    assert magic_dice_loss(probs, target).item() == pytest.approx((d0 + d1) / 2, rel=1e-6)
    dist = ClassDistribution(3, update_every=2)
    dist.record(torch.tensor([0, 0, 0, 1]))
    dist.maybe_refresh(1)
    assert not dist.ready
    dist.record(torch.tensor([0, 2, 2, 2, 2]))
    dist.maybe_refresh(2)
    assert torch.allclose(dist.weights(), torch.tensor([1.0, 0.25, 1.0]))  # counts [4, 1, 4] / max
    assert torch.allclose(dist.weights(temperature=0.5), torch.tensor([1.0, 1 / 16, 1.0]))


# ------------------------------------------------------------------------------------------ UGPCL
def _unit(*v):
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def test_pixel_contrast_loss_against_a_direct_computation():
    anchors = torch.stack([_unit(1.0, 0.2), _unit(-0.3, 1.0)])
    a_cls = torch.tensor([1, 2])
    queue = torch.stack([torch.zeros(2), _unit(1.0, 0.0), _unit(0.5, 1.0), _unit(0.0, 1.0)])
    q_cls = torch.tensor([0, 1, 1, 2])
    t = 0.5
    expected = []
    for a, c in zip(anchors, a_cls):
        s = [float(a @ q) / t for q in queue]
        neg = sum(math.exp(si) for si, qc in zip(s, q_cls) if qc != c)
        pos = [si - math.log(math.exp(si) + neg) for si, qc in zip(s, q_cls) if qc == c]
        expected.append(-(t / 0.07) * sum(pos) / (len(pos) + 1e-5))
    got = pixel_contrast_loss(anchors, a_cls, queue, q_cls, temperature=t, base_temperature=0.07)
    assert got.item() == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_ugpcl_certainty_labels_anchor_sampling_and_queue():
    mean = torch.tensor([[[0.9, 0.5], [0.1, 0.5]]])  # (1, C=2, 2 voxels): confident, uncertain
    assert certainty_labels(mean, threshold=0.5).tolist() == [[0, -1]]
    labels = torch.tensor([[1, 1, 1, 2, 2, -1]])
    preds = torch.tensor([[1, 0, 1, 2, 2, 0]])
    idx, cls = sample_anchors(labels, preds, max_samples=1024, max_views=1)
    # one view per (image, class) with > 1 voxel: an easy voxel when easy ones exist
    assert sorted(cls.tolist()) == [1, 2]
    for i, c in zip(idx.tolist(), cls.tolist()):
        assert labels[0, i] == c and preds[0, i] == c
    idx2, cls2 = sample_anchors(labels, preds, max_samples=1024, max_views=2)  # half hard, half easy
    ones = [i for i, c in zip(idx2.tolist(), cls2.tolist()) if c == 1]
    assert sorted(preds[0, ones].tolist()) == [0, 1]
    q = SegmentQueue(3, size=2, dim=2)
    q.push(torch.tensor([3.0, 4.0]), 1)
    q.push(torch.tensor([1.0, 0.0]), 0)  # background is never enqueued (released behaviour)
    feats, classes = q.contrast_set()
    assert classes.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(feats[:2], torch.zeros(2, 2)) and torch.allclose(feats[2], torch.tensor([0.6, 0.8]))


# ------------------------------------------------------------------------------------------ BaCon
def test_bacon_temperature_negatives_and_loss_by_hand():
    tau = balanced_temperature(torch.tensor([100.0, 25.0]), progress=0.0)
    assert torch.allclose(tau, torch.tensor([0.1 - 0.0005, 0.1 - 0.0005 * 0.5]))
    assert torch.allclose(balanced_temperature(torch.tensor([100.0, 25.0]), progress=1.0), torch.tensor([0.1, 0.1]))
    # candidates: labeled class 0, labeled class 1, unlabeled with top-2 {0, 2}
    allowed = reliable_negative_mask(3, torch.tensor([0, 1, 0]), torch.tensor([[0, 0], [1, 1], [0, 2]]),
                                     torch.tensor([True, True, False]))
    assert allowed.tolist() == [[False, True, False], [True, False, True], [True, True, False]]
    feats = torch.stack([_unit(1.0, 0.1), _unit(0.2, 1.0)])
    cls = torch.tensor([0, 1])
    centers = torch.stack([_unit(1.0, 0.0), _unit(0.0, 1.0), _unit(1.0, 1.0)])
    negs = torch.stack([_unit(1.0, 0.3), _unit(-1.0, 0.5), _unit(0.3, -1.0)])
    taus = torch.tensor([0.09, 0.11, 0.1])
    expected = []
    for z, c in zip(feats, cls):
        pos = math.exp(float(z @ centers[c]) / float(taus[c]))
        sims = [math.exp(float(z @ n) / 0.1) for n, ok in zip(negs, allowed[c]) if ok]
        expected.append(-math.log(pos / (pos + 64 * sum(sims) / len(sims) + 1e-8)))
    got = bacon_loss(feats, cls, centers, torch.tensor([True, True, True]), negs, allowed, taus)
    assert got.item() == pytest.approx(sum(expected) / 2, rel=1e-5)


# ------------------------------------------------------------------------------------------ CCL
def _ccl_reference(high, hl, lw, ls, comp, t):
    """Brute-force CCL loss from the pair rules (independent of the vectorised masks)."""
    rows = [("h", i) for i in range(len(high))]
    rows += [("w", i) for i in range(len(lw))] + [("s", i) for i in range(len(ls))]
    feats = {("h", i): high[i] for i in range(len(high))}
    feats.update({("w", i): lw[i] for i in range(len(lw))})
    feats.update({("s", i): ls[i] for i in range(len(ls))})

    def pair(a, b):
        if a == b:
            return False, False
        if a[0] == "h" and b[0] == "h":
            return bool(hl[a[1]] == hl[b[1]]), True
        if a[0] != "h" and b[0] != "h":
            partner = a[1] == b[1] and a[0] != b[0]
            return partner, partner
        h, low = (a, b) if a[0] == "h" else (b, a)
        return False, int(hl[h[1]]) in comp[low[1]].tolist()

    losses = []
    for a in rows:
        sims = {b: float(feats[a] @ feats[b]) / t for b in rows}
        den = math.log(sum(math.exp(sims[b]) for b in rows if pair(a, b)[1]))
        pos = [sims[b] - den for b in rows if pair(a, b)[0]]
        if pos:
            losses.append(-sum(pos) / len(pos))
    return sum(losses) / len(losses)


def test_ccl_complementary_labels_and_loss_against_brute_force():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    assert complementary_labels(probs, 2).tolist() == [[2, 1], [0, 2]]
    torch.manual_seed(3)
    high = F.normalize(torch.randn(4, 3), dim=1)
    hl = torch.tensor([0, 1, 1, 2])
    lw, ls = F.normalize(torch.randn(2, 3), dim=1), F.normalize(torch.randn(2, 3), dim=1)
    comp = torch.tensor([[0, 2], [1, 0]])
    got = ccl_loss(high, hl, lw, ls, comp, temperature=0.5)
    assert got.item() == pytest.approx(_ccl_reference(high, hl, lw, ls, comp, 0.5), rel=1e-5)


# ------------------------------------------------------------------------------------------ heads
def test_heads_shapes():
    from dvcl.networks import build_network
    from dvcl.networks.heads import AuxDecoder, EncoderTap, FCDiscriminator3D, LocationHead, RotationHead, SDFHead

    torch.manual_seed(0)
    cfg = NetworkConfig(channels=(4, 8, 16), feature_dim=8, num_classes=3)
    net = build_network(cfg)
    x = torch.rand(2, 1, 8, 16, 16)
    with EncoderTap(net) as tap:
        logits, feats = net(x)
    assert [t.shape[1] for t in tap.outputs] == [4, 8, 16] and tap.deepest.shape[2:] == (2, 4, 4)
    assert AuxDecoder(cfg, 3)(tap.outputs).shape == logits.shape
    sdf = SDFHead(4, 3)(feats)
    assert sdf.shape == (2, 2, 8, 16, 16) and sdf.abs().max() < 1
    assert RotationHead(16, 4)(tap.deepest).shape == (2, 4)
    assert LocationHead(16 * 2 * 4 * 4, 5, hidden=8)(tap.deepest).shape == (2, 5)
    assert FCDiscriminator3D(3, ndf=4)(torch.rand(2, 3, 16, 32, 16), torch.rand(2, 1, 16, 32, 16)).shape == (2, 2)


# ------------------------------------------------------------------------------------------ training
TRAIN_CASES = [
    # method, patch, method params (small sizes; contrastive terms switched on from the first iteration),
    # logged terms, inference models, extra (non-inference) models
    ("dan", (16, 16, 16), {"disc_channels": 4}, ["sup", "adv", "disc"], ["A"], ["D"]),
    ("sassnet", (16, 16, 16), {"disc_channels": 4}, ["seg", "sdf", "adv", "disc"], ["A"], ["sdf", "D"]),
    ("dtc", (8, 16, 16), {}, ["seg", "sdf", "consistency"], ["A"], ["sdf"]),
    ("cld", (8, 16, 16), {}, ["sup_A", "sup_B", "cps"], ["A", "B"], []),
    ("dhc", (8, 16, 16), {}, ["sup_A", "sup_B", "cps", "weight_fg_A"], ["A", "B"], []),
    ("magicnet", (8, 16, 16), {"cube_size": [4, 8, 8], "loc_hidden": 16}, ["sup", "loc", "consistency"],
     ["student"], ["teacher", "loc_head"]),
    ("ugpcl", (8, 16, 16), {"contrast_start_fraction": 0.0, "bank_size": 8, "segment_samples": 16},
     ["sup", "consistency", "rotation", "contrast"], ["A"], ["aux", "rot"]),
    ("bacon", (8, 16, 16), {"contrast_start_fraction": 0.0, "select_threshold": 0.0, "anchors_per_class": 16,
                            "negative_pool": 32, "bank_size": 32}, ["sup", "unsup", "contrast"], ["teacher"],
     ["student"]),
    ("ccl", (8, 16, 16), {"p_cutoff": 0.5, "high_per_class": 8, "low_samples": 16}, ["sup", "unsup", "contrast"],
     ["teacher"], ["student"]),
]


def test_registry_lists_every_new_baseline():
    from dvcl.methods import available_methods, get_method_class

    names = available_methods()
    for m in NEW_METHODS:
        assert m in names and get_method_class(m).name == m
        assert get_method_class(m).__doc__ and get_method_class(m).params_class is not None


@pytest.mark.parametrize("method,patch,params,terms,inference,extra", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_two_training_iterations_through_the_trainer(tiny_cache, tmp_path, method, patch, params, terms, inference,
                                                     extra):
    from dvcl.methods import get_method_class
    from dvcl.training.checkpoint import load_weights
    from dvcl.training.config import TrainConfig
    from dvcl.training.trainer import train

    cfg = TrainConfig(data=str(tiny_cache), method=method, labeled_fraction=0.5, iterations=2, batch_labeled=1,
                      batch_unlabeled=1, patch=patch, lr=0.01, val_every=0, val_roi=patch, val_sw_batch=1,
                      log_every=1, amp=False, num_workers=0, profile="quick", device="cpu",
                      network=NetworkConfig(channels=(4, 8), feature_dim=16), method_params=params)
    result = train(cfg, tmp_path / "run", device="cpu", argv=["test"])
    assert result.status == "finished" and result.iteration == 2
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["inference_models"] == inference
    lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert len(lines) == 3
    for row in lines[1:]:
        values = dict(zip(header, row.split(",")))
        for t in terms:
            assert math.isfinite(float(values[t])), (t, values)
    weights = load_weights(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert set(weights) == set(inference) | set(extra)
    # the method's extra state goes through a weights_only checkpoint and back into a fresh method
    state = torch.load(tmp_path / "run" / "checkpoints" / "last_state.pt", weights_only=True)
    fresh = get_method_class(method)(cfg, 3, torch.device("cpu"))
    fresh.setup()
    fresh.load_extra_state(state.get("method_extra") or {})
    for key, value in (state.get("method_extra") or {}).items():
        assert torch.equal(fresh.extra_state()[key].cpu(), value.cpu()), key


# ------------------------------------------------------------------------------------------ contrast start
CONTRAST_CASES = {
    "u2pl": {"anchors_per_class": 8, "num_negatives": 4, "negative_pool": 64, "bank_size": 64,
             "background_bank_size": 64, "sup_only_fraction": 0.0, "anchor_threshold": 0.0},
    "ugpcl": {"bank_size": 8, "segment_samples": 16},
    "bacon": {"select_threshold": 0.0, "anchors_per_class": 16, "negative_pool": 32, "bank_size": 32},
    "ccl": {"p_cutoff": 0.0, "high_per_class": 8, "low_samples": 16},
}


@pytest.mark.parametrize("method", sorted(CONTRAST_CASES))
def test_contrast_start_fraction_switches_the_contrastive_term_of_every_contrastive_method(method):
    """One switch (``ContrastParams.contrast_start_fraction``) for all four: off before it, on after it."""
    from dvcl_test_cases import two_box_batches

    from dvcl.methods import get_method_class
    from dvcl.methods.params import ContrastParams
    from dvcl.training.config import TrainConfig

    cls = get_method_class(method)
    assert issubclass(cls.params_class, ContrastParams)
    batch_l, batch_u = two_box_batches(seed=3)
    contrast = {}
    for start in (0.0, 0.5):
        cfg = TrainConfig(method=method, iterations=10, batch_labeled=2, batch_unlabeled=2, patch=(8, 16, 16),
                          network=NetworkConfig(channels=(4, 8), feature_dim=16),
                          method_params=dict(CONTRAST_CASES[method], contrast_start_fraction=start))
        cfg.network.num_classes = 3
        torch.manual_seed(0)
        m = cls(cfg, 3, torch.device("cpu"))
        m.setup()
        m.train()
        if method == "bacon":  # BaCon's class centres come from its bank: fill it once from a first step
            m.compute_loss(batch_l, batch_u, 6)
        contrast[start] = [m.compute_loss(batch_l, batch_u, it)[1]["contrast"] for it in (4, 6)]
    assert contrast[0.0][0] != 0.0 and contrast[0.0][1] != 0.0  # on from the first iteration
    assert contrast[0.5][0] == 0.0  # iteration 4 < 0.5 * 10: off
    assert contrast[0.5][1] != 0.0  # iteration 6 >= 5: on


def test_contrast_started_by_hand():
    from dvcl.methods.params import ContrastParams

    p = ContrastParams(contrast_start_fraction=0.25)
    assert [p.contrast_started(i, 100) for i in (0, 24, 25, 99)] == [False, False, True, True]
    assert ContrastParams().contrast_started(0, 100)
