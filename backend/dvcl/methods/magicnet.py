"""MagicNet: magic-cube partition and recovery (a baseline of the paper's tables).

Chen, Bai, Shen, Li, Yu, Wang. "MagicNet: Semi-Supervised Multi-Organ Segmentation via Magic-Cube
Partition and Recovery." CVPR 2023. Authors' code: DeepMed-Lab-ECNU/MagicNet ``code/train_main_btcv.py``
(``utils/cube_utils.py``, ``utils/cube_losses.py``, ``networks/magicnet.py``).

A mean-teacher framework (student ``student``, EMA teacher ``teacher``) in which every patch of the batch,
labeled and unlabeled, is also seen cut into a grid of cubes (:mod:`dvcl.losses.cube_mix`):

1. cross-image partition-and-recovery: cubes are shuffled between the patches of the batch at every cube
   position; the student segments the mixed volumes and the outputs are moved back, giving a prediction of
   every original patch made in a mixed context (``cross``);
2. within-image partition-and-recovery: every cube is segmented on its own and the outputs are stitched
   (``within``), and a location head (model ``loc_head``) predicts each cube's position from its deepest
   encoder features (magic-cube location reasoning, weight 0.1);
3. cube-wise pseudo-label blending: the teacher's logits on the unlabeled patch (input noise N(0, 0.1)
   clipped to 0.2) are mixed with the within-image logits, ``(1 - w) * teacher + w * within`` with
   ``w = omega[teacher class]`` from the organ-class distribution of the pseudo-labels (refreshed every 20
   iterations, temperature 1, normalised to max 1), from iteration 100 on.

    L = [CE(s_l) + Dice(s_l) + Dice(cross_l) + Dice(within_l)] / 4 + 0.1 * L_loc + w(t) * Dice(cross_u, y_blend)

with MagicNet's Dice (batch-wide, squared denominators, all classes). Published settings are the defaults:
cube 32^3, EMA 0.99, consistency 0.1 with a sigmoid ramp-up over 200 x 350 = its 70,000 iterations (the whole
run), location head Linear(.., 4096)-BN-LeakyReLU(0.2)-Linear, inference with the student.

Choices made for this code base [decided]:
* the grid is per axis (``patch / cube_size`` along z, y, x; the released code assumes cubic patches), so
  the default 64x128x128 patch gives 2x4x4 = 32 cubes; cube sides must divide the patch and be divisible by
  the U-Net's total down-sampling;
* the deepest encoder features of the cubes are read with forward hooks on the shared SegNet
  (:class:`dvcl.networks.heads.EncoderTap`), the cube outputs are stitched at the logit level (identical to
  stitching the embeddings before MagicNet's 1x1x1 prediction head, which is linear per voxel);
* the location head sees all cubes of the batch in one BatchNorm batch (released: one call per sample);
* MagicNet decodes the unlabeled cube features for the blending a second time without gradient; the
  within-image logits of the unlabeled patches (detached) are the same numbers;
* the class distribution is kept as running counts (released: a list of every pseudo-labeled voxel);
* LR: the Trainer's poly schedule, as released.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dvcl.errors import ConfigError
from dvcl.losses.cube_mix import (
    ClassDistribution,
    cube_grid,
    magic_dice_loss,
    partition,
    random_cube_permutation,
    recover,
    split_cubes,
    stitch_cubes,
)
from dvcl.methods.base import Batch
from dvcl.methods.ema import TeacherStudentMethod, make_teacher
from dvcl.methods.params import NoisyTeacherConsistency, param
from dvcl.methods.registry import register_method
from dvcl.networks.heads import EncoderTap, LocationHead


@dataclass
class MagicNetParams(NoisyTeacherConsistency):
    """MagicNet hyper-parameters (``train_main_btcv.py`` defaults; MagicNet evaluates the student, ramps the
    consistency up over 200 x 350 = all 70,000 iterations and adds Gaussian noise to the teacher's input)."""

    cube_size: Union[int, Tuple[int, int, int]] = param((32, 32, 32), ge=1)
    """Cube side along (z, y, x); an int means the same along all axes."""
    loc_weight: float = param(0.1, ge=0)
    """Weight of the cube-location loss."""
    dist_temperature: float = param(1.0, gt=0)
    """T of the organ-class distribution dist ** (1/T) (``--T_dist``)."""
    blend_start_iteration: int = 100
    """Blend the pseudo-labels once the iteration index exceeds this (released: 100)."""
    dist_update_every: int = param(20, ge=1)
    """Refresh the class distribution every this many iterations (released: 20)."""
    loc_hidden: int = param(4096, ge=1)
    """Hidden width of the location head."""

    def check(self) -> None:
        if isinstance(self.cube_size, int):
            self.cube_size = (self.cube_size,) * 3


@register_method("magicnet")
class MagicNetMethod(TeacherStudentMethod):
    """Mean teacher + magic-cube cross/within-image partition-and-recovery + cube location reasoning."""

    params_class = MagicNetParams

    def build_models(self) -> Dict[str, nn.Module]:
        p = self.params
        net_cfg = self.cfg.network
        self.grid = cube_grid(self.cfg.patch, p.cube_size)
        div = net_cfg.divisor
        if any(c % d for c, d in zip(p.cube_size, div)):
            raise ConfigError(f"MagicNet cube size {list(p.cube_size)} must be divisible by the U-Net's total "
                              f"down-sampling {list(div)} (z, y, x)")
        num_cubes = math.prod(self.grid)
        if num_cubes < 2:
            raise ConfigError(f"MagicNet needs at least 2 cubes per patch; patch {list(self.cfg.patch)} with cubes "
                              f"{list(p.cube_size)} gives {num_cubes}")
        deep = net_cfg.channels[-1] * math.prod(c // d for c, d in zip(p.cube_size, div))
        self.dist = ClassDistribution(self.num_classes, p.dist_update_every)
        student = self.new_network()
        loc_head = LocationHead(deep, num_cubes, p.loc_hidden).to(self.device)
        return {"student": student, "teacher": make_teacher(student), "loc_head": loc_head}

    def train(self) -> None:
        super().train()
        self.models["loc_head"].train()

    def consistency_weight(self, iteration: int) -> float:
        return self.rampup_weight(self.params.consistency, self.params.consistency_rampup_fraction, iteration)

    def compute_loss(self, batch_l: Batch, batch_u: Optional[Batch], iteration: int) -> Tuple[Tensor, Dict[str, float]]:
        p = self.params
        student = self.models["student"]
        x, y_l, n_l, has_u = self.joint_batch(batch_l, batch_u)
        b = x.shape[0]
        cube = p.cube_size

        logits, _ = student(x)
        # 1. cross-image partition and recovery
        perm = random_cube_permutation(b, math.prod(self.grid), x.device)
        logits_mix, _ = student(partition(x, perm, cube))
        cross = recover(logits_mix, perm, cube)
        # 2. within-image partition and recovery + location reasoning
        cubes, locations = split_cubes(x, cube)
        with EncoderTap(student) as tap:
            logits_cubes, _ = student(cubes)
        loc_loss = F.cross_entropy(self.models["loc_head"](tap.deepest).float(), locations)
        within = stitch_cubes(logits_cubes, b, self.grid)

        soft = {k: torch.softmax(v.float(), dim=1) for k, v in (("s", logits), ("cross", cross), ("within", within))}
        ce = F.cross_entropy(logits[:n_l].float(), y_l[:, 0])
        sup = (ce + magic_dice_loss(soft["s"][:n_l], y_l) + magic_dice_loss(soft["cross"][:n_l], y_l)
               + magic_dice_loss(soft["within"][:n_l], y_l)) / 4.0

        if has_u:
            pseudo, blended = self._pseudo_labels(x[n_l:], within[n_l:].detach(), iteration)
            cons = magic_dice_loss(soft["cross"][n_l:], pseudo)
        else:
            cons, blended = sup * 0.0, False
        w = self.consistency_weight(iteration)
        loss = sup + p.loc_weight * loc_loss + w * cons
        return loss, {"sup": float(sup.detach()), "loc": float(loc_loss.detach()), "consistency": float(cons.detach()),
                      "consistency_weight": w, "blended": float(blended)}

    @torch.no_grad()
    def _pseudo_labels(self, x_u: Tensor, within_u: Tensor, iteration: int) -> Tuple[Tensor, bool]:
        """Teacher pseudo-labels, blended cube-wise with the within-image prediction once the distribution exists."""
        p = self.params
        t_logits, _ = self.models["teacher"](self.input_noise(x_u, p.noise_std, p.noise_clip))
        t_logits = t_logits.float()
        t_pred = t_logits.argmax(dim=1)
        blended = iteration > p.blend_start_iteration and self.dist.ready
        if blended:
            omega = self.dist.weights(p.dist_temperature).to(x_u.device)[t_pred].unsqueeze(1)
            pseudo = ((1.0 - omega) * t_logits + omega * within_u.float()).argmax(dim=1)
        else:
            pseudo = t_pred
        self.dist.record(pseudo)
        self.dist.maybe_refresh(iteration)
        return pseudo, blended

    # ------------------------------------------------------------------------------------------ state
    def extra_state(self) -> Dict[str, Tensor]:
        return {"class_dist": self.dist.state()}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        if not state:
            return
        if set(state) != {"class_dist"}:
            raise ConfigError(f"method '{self.name}' got extra state {sorted(state)} it does not know")
        self.dist.load_state(state["class_dist"])
