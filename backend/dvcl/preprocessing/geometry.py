"""Image grids (size, spacing, origin, direction) and the record that lets a prediction go back home."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import SimpleITK as sitk


@dataclass(frozen=True)
class Grid:
    """The geometry of a SimpleITK image, in ITK's (x, y, z) order."""

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]

    @classmethod
    def of(cls, img: sitk.Image) -> Grid:
        return cls(
            size=tuple(int(v) for v in img.GetSize()),
            spacing=tuple(float(v) for v in img.GetSpacing()),
            origin=tuple(float(v) for v in img.GetOrigin()),
            direction=tuple(float(v) for v in img.GetDirection()),
        )

    def apply(self, img: sitk.Image) -> sitk.Image:
        """Stamp this grid's spacing/origin/direction on ``img`` (whose size must match)."""
        if tuple(img.GetSize()) != self.size:
            raise ValueError(f"image size {img.GetSize()} does not match grid size {self.size}")
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img

    def reference_image(self, pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
        ref = sitk.Image(list(self.size), pixel_type)
        return self.apply(ref)

    def to_dict(self) -> dict:
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        return cls(tuple(int(v) for v in d["size"]), tuple(float(v) for v in d["spacing"]),
                   tuple(float(v) for v in d["origin"]), tuple(float(v) for v in d["direction"]))


@dataclass(frozen=True)
class GeometryRecord:
    """Where a preprocessed array came from: the original grid and the resampled (network) grid.

    Both grids describe the same physical space, so restoring a prediction is a single resampling of the
    network-grid array onto the original grid; no orientation bookkeeping can go wrong.
    """

    original: Grid
    resampled: Grid

    def to_dict(self) -> dict:
        return {"original": self.original.to_dict(), "resampled": self.resampled.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> GeometryRecord:
        return cls(Grid.from_dict(d["original"]), Grid.from_dict(d["resampled"]))
