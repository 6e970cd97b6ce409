"""CLD: calibrating label distribution on top of cross pseudo supervision (a baseline of the paper's tables).

Lin, Wang, Cheng, Zhang, Li. "Calibrating Label Distribution for Class-Imbalanced Barely-Supervised Knee
Segmentation." MICCAI 2022. 3D multi-organ reference code: xmed-lab/DHC ``code/train_cld.py``.

Two networks A and B in CPS co-training, with two calibrations of the class imbalance:

* class weights ``w_c = (max_k n_k / n_c) ** (1/3)`` from the labeled class frequencies, used in the weighted
  CE + weighted Dice of the supervised loss and in the weighted CE of the cross supervision
  (:mod:`dvcl.losses.class_weighting`);
* probability-aware sampling: a confidence bank per model (mean true-class probability on labeled voxels,
  EMA 0.999, refreshed every 8 iterations) gives per-class rates ``((1 - conf) / max) ** 0.5``; a voxel that
  model m predicts as class c enters m's CPS term with probability ``rate_c``
  (:mod:`dvcl.losses.confidence_sampling`).

    L = sum_m [ wCE(m_l, y) + wDice(m_l, y) ] + lambda(t) * [ wCE_mask(A, argmax B) + wCE_mask(B, argmax A) ]

Settings of the DHC repository are the defaults: weights power 1/3, confidence momentum 0.999 and refresh 8,
gamma 0.5, CPS on all patches of the batch (labeled and unlabeled, ``cps_on_labeled``), sigmoid ramp-up of
lambda over the whole run, lambda = 0.1 (the README's ``-w 0.1``), model A Kaiming- and model B
Xavier-initialised, both models averaged at inference.

Choices made for this code base [decided]:
* class frequencies: DHC counts the labels of the whole labeled set once; the Method interface has no data
  set, so the counts accumulate over the labeled patches seen so far (at iteration t: every labeled patch of
  iterations 0..t, i.e. the crop-level frequencies). A caller that knows the labeled set's counts can call
  :meth:`CLDMethod.set_class_counts` to freeze them.
* the Dice term is ``mean_c w_c (1 - dice_c)``, DHC's ``-mean_c w_c dice_c`` plus a constant (same gradient);
* a class not seen in a confidence refresh keeps its confidence (see :mod:`dvcl.losses.confidence_sampling`);
* the ensemble at inference averages softmax outputs (DHC averages logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from dvcl.errors import ConfigError
from dvcl.losses.class_weighting import class_counts, frequency_weights, weighted_ce, weighted_dice_ce
from dvcl.losses.confidence_sampling import ConfidenceBank, sampling_mask, sampling_rate
from dvcl.methods.base import Batch, Method
from dvcl.methods.params import CrossSupervisionParams, param
from dvcl.methods.registry import register_method

MODELS = ("A", "B")


@dataclass
class CLDParams(CrossSupervisionParams):
    """CLD hyper-parameters (DHC repository ``train_cld.py`` and README command)."""

    weight_power: float = param(1.0 / 3.0, ge=0)
    """Exponent of the frequency weights (max n / n_c) ** power."""
    conf_momentum: float = param(0.999, ge=0, lt=1)
    """EMA momentum of the confidence bank."""
    conf_update_every: int = param(8, ge=1)
    """Refresh the confidence bank every this many iterations (``--confs_iter``)."""
    sampling_gamma: float = param(0.5, ge=0)
    """Exponent of the sampling rate ((1 - conf) / max) ** gamma."""
    init_b: str = param("xavier", choices=("xavier", "kaiming"))
    """Initialisation of model B: ``xavier`` (DHC's CLD/CPS) or ``kaiming`` (like A)."""


def xavier_reinit(net: nn.Module) -> nn.Module:
    """DHC's ``xavier_normal_init_weight``: Xavier-normal weights for every Conv3d (other layers untouched)."""
    for m in net.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.xavier_normal_(m.weight)
    return net


def cps_targets(logits: Dict[str, Tensor], n_l: int, on_labeled: bool) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """The logits the cross supervision trains and the argmax pseudo-labels of the *other* model."""
    part = {m: (v if on_labeled else v[n_l:]) for m, v in logits.items()}
    with torch.no_grad():
        pseudo = {"A": part["B"].detach().argmax(dim=1), "B": part["A"].detach().argmax(dim=1)}
    return part, pseudo


@register_method("cld")
class CLDMethod(Method):
    """CPS co-training of A and B with CLD's frequency weights and confidence-based voxel sampling."""

    params_class = CLDParams
    needs_class_counts = True

    def __init__(self, cfg, num_classes: int, device: torch.device) -> None:
        super().__init__(cfg, num_classes, device)
        self.counts = torch.zeros(num_classes, dtype=torch.float64)
        self.counts_frozen = False

    def build_models(self) -> Dict[str, nn.Module]:
        p = self.params
        a = self.new_network()
        b = self.new_network()
        if p.init_b == "xavier":
            xavier_reinit(b)
        self.banks = {"A": ConfidenceBank(self.num_classes, p.conf_momentum, p.conf_update_every, device=self.device)}
        self.banks["B"] = ConfidenceBank(self.num_classes, p.conf_momentum, p.conf_update_every,
                                         confs=self.banks["A"].confs, device=self.device)
        return {"A": a, "B": b}

    def inference_models(self) -> List[str]:
        return list(MODELS)

    def set_class_counts(self, counts: Tensor) -> None:
        """Use fixed labeled-set class counts (DHC's ``weight()``) instead of the running patch counts."""
        self.counts = self.checked_class_counts(counts)
        self.counts_frozen = True

    def class_weights(self) -> Tensor:
        return frequency_weights(self.counts, self.params.weight_power).float().to(self.device)

    def cps_weight(self, iteration: int) -> float:
        return self.rampup_weight(self.params.cps_weight, self.params.cps_rampup_fraction, iteration)

    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch], iteration: int) -> Tuple[Tensor, Dict[str, float]]:
        p = self.params
        x, y_l, n_l, has_u = self.joint_batch(batch_l, batch_u)
        if not self.counts_frozen:
            self.counts += class_counts(y_l, self.num_classes).cpu()
        w = self.class_weights()
        logits = {m: self.models[m](x)[0] for m in MODELS}
        sup = {}
        for m in MODELS:
            self.banks[m].record(torch.softmax(logits[m][:n_l].detach().float(), dim=1), y_l)
            sup[m] = weighted_dice_ce(logits[m][:n_l], y_l, w)
        if has_u or p.cps_on_labeled:
            part, pseudo = cps_targets(logits, n_l, p.cps_on_labeled)
            cps = 0.0
            for m in MODELS:
                rates = sampling_rate(self.banks[m].confs, p.sampling_gamma)
                mask = sampling_mask(part[m].detach().argmax(dim=1), rates)
                cps = cps + weighted_ce(part[m], pseudo[m], w, voxel_weight=mask, normalize="voxels")
        else:
            cps = sup["A"] * 0.0
        lam = self.cps_weight(iteration)
        total = sup["A"] + sup["B"] + lam * cps
        return total, {"sup_A": float(sup["A"].detach()), "sup_B": float(sup["B"].detach()),
                       "cps": float(cps.detach()), "cps_weight": lam}

    # ------------------------------------------------------------------------------------------ state
    def extra_state(self) -> Dict[str, Tensor]:
        return {"class_counts": self.counts.clone(), "counts_frozen": torch.tensor([float(self.counts_frozen)]),
                "conf_A": self.banks["A"].state(), "conf_B": self.banks["B"].state()}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        if not state:
            return
        known = {"class_counts", "counts_frozen", "conf_A", "conf_B"}
        unknown = sorted(set(state) - known)
        if unknown:
            raise ConfigError(f"method '{self.name}' got extra state {unknown} it does not know")
        self.counts = state["class_counts"].to(torch.float64).cpu().clone()
        self.counts_frozen = bool(state["counts_frozen"].reshape(-1)[0] > 0)
        self.banks["A"].load_state(state["conf_A"])
        self.banks["B"].load_state(state["conf_B"])
