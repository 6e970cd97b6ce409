"""The three MONAI building blocks :class:`~dvcl.networks.unet.SegNet` uses, in plain torch.

Why not import them from MONAI: ``import monai.<anything>`` runs ``monai/__init__``, which loads every MONAI
subpackage (transforms, data, apps, and through them scipy, scikit-image and matplotlib): about 3 s per
process, paid by every ``dvcl segment`` call and every Slicer run before the first window. These classes
build exactly the modules MONAI builds (same types, same attribute names, so the same state-dict keys,
and the same construction order, so the same random initialisation for a given seed); a test compares
them with MONAI's (tests/test_engines.py).
"""

from __future__ import annotations

from typing import Tuple

from torch import nn


def make_norm(spec: tuple, channels: int) -> nn.Module:
    """A 3D norm layer from a MONAI-style spec ``(name, kwargs)``: instance, batch or group."""
    name, kwargs = spec
    if name == "instance":
        return nn.InstanceNorm3d(channels, **kwargs)
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
