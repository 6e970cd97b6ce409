"""Extra heads some baselines attach to the shared :class:`~dvcl.networks.unet.SegNet`.

The SegNet is the same for every method (so tables compare losses, not architectures). Baselines that need
more outputs get them as *separate* small modules that read the SegNet's features, instead of a modified
network: a model package then only ever holds plain SegNets, and these heads live in the run's checkpoints
as extra models (``"sdf"``, ``"D"``, ``"loc_head"``, ...), never in ``inference_models()``.

* :class:`SDFHead` - signed-distance / level-set head on the last decoder features (SASSnet, DTC).
* :class:`FCDiscriminator3D` - SSL4MIS/SASSnet's fully convolutional 3D discriminator (DAN, SASSnet).
* :class:`EncoderTap` - forward hooks that collect the SegNet's encoder outputs during a normal forward.
* :class:`AuxDecoder` - a second, architecturally different decoder on the tapped encoder (UGPCL).
* :class:`LocationHead` - MagicNet's cube-location classifier on the deepest encoder features.
* :class:`RotationHead` - UGPCL's rotation classifier on the deepest encoder features.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from dvcl.errors import ConfigError
from dvcl.networks.config import NetworkConfig


class SDFHead(nn.Module):
    """``tanh(conv1x1(feats))`` -> one signed-distance map per foreground class, values in (-1, 1).

    SASSnet and DTC put a second 1x1x1 output convolution with a tanh on the last decoder features of their
    V-Net (``out_conv`` next to the segmentation ``out_conv2``). For C classes (background included) the head
    predicts C - 1 maps: background has no shape of its own [decided, multi-class lift].
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"an SDF head needs at least 2 classes (background + one structure), got {num_classes}")
        self.conv = nn.Conv3d(in_channels, num_classes - 1, kernel_size=1)

    def forward(self, feats: Tensor) -> Tensor:
        return torch.tanh(self.conv(feats))


class FCDiscriminator3D(nn.Module):
    """The 3D discriminator of DAN (SSL4MIS ``FC3DDiscriminator``) and SASSnet, for any patch size.

    The map (softmax probabilities for DAN, signed distance maps for SASSnet) and the image go through one
    4x4x4 stride-2 convolution each, are added, then three more stride-2 convolutions with LeakyReLU(0.2) and
    Dropout3d(0.5), and a linear layer gives two logits (0 = "unlabeled", 1 = "labeled"). The released code
    averages with a fixed ``AvgPool3d((6, 6, 6))`` that only fits its 96^3 (or 112x112x80) patch; an adaptive
    average pool gives the same result there and works for any patch [decided].
    """

    def __init__(self, map_channels: int, image_channels: int = 1, ndf: int = 64, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv_map = nn.Conv3d(map_channels, ndf, kernel_size=4, stride=2, padding=1)
        self.conv_image = nn.Conv3d(image_channels, ndf, kernel_size=4, stride=2, padding=1)
        self.conv2 = nn.Conv3d(ndf, ndf * 2, kernel_size=4, stride=2, padding=1)
        self.conv3 = nn.Conv3d(ndf * 2, ndf * 4, kernel_size=4, stride=2, padding=1)
        self.conv4 = nn.Conv3d(ndf * 4, ndf * 8, kernel_size=4, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.classifier = nn.Linear(ndf * 8, 2)
        self.act = nn.LeakyReLU(negative_slope=0.2)
        self.dropout = nn.Dropout3d(dropout)

    def forward(self, maps: Tensor, image: Tensor) -> Tensor:
        x = self.dropout(self.act(self.conv_map(maps) + self.conv_image(image)))
        x = self.dropout(self.act(self.conv2(x)))
        x = self.dropout(self.act(self.conv3(x)))
        x = self.act(self.conv4(x))
        return self.classifier(self.pool(x).flatten(1))


class EncoderTap:
    """Collect a SegNet's encoder outputs (stem, then every down-sampling block) during its forward pass.

    Use as ``with EncoderTap(net) as tap: logits, feats = net(x)``; afterwards ``tap.outputs`` lists the
    feature maps from the finest (``stem``) to the deepest. Forward hooks observe the regular forward, so the
    encoder runs once and gradients flow as usual; nothing in SegNet has to change.
    """

    def __init__(self, net: nn.Module) -> None:
        if not hasattr(net, "stem") or not hasattr(net, "down"):
            raise ConfigError(f"{type(net).__name__} has no 'stem'/'down' encoder modules to tap")
        self.modules: List[nn.Module] = [net.stem, *net.down]
        self.outputs: List[Tensor] = []
        self._handles: list = []

    def _hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        self.outputs.append(output)

    def __enter__(self) -> EncoderTap:
        self.outputs = []
        self._handles = [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def deepest(self) -> Tensor:
        if not self.outputs:
            raise RuntimeError("EncoderTap has seen no forward pass")
        return self.outputs[-1]


class AuxDecoder(nn.Module):
    """A second U-Net decoder on the SegNet's (tapped) encoder outputs, with the other up-sampling mode.

    UGPCL trains a CNN decoder and a Swin-transformer decoder on one shared encoder and makes them agree; the
    point is that the two decoders differ. A 3D Swin decoder has no counterpart in this code base, so the
    auxiliary decoder here differs from the main one by its up-sampling (trilinear if the SegNet uses
    transposed convolutions, else transposed convolutions) and its own weights [decided, 2D -> 3D lift].
    """

    def __init__(self, cfg: NetworkConfig, num_classes: int) -> None:
        super().__init__()
        from dvcl.networks.unet import _Up

        ch = cfg.channels
        strides = cfg.level_strides
        mode = "nontrainable" if cfg.upsample == "deconv" else "deconv"
        self.up = nn.ModuleList(
            _Up(ch[i + 1], ch[i], strides[i], cfg.norm, cfg.dropout, mode) for i in reversed(range(len(ch) - 1))
        )
        self.head = nn.Conv3d(ch[0], num_classes, kernel_size=1)

    def forward(self, skips: Sequence[Tensor]) -> Tensor:
        if len(skips) != len(self.up) + 1:
            raise ConfigError(f"AuxDecoder needs {len(self.up) + 1} encoder outputs, got {len(skips)}")
        y = skips[-1]
        for block, skip in zip(self.up, reversed(skips[:-1])):
            y = block(y, skip)
        return self.head(y)


class LocationHead(nn.Module):
    """MagicNet's cube-location classifier: Linear -> BatchNorm1d -> LeakyReLU(0.2) -> Linear.

    Input: the flattened deepest encoder features of one cube; output: logits over the cube positions.
    """

    def __init__(self, in_features: int, num_locations: int, hidden: int = 4096) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.LeakyReLU(negative_slope=0.2),
            nn.Linear(hidden, num_locations),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x.flatten(1))


class RotationHead(nn.Module):
    """Global average pooling of the deepest encoder features + a linear classifier of the rotation."""

    def __init__(self, in_channels: int, num_rotations: int = 4, dropout: Optional[float] = None) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(in_channels, num_rotations)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.pool(x).flatten(1)))
