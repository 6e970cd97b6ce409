"""The exponential-moving-average (EMA) teacher shared by Mean Teacher, UA-MT and U2PL.

Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) showed that averaging the student's *weights* over
iterations gives a better target than the student itself. The update used by the 3D reference code
(SSL4MIS ``update_ema_variables``) is ``theta_t <- a * theta_t + (1 - a) * theta_s`` with
``a = min(1 - 1 / (step + 1), decay)``: at step 0 the teacher becomes a copy of the student, and the
averaging window grows until it reaches ``decay`` (0.99 -> about the last 100 steps).

:class:`TeacherStudentMethod` is the common skeleton (student + frozen EMA teacher, EMA after every
optimiser step); it is not registered itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import nn

from dvcl.methods.base import Method
from dvcl.methods.params import SupervisedWeights, TeacherParams


def ema_alpha(decay: float, step: Optional[int]) -> float:
    """The averaging factor ``min(1 - 1/(step + 1), decay)`` (``decay`` itself when ``step`` is None)."""
    if step is None:
        return float(decay)
    return float(min(1.0 - 1.0 / (int(step) + 1), decay))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: Optional[int] = None) -> float:
    """Move ``teacher`` towards ``student`` in place; returns the factor ``a`` used.

    Floating-point buffers (e.g. batch-norm running statistics) are averaged like the weights, so a teacher
    in eval mode uses statistics that match its weights; integer buffers (batch counters) are copied.
    """
    alpha = ema_alpha(decay, step)
    t_params = dict(teacher.named_parameters())
    for name, p_s in student.named_parameters():
        p_t = t_params[name]
        p_t.mul_(alpha).add_(p_s.detach().to(p_t.dtype), alpha=1.0 - alpha)
    t_buffers = dict(teacher.named_buffers())
    for name, b_s in student.named_buffers():
        b_t = t_buffers.get(name)
        if b_t is None:
            continue
        if torch.is_floating_point(b_t):
            b_t.mul_(alpha).add_(b_s.to(b_t.dtype), alpha=1.0 - alpha)
        else:
            b_t.copy_(b_s)
    return alpha


@torch.no_grad()
def copy_weights(teacher: nn.Module, student: nn.Module) -> None:
    """Make ``teacher`` an exact copy of ``student`` (U2PL does this when its semi-supervised phase starts)."""
    teacher.load_state_dict(student.state_dict())


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen deep copy of ``student``: no gradients, never in the optimiser."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@dataclass
class EMAParams(SupervisedWeights, TeacherParams):
    """Hyper-parameters every teacher-student method shares."""


class TeacherStudentMethod(Method):
    """A student trained by gradient and a teacher that follows it by EMA (models ``student``, ``teacher``)."""

    params_class = EMAParams

    def build_models(self) -> Dict[str, nn.Module]:

        self.sup_loss = self.supervised_loss()
        student = self.new_network()
        return {"student": student, "teacher": make_teacher(student)}

    def train(self) -> None:
        """Student in training mode; the teacher stays in eval mode so its targets are deterministic
        (stochasticity comes from the input noise and, for UA-MT, the explicit MC dropout) [decided]."""
        self.models["student"].train()
        self.models["teacher"].eval()

    def after_step(self, iteration: int) -> None:
        ema_update(self.models["teacher"], self.models["student"], self.params.ema_decay, iteration)

    def inference_models(self) -> List[str]:
        return [self.params.inference_model]

    @staticmethod
    def input_noise(x: torch.Tensor, std: float, clip: float) -> torch.Tensor:
        """Gaussian noise ``clamp(N(0, std^2), -clip, clip)`` added to the teacher's input (SSL4MIS 3D)."""
        if std <= 0:
            return x
        return x + torch.clamp(torch.randn_like(x) * std, -clip, clip)
