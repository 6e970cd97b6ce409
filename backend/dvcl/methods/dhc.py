"""DHC: dual-debiased heterogeneous co-training (a baseline of the paper's tables).

Wang, Li. "DHC: Dual-debiased Heterogeneous Co-training Framework for Class-imbalanced Semi-supervised
Medical Image Segmentation." MICCAI 2023. Authors' code: xmed-lab/DHC ``code/train_dhc.py``.

CPS co-training of two networks whose losses are re-weighted per class by two *different* debiasing
schemes, which makes the co-trained pair heterogeneous:

* model A - DiffDW (difficulty-aware): classes whose Dice on the labeled patches stagnates or drops
  ("unlearning") relative to its gains, and whose Dice is low, get larger weights;
* model B - DistDW (distribution-aware): ``log(max n / n_c)`` of B's pseudo-label histogram on the unlabeled
  patches (EMA 0.99), i.e. rare predicted classes get larger weights.

    L = wCE_A(A_l, y) + wDice_A(A_l, y) + wCE_B(B_l, y) + wDice_B(B_l, y)
        + lambda(t) * [ wCE_A(A, argmax B) + wCE_B(B, argmax A) ]

(the weighted CE is PyTorch's, normalised by the sum of the targets' weights). Settings of the repository are
the defaults: DiffDW ``accumulate_iters`` 50, DistDW momentum 0.99, both models Kaiming-initialised, CPS on the
whole batch (labeled + unlabeled), sigmoid ramp-up of lambda over the whole run, lambda = 0.1 (the README's
``-w 0.1``), both models averaged at inference.

Bugs of the released code and their fixes are listed in :mod:`dvcl.losses.class_weighting` (absent classes in
DistDW / DiffDW, the 0/0 of a weighted CE whose targets all have weight 0, the scalar ``torch.where``);
``fix_absent=False`` reproduces the released weighting.

Choices made for this code base [decided]:
* DistDW starts from the class counts of the first labeled batch (DHC: the whole labeled set, which the
  Method interface does not see; the EMA over pseudo-labels takes over within ~100 iterations at 0.99); a
  caller that knows the labeled set's counts can call :meth:`DHCMethod.set_class_counts` before training;
* the Dice term is ``mean_c w_c (1 - dice_c)`` (DHC's ``-mean_c w_c dice_c`` plus a constant);
* the inference ensemble averages softmax outputs (DHC averages logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from dvcl.errors import ConfigError
from dvcl.losses.class_weighting import DiffDW, DistDW, class_counts, weighted_ce, weighted_dice_ce
from dvcl.methods.base import Batch, Method
from dvcl.methods.cld import cps_targets
from dvcl.methods.params import CrossSupervisionParams, param
from dvcl.methods.registry import register_method

MODELS = ("A", "B")


@dataclass
class DHCParams(CrossSupervisionParams):
    """DHC hyper-parameters (``train_dhc.py`` and README command)."""

    distdw_momentum: float = param(0.99, ge=0, lt=1)
    """EMA momentum of DistDW's weights."""
    diffdw_accumulate_iters: int = param(50, ge=1)
    """K of DiffDW's EMAs (momentum (K - 1) / K)."""
    fix_absent: bool = True
    """Fix the released code's handling of classes absent from a batch (see dvcl.losses.class_weighting)."""


@register_method("dhc")
class DHCMethod(Method):
    """CPS co-training with DiffDW-weighted model A and DistDW-weighted model B."""

    params_class = DHCParams
    needs_class_counts = True

    def build_models(self) -> Dict[str, nn.Module]:
        p = self.params
        self.diffdw = DiffDW(self.num_classes, p.diffdw_accumulate_iters, p.fix_absent)
        self.distdw = DistDW(self.num_classes, p.distdw_momentum, p.fix_absent)
        return {"A": self.new_network(), "B": self.new_network()}

    def inference_models(self) -> List[str]:
        return list(MODELS)

    def set_class_counts(self, counts: Tensor) -> None:
        """Start DistDW from the labeled set's class counts (DHC's ``init_weights``) instead of the first batch."""
        self.distdw.init(self.checked_class_counts(counts))

    def cps_weight(self, iteration: int) -> float:
        return self.rampup_weight(self.params.cps_weight, self.params.cps_rampup_fraction, iteration)

    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch], iteration: int) -> Tuple[Tensor, Dict[str, float]]:
        p = self.params
        x, y_l, n_l, has_u = self.joint_batch(batch_l, batch_u)
        if self.distdw.weights is None:
            self.distdw.init(class_counts(y_l, self.num_classes).cpu())
        logits = {m: self.models[m](x)[0] for m in MODELS}
        with torch.no_grad():
            w_a = self.diffdw.update(logits["A"][:n_l].argmax(dim=1), y_l)
            if has_u:
                w_b = self.distdw.update(class_counts(logits["B"][n_l:].argmax(dim=1), self.num_classes).cpu())
            else:
                w_b = self.distdw.weights
        weights = {"A": w_a.float().to(self.device), "B": w_b.float().to(self.device)}
        sup = {m: weighted_dice_ce(logits[m][:n_l], y_l, weights[m]) for m in MODELS}
        if has_u or p.cps_on_labeled:
            part, pseudo = cps_targets(logits, n_l, p.cps_on_labeled)
            cps = weighted_ce(part["A"], pseudo["A"], weights["A"]) + weighted_ce(part["B"], pseudo["B"], weights["B"])
        else:
            cps = sup["A"] * 0.0
        lam = self.cps_weight(iteration)
        total = sup["A"] + sup["B"] + lam * cps
        return total, {"sup_A": float(sup["A"].detach()), "sup_B": float(sup["B"].detach()),
                       "cps": float(cps.detach()), "cps_weight": lam,
                       "weight_fg_A": float(weights["A"][1:].mean()), "weight_fg_B": float(weights["B"][1:].mean())}

    # ------------------------------------------------------------------------------------------ state
    def extra_state(self) -> Dict[str, Tensor]:
        state = {"diffdw": self.diffdw.state()}
        if self.distdw.weights is not None:
            state["distdw"] = self.distdw.weights.clone()
        return state

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        if not state:
            return
        unknown = sorted(set(state) - {"diffdw", "distdw"})
        if unknown:
            raise ConfigError(f"method '{self.name}' got extra state {unknown} it does not know")
        self.diffdw.load_state(state["diffdw"])
        if "distdw" in state:
            self.distdw.weights = state["distdw"].to(torch.float64).cpu().clone()
