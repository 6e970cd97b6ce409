"""U2PL's losses (Wang et al., "Semi-Supervised Semantic Segmentation Using Unreliable Pseudo-Labels",
CVPR 2022), in 3D.

U2PL splits the teacher's predictions on unlabeled voxels by **entropy percentile** (not by a fixed
threshold): the least certain ``percent_unreliable`` % are dropped from the pseudo-label cross-entropy, and
instead of being wasted they serve as **negatives** in a per-class contrastive loss: a voxel the teacher
hesitates about still tells which classes it is *not* (those in its probability ranks ``[r_l, r_h)``).

Pieces, each testable on its own:

* :func:`percentile` - numpy's linear-interpolation percentile in torch (numpy would force a GPU sync and
  copy of millions of voxels; ``torch.quantile`` refuses more than 2^24 elements).
* :func:`unreliable_percent`, :func:`contrast_alpha` - the linear schedules of the released code:
  ``(100 - drop_percent) * (1 - t)`` and ``low_entropy_threshold * (1 - t)``, t = training progress.
* :func:`entropy_percentile_split` - reliable (``H <= P_alpha``) and unreliable (``H >= P_{100-alpha}``) voxels.
* :func:`keep_low_entropy`, :func:`unsupervised_ce` - the pseudo-label CE without the top-entropy voxels,
  with the released re-weighting ``total / kept``.
* :func:`negative_masks` - the **intended** negative rule of the paper (Eq. 12-13): for class c, labeled
  voxels whose ground truth is not c but c is among the teacher's top ``r_l`` classes (hard negatives), and
  unreliable unlabeled voxels where c is at rank ``r_l <= rank < r_h``. The released code intersects this
  with "label == c" (``high_valid_pixel``), which makes the labeled negative set always empty (U2PL issues
  #27, #171); that bug is *not* reproduced here.
* :class:`ClassMemoryBank` - per-class FIFO queues of teacher features of negatives (U2PL: 30000 per class,
  50000 for background).
* :func:`info_nce` - ``CE(cos(anchor, [prototype, negatives]) / tau, 0)`` per class.
* :class:`U2PLContrast` - ties them together on a 3D batch. It samples voxels before projecting, so the
  256-d head only runs on a few thousand voxels (docs/architecture.md, "Network"). The released code also
  indexes prototypes and anchors by the position among *present* classes instead of the class id when a
  class is absent; here every quantity is indexed by class id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dvcl.losses.sampling import gather_voxels, randint, sample_from_mask

log = logging.getLogger(__name__)

Projector = Callable[[Tensor], Tensor]


# ------------------------------------------------------------------------------------------- percentiles
def percentile(values: Tensor, q: float) -> Tensor:
    """The ``q``-th percentile (0..100) of ``values`` with numpy's default linear interpolation; 0-d tensor.

    Raises ValueError for an empty tensor (the callers check for that first).
    """
    v = values.detach().reshape(-1).float()
    n = v.numel()
    if n == 0:
        raise ValueError("percentile of an empty tensor")
    q = min(max(float(q), 0.0), 100.0)
    pos = q / 100.0 * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    # kthvalue is 1-based and avoids a full sort
    v_lo = torch.kthvalue(v, lo + 1).values
    if frac == 0.0 or hi == lo:
        return v_lo
    v_hi = torch.kthvalue(v, hi + 1).values
    return v_lo + (v_hi - v_lo) * frac


def unreliable_percent(progress: float, drop_percent: float = 80.0) -> float:
    """Percentage of unlabeled voxels dropped from the pseudo-label CE: ``(100 - drop_percent) * (1 - t)``.

    U2PL's ``drop_percent`` = 80 drops the 20 % most uncertain voxels at the start, and none at the end.
    """
    t = min(max(float(progress), 0.0), 1.0)
    return (100.0 - float(drop_percent)) * (1.0 - t)


def contrast_alpha(progress: float, low_entropy_threshold: float = 20.0) -> float:
    """alpha_t of U2PL (%): ``low_entropy_threshold * (1 - t)``, the reliable/unreliable percentile."""
    t = min(max(float(progress), 0.0), 1.0)
    return float(low_entropy_threshold) * (1.0 - t)


def entropy_percentile_split(entropy: Tensor, alpha: float) -> Tuple[Tensor, Tensor]:
    """``(reliable, unreliable)``: ``H <= P_alpha(H)`` and ``H >= P_(100-alpha)(H)`` over all voxels given.

    With U2PL's alpha_0 = 20 the 20 % most certain voxels are reliable (anchors, prototypes) and the 20 %
    least certain are unreliable (negative candidates); both shrink linearly to 0 % with ``alpha``.
    """
    if entropy.numel() == 0:
        empty = torch.zeros_like(entropy, dtype=torch.bool)
        return empty, empty.clone()
    ent = entropy.detach()
    low = ent <= percentile(ent, alpha)
    high = ent >= percentile(ent, 100.0 - alpha)
    return low, high


def keep_low_entropy(entropy: Tensor, drop_percent: float) -> Tensor:
    """Mask of voxels kept in the pseudo-label CE: all but the ``drop_percent`` % of highest entropy.

    As U2PL: voxels with ``H >= P_(100 - drop_percent)(H)`` are dropped. One guard: when that percentile is
    the minimum entropy (a large tie, e.g. saturated background late in training), the tied voxels are kept
    rather than dropping the whole batch.
    """
    if drop_percent <= 0 or entropy.numel() == 0:
        return torch.ones_like(entropy, dtype=torch.bool)
    ent = entropy.detach()
    thresh = percentile(ent, 100.0 - drop_percent)
    if bool(thresh <= ent.min()):
        return ent <= thresh
    return ent < thresh


def unsupervised_ce(logits: Tensor, pseudo: Tensor, keep: Tensor) -> Tensor:
    """Pseudo-label CE over the kept voxels, times ``total / kept`` as in U2PL's ``compute_unsupervised_loss``.

    ``logits`` (B, C, *spatial), ``pseudo`` and ``keep`` (B, *spatial). The re-weighting keeps the loss scale
    roughly constant while the dropped share shrinks. No kept voxel gives a graph-connected zero.
    """
    kept = keep.sum()
    if logits.numel() == 0 or int(kept) == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits.float(), pseudo.long(), reduction="none")
    keep_f = keep.to(ce.dtype)
    mean_kept = (ce * keep_f).sum() / kept
    return mean_kept * (keep.numel() / kept.to(ce.dtype))


# ------------------------------------------------------------------------------------------- negatives
def class_ranks(prob: Tensor) -> Tensor:
    """Rank of every class in each probability vector (0 = most probable): ``(N, C) -> (N, C)`` long."""
    order = prob.argsort(dim=1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(prob.shape[1], device=prob.device).expand_as(order))
    return ranks


def negative_masks(prob_l: Tensor, label_l: Tensor, prob_u: Tensor, low_rank: int = 3,
                   high_rank: int = 20) -> Tuple[Tensor, Tensor]:
    """U2PL's intended negative candidates for every class, per voxel (paper Eq. 12-13).

    Args:
        prob_l: teacher probabilities ``(N_l, C)`` at labeled voxels, ``label_l`` their ground truth ``(N_l,)``.
        prob_u: teacher probabilities ``(N_u, C)`` at *unreliable* unlabeled voxels.
    Returns:
        ``(neg_l (N_l, C), neg_u (N_u, C))`` bool: ``neg_l[i, c]`` = label != c and rank(c) < low_rank;
        ``neg_u[i, c]`` = low_rank <= rank(c) < high_rank.
    """
    num_classes = prob_l.shape[1] if prob_l.numel() else prob_u.shape[1]
    rank_l = class_ranks(prob_l) if prob_l.numel() else prob_l.new_zeros((0, num_classes), dtype=torch.long)
    rank_u = class_ranks(prob_u) if prob_u.numel() else prob_u.new_zeros((0, num_classes), dtype=torch.long)
    classes = torch.arange(num_classes, device=label_l.device)
    neg_l = (label_l.reshape(-1, 1) != classes) & (rank_l < low_rank)
    neg_u = (rank_u >= low_rank) & (rank_u < high_rank)
    return neg_l, neg_u


# ------------------------------------------------------------------------------------------- memory bank
class ClassMemoryBank:
    """One FIFO queue of (detached) feature vectors per class, on ``device``.

    ``push`` keeps the newest ``size[c]`` rows, like U2PL's ``dequeue_and_enqueue``. Each queue is a ring
    buffer allocated on its first push, so a push writes only the new rows (re-concatenating a 30000 x 256
    queue per class per step would copy ~0.4 GB per iteration). The bank can be saved and restored
    (``state_dict``/``load_state_dict``) so a resumed run keeps its negatives.
    """

    def __init__(self, num_classes: int, feature_dim: int, sizes: List[int], device: torch.device) -> None:
        if len(sizes) != num_classes:
            raise ValueError(f"need one queue size per class ({num_classes}), got {len(sizes)}")
        self.sizes = [int(s) for s in sizes]
        self.feature_dim = int(feature_dim)
        self.device = torch.device(device)
        self._buffers: List[Optional[Tensor]] = [None] * num_classes
        self._ptr = [0] * num_classes
        self._count = [0] * num_classes

    def push(self, c: int, keys: Tensor) -> None:
        n = int(keys.shape[0])
        if n == 0:
            return
        size = self.sizes[c]
        keys = keys.detach().to(self.device, torch.float32)
        if self._buffers[c] is None:
            self._buffers[c] = torch.empty(size, self.feature_dim, device=self.device)
        buf = self._buffers[c]
        if n >= size:
            buf.copy_(keys[-size:])
            self._ptr[c], self._count[c] = 0, size
            return
        idx = (self._ptr[c] + torch.arange(n, device=self.device)) % size
        buf[idx] = keys
        self._ptr[c] = (self._ptr[c] + n) % size
        self._count[c] = min(size, self._count[c] + n)

    def __len__(self) -> int:
        return len(self.sizes)

    def count(self, c: int) -> int:
        return self._count[c]

    def rows(self, c: int) -> Tensor:
        """The rows of queue ``c``, oldest first (a copy when the ring has wrapped)."""
        buf, k = self._buffers[c], self._count[c]
        if buf is None or k == 0:
            return torch.zeros(0, self.feature_dim, device=self.device)
        if k < self.sizes[c]:
            return buf[:k]
        p = self._ptr[c]
        return torch.cat([buf[p:], buf[:p]]) if p else buf

    def sample(self, c: int, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``n`` rows of queue ``c`` drawn uniformly with replacement (U2PL draws with ``torch.randint``)."""
        k = self._count[c]
        if k == 0:
            raise ValueError(f"memory bank of class {c} is empty")
        return self._buffers[c][randint(k, (n,), self.device, generator)]

    def state_dict(self) -> Dict[str, Tensor]:
        return {f"queue_{c}": self.rows(c).detach().cpu().clone() for c in range(len(self.sizes))}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        for c in range(len(self.sizes)):
            key = f"queue_{c}"
            if key not in state:
                continue
            q = state[key]
            if q.dim() != 2 or q.shape[1] != self.feature_dim:
                raise ValueError(f"memory bank entry {key} has shape {tuple(q.shape)}, "
                                 f"expected (N, {self.feature_dim})")
            self._buffers[c], self._ptr[c], self._count[c] = None, 0, 0
            self.push(c, q)


# ------------------------------------------------------------------------------------------- InfoNCE
def info_nce(anchors: Tensor, positive: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """``mean_q CE([cos(a_q, z+), cos(a_q, z-_q1..N)] / tau, target 0)``.

    Args:
        anchors: ``(Q, D)``; positive: ``(D,)`` (one prototype for all anchors); negatives: ``(Q, N, D)``.
    Cosine similarity normalises all vectors, so un-normalised prototypes (means of unit vectors) are fine.
    """
    q = anchors.shape[0]
    keys = torch.cat([positive.reshape(1, 1, -1).expand(q, 1, -1), negatives], dim=1)
    logits = F.cosine_similarity(anchors.float().unsqueeze(1), keys.float(), dim=2)
    target = torch.zeros(q, dtype=torch.long, device=anchors.device)
    return F.cross_entropy(logits / float(temperature), target)


# ------------------------------------------------------------------------------------------- the loss
@dataclass
class ContrastInputs:
    """What :class:`U2PLContrast` needs from one iteration (all on the training device).

    ``labels`` holds ground truth for the first ``num_labeled`` samples and teacher pseudo-labels for the
    rest; ``reliable`` / ``unreliable`` are (B, *spatial) bool (labeled voxels are all reliable and all
    negative candidates, as in U2PL); ``prob`` is the teacher's softmax (B, C, *spatial).
    """

    student_feats: Tensor
    teacher_feats: Tensor
    prob: Tensor
    labels: Tensor
    reliable: Tensor
    unreliable: Tensor
    num_labeled: int


class U2PLContrast:
    """U2PL's memory-bank contrastive loss on 3D voxels (intended negative rule).

    For each class c with reliable voxels in the batch ("valid" class):
      * anchors: ``num_queries`` student embeddings drawn with replacement among reliable voxels labeled c
        whose teacher probability p_c exceeds ``anchor_threshold`` (delta_p = 0.3);
      * positive: the prototype, the mean teacher embedding over (at most ``prototype_samples``) reliable
        voxels of class c;
      * negatives: ``num_negatives`` per anchor from class c's memory bank, into which this iteration's
        negatives (teacher embeddings, :func:`negative_masks`) were pushed first.
    The loss is the sum of :func:`info_nce` over classes with anchors and a non-empty bank, divided by the
    number of valid classes; it is 0 when at most one class is valid.
    """

    def __init__(self, num_classes: int, feature_dim: int, device: torch.device, *, num_queries: int = 256,
                 num_negatives: int = 50, temperature: float = 0.5, anchor_threshold: float = 0.3,
                 low_rank: int = 3, high_rank: int = 20, queue_size: int = 30000,
                 background_queue_size: int = 50000, prototype_samples: int = 2048,
                 negative_pool: int = 4096, generator: Optional[torch.Generator] = None) -> None:
        self.num_classes = int(num_classes)
        self.num_queries = int(num_queries)
        self.num_negatives = int(num_negatives)
        self.temperature = float(temperature)
        self.anchor_threshold = float(anchor_threshold)
        self.low_rank = int(low_rank)
        self.high_rank = int(high_rank)
        self.prototype_samples = int(prototype_samples)
        self.negative_pool = int(negative_pool)
        self.generator = generator
        sizes = [int(background_queue_size)] + [int(queue_size)] * (self.num_classes - 1)
        self.bank = ClassMemoryBank(self.num_classes, feature_dim, sizes, device)

    # ----------------------------------------------------------------------------------------- steps
    @torch.no_grad()
    def push_negatives(self, x: ContrastInputs, project_teacher: Projector) -> Dict[str, int]:
        """Sample negative candidates, embed them with the teacher and push them into the class queues.

        At most ``negative_pool`` labeled voxels and ``negative_pool`` unreliable unlabeled voxels are drawn
        uniformly (sub-sampling a mask is the same as masking a uniform sample), so the cost per step is
        bounded whatever the patch size. Returns the number of keys pushed per class (for logging/tests).
        """
        n_l = x.num_labeled
        labeled = torch.zeros_like(x.labels, dtype=torch.bool)
        labeled[:n_l] = True
        idx_l = sample_from_mask(labeled, self.negative_pool, self.generator)
        idx_u = sample_from_mask(x.unreliable & ~labeled, self.negative_pool, self.generator)
        prob_l = gather_voxels(x.prob, idx_l).float()
        prob_u = gather_voxels(x.prob, idx_u).float()
        label_l = x.labels.reshape(-1)[idx_l]
        neg_l, neg_u = negative_masks(prob_l, label_l, prob_u, self.low_rank, self.high_rank)
        idx = torch.cat([idx_l, idx_u])
        neg = torch.cat([neg_l, neg_u], dim=0)
        used = neg.any(dim=1)
        pushed = {}
        if not bool(used.any()):
            return {c: 0 for c in range(self.num_classes)}
        idx, neg = idx[used], neg[used]
        keys = project_teacher(gather_voxels(x.teacher_feats, idx).float()).detach()
        for c in range(self.num_classes):
            sel = neg[:, c]
            self.bank.push(c, keys[sel])
            pushed[c] = int(sel.sum())
        return pushed

    def __call__(self, x: ContrastInputs, project_student: Projector,
                 project_teacher: Projector) -> Tuple[Tensor, Dict[str, float]]:
        """The loss (graph-connected through the student's projection head) and a few counters."""
        self.push_negatives(x, project_teacher)
        labels = x.labels.reshape(-1)
        reliable = x.reliable.reshape(-1)
        valid_classes = [c for c in range(self.num_classes) if bool((reliable & (labels == c)).any())]
        zero = x.student_feats.sum() * 0.0
        if len(valid_classes) <= 1:
            return zero, {"valid_classes": float(len(valid_classes)), "contrast_classes": 0.0}
        total = zero
        used = 0
        for c in valid_classes:
            in_class = reliable & (labels == c)
            prob_c = x.prob[:, c].reshape(-1)
            candidates = in_class & (prob_c > self.anchor_threshold)
            if not bool(candidates.any()) or self.bank.count(c) == 0:
                continue
            cand_idx = torch.nonzero(candidates, as_tuple=False).squeeze(1)
            pick = randint(cand_idx.numel(), (self.num_queries,), cand_idx.device, self.generator)
            anchors = project_student(gather_voxels(x.student_feats, cand_idx[pick]).float())
            with torch.no_grad():
                proto_idx = sample_from_mask(in_class, self.prototype_samples, self.generator)
                prototype = project_teacher(gather_voxels(x.teacher_feats, proto_idx).float()).mean(dim=0)
                negatives = self.bank.sample(c, self.num_queries * self.num_negatives, self.generator)
                negatives = negatives.reshape(self.num_queries, self.num_negatives, -1)
            total = total + info_nce(anchors, prototype, negatives, self.temperature)
            used += 1
        return total / len(valid_classes), {"valid_classes": float(len(valid_classes)),
                                             "contrast_classes": float(used)}
