"""Building blocks of the synthetic CT phantoms: image grids, smooth random shapes, a painting canvas.

Why it is built this way:

* Anatomy is described in a patient-fixed *anatomy frame* in millimetres (LPS: x towards the patient's left,
  y posterior, z superior, origin at the body centre). Every voxel's physical position is computed from the
  image's origin, spacing and direction matrix and mapped into that frame, so the anatomy is correct whatever
  the direction matrix (flipped, permuted or oblique grids all show the liver on the patient's right).
* Shapes are implicit functions (negative inside, roughly in mm) so they can be combined with min/max and
  evaluated on any set of points; each one is evaluated only inside its bounding box, which keeps one
  128 x 128 x 64 phantom well under a second of vectorised numpy.
* Randomness lives in low-frequency terms (a smooth global displacement of the frame, random Fourier bumps
  on each organ, a coarse band-limited noise volume for bowel loops and organ texture): phantoms differ in
  shape the way patients do, without high-frequency artefacts a network could key on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from dvcl.errors import ConfigError

Array = np.ndarray
Vec = Union[Sequence[float], Array]

#: Direction matrices a phantom may get, named by SimpleITK's (DICOM "towards") letters: "LPS" is the
#: identity, "RAS" is what NIfTI files written by nibabel-style tools typically hold, "LPI"/"RAI" are
#: feet-first stacks. Anatomy does not depend on the choice, only the storage order of the voxels does.
DIRECTIONS: Dict[str, Tuple[float, ...]] = {
    "LPS": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    "RAS": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
    "LPI": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    "RAI": (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0),
}


# --------------------------------------------------------------------------------------------------------------
# rotations and random helpers
# --------------------------------------------------------------------------------------------------------------
def rotation(ax: float = 0.0, ay: float = 0.0, az: float = 0.0) -> Array:
    """Rotation matrix for angles (radians) about x, then y, then z (columns are the local axes)."""
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def frame_from_axis(axis: Vec, roll: float = 0.0) -> Array:
    """Rotation whose local z axis points along ``axis`` (for organs defined by a long axis, e.g. the heart)."""
    w = np.asarray(axis, float)
    w = w / np.linalg.norm(w)
    helper = np.array([0.0, 0.0, 1.0]) if abs(w[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(helper, w)
    u /= np.linalg.norm(u)
    v = np.cross(w, u)
    cr, sr = math.cos(roll), math.sin(roll)
    u, v = cr * u + sr * v, -sr * u + cr * v
    return np.stack([u, v, w], axis=1)


def random_rotation(rng: np.random.Generator, max_deg: float) -> Array:
    """A small random rotation (each Euler angle uniform in +-max_deg)."""
    a = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    return rotation(*a)


class FourierNoise:
    """A smooth random scalar function of 3D points: a few random sine waves.

    Evaluated analytically, so it costs a handful of array operations and needs no grid; used for the organ
    surface bumps (on normalised local coordinates) and for the global displacement (on millimetres).
    """

    def __init__(self, rng: np.random.Generator, n_terms: int, freq: Tuple[float, float], amp: float) -> None:
        dirs = rng.normal(size=(n_terms, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        self.k = (dirs * rng.uniform(freq[0], freq[1], size=(n_terms, 1))).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=n_terms).astype(np.float32)
        w = rng.normal(size=n_terms)
        self.w = (amp * w / max(np.sqrt(np.sum(w**2)), 1e-6)).astype(np.float32)
        self.bound = float(np.abs(self.w).sum())  # |f| never exceeds this

    def __call__(self, x: Array, y: Array, z: Array) -> Array:
        out = np.zeros(np.shape(x), np.float32)
        for (kx, ky, kz), ph, w in zip(self.k, self.phase, self.w):
            out += w * np.sin(kx * x + ky * y + kz * z + ph)
        return out


# --------------------------------------------------------------------------------------------------------------
# shapes (implicit functions, negative inside, approximately millimetres)
# --------------------------------------------------------------------------------------------------------------
class Shape:
    """An implicit solid: ``sdf(x, y, z) <= 0`` inside; ``bounds()`` is an axis-aligned box containing it."""

    def sdf(self, x: Array, y: Array, z: Array) -> Array:  # pragma: no cover - interface
        raise NotImplementedError

    def bounds(self) -> Tuple[Array, Array]:  # pragma: no cover - interface
        raise NotImplementedError

    def __or__(self, other: Shape) -> Shape:
        return Merged(self, other)

    def __and__(self, other: Shape) -> Shape:
        return Intersect(self, other)

    def __sub__(self, other: Shape) -> Shape:
        return Subtract(self, other)


class Ellipsoid(Shape):
    """A deformed ellipsoid: rotated, optionally bent, with smooth random bumps on its surface.

    ``bend`` (b_y, b_z) adds ``b_y * q_y**2 + b_z * q_z**2`` to local x (q = normalised local coordinates):
    the ends of the ellipsoid curve towards local -x, turning it into a crescent convex towards +x (the
    spleen against the ribs).
    ``bumps`` is the relative amplitude of the surface noise.
    """

    def __init__(self, center: Vec, radii: Vec, rot: Optional[Array] = None, bend: Tuple[float, float] = (0.0, 0.0),
                 bumps: float = 0.0, rng: Optional[np.random.Generator] = None) -> None:
        self.c = np.asarray(center, np.float32)
        self.r = np.maximum(np.asarray(radii, np.float32), 0.5)
        self.rot = np.eye(3, dtype=np.float32) if rot is None else np.asarray(rot, np.float32)
        self.bend = bend
        self.noise = FourierNoise(rng, 5, (1.5, 3.0), bumps) if (bumps > 0 and rng is not None) else None

    def local(self, x: Array, y: Array, z: Array) -> Tuple[Array, Array, Array]:
        dx, dy, dz = x - self.c[0], y - self.c[1], z - self.c[2]
        R = self.rot
        qx = (R[0, 0] * dx + R[1, 0] * dy + R[2, 0] * dz) / self.r[0]
        qy = (R[0, 1] * dx + R[1, 1] * dy + R[2, 1] * dz) / self.r[1]
        qz = (R[0, 2] * dx + R[1, 2] * dy + R[2, 2] * dz) / self.r[2]
        if self.bend[0]:
            qx = qx + self.bend[0] * qy * qy
        if self.bend[1]:
            qx = qx + self.bend[1] * qz * qz
        return qx, qy, qz

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        qx, qy, qz = self.local(x, y, z)
        rho = np.sqrt(qx * qx + qy * qy + qz * qz)
        if self.noise is not None:
            rho = rho - self.noise(qx, qy, qz)
        return (rho - 1.0) * float(self.r.min())

    def bounds(self) -> Tuple[Array, Array]:
        extent = float(self.r.max()) * (1.0 + abs(self.bend[0]) + abs(self.bend[1])) * 1.3
        return self.c - extent, self.c + extent


class Tube(Shape):
    """A tube of varying radius around a polyline (vessels, oesophagus, bowel, pancreas, stomach).

    ``radii`` is one number, one per point, or a few values spread evenly along the polyline (e.g. one per
    control point of a :func:`smooth_curve`) and interpolated in between.
    """

    def __init__(self, points: Vec, radii: Union[float, Vec], scale: Tuple[float, float, float] = (1.0, 1.0, 1.0),
                 ) -> None:
        self.p = np.asarray(points, np.float32)
        r = np.atleast_1d(np.asarray(radii, np.float32))
        if len(r) != len(self.p):
            r = np.interp(np.linspace(0, 1, len(self.p)), np.linspace(0, 1, len(r)), r).astype(np.float32)
        self.rad = r
        self.scale = np.asarray(scale, np.float32)  # anisotropy of the cross-section (e.g. a flat IVC)

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        s = self.scale
        xs, ys, zs = x / s[0], y / s[1], z / s[2]
        p = self.p / s
        best = None
        for i in range(len(p) - 1):
            a, b = p[i], p[i + 1]
            ab = b - a
            L2 = float(ab @ ab) or 1e-6
            t = ((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1] + (zs - a[2]) * ab[2]) / L2
            np.clip(t, 0.0, 1.0, out=t)
            ex, ey, ez = xs - (a[0] + t * ab[0]), ys - (a[1] + t * ab[1]), zs - (a[2] + t * ab[2])
            d = np.sqrt(ex * ex + ey * ey + ez * ez) - (self.rad[i] + t * (self.rad[i + 1] - self.rad[i]))
            best = d if best is None else np.minimum(best, d)
        return best * float(s.min())

    def bounds(self) -> Tuple[Array, Array]:
        r = float(self.rad.max()) * float(self.scale.max())
        return self.p.min(0) - r, self.p.max(0) + r


class Func(Shape):
    """An arbitrary implicit function with a given bounding box (half-spaces, the diaphragm, rib arcs)."""

    def __init__(self, fn: Callable[[Array, Array, Array], Array], lo: Vec, hi: Vec) -> None:
        self.fn = fn
        self.lo, self.hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        return self.fn(x, y, z)

    def bounds(self) -> Tuple[Array, Array]:
        return self.lo, self.hi


class Bumpy(Shape):
    """A shape with smooth random bumps of ``amp_mm`` and wavelength about ``wavelength_mm`` on its surface."""

    def __init__(self, shape: Shape, rng: np.random.Generator, amp_mm: float, wavelength_mm: float,
                 n_terms: int = 6) -> None:
        self.shape = shape
        f = 2 * np.pi / wavelength_mm
        self.noise = FourierNoise(rng, n_terms, (0.6 * f, 1.4 * f), amp_mm * np.sqrt(2.0))
        self.amp = amp_mm

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        return self.shape.sdf(x, y, z) - self.noise(x, y, z)

    def bounds(self) -> Tuple[Array, Array]:
        lo, hi = self.shape.bounds()
        return lo - 2 * self.amp, hi + 2 * self.amp


class Merged(Shape):
    """Union of shapes (the minimum of their implicit functions)."""

    def __init__(self, *shapes: Shape) -> None:
        self.shapes = shapes

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        out = self.shapes[0].sdf(x, y, z)
        for s in self.shapes[1:]:
            out = np.minimum(out, s.sdf(x, y, z))
        return out

    def bounds(self) -> Tuple[Array, Array]:
        los, his = zip(*(s.bounds() for s in self.shapes))
        return np.min(los, axis=0), np.max(his, axis=0)


class Intersect(Shape):
    def __init__(self, a: Shape, b: Shape) -> None:
        self.a, self.b = a, b

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        return np.maximum(self.a.sdf(x, y, z), self.b.sdf(x, y, z))

    def bounds(self) -> Tuple[Array, Array]:
        (la, ha), (lb, hb) = self.a.bounds(), self.b.bounds()
        return np.maximum(la, lb), np.minimum(ha, hb)


class Subtract(Shape):
    def __init__(self, a: Shape, b: Shape) -> None:
        self.a, self.b = a, b

    def sdf(self, x: Array, y: Array, z: Array) -> Array:
        return np.maximum(self.a.sdf(x, y, z), -self.b.sdf(x, y, z))

    def bounds(self) -> Tuple[Array, Array]:
        return self.a.bounds()


def smooth_curve(points: Vec, n: int = 12) -> Array:
    """Resample control points into a smooth polyline (Catmull-Rom through the points)."""
    p = np.asarray(points, float)
    if len(p) < 3:
        t = np.linspace(0, 1, n)[:, None]
        return p[0] * (1 - t) + p[-1] * t
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = []
    per = max(2, int(math.ceil(n / (len(p) - 1))))
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        for t in np.linspace(0, 1, per, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    out.append(p[-1])
    return np.asarray(out)


# --------------------------------------------------------------------------------------------------------------
# image grid and the anatomy frame
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhantomGrid:
    """An image grid (ITK order x, y, z) plus the rigid map from physical space to the anatomy frame.

    ``anatomy = rot.T @ (physical - body_center)``; ``rot`` is a small patient rotation about z.
    """

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    direction: Tuple[float, ...]
    body_center: Tuple[float, float, float]
    rot: Tuple[float, ...]

    @property
    def D(self) -> Array:
        return np.asarray(self.direction, float).reshape(3, 3)

    @property
    def R(self) -> Array:
        return np.asarray(self.rot, float).reshape(3, 3)

    @property
    def shape(self) -> Tuple[int, int, int]:
        """numpy array shape (z, y, x)."""
        return (self.size[2], self.size[1], self.size[0])

    def anatomy_coords(self) -> Tuple[Array, Array, Array]:
        """Anatomy-frame coordinates (mm) of every voxel centre, each a float32 array of ``shape``."""
        D, R = self.D, self.R
        M = R.T @ D @ np.diag(self.spacing)  # index -> anatomy, linear part
        t = R.T @ (np.asarray(self.origin) - np.asarray(self.body_center))
        nz, ny, nx = self.shape
        i = np.arange(nx, dtype=np.float32)[None, None, :]
        j = np.arange(ny, dtype=np.float32)[None, :, None]
        k = np.arange(nz, dtype=np.float32)[:, None, None]
        out = []
        for a in range(3):
            arr = np.empty(self.shape, np.float32)
            arr[...] = np.float32(t[a]) + np.float32(M[a, 0]) * i
            arr += np.float32(M[a, 1]) * j
            arr += np.float32(M[a, 2]) * k
            out.append(arr)
        return out[0], out[1], out[2]

    def index_slices(self, lo: Vec, hi: Vec) -> Optional[Tuple[slice, slice, slice]]:
        """Array slices (z, y, x) covering the anatomy-frame box [lo, hi], or None if it misses the grid."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        if np.any(hi < lo):
            return None
        corners = np.array([[lo[0] if a == 0 else hi[0], lo[1] if b == 0 else hi[1], lo[2] if c == 0 else hi[2]]
                            for a in (0, 1) for b in (0, 1) for c in (0, 1)])
        phys = corners @ self.R.T + np.asarray(self.body_center)
        M = self.D @ np.diag(self.spacing)
        idx = np.linalg.solve(M, (phys - np.asarray(self.origin)).T).T
        imin = np.floor(idx.min(0)).astype(int)
        imax = np.ceil(idx.max(0)).astype(int)
        imin = np.maximum(imin, 0)
        imax = np.minimum(imax, np.asarray(self.size) - 1)
        if np.any(imax < imin):
            return None
        return (slice(imin[2], imax[2] + 1), slice(imin[1], imax[1] + 1), slice(imin[0], imax[0] + 1))

    def to_image(self, arr: Array) -> sitk.Image:
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img


class GridDraw:
    """The random numbers that define a phantom's image grid, drawn up front.

    Everything is drawn whether or not the caller overrides it, so overriding e.g. the size leaves the rest
    of the case (anatomy, contrast, noise) unchanged. The grid is finished in two steps because the body's
    size depends on the in-plane field of view and the slice spacing on the body's size.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.nx = int(rng.integers(96, 161))
        self.ny = int(np.clip(self.nx + rng.integers(-16, 17), 96, 160))
        self.nz = int(rng.integers(40, 81))
        self.u_sp = float(rng.uniform())
        self.u_z = float(rng.uniform())
        self.direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
        self.shift = rng.uniform(-0.04, 0.04, size=3)
        self.body_center = (float(rng.uniform(-20, 20)), float(rng.uniform(-40, 40)), float(rng.uniform(-600, 200)))
        self.patient_rot = rotation(0.0, 0.0, float(np.deg2rad(rng.uniform(-6, 6))))

    def in_plane(self, size: Optional[Sequence[int]], spacing: Optional[Sequence[float]],
                 min_fov_mm: float) -> Tuple[Array, Array]:
        """Voxel counts (x, y, z) and in-plane spacing (x, y); the field of view is at least ``min_fov_mm``."""
        n = np.array([self.nx, self.ny, self.nz]) if size is None else np.array([int(v) for v in size])
        if n.shape != (3,) or np.any(n < 8):
            raise ConfigError(f"phantom size must be 3 voxel counts >= 8 (x, y, z), got {size}")
        if spacing is not None:
            if len(spacing) != 3 or not all(0 < float(v) < 20 for v in spacing):
                raise ConfigError(f"phantom spacing must be 3 positive millimetre values (x, y, z), got {spacing}")
            return n, np.array([float(spacing[0]), float(spacing[1])])
        lo = max(0.7, min_fov_mm / min(n[0], n[1]))
        sp = lo + self.u_sp * (1.5 - lo) if lo < 1.5 else lo
        return n, np.array([sp, sp])

    def slice_spacing(self, n_z: int, extent_mm: float, allowed: Tuple[float, float],
                      spacing: Optional[Sequence[float]]) -> float:
        """Slice spacing so that ``n_z`` slices cover about ``extent_mm`` (clipped to ``allowed``)."""
        if spacing is not None:
            return float(spacing[2])
        return float(np.clip(extent_mm / n_z * (0.92 + 0.16 * self.u_z), *allowed))

    def build(self, n: Array, spacing: Array, center_z: float,
              direction: Optional[Union[str, Sequence[float]]]) -> PhantomGrid:
        """The grid whose field-of-view centre sits at ``(0, 0, center_z)`` of the anatomy frame (+- a shift)."""
        if direction is None:
            direction = self.direction
        if isinstance(direction, str):
            if direction.upper() not in DIRECTIONS:
                raise ConfigError(f"unknown phantom direction '{direction}': choose one of {', '.join(DIRECTIONS)} "
                                  "or give 9 numbers")
            D = DIRECTIONS[direction.upper()]
        else:
            D = tuple(float(v) for v in direction)
            Dm = np.asarray(D).reshape(3, 3) if len(D) == 9 else None
            if Dm is None or not np.allclose(Dm @ Dm.T, np.eye(3), atol=1e-4):
                raise ConfigError(f"phantom direction must be an orthonormal 3x3 matrix (9 numbers), got {direction}")
        sizes = np.asarray(n, float)
        sp = np.asarray(spacing, float)
        fov = sizes * sp
        center_anat = np.array([self.shift[0] * fov[0], self.shift[1] * fov[1], center_z + self.shift[2] * fov[2]])
        center_phys = np.asarray(self.body_center) + self.patient_rot @ center_anat
        origin = center_phys - np.asarray(D).reshape(3, 3) @ ((sizes - 1) * sp / 2.0)
        return PhantomGrid(tuple(int(v) for v in n), tuple(float(v) for v in sp), tuple(float(v) for v in origin),
                           tuple(D), self.body_center, tuple(float(v) for v in self.patient_rot.ravel()))


# --------------------------------------------------------------------------------------------------------------
# band-limited noise volume
# --------------------------------------------------------------------------------------------------------------
class NoiseVolume:
    """Smooth random fields (unit standard deviation) on a coarse anatomy-aligned grid, sampled trilinearly.

    Used where a closed-form field would need too many terms: bowel loops (blobs of one field), gas pockets
    and organ texture. The grid lives in the anatomy frame, so the pattern does not depend on the image grid.
    """

    def __init__(self, rng: np.random.Generator, lo: Vec, hi: Vec, cell_mm: float, channels: int,
                 smooth_cells: float = 1.2) -> None:
        self.lo = np.asarray(lo, np.float32)
        self.cell = float(cell_mm)
        n = np.maximum(np.ceil((np.asarray(hi) - self.lo) / self.cell).astype(int) + 2, 4)
        self.fields = []
        for _ in range(channels):
            f = ndimage.gaussian_filter(rng.standard_normal(tuple(n)).astype(np.float32), smooth_cells,
                                        mode="wrap")
            f /= max(float(f.std()), 1e-6)
            self.fields.append(f)

    def sample(self, channel: int, x: Array, y: Array, z: Array) -> Array:
        coords = np.stack([(x - self.lo[0]) / self.cell, (y - self.lo[1]) / self.cell,
                           (z - self.lo[2]) / self.cell]).reshape(3, -1)
        out = ndimage.map_coordinates(self.fields[channel], coords, order=1, mode="nearest", prefilter=False)
        return out.reshape(np.shape(x)).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------------------
# the canvas: label + HU arrays painted structure by structure
# --------------------------------------------------------------------------------------------------------------
HUSpec = Union[float, Callable[["Region"], Array]]

#: tissue classes kept next to the labels; ``FREE`` voxels (visceral fat) may receive bowel loops.
AIR, FREE, SOLID = 0, 1, 2


@dataclass(frozen=True)
class Stroke:
    """One recorded ``Canvas.paint`` call: its scalar HU (None when computed by a function, then ``fn`` holds
    that function's qualified name), its label argument and its tissue class."""

    hu: Optional[float]
    label: Optional[int]
    tissue: int
    fn: str


@dataclass
class Region:
    """The voxels of one painting step: their slices, anatomy coordinates, sdf values and mask."""

    sl: Tuple[slice, slice, slice]
    x: Array
    y: Array
    z: Array
    d: Array
    mask: Array


class Canvas:
    """Label map, HU image and tissue classes on a phantom grid; structures are painted in priority order.

    Shapes are written in *reference millimetres*: the anatomy frame divided by the patient's scale (an adult
    abdomen of standard size), plus a smooth global displacement. Later paints win, so organs that overlap end
    up touching along a shared boundary like real organs; the order of ``paint`` calls is the priority list.
    """

    def __init__(self, grid: PhantomGrid, scale: Vec, margin_ref_mm: float, label_dtype=np.uint8) -> None:
        self.grid = grid
        self.scale = np.asarray(scale, float)
        x, y, z = grid.anatomy_coords()
        x /= np.float32(self.scale[0])
        y /= np.float32(self.scale[1])
        z /= np.float32(self.scale[2])
        self.x, self.y, self.z = x, y, z
        self.margin = float(margin_ref_mm)
        self.hu = np.full(grid.shape, -1000.0, np.float32)
        self.lab = np.zeros(grid.shape, label_dtype)
        self.tissue = np.zeros(grid.shape, np.uint8)
        self.tex: Optional[NoiseVolume] = None
        #: optional record of which ``paint`` call wrote each voxel (-1: none), off unless ``record_strokes``
        #: is called; :mod:`dvcl.synthesis` names tissues from it
        self.strokes: Optional[Array] = None
        self.stroke_log: list = []

    def record_strokes(self) -> None:
        """Remember, per voxel, the index of the last ``paint`` call that wrote it, and per call a
        :class:`Stroke` (its HU argument, label and tissue class). Painting itself is unchanged."""
        self.strokes = np.full(self.grid.shape, -1, np.int16)
        self.stroke_log = []

    def displace(self, fx: FourierNoise, fy: FourierNoise, fz: FourierNoise) -> None:
        """Smoothly deform the reference coordinates (each organ gets bent a little, like a real patient)."""
        x, y, z = self.x, self.y, self.z
        dx, dy, dz = fx(x, y, z), fy(x, y, z), fz(x, y, z)
        x += dx
        y += dy
        z += dz

    def bounds(self) -> Tuple[Array, Array]:
        """Reference-frame box covering the whole image."""
        return (np.array([self.x.min(), self.y.min(), self.z.min()]),
                np.array([self.x.max(), self.y.max(), self.z.max()]))

    def slices(self, lo: Vec, hi: Vec) -> Optional[Tuple[slice, slice, slice]]:
        lo = (np.asarray(lo, float) - self.margin) * self.scale
        hi = (np.asarray(hi, float) + self.margin) * self.scale
        return self.grid.index_slices(lo, hi)

    def region(self, shape: Shape, where: Optional[Callable[[Canvas, Tuple[slice, slice, slice]], Array]] = None,
               ) -> Optional[Region]:
        lo, hi = shape.bounds()
        sl = self.slices(lo, hi)
        if sl is None:
            return None
        x, y, z = self.x[sl], self.y[sl], self.z[sl]
        d = shape.sdf(x, y, z)
        mask = d <= 0
        if where is not None:
            mask &= where(self, sl)
        return Region(sl, x, y, z, d, mask)

    def paint(self, shape: Shape, hu: HUSpec, label: Optional[int] = None, tissue: int = SOLID,
              where: Optional[Callable[[Canvas, Tuple[slice, slice, slice]], Array]] = None,
              texture: float = 0.0) -> Optional[Region]:
        """Paint ``shape``: HU (a number or ``f(region) -> values at region.mask``), label and tissue class.

        ``label=None`` leaves labels unchanged (texture inside an organ, e.g. hepatic vessels); ``label=0``
        erases them (an unlabeled structure such as the portal vein that pushes organs aside). ``texture`` adds
        that many HU of smooth noise (organ heterogeneity).
        """
        reg = self.region(shape, where)
        if reg is None or not reg.mask.any():
            return reg
        m = reg.mask
        if callable(hu):
            values = np.asarray(hu(reg), np.float32)
        else:
            values = np.full(int(np.count_nonzero(m)), hu, np.float32)
        if texture and self.tex is not None:
            values = values + np.float32(texture) * self.tex.sample(2, reg.x[m], reg.y[m], reg.z[m])
        self.hu[reg.sl][m] = values
        if label is not None:
            self.lab[reg.sl][m] = label
        self.tissue[reg.sl][m] = tissue
        if self.strokes is not None:
            self.strokes[reg.sl][m] = len(self.stroke_log)
            self.stroke_log.append(Stroke(None if callable(hu) else float(hu), label, tissue,
                                          getattr(hu, "__qualname__", "") if callable(hu) else ""))
        return reg


def free_only(canvas: Canvas, sl: Tuple[slice, slice, slice]) -> Array:
    """``where`` filter: only voxels still holding visceral fat (for bowel, colon, unlabeled fillers)."""
    return canvas.tissue[sl] == FREE


def label_is(*ids: int) -> Callable[[Canvas, Tuple[slice, slice, slice]], Array]:
    """``where`` filter: only voxels carrying one of ``ids`` (texture inside an organ)."""

    def where(canvas: Canvas, sl: Tuple[slice, slice, slice]) -> Array:
        return np.isin(canvas.lab[sl], ids)

    return where


def label_not(*ids: int) -> Callable[[Canvas, Tuple[slice, slice, slice]], Array]:
    """``where`` filter: voxels not carrying any of ``ids`` (paint around organs that must stay intact)."""

    def where(canvas: Canvas, sl: Tuple[slice, slice, slice]) -> Array:
        return ~np.isin(canvas.lab[sl], ids)

    return where


def finish_ct(canvas: Canvas, rng: np.random.Generator, blur_mm: Tuple[float, float], noise_sd: float,
              noise_corr_mm: float) -> Array:
    """Partial-volume blur, correlated Gaussian noise, rounding to int16 HU (the scanner's look).

    Blur and noise correlation are specified in millimetres and converted per array axis, so a thick-slice
    scan is blurrier along z, as it should be.
    """
    sp = canvas.grid.spacing  # (x, y, z); array axes are (z, y, x)
    sig_pv = [blur_mm[1] / sp[2], blur_mm[0] / sp[1], blur_mm[0] / sp[0]]
    img = ndimage.gaussian_filter(canvas.hu, sig_pv, mode="nearest", truncate=3.0)
    noise = rng.standard_normal(canvas.grid.shape, dtype=np.float32)
    sig_n = [0.3, noise_corr_mm / sp[1], noise_corr_mm / sp[0]]
    noise = ndimage.gaussian_filter(noise, sig_n, mode="wrap", truncate=2.5)
    noise *= np.float32(noise_sd / max(float(noise.std()), 1e-6))
    img += noise
    np.clip(img, -1024, 3071, out=img)
    return np.rint(img).astype(np.int16)


# --------------------------------------------------------------------------------------------------------------
# torso pieces shared by the abdominal and the cardiac phantom (reference millimetres)
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Body:
    """Body outline (rx, ry), inner border of the subcutaneous fat (fx, fy) and the cavity inside the muscle
    wall or rib cage (cx, cy): half-axes of ellipses centred on the anatomy frame's z axis."""

    rx: float
    ry: float
    fx: float
    fy: float
    cx: float
    cy: float

    def cavity(self, shrink: float = 0.0) -> Func:
        """The cavity shrunk by ``shrink`` mm: organs are clipped to it so they hug the wall."""
        return elliptic_cylinder(self.cx - shrink, self.cy - shrink)


@dataclass(frozen=True)
class TorsoRanges:
    """What differs between the phantom kinds in :func:`draw_torso`: reference anatomy and random ranges."""

    ref_cavity: Tuple[float, float]
    """cavity half-axes (x, y) in mm of the reference anatomy the organs are placed in"""
    ref_z_center: float
    ref_z_extent: float
    ratio: Tuple[float, float]
    """body ry / rx"""
    fat: Tuple[float, float]
    """subcutaneous fat thickness, fraction of rx"""
    muscle: Tuple[float, float]
    """muscle wall thickness, fraction of rx"""
    extent_jitter: Tuple[float, float]
    """z extent covered by the slices, factor on the scaled reference extent"""
    slice_mm: Tuple[float, float]
    """allowed slice spacing"""
    warp_mm: float
    """amplitude of the smooth deformation of the anatomy"""
    texture_mm: float
    """cell size of the tissue texture"""


def draw_torso(rng: np.random.Generator, draw: GridDraw, ranges: TorsoRanges, size: Optional[Sequence[int]],
               spacing: Optional[Sequence[float]], direction: Optional[Union[str, Sequence[float]]],
               ) -> Tuple[Canvas, PhantomGrid, Body]:
    """The random torso every phantom starts from: body size from the field of view, organ scale from the
    cavity, the image grid, and a warped, textured canvas in the anatomy frame (the same random draws, in the
    same order, for every kind, so a seed keeps giving the same phantom)."""
    n, sp_xy = draw.in_plane(size, spacing, min_fov_mm=130.0)
    fov_x, fov_y = n[0] * sp_xy[0], n[1] * sp_xy[1]
    ratio = rng.uniform(*ranges.ratio)
    rx = min(fov_x / 2 * rng.uniform(0.80, 0.93), fov_y / 2 * 0.93 / ratio)
    ry = ratio * rx
    fat = rng.uniform(*ranges.fat) * rx
    musc = rng.uniform(*ranges.muscle) * rx
    cx, cy = rx - fat - musc, ry - 0.8 * fat - musc
    sx, sy = cx / ranges.ref_cavity[0], cy / ranges.ref_cavity[1]
    sz = float(np.sqrt(sx * sy) * rng.uniform(0.9, 1.1))
    extent = ranges.ref_z_extent * sz * rng.uniform(*ranges.extent_jitter)
    sp_z = draw.slice_spacing(int(n[2]), extent, ranges.slice_mm, spacing)
    grid = draw.build(n, np.array([sp_xy[0], sp_xy[1], sp_z]), ranges.ref_z_center * sz, direction)

    canvas = Canvas(grid, (sx, sy, sz), margin_ref_mm=10.0)
    canvas.displace(*(FourierNoise(rng, 2, (2 * np.pi / 260, 2 * np.pi / 140), ranges.warp_mm) for _ in range(3)))
    lo, hi = canvas.bounds()
    canvas.tex = NoiseVolume(rng, lo - 12, hi + 12, cell_mm=ranges.texture_mm, channels=3)
    body = Body(rx / sx, ry / sy, (rx - fat) / sx, (ry - 0.8 * fat) / sy, *ranges.ref_cavity)
    return canvas, grid, body


@dataclass
class PaintedAnatomy:
    """The painted, noise-free phantom before acquisition (either kind): what the ``make_*_phantom`` functions
    blur and add noise to, exposed so that :mod:`dvcl.synthesis` can re-draw every tissue's intensity."""

    canvas: Canvas
    grid: PhantomGrid
    body: Body
    hu: Dict[str, float]
    """the HU drawn for each named tissue (after jitter), as painted"""
    phase: str
    rng: np.random.Generator
    """the case's generator, positioned after the painting (the acquisition draws continue from here)"""
    noise_draw: float


def start_anatomy(seed: int, ranges: TorsoRanges, phases: Sequence[str], phase_p: Sequence[float],
                  noise_range: Tuple[float, float], size: Optional[Sequence[int]],
                  spacing: Optional[Sequence[float]], direction: Optional[Union[str, Sequence[float]]],
                  phase: Optional[str], record_strokes: bool) -> PaintedAnatomy:
    """The first draws of every phantom, in the order a seed has always used (contrast phase, noise level,
    torso), so each kind only paints its own tissues into the returned anatomy and fills its ``hu``.

    Raises:
        ConfigError: ``phase`` is not one of ``phases``.
    """
    rng = np.random.default_rng(seed)
    draw = GridDraw(rng)
    phase_draw = phases[int(rng.choice(len(phases), p=phase_p))]  # drawn even when ``phase`` is given
    phase = phase or phase_draw
    if phase not in phases:
        raise ConfigError(f"unknown contrast phase '{phase}': choose one of {', '.join(phases)}")
    noise_draw = float(rng.uniform(*noise_range))
    canvas, grid, body = draw_torso(rng, draw, ranges, size, spacing, direction)
    if record_strokes:
        canvas.record_strokes()
    return PaintedAnatomy(canvas, grid, body, {}, phase, rng, noise_draw)


def acquire_phantom(anat: PaintedAnatomy, noise_sd: Optional[float]) -> Array:
    """The phantom's CT array: partial-volume blur and noise drawn from the anatomy's own generator
    (``noise_sd`` None: the level drawn with the anatomy)."""
    grid, rng = anat.grid, anat.rng
    noise_sd = anat.noise_draw if noise_sd is None else float(noise_sd)
    blur = (rng.uniform(0.45, 0.75) * grid.spacing[0], rng.uniform(0.3, 0.5) * grid.spacing[2])
    return finish_ct(anat.canvas, rng, blur, noise_sd, noise_corr_mm=0.6 * grid.spacing[0])

def elliptic_cylinder(ax: float, ay: float, bump: Optional[FourierNoise] = None, cx: float = 0.0, cy: float = 0.0,
                 z0: float = -1e4, z1: float = 1e4) -> Func:
    """An elliptic cylinder along z (body layers, vertebral column), optionally with smooth bumps."""
    scale = min(ax, ay)

    def fn(x, y, z):
        u, v = (x - cx) / ax, (y - cy) / ay
        rho = np.sqrt(u * u + v * v)
        if bump is not None:  # bumps only matter near the surface: evaluate them in that band only
            band = np.abs(rho - 1.0) <= bump.bound
            rho[band] -= bump(u[band], v[band], z[band] / 200.0)
        d = (rho - 1.0) * scale
        if z0 > -1e4 or z1 < 1e4:
            d = np.maximum(d, np.maximum(z0 - z, z - z1))
        return d

    return Func(fn, (cx - ax * 1.2, cy - ay * 1.2, z0), (cx + ax * 1.2, cy + ay * 1.2, z1))


def paint_body_wall(canvas: Canvas, rng: np.random.Generator, b: Body, fat_hu: float, muscle_hu: float) -> None:
    """Skin and subcutaneous fat, the muscle wall, then visceral fat (the free space organs and bowel fill)."""
    canvas.paint(elliptic_cylinder(b.rx, b.ry, FourierNoise(rng, 4, (1.0, 2.5), 0.03)), fat_hu + 5, texture=6)
    canvas.paint(elliptic_cylinder(b.fx, b.fy, FourierNoise(rng, 4, (1.0, 3.0), 0.04)), muscle_hu, texture=4)
    canvas.paint(b.cavity(), fat_hu, tissue=FREE, texture=6)
    if rng.uniform() < 0.7:  # the scanner table, behind the patient
        y0 = b.ry + rng.uniform(4, 20)
        tab = Func(lambda x, y, z: np.abs(y - y0 - 0.0015 * x * x - 6) - 5, (-b.rx * 1.3, y0 - 2, -1e4),
                   (b.rx * 1.3, y0 + 60, 1e4))
        canvas.paint(tab, rng.uniform(50, 250))


def zgate(z: np.ndarray, period: float, phase: float, lo: float, hi: float) -> np.ndarray:
    """True where ``z`` lies in the [lo, hi) part of each vertebral period (bony levels vs discs)."""
    m = np.mod(z - phase, period)
    return (m >= lo) & (m < hi)


def paint_ribs(canvas: Canvas, rng: np.random.Generator, b: Body, ribs: Sequence[Tuple[float, float, float]],
               ) -> None:
    """Ribs as bony arcs in the body wall that slope down anteriorly, ending in costal cartilage.

    ``ribs`` holds ``(z_head, theta_bone, theta_cartilage)`` per rib: the height of its head beside the spine
    and how far round (radians from the posterior midline, pi = front) bone and cartilage reach. Painted
    last because ribs sit in the wall; labels are left alone. Polar coordinates are computed once for the
    slab that holds all ribs.
    """
    ax, ay = (b.cx + b.fx) / 2, (b.cy + b.fy) / 2  # midway through the muscle wall
    rib_hu, cart_hu = rng.uniform(450, 800), rng.uniform(110, 180)
    drawn = []
    for z_head, theta_bone, theta_cart in ribs:
        slope = rng.uniform(40, 50)
        z_head = z_head + rng.uniform(-4, 4)
        drawn.append((z_head, slope, theta_bone, theta_cart, z_head - slope * theta_cart - 8))
    z_lo, z_hi = min(r[4] for r in drawn), max(r[0] for r in drawn) + 8
    slab = canvas.slices((-b.rx, -b.ry, z_lo), (b.rx, b.ry, z_hi))
    if slab is None:
        return
    u, v, z = canvas.x[slab] / ax, canvas.y[slab] / ay, canvas.z[slab]
    theta = np.abs(np.arctan2(u, v))  # 0 = posterior midline, pi = anterior
    dr = (np.sqrt(u * u + v * v) - 1.0) * (0.5 * (ax + ay) / 4.0)
    wall = np.abs(dr) <= 1.0
    hu, tissue = canvas.hu[slab], canvas.tissue[slab]
    for z_head, slope, theta_bone, theta_cart, _ in drawn:
        dz = (z - (z_head - slope * np.maximum(theta - 0.25, 0))) / 5.5
        inside = wall & (dr * dr + dz * dz <= 1.0) & (theta > 0.22) & (theta < theta_cart)
        hu[inside] = np.where(theta[inside] < theta_bone, rib_hu, cart_hu)
        tissue[inside] = SOLID


def paint_spine(canvas: Canvas, rng: np.random.Generator, y_body: float, muscle_hu: float,
                period: float = 33.0) -> None:
    """Vertebral column: bodies with cortical shell and discs, arch, pedicles, transverse and spinous processes,
    spinal canal. ``y_body`` is the vertebral body's centre (ref mm, posterior positive)."""
    ph = rng.uniform(-10, 10)
    cort, canc = rng.uniform(600, 1000), rng.uniform(180, 320)
    bony = 0.76 * period

    def body_hu(reg: Region) -> Array:
        z, d = reg.z[reg.mask], reg.d[reg.mask]
        return np.where(zgate(z, period, ph, 0, bony), np.where(d > -2.5, cort, canc), 90.0)

    def gated(lo: float, hi: float, value: float):
        def f(reg: Region) -> Array:
            return np.where(zgate(reg.z[reg.mask], period, ph, lo * period, hi * period), value, muscle_hu)

        return f

    canvas.paint(elliptic_cylinder(20, 16, cx=0, cy=y_body), body_hu)
    yc = y_body + 28
    canvas.paint(elliptic_cylinder(15, 13, cx=0, cy=yc), gated(0.06, 0.7, 0.7 * cort))
    for side in (-1, 1):
        canvas.paint(elliptic_cylinder(5, 9, cx=side * 11, cy=y_body + 16), gated(0.06, 0.7, 0.7 * cort))
        canvas.paint(elliptic_cylinder(17, 5, cx=side * 28, cy=yc - 6), gated(0.12, 0.42, 0.8 * canc + 100))
    canvas.paint(elliptic_cylinder(4.5, 14, cx=0, cy=yc + 22), gated(0.18, 0.8, 0.8 * canc + 100))
    canvas.paint(elliptic_cylinder(8.5, 8, cx=0, cy=yc), 25.0)  # spinal canal (CSF, cord)


def lumen_hu(canvas: Canvas, rng: np.random.Generator, wall_mm: float, wall_hu: float, kind: str):
    """HU of a hollow organ: an enhancing wall around its content.

    ``kind``: ``"level"`` (stomach, duodenum: fluid, food or positive oral contrast, with gas above an air-fluid
    level; gas rises to the anterior side, small y, as the patient lies supine), ``"colon"`` (mottled stool
    with gas pockets) or ``"collapsed"`` (oesophagus: soft tissue with an occasional gas bubble).
    """
    content = rng.choice(["fluid", "food", "contrast"], p=[0.55, 0.3, 0.15])
    fluid = rng.uniform(5, 25) if content == "fluid" else (rng.uniform(180, 320) if content == "contrast" else 35)
    gas_level = rng.uniform(0.0, 0.4) if rng.uniform() < 0.75 else 0.0  # fraction of the depth holding gas
    mottle = 40.0 if (content == "food" or kind == "colon") else 6.0

    def f(reg: Region) -> Array:
        m = reg.mask
        d, y = reg.d[m], reg.y[m]
        tex = canvas.tex.sample(1, reg.x[m], y, reg.z[m]) if canvas.tex is not None else np.zeros_like(d)
        if kind == "collapsed":
            return np.where((tex > 1.6) & (d < -0.5 * wall_mm), -900.0, wall_hu - 5 + 6 * tex)
        out = fluid + mottle * tex
        if kind == "colon":
            out = np.where(tex > 0.9, -1000.0, out - 60)
        elif y.size:
            ylo, yhi = np.percentile(y, 2), np.percentile(y, 98)
            out = np.where(y < ylo + gas_level * (yhi - ylo), -1000.0, out)
            if content == "food":
                out = np.where(tex > 1.4, -900.0, out)
        return np.where(d > -wall_mm, wall_hu, out)

    return f


