"""The three MONAI building blocks :class:`~dvcl.networks.unet.SegNet` uses, in plain torch.

Why not import them from MONAI: ``import monai.<anything>`` runs ``monai/__init__``, which loads every MONAI
subpackage (transforms, data, apps, and through them scipy, scikit-image and matplotlib): about 3 s per
process, paid by every ``dvcl segment`` call and every Slicer run before the first window. These classes
build exactly the modules MONAI builds (same types, same attribute names, so the same state-dict keys,
and the same construction order, so the same random initialisation for a given seed); a test compares
them with MONAI's (tests/test_engines.py).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable


class _InstanceNormChannelsLast(torch.autograd.Function):
    """Instance norm of a channels-last (B, C, Z, Y, X) tensor, computed on its (B, voxels, C) view.

    Forward: mean per (sample, channel), the centred values ``xc``, the biased variance from the diagonal of
    ``xc^T xc`` (one batched matrix product: a single pass that BLAS accumulates accurately), and
    ``y = xc * rstd * weight + bias`` in one pass. Backward, with ``a = rstd * weight`` and the two per-channel
    sums ``sum(g)`` and ``sum(g * xc)``: ``dx = a * g - a * sum(g) / n - a * rstd^2 * sum(g * xc) / n * xc``.
    Every tensor stays channels-last; no copy to NCDHW. (``F.group_norm`` with one channel per group computes
    the same with a channels-last kernel, but its backward took 70 ms where this takes 28 ms on (4, 8, 32, 64,
    64), 1 thread, and its single-pass variance was 100x less accurate.)
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                eps: float) -> torch.Tensor:
        b, c = x.shape[:2]
        v = x.permute(0, 2, 3, 4, 1).reshape(b, -1, c)  # a view, x being channels-last
        n = v.shape[1]
        xc = v - v.sum(1, keepdim=True).div_(n)
        var = torch.bmm(xc.transpose(1, 2), xc).diagonal(dim1=1, dim2=2).unsqueeze(1).div_(n)  # (B, 1, C)
        rstd = var.add_(eps).rsqrt_()
        scale = rstd if weight is None else rstd * weight
        y = torch.empty_like(x, memory_format=torch.channels_last_3d)  # returned as is: a view could not be
        torch.addcmul(bias.expand_as(scale) if bias is not None else torch.zeros_like(scale), xc, scale,  # in-place
                      out=y.permute(0, 2, 3, 4, 1).view(b, n, c))  # modified (LeakyReLU(inplace=True) follows)
        ctx.save_for_backward(xc, rstd, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, gy: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        xc, rstd, weight = ctx.saved_tensors
        b, n, c = xc.shape
        g = gy.contiguous(memory_format=torch.channels_last_3d).permute(0, 2, 3, 4, 1).reshape(b, n, c)
        sum_g = g.sum(1, keepdim=True)  # (B, 1, C)
        sum_gx = torch.bmm(g.transpose(1, 2), xc).diagonal(dim1=1, dim2=2).unsqueeze(1)
        a = rstd if weight is None else rstd * weight
        gx = torch.addcmul(-a * sum_g / n, xc, -a * rstd * rstd * sum_gx / n).addcmul_(g, a)
        gx = gx.view(b, *gy.shape[2:], c).permute(0, 4, 1, 2, 3)
        gw = (rstd * sum_gx).sum((0, 1)) if weight is not None and ctx.needs_input_grad[1] else None
        gb = sum_g.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


class InstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` (same type, attributes and state-dict keys) with a fast path for channels-last input.

    ``nn.InstanceNorm3d`` computes the norm as a batch norm of the input reshaped to ``(1, B * C, ...)``, which
    forces a contiguous copy of a channels-last input and of its gradient. On the CPU, for a 5-D channels-last
    float input and no running statistics, :class:`_InstanceNormChannelsLast` computes the same instance norm
    (biased variance, ``eps``, per-channel affine) on the channels-last data and returns a channels-last
    output; only the summation order differs (about 1e-6). Everything else (contiguous input as in inference and
    ONNX export, CUDA, ``track_running_stats``) runs ``nn.InstanceNorm3d`` exactly as before.
    See :mod:`dvcl.networks.memory_format`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.dim() == 5 and x.device.type == "cpu" and self.running_mean is None
                and x.dtype in (torch.float32, torch.float64) and x.shape[1] == self.num_features
                and x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()):
            return _InstanceNormChannelsLast.apply(x, self.weight, self.bias, self.eps)
        return super().forward(x)


def make_norm(spec: tuple, channels: int) -> nn.Module:
    """A 3D norm layer from a MONAI-style spec ``(name, kwargs)``: instance, batch or group."""
    name, kwargs = spec
    if name == "instance":
        return InstanceNorm3d(channels, **kwargs)
    if name == "batch":
        return nn.BatchNorm3d(channels, **kwargs)
    if name == "group":
        return nn.GroupNorm(num_channels=channels, **kwargs)
    raise ValueError(f"unknown norm '{name}'")


def make_act(spec: tuple) -> nn.Module:
    """Activation from a spec ``(name, kwargs)``; only what SegNet uses (LeakyReLU, ReLU, PReLU)."""
    name, kwargs = spec
    acts = {"leakyrelu": nn.LeakyReLU, "relu": nn.ReLU, "prelu": nn.PReLU}
    return acts[name.lower()](**kwargs)


class ADN(nn.Sequential):
    """Norm, dropout, activation (MONAI ``ADN`` with ordering ``"NDA"``)."""

    def __init__(self, channels: int, act: tuple, norm: tuple, dropout: float) -> None:
        super().__init__()
        self.add_module("N", make_norm(norm, channels))
        self.add_module("D", nn.Dropout(p=float(dropout)))
        self.add_module("A", make_act(act))


class Convolution(nn.Sequential):
    """3x3x3 convolution (padding 1) followed by :class:`ADN` (MONAI ``Convolution``)."""

    def __init__(self, in_chns: int, out_chns: int, act: tuple, norm: tuple, dropout: float, bias: bool) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv3d(in_chns, out_chns, kernel_size=3, stride=1, padding=1, bias=bias))
        self.add_module("adn", ADN(out_chns, act, norm, dropout))


class TwoConv(nn.Sequential):
    """Two :class:`Convolution` blocks (MONAI ``basic_unet.TwoConv`` in 3D)."""

    def __init__(self, spatial_dims: int, in_chns: int, out_chns: int, act: tuple, norm: tuple, bias: bool,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError("only 3D blocks are provided")
        conv_0 = Convolution(in_chns, out_chns, act, norm, dropout, bias)
        conv_1 = Convolution(out_chns, out_chns, act, norm, dropout, bias)
        self.add_module("conv_0", conv_0)
        self.add_module("conv_1", conv_1)


class UpSample(nn.Sequential):
    """Up-sampling by ``scale_factor`` (MONAI ``UpSample`` in 3D, modes ``deconv`` and ``nontrainable``).

    ``deconv``: a transposed convolution with kernel = stride = ``scale_factor``. ``nontrainable``: a 1x1x1
    convolution when the channel count changes, then interpolation.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale_factor: Tuple[int, ...],
                 mode: str = "deconv", interp_mode: str = "trilinear", align_corners: bool = False) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError("only 3D blocks are provided")
        scale = tuple(int(s) for s in scale_factor)
        if mode == "deconv":
            self.add_module("deconv", nn.ConvTranspose3d(in_channels, out_channels, kernel_size=scale, stride=scale))
        elif mode == "nontrainable":
            if in_channels != out_channels:
                self.add_module("preconv", nn.Conv3d(in_channels, out_channels, kernel_size=1))
            self.add_module("upsample_non_trainable", nn.Upsample(
                scale_factor=tuple(float(s) for s in scale), mode=interp_mode,
                align_corners=align_corners if interp_mode in ("linear", "bilinear", "trilinear", "bicubic") else None))
        else:
            raise ValueError(f"unknown upsample mode '{mode}'")


def max_pool(stride: Tuple[int, int, int]) -> nn.MaxPool3d:
    """Max-pooling with kernel = stride (MONAI ``Pool["MAX", 3]``)."""
    return nn.MaxPool3d(kernel_size=stride, stride=stride)
