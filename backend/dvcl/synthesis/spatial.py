"""Spatial randomisation of the anatomy maps: a random affine (size, rotation) and a smooth elastic field.

Why on the anatomy grid: SynthSeg deforms the label map before any intensity exists, so organ shapes vary
independently of appearance; doing it on the (coarse, isotropic) anatomy grid with nearest-neighbour sampling
keeps labels exact and costs one resampling of one array (labels and tissues travel packed together).
"""

from __future__ import annotations

import logging
from typing import Dict

import numpy as np
from scipy import ndimage

from dvcl.synthesis.anatomy import Anatomy
from dvcl.synthesis.config import SynthesisConfig

log = logging.getLogger(__name__)


def lerp_axis(arr: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``arr`` along one axis at fractional indices ``pos`` (clamped to the edges).
    Separable resampling with it costs a few array passes, far less than ``ndimage.zoom``/``map_coordinates``."""
    n = arr.shape[axis]
    pos = np.clip(np.asarray(pos, np.float64), 0, n - 1)
    i0 = np.minimum(np.floor(pos).astype(np.intp), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    shape = [1] * arr.ndim
    shape[axis] = -1
    w = (pos - i0).astype(np.float32).reshape(shape)
    out = np.take(arr, i0, axis=axis).astype(np.float32, copy=False)
    out *= 1 - w
    out += np.take(arr, i1, axis=axis) * w
    return out


def smooth_field(rng: np.random.Generator, shape, cell_vox: float) -> np.ndarray:
    """A smooth random field of ``shape``: standard normal values on a grid of one point per ``cell_vox``
    voxels, interpolated linearly (separably). Cheap: the random grid is tiny."""
    coarse = tuple(max(2, int(np.ceil(n / max(cell_vox, 1e-3))) + 1) for n in shape)
    field = rng.standard_normal(coarse).astype(np.float32)
    for axis, n in enumerate(shape):
        field = lerp_axis(field, axis, np.arange(n) / max(cell_vox, 1e-3))
    return field


def random_rotation(rng: np.random.Generator, z_deg: float, xy_deg: float) -> np.ndarray:
    """Rotation about z (axial plane) by up to ``z_deg`` and about x and y by up to ``xy_deg`` degrees."""
    ax, ay = np.deg2rad(rng.uniform(-xy_deg, xy_deg, size=2))
    az = np.deg2rad(rng.uniform(-z_deg, z_deg))
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def deform(a: Anatomy, rng: np.random.Generator, cfg: SynthesisConfig) -> Dict[str, object]:
    """Warp ``a`` in place (labels and tissues together, nearest neighbour) and return what was drawn.

    The map from an output voxel to where it samples the input is ``c + M (p - c) + u(p)``: ``M`` the
    inverse of a random scaling and rotation about the body centre ``c``, ``u`` a smooth random displacement.
    All draws happen whatever the switches, so turning one off leaves the other draws unchanged.
    """
    scale = rng.uniform(*cfg.scale, size=3)
    rot = random_rotation(rng, cfg.rotate_z_deg, cfg.rotate_xy_deg)
    sd = float(rng.uniform(*cfg.elastic_mm))
    field_seed = int(rng.integers(2**32))
    info = {"scale": [float(v) for v in scale] if cfg.affine else [1.0, 1.0, 1.0],
            "elastic_sd_mm": sd if cfg.elastic else 0.0}
    if not (cfg.affine or (cfg.elastic and sd > 0)):
        return info
    shape = a.label.shape
    g = a.spacing
    # index-space coordinates (z, y, x) of every voxel relative to the body centre
    centre = np.array([(shape[0] - 1) / 2.0, (a.body_center[1] - a.origin[1]) / g,
                       (a.body_center[0] - a.origin[0]) / g])
    M = np.eye(3)
    if cfg.affine:
        # (z, y, x) order: reverse both axes of the (x, y, z) matrix
        A = (rot @ np.diag(scale))[::-1, ::-1]
        M = np.linalg.inv(A)
    zz, yy, xx = (np.arange(n, dtype=np.float32) - c for n, c in zip(shape, centre))
    coords = np.empty((3,) + shape, np.float32)
    for r in range(3):
        coords[r] = (M[r, 0] * zz[:, None, None] + M[r, 1] * yy[None, :, None] + M[r, 2] * xx[None, None, :]
                     + centre[r])
    if cfg.elastic and sd > 0:
        frng = np.random.default_rng(field_seed)
        for r in range(3):
            coords[r] += smooth_field(frng, shape, cfg.elastic_grid_mm / g) * np.float32(sd / g)
    packed = a.label.astype(np.uint16) * 256 + a.tissue
    warped = ndimage.map_coordinates(packed, coords, order=0, mode="nearest")
    a.label = (warped // 256).astype(np.uint8)
    a.tissue = (warped % 256).astype(np.uint8)
    return info
