"""UGPCL: uncertainty-guided pixel contrastive learning (a baseline of the paper's tables).

Wang, Lu, Lai, Wen, Kong. "Uncertainty-Guided Pixel Contrastive Learning for Semi-Supervised Medical Image
Segmentation." IJCAI 2022. Authors' code (2D, ACDC): taovv/UGPCL
``codes/trainers/ugpcl_trainer.py``, ``codes/losses/pixel_contras_loss.py``, ``configs/_trainers/ugpcl.yaml``
and ``configs/comparison_acdc_224_136/ugpcl_unet_r50.yaml``.

One encoder, two different decoders: the SegNet's own decoder (model ``A``, used at inference) and an
auxiliary decoder on the same encoder outputs (model ``aux``). Per iteration, on labeled + unlabeled patches
that are first rotated by a random multiple of 90 degrees in-plane (labels rotated alike):

* supervised ``L_sup(A) + 0.4 L_sup(aux)`` (0.5 CE + 0.5 Dice each);
* consistency ``mean((p_A - p_aux)^2)`` on the unlabeled patches, weight 0.01 with a sigmoid ramp-up over the
  whole run (``consistency_rampup = max_iter // 100`` of 100-iteration "epochs");
* rotation classification ``CE(rot_head(deepest encoder features), k)``, weight 0.1 (model ``rot``);
* after 10% of the run (iteration 1,000 of 10,000), the uncertainty-guided pixel contrast of
  :mod:`dvcl.losses.pixel_contrast`, weight 0.1: labels are the ground truth on labeled patches and, on
  unlabeled ones, the argmax of the two decoders' mean softmax where its entropy is below
  ``(0.75 + 0.25 ramp(t)) * ln C``; anchors are contrasted with a per-class queue of segment embeddings
  (500 per class), which is refilled with this batch's segments afterwards.

Published settings (ACDC comparison config) are the defaults: T = T_base = 0.07, max_samples 1024,
max_views 1, memory 500, auxiliary decoder weight 0.4, rotation weight 0.1.

Choices made lifting the 2D code to 3D and to this code base [decided]:
* the auxiliary decoder mirrors the SegNet decoder with the other up-sampling mode (trilinear vs transposed
  convolution) instead of UGPCL's Swin-transformer decoder (:class:`dvcl.networks.heads.AuxDecoder`); the
  encoder outputs are read with forward hooks, so the encoder runs once;
* rotations are in the axial (y, x) plane; with y != x only 0 and 180 degrees keep the patch shape, so only
  those are drawn; UGPCL's extra random rotation of +-20 degrees (an interpolating augmentation) is left out;
* embeddings are the SegNet's sparse 256-d projection head applied at sampled voxels of the last decoder
  features (UGPCL: a conv-MLP head on an encoder level at 1/8 resolution); a segment embedding is the mean
  projection of at most ``segment_samples`` random voxels of the class in the patch;
* the uncertainty threshold uses ln C (the released code's ln 2 is a binary-task leftover; ACDC has 4 classes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dvcl.losses.pixel_contrast import SegmentQueue, certainty_labels, pixel_contrast_loss, sample_anchors
from dvcl.losses.sampling import gather_voxels, randint, sample_from_mask
from dvcl.methods.base import Batch, Method
from dvcl.methods.params import (
    ConsistencyParams,
    ContrastParams,
    SupervisedWeights,
    UncertaintyThreshold,
    param,
)
from dvcl.methods.registry import register_method
from dvcl.networks.heads import AuxDecoder, EncoderTap, RotationHead


@dataclass
class UGPCLParams(SupervisedWeights, ConsistencyParams, UncertaintyThreshold, ContrastParams):
    """UGPCL hyper-parameters (taovv/UGPCL ACDC comparison config: each decoder's supervised loss 0.5 CE +
    0.5 Dice, consistency ramped up over max_iter // 100 epochs of 100 iterations = the whole run)."""

    consistency: float = 0.01
    aux_weight: float = param(0.4, ge=0)
    """Weight of the auxiliary decoder's supervised loss (``tf_decoder_weight``)."""
    rotation_weight: float = param(0.1, ge=0)
    """Weight of the rotation classification (``cls_weight``); 0 turns the rotations off."""
    contrast_weight: float = 0.1
    contrast_start_fraction: float = 0.1
    """The pixel contrast starts after this fraction of the run (released: step 1,000 of 10,000)."""
    temperature: float = 0.07
    base_temperature: float = param(0.07, gt=0)
    max_samples: int = param(1024, ge=1)
    max_views: int = param(1, ge=1)
    bank_size: int = param(500, ge=1)
    """Segment embeddings kept per class (``memory_size``)."""
    segment_samples: int = param(512, ge=1)
    """Voxels averaged for one segment embedding [decided]."""


@register_method("ugpcl")
class UGPCLMethod(Method):
    """SegNet ``A`` + auxiliary decoder ``aux`` + rotation head ``rot``, with uncertainty-guided pixel contrast."""

    params_class = UGPCLParams

    def build_models(self) -> Dict[str, nn.Module]:
        p = self.params
        self.sup_loss = self.supervised_loss()
        net = self.new_network()
        net_cfg = net.cfg
        self.queue = SegmentQueue(self.num_classes, p.bank_size, net_cfg.feature_dim, device=self.device)
        return {"A": net, "aux": AuxDecoder(net_cfg, self.num_classes).to(self.device),
                "rot": RotationHead(net_cfg.channels[-1], 4).to(self.device)}

    def inference_models(self) -> List[str]:
        return ["A"]

    def weight(self, value: float, iteration: int) -> float:
        return self.rampup_weight(value, self.params.consistency_rampup_fraction, iteration)

    # ------------------------------------------------------------------------------------------ rotations
    def _rotate(self, x: Tensor, y_l: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Rotate every sample by k * 90 degrees in the (y, x) plane; returns (x, labels, k)."""
        b = x.shape[0]
        square = x.shape[-1] == x.shape[-2]
        k = randint(4 if square else 2, (b,), x.device) * (1 if square else 2)
        xs = [torch.rot90(x[i], int(k[i]), dims=(-2, -1)) for i in range(b)]
        ys = [torch.rot90(y_l[i], int(k[i]), dims=(-2, -1)) for i in range(y_l.shape[0])]
        return torch.stack(xs), torch.stack(ys), k

    # ------------------------------------------------------------------------------------------ loss
    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch], iteration: int) -> Tuple[Tensor, Dict[str, float]]:
        p = self.params
        net = self.models["A"]
        x, y_l, n_l, has_u = self.joint_batch(batch_l, batch_u)
        rotate = p.rotation_weight > 0
        if rotate:
            x, y_l, k_rot = self._rotate(x, y_l)

        with EncoderTap(net) as tap:
            logits, feats = net(x)
        skips = tap.outputs
        aux_logits = self.models["aux"](skips)
        sup = self.sup_loss(logits[:n_l], y_l) + p.aux_weight * self.sup_loss(aux_logits[:n_l], y_l)
        rot = F.cross_entropy(self.models["rot"](skips[-1]).float(), k_rot) if rotate else sup * 0.0

        probs = torch.softmax(logits.float(), dim=1)
        probs_aux = torch.softmax(aux_logits.float(), dim=1)
        cons = torch.mean((probs[n_l:] - probs_aux[n_l:]) ** 2) if has_u else sup * 0.0

        active = p.contrast_weight > 0 and p.contrast_started(iteration, self.cfg.iterations)
        contrast, certain = (self._contrast(net, feats, probs, probs_aux, y_l, iteration) if active
                             else (sup * 0.0, 0.0))
        w_cons = self.weight(p.consistency, iteration)
        loss = sup + w_cons * cons + p.rotation_weight * rot + p.contrast_weight * contrast
        return loss, {"sup": float(sup.detach()), "consistency": float(cons.detach()), "consistency_weight": w_cons,
                      "rotation": float(rot.detach()), "contrast": float(contrast.detach()),
                      "certain_fraction": certain}

    def _contrast(self, net: nn.Module, feats: Tensor, probs: Tensor, probs_aux: Tensor, y_l: Tensor,
                  iteration: int) -> Tuple[Tensor, float]:
        p = self.params
        with torch.no_grad():
            ramp = self.rampup_weight(1.0, 1.0, iteration)
            threshold = (p.threshold_start + (p.threshold_end - p.threshold_start) * ramp) * math.log(self.num_classes)
            labels = certainty_labels((probs + probs_aux) / 2.0, threshold, y_l)
            preds = probs.argmax(dim=1)
            b = labels.shape[0]
            flat_labels = labels.reshape(b, -1)
            idx, cls = sample_anchors(flat_labels, preds.reshape(b, -1), p.max_samples, p.max_views)
            n_u = b - y_l.shape[0]
            certain = float((labels[y_l.shape[0]:] >= 0).float().mean()) if n_u else 1.0
        anchors = net.project(gather_voxels(feats, idx)) if idx.numel() else feats.new_zeros(0, net.cfg.feature_dim)
        bank_feats, bank_cls = self.queue.contrast_set()
        loss = pixel_contrast_loss(anchors, cls, bank_feats, bank_cls, p.temperature, p.base_temperature)
        if idx.numel() == 0:
            loss = loss + feats.sum() * 0.0
        self._enqueue(net, feats, flat_labels)
        return loss, certain

    @torch.no_grad()
    def _enqueue(self, net: nn.Module, feats: Tensor, flat_labels: Tensor) -> None:
        """Push the mean embedding of every (patch, organ) segment of this batch (UGPCL's segment queue)."""
        b, spatial = flat_labels.shape
        for i in range(b):
            for c in torch.unique(flat_labels[i]).tolist():
                if c <= 0:
                    continue
                idx = sample_from_mask(flat_labels[i] == c, self.params.segment_samples) + i * spatial
                self.queue.push(net.project(gather_voxels(feats, idx)).float().mean(dim=0), int(c))

    # ------------------------------------------------------------------------------------------ state
    def state_modules(self) -> Dict[str, nn.Module]:
        return {"segment_queue": self.queue}
