"""3D U-Net with a segmentation head and a sparse 256-d projection head (docs/architecture.md, "Network").

``NetworkConfig`` is torch-free; ``build_network``/``SegNet`` are imported lazily so that reading a config
does not import torch.
"""

from __future__ import annotations

from typing import Any

from dvcl.networks.config import NetworkConfig

__all__ = ["NetworkConfig", "build_network", "SegNet", "voxel_features"]


def __getattr__(name: str) -> Any:
    if name in ("build_network", "SegNet", "voxel_features", "count_parameters"):
        from dvcl.networks import unet

        return getattr(unet, name)
    raise AttributeError(f"module 'dvcl.networks' has no attribute {name!r}")
