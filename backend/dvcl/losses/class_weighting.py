"""Class-weighted losses and the class weights of CLD and DHC (xmed-lab/DHC ``train_cld.py``, ``train_dhc.py``).

* :func:`frequency_weights` - CLD's ``(max_c n_c / n_c) ** (1/3)`` from label counts.
* :class:`DistDW` - DHC's distribution-aware weights ``log(max n / n_c)`` (normalised), EMA over the
  pseudo-label histograms.
* :class:`DiffDW` - DHC's difficulty-aware weights from the learning / unlearning pace of each class's Dice.
* :func:`weighted_ce` and :func:`weighted_dice` - the class-weighted CE and soft Dice these weights feed.

Bugs of the released DHC code, and what happens here (``fix_absent=True``, the default; ``False`` reproduces
the released behaviour):

1. DistDW adds 1e-8 to the counts, so a class absent from the (2-patch) pseudo-label histogram gets
   ``log(max / 1e-8)`` ~ 30: it takes the maximum weight and squashes every present class towards 0 in that
   update. Absent classes carry no information about imbalance, so they keep their previous weight here, and
   the normalisation runs over the present classes; an update with fewer than two present classes is skipped
   (``log(max / n)`` is then 0 for all, and the released code would divide 0 by 0).
2. DiffDW's per-class Dice of a class absent from both prediction and label is 0.5 (the two 1e-8
   smoothing terms), so such classes jump between 0.5 and their real Dice and fake learning / unlearning
   steps. Here their statistics are left unchanged for that iteration.
3. ``torch.where(cond, x, 0)`` with a Python scalar failed on old PyTorch (DHC issue #7); tensors are used.
4. The most frequent class (background) gets DistDW weight 0, so a weighted CE over voxels that are all
   background is 0 / 0 = NaN in PyTorch's ``CrossEntropyLoss(weight=...)``. :func:`weighted_ce` divides by
   ``max(sum of weights, eps)`` instead.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

_EPS = 1e-8


def class_counts(label: Tensor, num_classes: int) -> Tensor:
    """Voxel count of every class in an integer label tensor of any shape -> (C,) float64."""
    return torch.bincount(label.reshape(-1).long(), minlength=num_classes)[:num_classes].to(torch.float64)


def frequency_weights(counts: Tensor, power: float = 1.0 / 3.0) -> Tensor:
    """CLD's class weights ``(max_c n_c / n_c) ** power`` (counts of unseen classes are taken as 1)."""
    n = counts.to(torch.float64).clamp(min=1.0)
    return (n.max() / n) ** power


def _distdw_raw(counts: Tensor) -> Tensor:
    """DHC's ``log(max n / n_c)`` normalised to max 1 (released form, with the 1e-8 terms)."""
    p = torch.log((counts.max() + _EPS) / (counts + _EPS))
    return p / p.max()


class DistDW:
    """DHC's distribution-aware debiased weighting (model B), ``C * log(max n / n_c) / max(...)``.

    ``init(counts)`` sets the weights from labeled class counts; ``update(counts)`` mixes in the weights of a
    pseudo-label histogram with EMA ``momentum`` (0.99 in ``train_dhc.py``). See the module docstring for
    ``fix_absent``.
    """

    def __init__(self, num_classes: int, momentum: float = 0.99, fix_absent: bool = True) -> None:
        self.num_classes = int(num_classes)
        self.momentum = float(momentum)
        self.fix_absent = fix_absent
        self.weights: Optional[Tensor] = None

    def current(self, counts: Tensor) -> Optional[Tensor]:
        """The weights of one histogram (before the EMA); ``None`` when it carries no information."""
        counts = counts.to(torch.float64)
        if not self.fix_absent:
            w = _distdw_raw(counts) * self.num_classes
            return w if bool(torch.isfinite(w).all()) else None
        present = counts > 0
        if int(present.sum()) < 2:
            return None
        p = torch.zeros_like(counts)
        p[present] = torch.log(counts[present].max() / counts[present])
        w = p / p.max() * self.num_classes
        if self.weights is not None:
            w[~present] = self.weights.to(w)[~present]
        else:
            w[~present] = float(self.num_classes)  # never seen: treated as the rarest class
        return w

    def init(self, counts: Tensor) -> Tensor:
        w = self.current(counts)
        self.weights = w if w is not None else torch.ones(self.num_classes, dtype=torch.float64)
        return self.weights

    def update(self, counts: Tensor) -> Tensor:
        if self.weights is None:
            return self.init(counts)
        w = self.current(counts)
        if w is not None:
            self.weights = self.momentum * self.weights + (1.0 - self.momentum) * w.to(self.weights)
        return self.weights


def hard_dice_per_class(pred: Tensor, label: Tensor, num_classes: int, smooth: float = 1e-8) -> Tuple[Tensor, Tensor]:
    """DHC's per-class Dice of hard label maps over the whole batch, background included.

    ``(2 tp + s) / (2 tp + fp + fn + s + 1e-8)`` (``SoftDiceLoss(smooth=1e-8, do_bg=True)`` on one-hot maps).
    Returns ``(dice (C,), seen (C,) bool)`` where ``seen`` marks classes in the prediction or the label.
    """
    pred = pred.reshape(-1).long()
    label = label.reshape(-1).long().to(pred.device)
    # counts on the data's device; only the (C,) vectors move to the CPU
    n_pred = torch.bincount(pred, minlength=num_classes)[:num_classes].to(torch.float64).cpu()
    n_lab = torch.bincount(label, minlength=num_classes)[:num_classes].to(torch.float64).cpu()
    tp = torch.bincount(label[pred == label], minlength=num_classes)[:num_classes].to(torch.float64).cpu()
    fp = n_pred - tp
    fn = n_lab - tp
    dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth + 1e-8)
    return dice, (n_pred + n_lab) > 0


class DiffDW:
    """DHC's difficulty-aware debiased weighting (model A), from the pace of each class's Dice.

    Per iteration, with the hard per-class Dice ``d`` of A on the labeled patches and the previous ``d'``:
    ``learn = max(d - d', 0) * log(d / d')``, ``unlearn = min(d - d', 0) * log(d / d')``, both EMA'd with
    momentum ``(K - 1) / K`` (K = ``accumulate_iters``, 50 in ``train_dhc.py``); the difficulty is
    ``((unlearn + 1e-8) / (learn + 1e-8)) ** (1/5)`` times the EMA of ``1 - d``, normalised to max C.
    """

    def __init__(self, num_classes: int, accumulate_iters: int = 50, fix_absent: bool = True) -> None:
        c = int(num_classes)
        self.num_classes = c
        self.momentum = (accumulate_iters - 1.0) / accumulate_iters
        self.fix_absent = fix_absent
        self.last_dice = torch.full((c,), 1e-8, dtype=torch.float64)
        self.cls_learn = torch.zeros(c, dtype=torch.float64)
        self.cls_unlearn = torch.zeros(c, dtype=torch.float64)
        self.dice_weight = torch.ones(c, dtype=torch.float64)
        self.weights = torch.full((c,), float(c), dtype=torch.float64)

    def update(self, pred: Tensor, label: Tensor) -> Tensor:
        """Update from hard predictions and labels of the labeled patches; returns the new weights (C,)."""
        dice, seen = hard_dice_per_class(pred, label, self.num_classes)
        upd = seen if self.fix_absent else torch.ones_like(seen)
        m = self.momentum
        delta = dice - self.last_dice
        ratio = torch.log(dice / self.last_dice)
        zero = torch.zeros_like(delta)
        learn = torch.where(delta > 0, delta, zero) * ratio
        unlearn = torch.where(delta <= 0, delta, zero) * ratio
        self.cls_learn = torch.where(upd, m * self.cls_learn + (1 - m) * learn, self.cls_learn)
        self.cls_unlearn = torch.where(upd, m * self.cls_unlearn + (1 - m) * unlearn, self.cls_unlearn)
        self.dice_weight = torch.where(upd, m * self.dice_weight + (1 - m) * (1.0 - dice), self.dice_weight)
        self.last_dice = torch.where(upd, dice, self.last_dice)
        diff = ((self.cls_unlearn + 1e-8) / (self.cls_learn + 1e-8)) ** 0.2
        w = diff * self.dice_weight
        self.weights = w / w.max() * self.num_classes
        return self.weights

    def state(self) -> Tensor:
        return torch.stack([self.last_dice, self.cls_learn, self.cls_unlearn, self.dice_weight, self.weights])

    def load_state(self, state: Tensor) -> None:
        s = state.to(torch.float64).cpu()
        self.last_dice, self.cls_learn, self.cls_unlearn, self.dice_weight, self.weights = (t.clone() for t in s)


def weighted_ce(logits: Tensor, target: Tensor, class_weight: Optional[Tensor] = None,
                voxel_weight: Optional[Tensor] = None, normalize: str = "weights") -> Tensor:
    """Class- (and voxel-) weighted cross-entropy of logits (B, C, ...) against integer targets (B, [1,] ...).

    ``normalize="weights"``: ``sum w[y] ce / max(sum w[y], eps)`` (PyTorch's weighted CE, used by DHC's
    ``RobustCrossEntropyLoss``, without its 0/0). ``normalize="voxels"``: ``mean(w[y] * m * ce)`` over all
    voxels (DHC's ``WeightedCrossEntropyLoss`` with CLD's sampling mask ``m``).
    """
    if target.dim() == logits.dim():
        target = target[:, 0]
    target = target.long()
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    w = torch.ones_like(ce) if class_weight is None else class_weight.to(ce)[target]
    if voxel_weight is not None:
        w = w * voxel_weight.reshape(ce.shape).to(ce)
    if normalize == "weights":
        return (w * ce).sum() / w.sum().clamp(min=_EPS)
    if normalize == "voxels":
        return (w * ce).mean()
    raise ValueError(f"normalize must be 'weights' or 'voxels', got {normalize!r}")


def weighted_dice(logits: Tensor, target: Tensor, class_weight: Optional[Tensor] = None, smooth: float = 1.0) -> Tensor:
    """DHC's weighted soft Dice: batch Dice per foreground class, ``mean_c w_c * (1 - dice_c)``.

    DHC's ``SoftDiceLoss(batch_dice=True, do_bg=False, smooth=1)`` returns ``-mean_c w_c dice_c``; this is the
    same up to the constant ``mean_c w_c``, i.e. the same gradient, but non-negative.
    """
    num_classes = logits.shape[1]
    if target.dim() == logits.dim():
        target = target[:, 0]
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target.long(), num_classes).movedim(-1, 1).to(probs)
    axes = [0] + list(range(2, probs.dim()))
    tp = (probs * onehot).sum(axes)
    fp = (probs * (1 - onehot)).sum(axes)
    fn = ((1 - probs) * onehot).sum(axes)
    dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth + _EPS)
    w = torch.ones_like(dice) if class_weight is None else class_weight.to(dice)
    return (w[1:] * (1.0 - dice[1:])).mean()


def weighted_dice_ce(logits: Tensor, target: Tensor, class_weight: Optional[Tensor] = None) -> Tensor:
    """DHC's ``DC_and_CE_loss(w_dc=w, w_ce=w)``: weighted CE + weighted Dice (weights 1 and 1)."""
    return weighted_ce(logits, target, class_weight) + weighted_dice(logits, target, class_weight)
