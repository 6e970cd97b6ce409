"""A 3D U-Net built from MONAI blocks, with a segmentation head and a sparse projection head.

The contrastive losses need per-voxel embeddings, but a dense 256-channel map at 64x128x128 costs
~0.5 GB per patch in fp32 (METHOD.md section 2). ``forward`` therefore returns the last decoder feature
map (F = ``channels[0]`` channels, cheap) and the projection MLP runs only on voxels the loss sampled,
through :meth:`SegNet.project`.
"""

from __future__ import annotations

import logging
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from dvcl.errors import ConfigError
from dvcl.networks.blocks import TwoConv, UpSample, max_pool
from dvcl.networks.config import NetworkConfig

log = logging.getLogger(__name__)

_ACT = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True})


def _norm(kind: str, channels: int) -> tuple:
    """MONAI norm spec for ``channels`` feature maps (group norm picks a group count that divides them)."""
    if kind == "instance":
        return ("instance", {"affine": True})
    if kind == "batch":
        return ("batch", {})
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return ("group", {"num_groups": groups})


class _Down(nn.Sequential):
    """Max-pool by ``stride`` then two 3x3x3 convolutions (MONAI ``TwoConv``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: Tuple[int, int, int], norm: str, dropout: float) -> None:
        super().__init__()
        self.add_module("pool", max_pool(stride))
        self.add_module("convs", TwoConv(3, in_ch, out_ch, _ACT, _norm(norm, out_ch), True, dropout))


class _Up(nn.Module):
    """Up-sample by ``stride`` (transposed conv or trilinear), concatenate the skip, two convolutions."""

    def __init__(self, in_ch: int, skip_ch: int, stride: Tuple[int, int, int], norm: str, dropout: float,
                 mode: str) -> None:
        super().__init__()
        self.upsample = UpSample(3, in_ch, skip_ch, scale_factor=stride, mode=mode, interp_mode="trilinear",
                                 align_corners=False)
        self.convs = TwoConv(3, 2 * skip_ch, skip_ch, _ACT, _norm(norm, skip_ch), True, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([skip, self.upsample(x)], dim=1))


class ProjectionHead(nn.Module):
    """Linear-ReLU-Linear to ``out_dim``, then L2 normalisation (U2PL-style representation head)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim))

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        # normalise in fp32: under autocast the fp16 norm of 256 values can overflow/underflow
        return F.normalize(self.mlp(v).float(), dim=1)


class SegNet(nn.Module):
    """3D U-Net: ``forward(x) -> (logits (B,C,Z,Y,X), feats (B,F,Z,Y,X))``; ``project(v: (N,F)) -> (N,V)``.

    Inputs must have spatial sizes divisible by ``cfg.divisor`` (sliding-window inference uses such a window).
    """

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        if cfg.num_classes < 2:
            raise ConfigError(f"network.num_classes must be >= 2 (background + structures), got {cfg.num_classes}")
        self.cfg = cfg
        ch = cfg.channels
        strides = cfg.level_strides
        self.stem = TwoConv(3, cfg.in_channels, ch[0], _ACT, _norm(cfg.norm, ch[0]), True, cfg.dropout)
        self.down = nn.ModuleList(
            _Down(ch[i], ch[i + 1], strides[i], cfg.norm, cfg.dropout) for i in range(len(ch) - 1)
        )
        self.up = nn.ModuleList(
            _Up(ch[i + 1], ch[i], strides[i], cfg.norm, cfg.dropout, cfg.upsample) for i in reversed(range(len(ch) - 1))
        )
        self.seg_head = nn.Conv3d(ch[0], cfg.num_classes, kernel_size=1)
        self.proj_head = ProjectionHead(ch[0], cfg.feature_dim)
        self.apply(_init_weights)

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def feature_channels(self) -> int:
        """F, the channel count of the decoder features returned by :meth:`forward`."""
        return self.cfg.channels[0]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`ConfigError` when ``x`` is not (B, in_channels, Z, Y, X) with divisible sizes."""
        div = self.cfg.divisor
        if x.dim() != 5 or x.shape[1] != self.cfg.in_channels:
            raise ConfigError(f"network input must be (B, {self.cfg.in_channels}, Z, Y, X), got {tuple(x.shape)}")
        if any(s % d for s, d in zip(x.shape[2:], div)):
            raise ConfigError(f"network input size {tuple(x.shape[2:])} is not divisible by {div} (z, y, x)")

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        self.check_input(x)
        skips: List[torch.Tensor] = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips.pop()
        for block in self.up:
            y = block(y, skips.pop())
        return self.seg_head(y), y

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Logits only: the predictor that sliding-window inference calls."""
        return self.forward(x)[0]

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """Project sampled voxel features ``(N, F)`` to L2-normalised ``(N, feature_dim)`` embeddings."""
        if v.dim() != 2 or v.shape[1] != self.feature_channels:
            raise ConfigError(f"project() expects (N, {self.feature_channels}) features, got {tuple(v.shape)}")
        return self.proj_head(v)


def voxel_features(feats: torch.Tensor, flat_index: torch.Tensor) -> torch.Tensor:
    """Gather ``(N, F)`` feature vectors from ``feats (B, F, Z, Y, X)`` at flat voxel indices.

    ``flat_index`` indexes the flattened ``(B, Z, Y, X)`` grid (e.g. from ``mask.flatten().nonzero()``),
    the layout the losses sample voxels in. Only the gathered vectors enter the projection head.
    """
    b, f = feats.shape[:2]
    flat = feats.permute(0, 2, 3, 4, 1).reshape(-1, f)
    return flat.index_select(0, flat_index.to(feats.device).long())


def _init_weights(m: nn.Module) -> None:
    """He (Kaiming) initialisation for convolutions, as in nnU-Net; models A and B differ by RNG state."""
    if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(m.weight, a=0.1)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_network(cfg: NetworkConfig, num_classes: int | None = None) -> SegNet:
    """Build the network of ``cfg``; ``num_classes`` overrides ``cfg.num_classes`` (e.g. from the data set)."""
    if num_classes is not None and num_classes != cfg.num_classes:
        cfg = NetworkConfig.from_dict({**cfg.to_dict(), "num_classes": int(num_classes)})
    net = SegNet(cfg)
    log.debug("built SegNet %s with %d parameters", cfg.to_dict(), count_parameters(net))
    return net


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def patch_is_valid(cfg: NetworkConfig, patch: Sequence[int]) -> bool:
    """True when a (z, y, x) patch is divisible by the network's total down-sampling."""
    return all(int(p) % d == 0 for p, d in zip(patch, cfg.divisor))
