"""DAN: deep adversarial networks (a baseline of the paper's tables).

Zhang, Yang, Chen, Fredericksen, Hughes, Chen. "Deep Adversarial Networks for Biomedical Image Segmentation
Utilizing Unannotated Images." MICCAI 2017. 3D reference code: HiLab-git/SSL4MIS
``train_adversarial_network_3D.py`` with ``networks/discriminator.py::FC3DDiscriminator``.

One segmentation network (model ``A``) and a discriminator (model ``D``, see
:class:`dvcl.networks.heads.FCDiscriminator3D`) that sees a softmax map together with its image and
classifies it as coming from a labeled (1) or an unlabeled (0) patch. Per iteration:

1. network step (the Trainer's SGD): ``0.5 CE + 0.5 Dice`` on labeled patches
   ``+ w(t) * CE(D(softmax(A(x_u)), x_u), 1)`` (fool D on unlabeled patches; D frozen, in eval mode);
2. discriminator step (in :meth:`after_step`, Adam lr 1e-4, betas (0.9, 0.99)): the network, in eval mode and
   without gradient, predicts the labeled and unlabeled patches again *after* its update (as released), and
   D is trained with CE towards 1 / 0.

Published settings (SSL4MIS 3D) are the defaults: ``w(t) = 0.1 * sigmoid_rampup`` over the whole run
(``iter // 150`` against 200 "epochs" = its 30,000 iterations), ndf = 64, Dropout3d 0.5 in D.

Choices made lifting the binary (BraTS, 2 classes) code to many organs and to this code base [decided]:
* D's map input has C channels (one per class, background included), exactly as in SSL4MIS with C = 2.
* D's final fixed ``AvgPool3d((6, 6, 6))`` (96^3 patches) is an adaptive average pool, so any patch works;
  patches must still be at least 16 voxels along each axis (four stride-2 convolutions).
* The released script hard-codes the D targets for labeled_bs = 2 of batch 4 (``[1, 1, 0, 0]``); here the
  targets follow the actual labeled / unlabeled batch sizes.
* Poly LR for the network (the Trainer's); D's LR is constant, as released.
* With ``recompute_for_discriminator=False`` D is trained on the (detached) maps of the network step instead,
  which saves one forward pass per iteration.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from dvcl.errors import ConfigError
from dvcl.losses.adversarial import DiscriminatorTrainer, generator_loss
from dvcl.methods.base import Batch, Method
from dvcl.methods.params import SupervisedWeights, param
from dvcl.methods.registry import register_method
from dvcl.networks.heads import FCDiscriminator3D

MIN_DISCRIMINATOR_SIZE = 16
"""Smallest patch side the 4 stride-2 convolutions of the discriminator accept."""


@dataclass
class DANParams(SupervisedWeights):
    """DAN hyper-parameters (SSL4MIS 3D defaults; supervised loss 0.5 (CE + Dice)); SASSnet's extend these."""

    adv_weight: float = param(0.1, ge=0)
    """Weight of the adversarial term after its ramp-up (SSL4MIS ``--consistency 0.1``)."""
    adv_rampup_fraction: float = param(1.0, ge=0, le=1)
    """Sigmoid ramp-up exp(-5 (1 - t)^2) over this fraction of the run (SSL4MIS: 200 x 150 = all 30k iterations)."""
    disc_lr: float = param(1e-4, ge=0)
    """Adam learning rate of the discriminator (``--DAN_lr``)."""
    disc_beta1: float = param(0.9, ge=0, lt=1)
    disc_beta2: float = param(0.99, ge=0, lt=1)
    disc_channels: int = param(64, ge=1)
    """ndf, channels of D's first convolutions (doubling three times)."""
    disc_dropout: float = param(0.5, ge=0, lt=1)
    """Dropout3d inside D (active in D's own step only, as released)."""
    recompute_for_discriminator: bool = True
    """D's step uses the network's predictions recomputed after the network's update (released behaviour)."""


@register_method("dan")
class DANMethod(Method):
    """Segmentation network ``A`` trained against discriminator ``D`` on unlabeled patches."""

    params_class = DANParams

    def __init__(self, cfg, num_classes: int, device: torch.device) -> None:
        super().__init__(cfg, num_classes, device)
        self._pending: Optional[Tuple[Tensor, int, Tensor]] = None
        self._last_disc_loss = 0.0

    # ------------------------------------------------------------------------------------------ models
    def disc_map_channels(self) -> int:
        """Channels of the maps D judges (C softmax probabilities for DAN)."""
        return self.num_classes

    def build_segmentation_models(self) -> Dict[str, nn.Module]:
        return {"A": self.new_network()}

    def build_models(self) -> Dict[str, nn.Module]:
        p = self.params
        small = [s for s in self.cfg.patch if int(s) < MIN_DISCRIMINATOR_SIZE]
        if small:
            raise ConfigError(f"method '{self.name}': the discriminator needs patches of at least "
                              f"{MIN_DISCRIMINATOR_SIZE} voxels per axis, got {list(self.cfg.patch)}")
        self.sup_loss = self.supervised_loss()
        models = self.build_segmentation_models()
        disc = FCDiscriminator3D(self.disc_map_channels(), self.cfg.network.in_channels, p.disc_channels,
                                 p.disc_dropout).to(self.device)
        self.disc_trainer = DiscriminatorTrainer(disc, lr=p.disc_lr, betas=(p.disc_beta1, p.disc_beta2))
        models["D"] = disc
        return models

    def train(self) -> None:
        """Segmentation models in training mode; D in eval mode except during its own step (as released)."""
        for name, m in self.models.items():
            m.train(name != "D")

    def inference_models(self) -> List[str]:
        return ["A"]

    # ------------------------------------------------------------------------------------------ loss
    def adv_weight(self, iteration: int) -> float:
        return self.rampup_weight(self.params.adv_weight, self.params.adv_rampup_fraction, iteration)

    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch], iteration: int) -> Tuple[Tensor, Dict[str, float]]:
        x, y_l, n_l, has_u = self.joint_batch(batch_l, batch_u)
        logits, _ = self.models["A"](x)
        sup = self.sup_loss(logits[:n_l], y_l)
        probs = torch.softmax(logits.float(), dim=1)
        if has_u:
            adv = generator_loss(self.models["D"](probs[n_l:], x[n_l:]))
            self._pending = (x.detach(), n_l, probs.detach())
        else:
            adv = sup * 0.0
            self._pending = None
        w = self.adv_weight(iteration)
        loss = sup + w * adv
        return loss, {"sup": float(sup.detach()), "adv": float(adv.detach()), "adv_weight": w,
                      "disc": self._last_disc_loss}

    # ------------------------------------------------------------------------------------------ D step
    def amp_context(self):
        """The Trainer's mixed precision for the extra forward pass of D's step (``after_step`` runs outside it)."""
        if self.device.type != "cuda" or not getattr(self.cfg, "amp", False):
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    @torch.no_grad()
    def discriminator_maps(self, x: Tensor) -> Tensor:
        """The maps D is trained on, recomputed by the updated network in eval mode (softmax for DAN)."""
        net = self.models["A"]
        was = net.training
        net.eval()
        try:
            with self.amp_context():
                logits, _ = net(x)
        finally:
            net.train(was)
        return torch.softmax(logits.float(), dim=1)

    def after_step(self, iteration: int) -> None:
        if self._pending is None:
            return
        x, n_l, maps = self._pending
        self._pending = None
        if self.params.recompute_for_discriminator:
            maps = self.discriminator_maps(x)
        self._last_disc_loss = self.disc_trainer.step(maps[:n_l], x[:n_l], maps[n_l:], x[n_l:])

    # ------------------------------------------------------------------------------------------ state
    def extra_state(self) -> Dict[str, Tensor]:
        state = self.disc_trainer.state()
        state["disc_last_loss"] = torch.tensor([self._last_disc_loss], dtype=torch.float64)
        return state

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        if not state:
            return
        unknown = sorted(k for k in state if not (k.startswith("disc_opt.") or k == "disc_last_loss"))
        if unknown:
            raise ConfigError(f"method '{self.name}' got extra state {unknown} it does not know")
        self.disc_trainer.load_state(state)
        if "disc_last_loss" in state:
            self._last_disc_loss = float(state["disc_last_loss"].reshape(-1)[0])
