"""Multi-GPU (or multi-process CPU) training via ``torchrun``: process group, gradient averaging, checks.

Why not ``DistributedDataParallel``: methods call their models freely (two nets, EMA teachers, the
projection head via ``model.project`` outside ``forward``, voxel sampling that may use no unreliable
voxel in some iteration). DDP's reducer needs every parameter to be used in ``forward`` or
``find_unused_parameters``, and misses calls outside ``forward``. Averaging the gradients of all trainable
parameters after ``backward`` in one flat all-reduce is correct for any method and costs one collective.
Flags (SIGINT/SIGTERM on any rank, a non-finite loss) ride along in the same buffer, so all ranks stop or
skip a step together.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn

from dvcl.errors import DeviceError

log = logging.getLogger(__name__)

#: collective timeout (minutes); must exceed the longest validation pass, which only rank 0 runs
VALIDATION_TIMEOUT_MIN = 120


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main rank writes files (run dir, checkpoints, logs)."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> Tuple[DistContext, torch.device]:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1); else a 1-process context.

    CUDA runs use NCCL and the GPU ``LOCAL_RANK``; CPU runs use gloo (tests, CPU clusters).
    """
    if not launched_by_torchrun():
        return DistContext(), device
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise DeviceError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) exist")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        # rank 0 validates while the other ranks wait in the next collective: allow long validations
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=VALIDATION_TIMEOUT_MIN))
    log.info("distributed: rank %d of %d (%s, %s)", rank, world, backend, device)
    return DistContext(rank, world, local), device


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_models(models: Dict[str, nn.Module], ctx: DistContext) -> None:
    """Give every rank rank 0's initial weights and buffers (models A and B stay different from each other)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for model in models.values():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, src=0)


def average_gradients(params: Iterable[nn.Parameter], ctx: DistContext, flags: Sequence[bool] = ()) -> List[bool]:
    """Average the gradients of ``params`` over ranks (missing grads count as 0) in one all-reduce.

    ``flags`` (e.g. "stop requested", "loss not finite") travel in the same buffer; the result says, per flag,
    whether it was set on any rank. Every rank must call this with the same parameters in the same order.
    """
    if not ctx.enabled:
        return [bool(f) for f in flags]
    params = list(params)
    grads: List[torch.Tensor] = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad.reshape(-1).float())
    device = grads[0].device if grads else torch.device("cpu")
    flag_t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device, dtype=torch.float32)
    flat = torch.cat([*grads, flag_t])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad).div_(ctx.world_size))
        offset += n
    return [bool(v > 0) for v in flat[offset:].tolist()]


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return bool(t.item() > 0)


def gather_objects(obj: Any, ctx: DistContext) -> List[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank (e.g. per-rank RNG states to checkpoint)."""
    if not ctx.enabled:
        return [obj]
    out: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def check_in_sync(models: Dict[str, nn.Module], ctx: DistContext) -> None:
    """Raise RuntimeError if the ranks' weights drifted apart (a bug, never expected)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        sums = torch.stack([p.double().sum() for m in models.values() for p in m.parameters()])
        ref = sums.clone()
        dist.broadcast(ref, src=0)
        if not torch.allclose(sums, ref, rtol=1e-6, atol=1e-8):
            raise RuntimeError(f"rank {ctx.rank}: model weights differ from rank 0 after training")
