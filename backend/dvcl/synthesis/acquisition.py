"""Acquisition: what a CT scanner does to the object. Bias, point-spread function and slice profile, sampling
at the scan's spacing (0.6-1 mm in-plane, 0.6-5 mm slices), field of view, correlated noise, streaks.

Why this order: blur happens to the continuous object, then the scanner samples it, then noise is added per
reconstructed voxel (so it is as fine as the output pixels, correlated over about one pixel, research note
section 3.2). Blurring on the anatomy grid before sampling is SynthSeg's "blur then downsample" (its blur
sigma 0.75 x thickness / voxel; here the slice profile's FWHM is the reconstructed thickness). The output
keeps the drawn spacing, so ``dvcl prepare`` resamples it exactly like a real scan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

from dvcl.synthesis.anatomy import Anatomy
from dvcl.synthesis.config import SynthesisConfig
from dvcl.synthesis.priors import T
from dvcl.synthesis.spatial import lerp_axis, smooth_field

log = logging.getLogger(__name__)

FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))  # Gaussian FWHM / sigma


@dataclass
class Acquisition:
    """The output grid (x, y, z order, LPS identity direction) and the scanner's settings for one case."""

    spacing: Tuple[float, float, float]
    size: Tuple[int, int, int]
    origin: Tuple[float, float, float]
    thickness: float
    psf_fwhm_mm: float
    noise_sd: float
    noise_corr_px: float
    info: Dict[str, object] = field(default_factory=dict)


def draw_acquisition(a: Anatomy, rng: np.random.Generator, cfg: SynthesisConfig) -> Acquisition:
    """Spacing, thickness, field of view (whole body, or truncated with ``cfg.fov``) and noise of one scan."""
    s_xy = float(rng.uniform(*cfg.in_plane_mm))
    s_z = float(rng.uniform(*cfg.slice_mm))
    thick_f = float(rng.uniform(*cfg.thickness_factor))
    psf_px = float(rng.uniform(*cfg.psf_fwhm_px))
    noise_sd = float(rng.uniform(*cfg.noise_sd))
    noise_corr = float(rng.uniform(*cfg.noise_corr_px))
    margin, offset = rng.uniform(1.02, 1.15), rng.normal(0, 8, size=2)
    u_zcrop, u_xycrop, z_frac, z_pos, xy_frac = rng.uniform(size=5)
    if not cfg.resolution:
        s_xy, s_z, thick_f = float(cfg.fixed_spacing[0]), float(cfg.fixed_spacing[2]), 1.0
    s_y = float(cfg.fixed_spacing[1]) if not cfg.resolution else s_xy

    # the body's in-plane box (everything but air and table), over all slices
    body = np.any((a.tissue != T["air"]) & (a.tissue != T["table"]), axis=0)
    rows, cols = np.nonzero(body)
    if rows.size == 0:
        rows, cols = np.array([0, body.shape[0] - 1]), np.array([0, body.shape[1] - 1])
    g = a.spacing
    x0, x1 = a.origin[0] + g * cols.min(), a.origin[0] + g * cols.max()
    y0, y1 = a.origin[1] + g * rows.min(), a.origin[1] + g * rows.max()
    side = max(x1 - x0, y1 - y0) * margin
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + (offset if cfg.fov else 0.0)
    fov_x = fov_y = side
    cropped = []
    if cfg.fov and u_xycrop < cfg.fov_xy_crop_p:
        fov_x = (x1 - x0) * (0.7 + 0.25 * xy_frac)  # a reconstruction narrower than the body
        cropped.append("xy")
    z_lo = a.origin[2]
    z_len = g * (a.label.shape[0] - 1)
    if cfg.fov and u_zcrop < cfg.fov_z_crop_p:
        keep = z_len * (0.5 + 0.4 * z_frac)
        z_lo += (z_len - keep) * z_pos
        z_len = keep
        cropped.append("z")
    if cfg.resolution:  # a scanner's matrix: the pixel is at least FOV / matrix (0.98 mm for 500 mm and 512)
        s_xy = s_y = float(min(max(s_xy, min(fov_y, cfg.max_fov_mm) / cfg.matrix), cfg.in_plane_mm[1]))
    fov_x, fov_y = min(fov_x, cfg.max_fov_mm), min(fov_y, cfg.max_fov_mm)
    nx = min(max(8, int(round(fov_x / s_xy))), cfg.matrix)
    ny = min(max(8, int(round(fov_y / s_y))), cfg.matrix)
    nz = max(4, int(np.floor(z_len / s_z)) + 1)
    if nx * ny * nz > cfg.max_voxels:
        s_z_fit = z_len / max(cfg.max_voxels // (nx * ny) - 1, 1)
        s_z_new = float(min(max(s_z, s_z_fit), cfg.slice_mm[1] if cfg.resolution else s_z))
        nz = max(4, min(int(np.floor(z_len / s_z_new)) + 1, cfg.max_voxels // (nx * ny)))
        log.info("synthetic scan over the voxel budget (%d): slice spacing %.2f -> %.2f mm, %d slices",
                 cfg.max_voxels, s_z, s_z_new, nz)
        s_z = s_z_new
    z_lo += (z_len - (nz - 1) * s_z) / 2
    origin = (float(centre[0] - (nx - 1) / 2 * s_xy), float(centre[1] - (ny - 1) / 2 * s_y), float(z_lo))
    info = {"spacing": [round(s_xy, 4), round(s_y, 4), round(s_z, 4)], "thickness": round(s_z * thick_f, 3),
            "fov_crop": cropped}
    return Acquisition((s_xy, s_y, s_z), (nx, ny, nz), origin, s_z * thick_f, psf_px * s_xy, noise_sd, noise_corr,
                       info)


def apply_bias(img: np.ndarray, a: Anatomy, rng: np.random.Generator, cfg: SynthesisConfig) -> Dict[str, float]:
    """Low-frequency non-uniformity, in place: a gain on attenuation (HU + 1000) and an additive offset."""
    gain, add = float(rng.uniform(0, cfg.bias_gain)), float(rng.uniform(0, cfg.bias_hu))
    seed = int(rng.integers(2**32))
    if not cfg.bias:
        return {"gain": 0.0, "offset_hu": 0.0}
    frng = np.random.default_rng(seed)
    cell = 120.0 / a.spacing
    fg = smooth_field(frng, img.shape, cell)
    fa = smooth_field(frng, img.shape, cell)
    fg /= max(float(np.abs(fg).max()), 1e-6)
    fa /= max(float(np.abs(fa).max()), 1e-6)
    img += (img + 1000.0) * (gain * fg) + add * fa
    return {"gain": round(gain, 4), "offset_hu": round(add, 2)}


def _nearest_axis(arr: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    idx = np.clip(np.rint(pos), 0, arr.shape[axis] - 1).astype(np.intp)
    return np.take(arr, idx, axis=axis)


def _positions(acq: Acquisition, a: Anatomy) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fractional anatomy-grid indices (z, y, x) of the output grid's slices, rows and columns."""
    g = a.spacing
    return tuple((acq.origin[ax] + acq.spacing[ax] * np.arange(acq.size[ax]) - a.origin[ax]) / g
                 for ax in (2, 1, 0))


def sample(img: np.ndarray, a: Anatomy, acq: Acquisition, cfg: SynthesisConfig,
           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blur (PSF in-plane, slice profile along z) on the anatomy grid, then sample image (linear), labels and
    tissues (nearest) on the output grid. Returns (image, label, tissue), (Z, Y, X)."""
    if cfg.blur:
        sig = (acq.thickness / FWHM / a.spacing, acq.psf_fwhm_mm / FWHM / a.spacing,
               acq.psf_fwhm_mm / FWHM / a.spacing)
        img = ndimage.gaussian_filter(img, sig, mode="nearest", truncate=3.0)
    pz, py, px = _positions(acq, a)
    out = lerp_axis(lerp_axis(lerp_axis(img, 0, pz), 1, py), 2, px)
    lab = _nearest_axis(_nearest_axis(_nearest_axis(a.label, 0, pz), 1, py), 2, px)
    tis = _nearest_axis(_nearest_axis(_nearest_axis(a.tissue, 0, pz), 1, py), 2, px)
    # outside the anatomy grid: air (the clamped edges would smear the border otherwise)
    for axis, pos, n in ((0, pz, a.label.shape[0]), (1, py, a.label.shape[1]), (2, px, a.label.shape[2])):
        outside = (pos < -0.5) | (pos > n - 0.5)
        if outside.any():
            sl = [slice(None)] * 3
            sl[axis] = outside
            out[tuple(sl)] = -1000.0
            lab[tuple(sl)] = 0
            tis[tuple(sl)] = T["air"]
    return out, lab, tis


def add_noise(img: np.ndarray, acq: Acquisition, rng: np.random.Generator, cfg: SynthesisConfig) -> None:
    """Gaussian noise correlated in-plane over about one pixel, scaled to ``acq.noise_sd`` HU (in place)."""
    seed = int(rng.integers(2**32))
    if not cfg.noise:
        return
    noise = np.random.default_rng(seed).standard_normal(img.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, (0, acq.noise_corr_px, acq.noise_corr_px), mode="wrap", truncate=2.5)
    noise *= np.float32(acq.noise_sd / max(float(noise.std()), 1e-6))
    img += noise


def add_streaks(img: np.ndarray, tissue: np.ndarray, acq: Acquisition, rng: np.random.Generator,
                cfg: SynthesisConfig) -> Dict[str, object]:
    """Beam-hardening-like streaks (in place): dark bands along lines joining dense structures (between the
    spine and the ribs or the two sides of the pelvis in real CT), and bright/dark rays from metal. A cheap
    stand-in for reconstruction artefacts: one in-plane pattern per case, weighted per slice by how much dense
    material the slice holds, only inside the body."""
    u, amp, n_lines, seed = rng.uniform(), rng.uniform(*cfg.streaks_hu), int(rng.integers(3, 9)), rng.integers(2**32)
    metal = tissue == T["metal"]
    has_metal = bool(metal.any())
    if not cfg.streaks or (u >= cfg.streaks_p and not has_metal):
        return {"streaks": False}
    srng = np.random.default_rng(seed)
    dense = (tissue == T["bone_cortical"]) | metal
    per_slice = dense.sum(axis=(1, 2)).astype(np.float32)
    if per_slice.max() == 0:
        return {"streaks": False}
    weight = per_slice / per_slice.max()
    pts = np.argwhere(dense[int(np.argmax(per_slice))])  # (row, col) of dense pixels in the densest slice
    ny, nx = img.shape[1:]
    rr, cc = np.mgrid[0:ny, 0:nx].astype(np.float32)
    pattern = np.zeros((ny, nx), np.float32)
    width = max(1.0, 1.5 / acq.spacing[0])
    for _ in range(n_lines):  # a dark band between two dense points
        (r0, c0), (r1, c1) = pts[srng.integers(len(pts))], pts[srng.integers(len(pts))]
        d = np.hypot(r1 - r0, c1 - c0)
        if d < 10:
            continue
        nr, nc = (c1 - c0) / d, -(r1 - r0) / d  # unit normal of the line
        dist = np.abs((rr - r0) * nr + (cc - c0) * nc)
        pattern -= amp * srng.uniform(0.5, 1.0) * np.exp(-0.5 * (dist / width) ** 2)
    if has_metal:
        mw = metal.sum(axis=(1, 2)).astype(np.float32)
        mp = np.argwhere(metal[int(np.argmax(mw))]).mean(axis=0)
        for theta in srng.uniform(0, np.pi, size=12):
            dist = np.abs((rr - mp[0]) * np.cos(theta) - (cc - mp[1]) * np.sin(theta))
            pattern += srng.choice([-1.0, 1.0]) * srng.uniform(100, 400) * np.exp(-0.5 * (dist / width) ** 2)
        weight = np.maximum(weight, np.convolve(mw > 0, np.ones(5), mode="same").clip(0, 1))
    body = tissue != T["air"]
    for k in np.nonzero(weight > 0.05)[0]:
        img[k] += np.where(body[k], weight[k] * pattern, 0.0)
    return {"streaks": True, "metal": has_metal}
