"""DVCL: distance-aware voxel-wise contrastive co-training (ICCV 2025; METHOD.md section 3).

Two networks A and B of the same architecture, initialised differently, see the same labeled + unlabeled
batch. One iteration (Algorithm 1 of the supplementary):

    L = L_sup(A) + L_sup(B) + lambda_cps(t) * L_cps + lambda_c * (L_hqcl + beta * L_dvcl)

* L_sup: 0.5 CE + 0.5 soft Dice on the labeled patches, for each model.
* pseudo-labels y^m = argmax p^m and the entropy split into reliable / unreliable voxels, per model, over
  the unlabeled patches.
* L_cps = CE(p^A, y^B) + CE(p^B, y^A) on the unlabeled voxels, ramped up over the first iterations.
* L_hqcl = hqcl(A) + hqcl(B). For model m [decided]: anchors and prototypes come from m's own features at
  labeled voxels (ground truth) and at m's reliable unlabeled voxels (m's pseudo-label), so the two models'
  terms together cover S_l U M_r^A U M_r^B of Algorithm 1; negatives are labeled voxels of other classes,
  projected by both models (G^A_l U G^B_l) and shared by both terms.
* L_dvcl = dvcl(A) + dvcl(B) on U_R = M_u^A U M_u^B: one pool of unreliable voxels and its queries are
  drawn once; each model chooses neighbours/outsiders with its own features and is trained on its own p.

Options beyond METHOD.md, both [decided] and off by default: ``warmup_fraction`` trains with L_sup alone for
that fraction of the run before the co-training terms start (short budgets: docs/results/
dvcl_vs_labeled_only_gpu.md), and ``hqcl_weight`` scales L_hqcl inside L_contra (0 ablates it).

Only sampled voxels are projected to 256-d (never the dense map). All hyper-parameters are fields of
:class:`dvcl.losses.params.DVCLParams`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from dvcl.errors import ConfigError
from dvcl.losses.cps import cps_loss, hard_labels
from dvcl.losses.dvcl import dvcl_loss, outsider_weight_at
from dvcl.losses.entropy import entropy_from_logits, reliable_split
from dvcl.losses.hqcl import ClassMemoryBank, hqcl_loss, sort_negatives
from dvcl.losses.params import DVCLParams
from dvcl.losses.sampling import (
    class_candidates,
    gather_voxels,
    project_in_blocks,
    projected_class_prototypes,
    randperm,
    sample_candidates,
    sample_from_mask,
    sample_per_class,
)
from dvcl.methods.base import Batch, Method
from dvcl.methods.registry import register_method
from dvcl.utils.rampup import rampup_weight

if TYPE_CHECKING:  # pragma: no cover
    from dvcl.training.config import TrainConfig

log = logging.getLogger(__name__)

MODELS = ("A", "B")


def contrastive_weight(p: DVCLParams, iteration: int, max_iterations: int) -> float:
    """lambda_c(t): 0 during the supervised warm-up and the delay, then a sigmoid ramp-up to ``lambda_c``.

    With ``lambda_c_delay_fraction = lambda_c_rampup_fraction = warmup_fraction = 0`` this is the constant
    lambda_c of the paper's literal reading.
    """
    start = round(p.warmup_fraction + p.lambda_c_delay_fraction, 12)  # 0.1 + 0.2 is 0.30000000000000004
    return rampup_weight(p.lambda_c, iteration, max_iterations, p.lambda_c_rampup_fraction, start)


def anchor_voxels(gt: Tensor, pseudo: Dict[str, Tensor], split: Dict[str, tuple], model: str,
                  source: str = "own") -> Tuple[Tensor, Tensor]:
    """Labels and validity of the voxels model ``model``'s L_hqcl anchors and prototypes are drawn from.

    The labeled patches with their ground truth ``gt`` (B_l, Z, Y, X), then - when an unlabeled half is present
    (``split`` non-empty) - the unlabeled patches with a pseudo-label, valid where that pseudo-label is reliable.
    ``source`` "own": ``model``'s own pseudo-labels and reliable mask; "other": those of the other model (as
    CPS takes its targets from the other model). Returns ``(labels, valid)`` stacked along the batch axis.
    """
    if source not in ("own", "other"):
        raise ConfigError(f"hqcl_pseudo_source must be 'own' or 'other', got {source!r}")
    ones = torch.ones_like(gt, dtype=torch.bool)
    if model not in split:
        return gt, ones
    src = model if source == "own" else next(m for m in MODELS if m != model)
    return torch.cat([gt, pseudo[src]]), torch.cat([ones, split[src][0]])


@register_method("dvcl")
class DVCLMethod(Method):
    """Co-training of A and B with CPS plus the two contrastive terms (HqCL on reliable, DVCL on unreliable)."""

    params_class = DVCLParams

    def __init__(self, cfg: TrainConfig, num_classes: int, device: torch.device) -> None:
        super().__init__(cfg, num_classes, device)
        self.bank: Optional[ClassMemoryBank] = None

    # ------------------------------------------------------------------------------------------ settings
    @property
    def loss_params(self) -> DVCLParams:
        """The DVCL parameters the loss runs with (CPS maps its own smaller parameter set onto these)."""
        return self.params

    # ------------------------------------------------------------------------------------------ models
    def build_models(self) -> Dict[str, nn.Module]:
        p = self.loss_params
        net_dim = int(getattr(self.cfg.network, "feature_dim", p.feature_dim))
        if p.lambda_c > 0 and net_dim != p.feature_dim:
            raise ConfigError(f"method parameter feature_dim={p.feature_dim} differs from network.feature_dim="
                              f"{net_dim}: set both to the same value")
        self.sup_loss = self.supervised_loss()
        if p.lambda_c > 0 and p.memory_bank:
            self.bank = ClassMemoryBank(self.num_classes, p.memory_bank_size, p.feature_dim, device=self.device)
        # two calls draw two different initialisations from the (seeded) global RNG [given: "initialised
        # differently"]
        return {name: self.new_network() for name in MODELS}

    def inference_models(self) -> List[str]:
        return list(MODELS)

    def state_modules(self) -> Dict[str, nn.Module]:
        return {} if self.bank is None else {"bank": self.bank}

    # ------------------------------------------------------------------------------------------ loss
    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch], iteration: int) -> Tuple[Tensor, Dict[str, float]]:
        p = self.loss_params
        # supervised-only warm-up: the co-training terms have weight 0, so unlabeled patches are not even forwarded
        warming_up = iteration < p.warmup_fraction * int(self.cfg.iterations)
        x, y_l, n_l, has_u = self.joint_batch(batch_l, None if warming_up else batch_u)

        out = {name: self.models[name](x) for name in MODELS}  # name -> (logits, feats)
        logits = {m: out[m][0] for m in MODELS}
        feats = {m: out[m][1] for m in MODELS}
        terms: Dict[str, Tensor] = {}
        # the labeled and the unlabeled half of each model's logits as one split: backward then concatenates the
        # two halves' gradients, where two slices would each zero-fill a full-size gradient and add them up; every
        # term that reads the unlabeled half (L_cps, the entropy split, the L_dvcl pool) reads this one view, so its
        # gradients add up in a half-size buffer
        halves = {m: logits[m].split([n_l, logits[m].shape[0] - n_l]) for m in MODELS}
        for m in MODELS:
            terms[f"sup_{m}"] = self.sup_loss(halves[m][0], y_l)
        sup = terms["sup_A"] + terms["sup_B"]

        zero = sup.new_zeros(())
        w_cps = self.rampup_weight(p.lambda_cps, p.cps_rampup_fraction, iteration, p.warmup_fraction)
        w_c = contrastive_weight(p, iteration, int(self.cfg.iterations))
        contrastive = w_c > 0 and not warming_up
        unl = {m: halves[m][1] for m in MODELS}
        with torch.no_grad():
            # argmax pseudo-labels of the unlabeled half, computed once for L_cps and L_hqcl
            pseudo = {m: hard_labels(unl[m]) for m in MODELS} if has_u else {}
        split = {}
        if has_u:
            cps = cps_loss(unl["A"], unl["B"], p.cps_entropy_weighting, pseudo["A"], pseudo["B"])
            if contrastive:  # the reliable / unreliable split only feeds the contrastive terms
                for m in MODELS:
                    ent = entropy_from_logits(unl[m])
                    # (reliable, unreliable, threshold)
                    split[m] = reliable_split(ent, p.alpha, per_item=p.split_scope == "image")
        else:
            cps = zero
        total = sup + w_cps * cps
        terms["sup"] = sup
        terms["cps"] = cps

        if p.lambda_c > 0 and not contrastive:  # warm-up or lambda_c delay: the same columns, all zero
            for key in ("hqcl", "dvcl", "contra") + tuple(f"{t}_{m}" for t in ("hqcl", "dvcl", "unreliable")
                                                           for m in MODELS):
                terms[key] = zero
        elif contrastive:
            hqcl = self._hqcl(p, feats, logits, pseudo, y_l, split, n_l)
            dvcl = self._dvcl(p, feats, unl, split, n_l, iteration) if has_u else {m: zero for m in MODELS}
            for m in MODELS:
                terms[f"hqcl_{m}"] = hqcl[m]
                terms[f"dvcl_{m}"] = dvcl[m]
            terms["hqcl"] = hqcl["A"] + hqcl["B"]
            terms["dvcl"] = dvcl["A"] + dvcl["B"]
            terms["contra"] = p.hqcl_weight * terms["hqcl"] + p.beta * terms["dvcl"]
            total = total + w_c * terms["contra"]
            for m in MODELS:
                terms[f"unreliable_{m}"] = split[m][1].float().mean() if has_u else zero
        terms["loss"] = total

        names = sorted(terms)
        values = torch.stack([terms[k].detach().float().reshape(()) for k in names]).tolist()  # one device sync
        log_terms = dict(zip(names, values))
        log_terms["cps_weight"] = w_cps
        if p.lambda_c > 0:
            log_terms["contra_weight"] = w_c if not warming_up else 0.0
        return total, log_terms

    # ------------------------------------------------------------------------------------------ HqCL
    def _hqcl(self, p: DVCLParams, feats: Dict[str, Tensor], logits: Dict[str, Tensor], pseudo: Dict[str, Tensor],
              y_l: Tensor, split: Dict[str, tuple], n_l: int) -> Dict[str, Tensor]:
        """L_hqcl of each model (see the module docstring for which voxels play which role)."""
        C = self.num_classes
        first_class = 0 if p.hqcl_include_background else 1
        gt = y_l[:, 0]
        with torch.no_grad():
            # negatives: labeled voxels of every class, the same voxels projected by both models
            neg_idx, neg_cls = sample_per_class(gt, torch.ones_like(gt, dtype=torch.bool), C, p.negative_pool_per_class)
            neg_feats = torch.cat([project_in_blocks(self.models[m].project, gather_voxels(feats[m], neg_idx))
                                   for m in MODELS])
            neg_cls = torch.cat([neg_cls, neg_cls])
            if self.bank is not None:
                self.bank.enqueue(neg_feats, neg_cls)
                neg_feats, neg_cls = self.bank.contents()
            negatives = sort_negatives(neg_feats, neg_cls, C)  # once for both models

        losses = {}
        for m in MODELS:
            with torch.no_grad():
                labels, valid = anchor_voxels(gt, pseudo, split, m, p.hqcl_pseudo_source)
                proto_cand = class_candidates(labels, valid, C, first_class)
                anchor_cand = proto_cand
                if p.anchor_threshold is not None:
                    probs = torch.softmax(logits[m].detach().float(), dim=1)
                    conf = probs.gather(1, labels.unsqueeze(1)).squeeze(1)
                    anchor_cand = class_candidates(labels, valid & (conf > p.anchor_threshold), C, first_class)
                anchor_idx, anchor_cls = sample_candidates(anchor_cand, p.num_anchors, first_class)
                proto_idx, proto_cls = sample_candidates(proto_cand, p.prototype_samples, first_class)
                protos, present = projected_class_prototypes(self.models[m].project,
                                                             gather_voxels(feats[m], proto_idx), proto_cls, C)
            anchors = self.models[m].project(gather_voxels(feats[m], anchor_idx))
            losses[m] = hqcl_loss(anchors, anchor_cls, protos, present, negatives, None, p.num_negatives,
                                  p.temperature)
        return losses

    # ------------------------------------------------------------------------------------------ DVCL
    def _dvcl(self, p: DVCLParams, feats: Dict[str, Tensor], unl_logits: Dict[str, Tensor], split: Dict[str, tuple],
              n_l: int, iteration: int) -> Dict[str, Tensor]:
        """L_dvcl of each model on one shared pool of unreliable voxels (U_R = M_u^A U M_u^B).

        ``unl_logits``: each model's logits of the unlabeled patches (the view L_cps also reads).
        """
        with torch.no_grad():
            unreliable = split["A"][1] | split["B"][1]
            pool_idx = sample_from_mask(unreliable, p.pool_size)  # flat over the unlabeled patches
            query_pos = randperm(pool_idx.numel(), pool_idx.device)[: p.num_queries]
        w_out = outsider_weight_at(p.outsider_weight, p.outsider_decay, iteration, int(self.cfg.iterations))
        losses = {}
        for m in MODELS:
            if pool_idx.numel() < 2:
                losses[m] = unl_logits[m].sum() * 0.0
                continue
            pool_feats = None
            if p.neighbour_space == "features":
                with torch.no_grad():
                    pool_feats = project_in_blocks(self.models[m].project, gather_voxels(feats[m][n_l:], pool_idx))
            pool_probs = torch.softmax(gather_voxels(unl_logits[m], pool_idx).float(), dim=1)
            losses[m], _ = dvcl_loss(pool_probs, pool_feats, query_pos, k=p.k, k_out=p.k_out,
                                     outsider_mode=p.outsider_mode, nps_mutual=p.nps_mutual, nps_oneway=p.nps_oneway,
                                     qds=p.qds, qds_std_factor=p.qds_std_factor, neighbour_space=p.neighbour_space,
                                     outsider_weight=w_out)
        return losses
