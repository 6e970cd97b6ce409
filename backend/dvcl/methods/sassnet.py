"""SASSnet: shape-aware semi-supervised segmentation (a baseline of the paper's tables).

Li, Zhang, He. "Shape-aware Semi-supervised 3D Semantic Segmentation for Medical Images." MICCAI 2020.
Authors' code: kleinzcy/SASSnet ``code/train_gan_sdfloss.py`` (V-Net with a tanh SDF head
``networks/vnet_sdf.py``, discriminator ``networks/discriminator.py::FC3DDiscriminator``).

The network predicts a segmentation and, from the same last decoder features, a signed distance map (SDM)
of the object (:class:`dvcl.networks.heads.SDFHead`, model ``sdf``). Labeled patches are supervised with
Dice on the segmentation plus ``beta * MSE`` between the predicted SDM and the normalised SDM of the label
(:mod:`dvcl.losses.sdf`). A discriminator (model ``D``) sees predicted SDMs with their images and learns to
tell labeled (1) from unlabeled (0) patches; the network is trained to make D call unlabeled SDMs labeled,
which pushes the shapes predicted on unlabeled data towards the shapes of the labeled set. The network and
D are updated alternately exactly as in :mod:`dvcl.methods.dan` (D: Adam lr 1e-4, betas (0.9, 0.99); the
SDMs are recomputed by the updated network in eval mode for D's step).

Published settings (``train_gan_sdfloss.py``) are the defaults: beta = 0.3, adversarial weight
0.01 * sigmoid ramp-up over 40 x 150 = its 6,000 iterations (the whole run), D lr 1e-4. The released
supervised loss is Dice + 0.3 SDM-MSE; the cross-entropy it computes is only logged (``ce_weight = 0``).

Choices made lifting the binary (left atrium) code to many organs [decided]:
* one SDM per foreground class (C - 1 channels, tanh), D sees all of them;
* the segmentation is a softmax over C classes and its Dice is MONAI's soft Dice over all classes (the
  released code uses a sigmoid and the foreground Dice);
* absent organs have SDM +1 ("outside everywhere") rather than 0, see :mod:`dvcl.losses.sdf`;
* LR: the Trainer's poly schedule instead of the released step decay (x0.1 every 2,500 iterations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from dvcl.losses.adversarial import generator_loss
from dvcl.losses.sdf import sdf_regression_loss
from dvcl.methods.base import Batch
from dvcl.methods.dan import DANMethod, DANParams
from dvcl.methods.params import SDFParams
from dvcl.methods.registry import register_method
from dvcl.networks.heads import SDFHead


@dataclass
class SASSnetParams(DANParams, SDFParams):
    """SASSnet hyper-parameters (``train_gan_sdfloss.py`` defaults): DAN's, with SASSnet's values, plus the
    signed-distance head."""

    ce_weight: float = 0.0
    """Weight of CE in the segmentation loss (released: computed but not used)."""
    dice_weight: float = 1.0
    adv_weight: float = 0.01
    """Weight of the adversarial term after its ramp-up (``--consistency 0.01``; over all 40 x 150 iterations)."""


@register_method("sassnet")
class SASSnetMethod(DANMethod):
    """Segmentation + SDM head (``A`` + ``sdf``), adversarially trained on SDMs against ``D``."""

    params_class = SASSnetParams

    def disc_map_channels(self) -> int:
        return self.num_classes - 1

    def build_segmentation_models(self) -> Dict[str, nn.Module]:
        net = self.new_network()
        return {"A": net, "sdf": SDFHead(net.feature_channels, self.num_classes).to(self.device)}

    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch], iteration: int) -> Tuple[Tensor, Dict[str, float]]:
        p = self.params
        x, y_l, n_l, has_u = self.joint_batch(batch_l, batch_u)
        logits, feats = self.models["A"](x)
        sdf = self.models["sdf"](feats)
        seg = self.sup_loss(logits[:n_l], y_l)
        shape = sdf_regression_loss(sdf[:n_l], y_l, p.sdf_absent_value)
        sup = seg + p.sdf_weight * shape
        if has_u:
            adv = generator_loss(self.models["D"](sdf[n_l:].float(), x[n_l:]))
            self._pending = (x.detach(), n_l, sdf.detach().float())
        else:
            adv = sup * 0.0
            self._pending = None
        w = self.adv_weight(iteration)
        loss = sup + w * adv
        return loss, {"sup": float(sup.detach()), "seg": float(seg.detach()), "sdf": float(shape.detach()),
                      "adv": float(adv.detach()), "adv_weight": w, "disc": self._last_disc_loss}

    @torch.no_grad()
    def discriminator_maps(self, x: Tensor) -> Tensor:
        net, head = self.models["A"], self.models["sdf"]
        was = net.training, head.training
        net.eval()
        head.eval()
        try:
            with self.amp_context():
                _, feats = net(x)
                maps = head(feats)
        finally:
            net.train(was[0])
            head.train(was[1])
        return maps.float()
