"""Adversarial training against a discriminator that tells labeled from unlabeled predictions (DAN, SASSnet).

DAN (Zhang et al., MICCAI 2017; 3D code: SSL4MIS ``train_adversarial_network_3D.py``) and SASSnet (Li et al.,
MICCAI 2020) train a discriminator D to output class 1 for predictions on *labeled* patches and class 0
for predictions on *unlabeled* ones (two-way softmax, cross-entropy), and the segmentation network to make
D answer 1 on unlabeled patches. The segmentation network and D are updated alternately, each with its own
optimiser (SGD for the network; Adam(lr 1e-4, betas (0.9, 0.99)) for D).

In the shared Trainer the network's step is the regular one (:func:`generator_loss` is part of the method's
loss, with D frozen); :class:`DiscriminatorTrainer` then takes D's step inside ``Method.after_step``. D's
parameters never require gradients outside that step, so the Trainer's optimiser does not see them and the
network's backward pass does not accumulate gradients into them.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dvcl.errors import ConfigError

LABELED = 1
UNLABELED = 0


def discriminator_loss(logits_labeled: Tensor, logits_unlabeled: Tensor) -> Tensor:
    """CE of D on both halves: labeled -> class 1, unlabeled -> class 0, mean over all samples."""
    logits = torch.cat([logits_labeled, logits_unlabeled]).float()
    target = torch.cat([
        torch.full((logits_labeled.shape[0],), LABELED, dtype=torch.long, device=logits.device),
        torch.full((logits_unlabeled.shape[0],), UNLABELED, dtype=torch.long, device=logits.device),
    ])
    return F.cross_entropy(logits, target)


def generator_loss(logits_unlabeled: Tensor) -> Tensor:
    """The segmentation network's adversarial term: make D call unlabeled predictions "labeled" (class 1)."""
    target = torch.full((logits_unlabeled.shape[0],), LABELED, dtype=torch.long, device=logits_unlabeled.device)
    return F.cross_entropy(logits_unlabeled.float(), target)


class DiscriminatorTrainer:
    """Owns D's Adam optimiser; :meth:`step` takes one update, :meth:`state` / :meth:`load_state` checkpoint it.

    The optimiser state goes into the method's ``extra_state`` as flat tensors (``"<i>.<key>"``), which
    ``torch.load(weights_only=True)`` reads back; D's weights themselves are a model of the method.
    """

    def __init__(self, disc: nn.Module, lr: float = 1e-4, betas: Tuple[float, float] = (0.9, 0.99)) -> None:
        self.disc = disc
        freeze(disc)
        self.params = list(disc.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=lr, betas=betas)

    def step(self, maps_labeled: Tensor, images_labeled: Tensor, maps_unlabeled: Tensor,
             images_unlabeled: Tensor) -> float:
        """One Adam step of D on detached inputs (D in training mode, i.e. with dropout); returns its loss."""
        was_training = self.disc.training
        self.disc.train()
        for p in self.params:
            p.requires_grad_(True)
        try:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=maps_labeled.device.type, enabled=False):
                loss = discriminator_loss(self.disc(maps_labeled.detach().float(), images_labeled.float()),
                                          self.disc(maps_unlabeled.detach().float(), images_unlabeled.float()))
            loss.backward()
            _average_across_ranks(p.grad for p in self.params if p.grad is not None)
            self.optimizer.step()
        finally:
            freeze(self.disc)
            self.disc.train(was_training)
        return float(loss.detach())

    def state(self, prefix: str = "disc_opt.") -> Dict[str, Tensor]:
        """Adam's per-parameter state as flat tensors (empty before the first step)."""
        out: Dict[str, Tensor] = {}
        for i, p in enumerate(self.params):
            for key, value in self.optimizer.state.get(p, {}).items():
                out[f"{prefix}{i}.{key}"] = torch.as_tensor(value).detach().clone()
        return out

    def load_state(self, state: Mapping[str, Tensor], prefix: str = "disc_opt.") -> None:
        """Restore what :meth:`state` returned (keys without ``prefix`` are ignored)."""
        per_param: Dict[int, Dict[str, Tensor]] = {}
        for key, value in state.items():
            if not key.startswith(prefix):
                continue
            index, _, name = key[len(prefix):].partition(".")
            if not index.isdigit() or int(index) >= len(self.params):
                raise ConfigError(f"discriminator optimiser state has an unknown entry '{key}'")
            per_param.setdefault(int(index), {})[name] = value
        if not per_param:
            return
        sd = self.optimizer.state_dict()
        sd["state"] = {i: {k: (v.to(self.params[i].device) if k != "step" else v) for k, v in d.items()}
                       for i, d in per_param.items()}
        self.optimizer.load_state_dict(sd)


def freeze(module: nn.Module) -> None:
    """No gradients for ``module``: kept out of the Trainer's optimiser and out of the network's backward."""
    for p in module.parameters():
        p.requires_grad_(False)


def _average_across_ranks(grads: Iterable[Tensor]) -> None:
    """Average D's gradients over DDP ranks (the Trainer only averages the parameters of its own optimiser)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    for g in grads:
        torch.distributed.all_reduce(g)
        g.div_(world)
