"""The pelvis below a synthetic abdomen (switch ``pelvis``): all label 0, as FLARE22 labels no pelvic organ.

Why: abdominal CT is very often acquired as abdomen + pelvis, and a model that never saw the pelvis calls the
bladder and the pelvic bowel liver, spleen or stomach. The phantom abdomen stops near the iliac crests; with
probability ``pelvis_p`` a case is extended caudally to a random level between the acetabular roof (mid-pelvis)
and 40 mm below the pubic symphysis, and the lower abdomen gets the pelvic structures that reach into it.

How: the phantom's tissue and label maps are extended downwards (new slices at the bottom) and one phantom
:class:`~dvcl.phantoms.shapes.Canvas` on the isotropic anatomy grid covers the pelvic zone (the new slices plus
the abdominal slices below ``ZONE_TOP``), holding generation-tissue indices instead of HU. Simple shapes in the
phantom's reference millimetres (L1 = 0, x left, y posterior, z superior; the patient's scale and rotation):
body wall, sacrum and the last lumbar vertebrae (continuing the phantom's disc rhythm), iliac wings as bent
plates, acetabula, femoral heads and necks, pubic rami and symphysis, psoas/iliacus, gluteal, obturator and
pelvic-floor muscles, bladder (wall, urine and a dependent urine layer that takes excreted contrast in the
delayed phase), rectum and sigmoid with gas and faeces, caecum, ileal loops, common/external/internal iliac
arteries and veins, and a uterus or prostate. The aorta and IVC labels end at the aortic bifurcation (L4) and
the iliac confluence (L5): their tubes below become the unlabeled iliac vessels. Continuing structures are
measured on the abdomen's lowest slices (aorta, IVC, vertebral body, discs) so the seam matches. Abdominal
organ labels are never painted over. Positions: standard adult anatomy (iliac crest and aortic bifurcation at
L4, IVC confluence at L5, sacrum S1-coccyx about 110-120 mm, femoral heads about 45 mm radius apart from the
midline by 85-95 mm, pubic symphysis about 250-290 mm below L1), engineering estimates like the phantom's.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from dvcl.phantoms.abdomen import AORTA, IVC, bowel_loop_values
from dvcl.phantoms.shapes import (
    Canvas,
    Ellipsoid,
    Func,
    NoiseVolume,
    PaintedAnatomy,
    PhantomGrid,
    Tube,
    elliptic_cylinder,
    random_rotation,
    rotation,
    smooth_curve,
)
from dvcl.synthesis.priors import T

log = logging.getLogger(__name__)

#: reference z (mm, L1 = 0) above which the abdomen is left untouched
ZONE_TOP = -60.0
#: caudal end of an extended case, reference z: mid-pelvis (acetabular roof) .. 40 mm below the symphysis
BOTTOM_MID, BOTTOM_LOW = -212.0, -322.0
_FREE = 250.0  # marker of visceral fat in the pelvic canvas (becomes fat; bowel loops may fill it)
_UNSET = 255.0
Where = Callable[[Canvas, Tuple[slice, slice, slice]], np.ndarray]


def draw_pelvis(rng: np.random.Generator, cfg) -> Dict[str, object]:
    """The case's pelvis draws, the same numbers whether the switch is on or off: whether to extend, how far,
    and the seed of the painting (which then draws from its own generator)."""
    u, frac, seed = float(rng.uniform()), float(rng.uniform(*cfg.pelvis_bottom)), int(rng.integers(2**32))
    return {"on": bool(cfg.pelvis and u < cfg.pelvis_p), "bottom_frac": frac, "seed": seed}


def add_pelvis(label: np.ndarray, tissue: np.ndarray, origin: np.ndarray, spacing: float, anat: PaintedAnatomy,
               draw: Dict[str, object]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Dict[str, object]]:
    """Extend the (z, y, x) maps caudally and paint the pelvis. Returns (label, tissue, origin, info);
    ``origin`` moves down by the added slices. Identity direction (LPS), isotropic ``spacing`` mm."""
    rng = np.random.default_rng(int(draw["seed"]))
    g = float(spacing)
    scale = np.asarray(anat.canvas.scale, float)
    sz = float(scale[2])
    bc = np.asarray(anat.grid.body_center, float)
    bottom_ref = BOTTOM_MID + float(draw["bottom_frac"]) * (BOTTOM_LOW - BOTTOM_MID)
    z_bottom = bc[2] + sz * bottom_ref
    n_ext = max(0, int(np.ceil((origin[2] - z_bottom) / g)))
    nz_abd = label.shape[0]
    z_abd = origin[2] + g * np.arange(nz_abd)
    n_over = int(np.count_nonzero((z_abd - bc[2]) / sz < ZONE_TOP))
    n_zone = n_ext + n_over
    info: Dict[str, object] = {"pelvis": True, "pelvis_slices": n_ext, "pelvis_bottom_ref_mm": round(bottom_ref, 1)}
    if n_zone == 0:
        return label, tissue, origin, info
    ny, nx = label.shape[1:]
    new_origin = np.array([origin[0], origin[1], origin[2] - n_ext * g])
    grid = PhantomGrid((nx, ny, n_zone), (g, g, g), tuple(float(v) for v in new_origin), anat.grid.direction,
                       anat.grid.body_center, anat.grid.rot)
    c = Canvas(grid, scale, margin_ref_mm=6.0)
    c.hu[:] = _UNSET
    c.hu[n_ext:] = tissue[:n_over]
    c.lab[n_ext:] = label[:n_over]
    ext = np.zeros(grid.shape, bool)
    ext[:n_ext] = True
    lo, hi = c.bounds()
    c.tex = NoiseVolume(rng, lo - 12, hi + 12, cell_mm=7.0, channels=3)
    seam_ref = float((origin[2] - bc[2]) / sz)
    p = _Painter(c, ext, rng, anat, seam_ref, bottom_ref)
    info.update(p.paint(label, tissue, origin, g))

    t_zone = c.hu
    t_zone[t_zone == _FREE] = T["fat"]
    t_zone[t_zone == _UNSET] = T["air"]
    tz = t_zone.astype(np.uint8)
    new_tissue = np.concatenate([tz[:n_ext], tissue], axis=0)
    new_label = np.concatenate([c.lab[:n_ext], label], axis=0)
    new_tissue[n_ext:n_zone] = tz[n_ext:]
    new_label[n_ext:n_zone] = c.lab[n_ext:]
    info["bifurcation_z_mm"] = round(float(bc[2] + sz * p.zb), 1)
    info["confluence_z_mm"] = round(float(bc[2] + sz * p.zc), 1)
    return new_label, new_tissue, new_origin, info


# --------------------------------------------------------------------------------------------------------------
class _Painter:
    """Paints the pelvic zone of one case in priority order (later wins)."""

    def __init__(self, c: Canvas, ext: np.ndarray, rng: np.random.Generator, anat: PaintedAnatomy,
                 seam_ref: float, bottom_ref: float) -> None:
        self.c, self.ext, self.rng, self.anat = c, ext, rng, anat
        self.seam, self.bottom = seam_ref, bottom_ref
        b = anat.body
        self.b = b
        self.hip = (float(rng.uniform(0.0, 0.14)), float(rng.uniform(0.0, 0.10)))  # widening at the hips (x, y)

    # ---- helpers -----------------------------------------------------------------------------------------
    def _jit(self, p, amount) -> np.ndarray:
        return np.asarray(p, float) + self.rng.uniform(-1, 1, size=3) * np.asarray(amount, float)

    def put(self, shape, tissue: float, label: int = 0, where: Optional[Where] = None, ext_only: bool = False,
            below: Optional[float] = None, over_organs: bool = False) -> None:
        """Paint ``tissue`` (an index, or a function of the region) into the zone, never over abdominal organs."""
        ext, c = self.ext, self.c

        def w(canvas: Canvas, sl) -> np.ndarray:
            m = np.ones(canvas.lab[sl].shape, bool) if over_organs else np.isin(canvas.lab[sl], (0, AORTA, IVC))
            if ext_only and below is not None:
                m &= ext[sl] | (canvas.z[sl] < below)
            elif ext_only:
                m &= ext[sl]
            elif below is not None:
                m &= canvas.z[sl] < below
            if where is not None:
                m &= where(canvas, sl)
            return m

        c.paint(shape, tissue, label, where=w)

    def widen(self, z: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Hip widening factors (x, y) of the body outline below the iliac crest."""
        t = np.clip((-150.0 - z) / 70.0, 0.0, 1.0)
        t = t * t * (3 - 2 * t)
        return 1.0 + self.hip[0] * t, 1.0 + self.hip[1] * t

    def body_layer(self, ax: float, ay: float) -> Func:
        def fn(x, y, z):
            wx, wy = self.widen(z)
            u, v = x / (ax * wx), y / (ay * np.where(y > 0, wy, 1.0))
            return (np.sqrt(u * u + v * v) - 1.0) * min(ax, ay)

        big = 1.3 * max(ax, ay) * (1 + max(self.hip))
        return Func(fn, (-big, -big, -1e4), (big, big, 1e4))

    def measure(self, label: np.ndarray, tissue: np.ndarray, origin: np.ndarray, g: float) -> Dict[str, object]:
        """Aorta and IVC centre (ref mm) on the abdomen's lowest slices, vertebral body y and disc centres."""
        a = self.anat
        scale = np.asarray(a.canvas.scale, float)
        bc, R = np.asarray(a.grid.body_center, float), a.grid.R
        nz = label.shape[0]
        z_ref = (origin[2] + g * np.arange(nz) - bc[2]) / scale[2]

        def to_ref(k: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            phys = np.stack([origin[0] + g * cols, origin[1] + g * rows, np.full(cols.shape, origin[2] + g * k)], 1)
            ref = (phys - bc) @ R  # R.T @ (phys - bc), row-wise
            return ref[:, :2].mean(0) / scale[:2]

        out: Dict[str, object] = {}
        for name, cid in (("aorta", AORTA), ("ivc", IVC)):
            for k in range(min(nz, 12)):
                rows, cols = np.nonzero(label[k] == cid)
                if rows.size >= 3:
                    out[name] = to_ref(k, rows, cols)
                    out[name + "_r"] = float(np.sqrt(rows.size / np.pi) * g / np.sqrt(scale[0] * scale[1]))
                    break
        # vertebral column: bone and disc voxels near the midline, behind the aorta
        spine = np.isin(tissue, (T["bone_cancellous"], T["disc"]))
        yb, discs = 42.0, []
        xs = origin[0] + g * np.arange(tissue.shape[2])
        ys = origin[1] + g * np.arange(tissue.shape[1])
        for k in range(nz):
            if z_ref[k] > 40:
                break
            m = spine[k]
            rows, cols = np.nonzero(m)
            if rows.size < 5:
                continue
            ref = ((np.stack([xs[cols], ys[rows], np.zeros(cols.size)], 1) - [bc[0], bc[1], 0]) @ R)[:, :2] / scale[:2]
            mid = np.abs(ref[:, 0]) < 16
            if mid.sum() < 5:
                continue
            if k < 15:
                yb = float(np.median(ref[mid, 1]))
            d = (tissue[k] == T["disc"])[rows[mid], cols[mid]].mean()
            if d > 0.5:
                discs.append(float(z_ref[k]))
        out["yb"] = float(np.clip(yb, 34, 50))
        # disc centres: runs of disc slices
        centres = []
        for zval in sorted(discs):
            if centres and zval - centres[-1][-1] <= g / scale[2] * 1.6:
                centres[-1].append(zval)
            else:
                centres.append([zval])
        out["discs"] = [float(np.mean(r)) for r in centres]
        return out

    # ---- painting ----------------------------------------------------------------------------------------
    def paint(self, label, tissue, origin, g) -> Dict[str, object]:
        rng, b = self.rng, self.b
        m = self.measure(label, tissue, origin, g)
        yb = m["yb"]
        # vertebral rhythm of the phantom: disc centres every 33 mm
        if m["discs"]:
            d0 = min(m["discs"])
        else:
            d0 = -116.0 + rng.uniform(-8, 8)
        disc_c = d0 + 33.0 * np.round((-146.0 - d0) / 33.0)  # the L5/S1 disc
        z_s1 = float(disc_c - 4.0)
        self.zb = float(disc_c + 33.0 * 1.5 + rng.uniform(-10, 8))  # aortic bifurcation at L4
        self.zc = float(self.zb - rng.uniform(12, 28))  # IVC confluence at L5
        z_crest = float(disc_c + 33.0 * 1.3 + rng.uniform(-10, 10))
        self.zb = min(self.zb, ZONE_TOP - 5)
        z_head = float(z_s1 - rng.uniform(75, 95))  # femoral head centre
        s_bone = rng.uniform(0.9, 1.08)
        r_head = 23.0 * s_bone
        hx = 89.0 * rng.uniform(0.93, 1.07)
        z_sym = z_head - rng.uniform(18, 30)  # centre of the pubic symphysis
        info: Dict[str, object] = {}

        # body wall on the new slices: subcutaneous fat, muscle, visceral fat narrowing into the true pelvis
        self.put(self.body_layer(b.rx, b.ry), T["fat"], ext_only=True, where=_unset)
        self.put(self.body_layer(b.fx, b.fy), T["muscle"], ext_only=True)
        cav = self.cavity(z_head, z_sym)
        self.put(cav, _FREE, ext_only=True)

        # old spine below S1, old aorta/IVC below the bifurcation/confluence: gone (retroperitoneal fat)
        self.put(elliptic_cylinder(34, 42, cy=yb + 22, z1=z_s1), T["muscle"])
        self.erase_label(AORTA, self.zb)
        self.erase_label(IVC, self.zc)

        # lumbar vertebrae on the new slices down to S1, with the phantom's disc rhythm
        self.lumbar(yb, disc_c, z_s1)
        # muscles: psoas continuation, iliacus, gluteus medius/minimus and maximus, obturator internus, floor
        for s in (-1, 1):
            pts = [(s * 50, 18, -128), (s * 58, 10, -165), (s * 70, -14, z_head + 20), (s * 80, -34, z_head - 10),
                   (s * 86, -32, z_head - 60)]
            self.put(Tube(smooth_curve([self._jit(p, (4, 4, 0)) for p in pts], 12),
                          np.array([24, 23, 19, 15, 13]) * rng.uniform(0.85, 1.15)), T["muscle"], ext_only=True,
                     below=-128)
            self.put(Ellipsoid(self._jit((s * 100, -4, z_crest - 60), 5), (20, 42, 55) * rng.uniform(0.9, 1.1, 3),
                               rotation(0, 0, np.deg2rad(s * 35))), T["muscle"], where=_not_bone)
            gmed = Ellipsoid(self._jit((s * 122, 22, z_crest - 55), 6), (30, 62, 58) * rng.uniform(0.85, 1.15, 3),
                             rotation(0, 0, np.deg2rad(-s * 25)))
            self.put(gmed & self.body_layer(b.fx, b.fy), T["muscle"], where=_not_bone)
            gmax = Ellipsoid(self._jit((s * 72, b.ry - 45, z_head + 5), 6), (62, 38, 95) * rng.uniform(0.85, 1.15, 3),
                             rotation(0, 0, np.deg2rad(s * 20)))
            self.put(gmax & self.body_layer(b.fx, b.fy), T["muscle"], where=_not_bone)
            self.put(Ellipsoid(self._jit((s * 54, 5, z_head - 15), 4), (10, 38, 30)), T["muscle"])
        floor = Func(lambda x, y, z: np.maximum(np.abs(np.sqrt((x / 52) ** 2 + ((y - 8) / 55) ** 2
                                                               + ((z - z_sym - 12) / 40) ** 2) - 1) * 45 - 3.5,
                                                z - (z_sym + 12)),
                     (-60, -50, z_sym - 35), (60, 70, z_sym + 12))
        self.put(floor, T["muscle"])

        # bones: sacrum, ilium, acetabulum, femur, pubis, ischium
        self.sacrum(yb, z_s1)
        for s in (-1, 1):
            self.ilium(s, yb, z_crest, z_s1, z_head, hx, r_head)
            self.hip_bones(s, z_head, hx, r_head, z_sym)
        self.put(Ellipsoid((0, -80, z_sym), (2.5, 10, 18)), T["cartilage"])

        # vessels: aorta/IVC continuation on new slices (labelled), bifurcation, iliac arteries and veins
        self.vessels(m, hx, z_head)
        # pelvic organs: rectum and sigmoid, caecum, bladder, uterus or prostate, ileal loops
        self.bowel(yb, z_s1, z_sym)
        info.update(self.organs(z_sym, yb))
        self.ileum(z_sym)
        info.update({"aortic_bifurcation_ref_mm": round(self.zb, 1), "s1_ref_mm": round(z_s1, 1)})
        return info

    def cavity(self, z_head: float, z_sym: float) -> Func:
        """Visceral space: the abdominal cavity above the pelvic inlet, the narrower true pelvis below it."""
        b = self.b
        top, low = z_head + 45, z_head

        def fn(x, y, z):
            t = np.clip((top - z) / (top - low), 0, 1)
            ax = b.cx + t * (60 - b.cx)
            ay = b.cy + t * (72 - b.cy)
            cy = -8 * t
            f = np.clip((z_sym + 5 - z) / 25, 0, 1)  # below the symphysis: the pelvic floor closes it
            ax = ax * (1 - 0.7 * f)
            ay = ay * (1 - 0.5 * f)
            return (np.sqrt((x / ax) ** 2 + ((y - cy) / ay) ** 2) - 1) * np.minimum(ax, ay)

        return Func(fn, (-b.cx * 1.2, -b.cy * 1.2, -1e4), (b.cx * 1.2, b.cy * 1.2, 1e4))

    def erase_label(self, cid: int, z_end: float) -> None:
        c = self.c
        m = (c.lab == cid) & (c.z < z_end)
        c.hu[m] = T["fat"]
        c.lab[m] = 0

    def lumbar(self, yb: float, disc_c: float, z_s1: float) -> None:
        cort, canc, disc = T["bone_cortical"], T["bone_cancellous"], T["disc"]

        def is_disc(z):
            return np.abs(np.mod(z - disc_c + 16.5, 33.0) - 16.5) <= 4.0

        def body(reg):
            z, d = reg.z[reg.mask], reg.d[reg.mask]
            return np.where(is_disc(z), disc, np.where(d > -2.5, cort, canc)).astype(np.float32)

        def arch(value):
            def f(reg):
                return np.where(is_disc(reg.z[reg.mask]), T["muscle"], value).astype(np.float32)
            return f

        z0 = z_s1
        self.put(elliptic_cylinder(21, 16, cy=yb, z0=z0), body, ext_only=True)
        self.put(elliptic_cylinder(15, 13, cy=yb + 28, z0=z0), arch(cort), ext_only=True)
        self.put(elliptic_cylinder(4.5, 14, cy=yb + 50, z0=z0), arch(canc), ext_only=True)
        self.put(elliptic_cylinder(8.5, 8, cy=yb + 28, z0=z0), T["fluid"], ext_only=True)

    def sacrum(self, yb: float, z_s1: float) -> None:
        L = 115.0 * self.rng.uniform(0.9, 1.08)
        pts = [(0, yb - 2, z_s1), (0, yb + 14, z_s1 - 0.3 * L), (0, yb + 26, z_s1 - 0.6 * L),
               (0, yb + 26, z_s1 - 0.85 * L), (0, yb + 16, z_s1 - L)]
        sac = Tube(smooth_curve(pts, 10), [19, 16, 12, 8, 5], scale=(2.5, 1.0, 1.0))
        self.put(sac, _bone_shell(2.0))
        canal = Tube(smooth_curve([(0, yb + 20, z_s1 + 2), (0, yb + 30, z_s1 - 0.4 * L),
                                   (0, yb + 36, z_s1 - 0.7 * L)], 8), [6, 5, 3])
        self.put(canal, T["fluid"], where=_is(T["bone_cancellous"]))

    def ilium(self, s: int, yb: float, z_crest: float, z_s1: float, z_head: float, hx: float, r_head: float) -> None:
        """The iliac wing as a bent plate: in each axial slice a two-segment line from the sacro-iliac joint
        round the lateral bend to the anterior spines, thick at the crest, thin in the fossa, massive above the
        acetabulum."""
        rng = self.rng
        z_top = z_crest + rng.uniform(-4, 4)
        z_low = z_head + r_head * 0.9
        P0, P1 = (s * 50, yb + 52), (s * 50, yb + 20)
        M0, M1 = (s * 135 * rng.uniform(0.94, 1.04), 8), (s * (hx + 8), 2)
        A0, A1 = (s * 118 * rng.uniform(0.94, 1.04), -62), (s * (hx + 4), -28)

        def fn(x, y, z):
            t = np.clip((z_top - z) / (z_top - z_low), 0, 1)
            px, py = P0[0] + t * (P1[0] - P0[0]), P0[1] + t * (P1[1] - P0[1])
            mx, my = M0[0] + t * (M1[0] - M0[0]), M0[1] + t * (M1[1] - M0[1])
            ax, ay = A0[0] + t * (A1[0] - A0[0]), A0[1] + t * (A1[1] - A0[1])
            d = np.minimum(_seg_dist(x, y, px, py, mx, my), _seg_dist(x, y, mx, my, ax, ay))
            half = np.where(t < 0.12, 7.0 - 25 * t, np.where(t < 0.6, 4.0, 4.0 + (t - 0.6) * 30))
            return np.maximum(d - half, np.maximum(z - z_top, z_low - r_head * 0.5 - z))

        lo = (min(s * 40, s * 145), yb - 100, z_low - r_head)
        hi = (max(s * 40, s * 145), yb + 70, z_top + 2)
        self.put(Func(fn, lo, hi), _bone_shell(2.0))

    def hip_bones(self, s: int, z_head: float, hx: float, r_head: float, z_sym: float) -> None:
        rng = self.rng
        hc = np.array([s * hx, -6.0 + rng.uniform(-5, 5), z_head])
        # acetabulum: a cup around the head, medial and superior
        cup = Func(lambda x, y, z: np.maximum.reduce([
            np.sqrt((x - hc[0]) ** 2 + (y - hc[1]) ** 2 + (z - hc[2]) ** 2) - (r_head + 11),
            s * (x - hc[0]) - 8, hc[2] - r_head * 0.6 - z]), hc - r_head - 12, hc + r_head + 12)
        self.put(cup, _bone_shell(2.0))
        # pubic ramus to the symphysis, ischium down to the tuberosity, inferior ramus back to the symphysis
        sym = np.array([s * 10, -80.0, z_sym])
        tub = np.array([s * 55, 18.0, z_sym - 25])
        for pts, r in (([hc + (-s * 18, -16, -6), (s * 40, -62, z_sym + 6), sym], [11, 9, 10]),
                       ([hc + (-s * 6, 20, -10), hc + (-s * 8, 26, -40), tub], [14, 12, 14]),
                       ([sym + (0, 2, -14), (s * 32, -40, z_sym - 28), tub], [8, 7, 10])):
            self.put(Tube(smooth_curve(pts, 8), r), _bone_shell(2.0))
        self.put(Ellipsoid(sym + (0, 0, -3), (9, 13, 20)), _bone_shell(2.0))
        # the joint space, then femoral head, neck, greater trochanter and shaft
        self.put(Ellipsoid(hc, (r_head + 2.5,) * 3), T["cartilage"])
        troch = hc + (s * 48, 10, -24)
        neck = Tube([hc, troch + (-s * 6, 0, 6)], [15, 17])
        shaft = Tube([troch + (-s * 2, 0, -10), troch + (-s * 10, -4, -220)], 15)
        femur = Ellipsoid(hc, (r_head,) * 3) | neck | Ellipsoid(troch, (16, 21, 26)) | shaft
        self.put(femur, _bone_shell(2.5))
        self.put(Tube([troch + (-s * 4, 0, -35), troch + (-s * 10, -4, -220)], 8), T["fat"])  # marrow canal

    def vessels(self, m: Dict[str, object], hx: float, z_head: float) -> None:
        rng = self.rng
        a = np.asarray(m.get("aorta", (10.0, 5.0)), float)
        v = np.asarray(m.get("ivc", (-16.0, 4.0)), float)
        ra = float(np.clip(m.get("aorta_r", 11.0), 7, 14))
        rv = float(np.clip(m.get("ivc_r", 11.0), 7, 14))
        zb, zc, top = self.zb, self.zc, max(self.seam + 10, ZONE_TOP)
        # labelled continuation on the new slices above the bifurcation
        self.put(Tube([(a[0], a[1], top), (a[0], a[1], zb)], ra), T["artery"], AORTA, ext_only=True,
                 where=_z_above(zb))
        self.put(Tube([(v[0], v[1], top), (v[0], v[1], zc)], rv, scale=(1.25, 0.8, 1.0)), T["vein"], IVC,
                 ext_only=True, where=_z_above(zc))
        sc = rng.uniform(0.85, 1.15)
        for s in (-1, 1):
            cia = [(a[0], a[1], zb + 4), (a[0] + s * 14, a[1] + 2, zb - 18), (s * 34, 12, zb - 45)]
            eia = [cia[-1], (s * 48, -2, z_head + 55), (s * (hx - 14), -36, z_head + 15), (s * (hx - 8), -44,
                                                                                             z_head - 40),
                   (s * (hx - 6), -40, z_head - 120)]
            iia = [cia[-1], (s * 44, 32, zb - 75), (s * 52, 40, z_head + 20)]
            self.put(Tube(smooth_curve(cia, 8), np.array([ra * 0.75, 7, 6.5]) * sc), T["artery"], where=_not_bone)
            self.put(Tube(smooth_curve(eia, 14), np.array([5.5, 5, 4.8, 4.5, 4.2]) * sc), T["artery"],
                     where=_not_bone)
            self.put(Tube(smooth_curve(iia, 8), np.array([4.5, 3.5, 2.5]) * sc), T["artery"], where=_not_bone)
            civ = [(v[0], v[1], zc + 4), (v[0] + (30 if s > 0 else -14), v[1] + 8, zc - 22), (s * 36, 20, zb - 58)]
            eiv = [civ[-1], (s * 42, 8, z_head + 55), (s * (hx - 24), -28, z_head + 15),
                   (s * (hx - 20), -38, z_head - 40), (s * (hx - 18), -34, z_head - 120)]
            iiv = [civ[-1], (s * 46, 38, zb - 80), (s * 54, 46, z_head + 15)]
            self.put(Tube(smooth_curve(civ, 8), np.array([rv * 0.75, 8, 7.5]) * sc), T["vein"],
                     where=_not(T["artery"], T["bone_cortical"], T["bone_cancellous"]))
            self.put(Tube(smooth_curve(eiv, 14), np.array([7, 6.5, 6, 6, 5.5]) * sc), T["vein"],
                     where=_not(T["artery"], T["bone_cortical"], T["bone_cancellous"]))
            self.put(Tube(smooth_curve(iiv, 8), np.array([5, 4, 3])), T["vein"],
                     where=_not(T["artery"], T["bone_cortical"], T["bone_cancellous"]))

    def _lumen(self, wall_mm: float, gas: float, stool: bool) -> Callable:
        c = self.c

        def f(reg):
            mk = reg.mask
            d = reg.d[mk]
            n = c.tex.sample(0, reg.x[mk], reg.y[mk], reg.z[mk])
            inside = np.where(n > gas, T["gas"], T["food"] if stool else T["fluid"])
            return np.where(d > -wall_mm, T["gi_wall"], inside).astype(np.float32)

        return f

    def bowel(self, yb: float, z_s1: float, z_sym: float) -> None:
        rng = self.rng
        soft = _not(T["bone_cortical"], T["bone_cancellous"], T["artery"], T["vein"])
        # caecum and the ascending colon's end (new slices only above the phantom's colon end)
        ce = Ellipsoid(self._jit((-100, -8, -168), (8, 8, 10)), (28, 26, 30) * rng.uniform(0.8, 1.2, 3), bumps=0.1,
                       rng=rng)
        asc = Tube([(-105, 3, -80), (-102, -4, -160)], 20 * rng.uniform(0.8, 1.15))
        self.put(asc, self._lumen(2.5, rng.uniform(0.3, 1.2), True), ext_only=True, below=-150, where=soft)
        self.put(ce, self._lumen(2.5, rng.uniform(0.3, 1.2), True), where=soft)
        # descending colon's end, sigmoid loop, rectum along the sacrum down to the anal canal
        r_sig = 16 * rng.uniform(0.75, 1.2)
        sig = [self._jit(p, (12, 10, 10)) for p in [(108, 22, -80), (108, 20, -150), (92, -8, -178), (55, -40, -186),
                                                    (15, -32, -176), (-5, -5, -182)]]
        sig += [np.array((6, yb - 14, z_s1 - 45))]
        self.put(Tube(smooth_curve(sig[:2], 4), r_sig), self._lumen(2.5, rng.uniform(0.3, 1.2), True),
                 ext_only=True, below=-150, where=soft)
        self.put(Tube(smooth_curve(sig[1:], 24), r_sig), self._lumen(2.5, rng.uniform(0.3, 1.2), True), below=-150,
                 where=soft)
        r_rec = rng.uniform(12, 24)
        rec = [sig[-1], (3, yb - 12, z_s1 - 80), (0, yb - 14, z_s1 - 110), (0, yb - 30, z_sym - 20),
               (0, yb - 40, z_sym - 60)]
        self.put(Tube(smooth_curve(rec, 16), [r_sig, r_rec, r_rec * 1.1, 9, 6]),
                 self._lumen(3.0, rng.uniform(0.4, 1.5), rng.uniform() < 0.7), where=soft)

    def organs(self, z_sym: float, yb: float) -> Dict[str, object]:
        rng = self.rng
        soft = _not(T["bone_cortical"], T["bone_cancellous"], T["artery"], T["vein"])
        fill = float(rng.uniform(0.3, 1.3))
        r = np.array([rng.uniform(35, 55), rng.uniform(25, 40), rng.uniform(25, 45)]) * fill ** 0.6
        base = z_sym + 2
        ctr = self._jit((0, -46 + 0.3 * r[1], base + r[2] * 0.9), (8, 5, 4))
        rot = random_rotation(rng, 8)
        bladder = Ellipsoid(ctr, r, rot, bumps=0.04, rng=rng)
        female = bool(rng.uniform() < 0.5)
        organ = "none"
        if female and rng.uniform() < 0.85:
            organ = "uterus"
            uc = self._jit((0, ctr[1] + r[1] + 10, ctr[2] + 0.5 * r[2] + 5), (12, 6, 10))
            ur = np.array([rng.uniform(22, 38), rng.uniform(15, 25), rng.uniform(30, 45)])
            ut = Ellipsoid(uc, ur, rotation(np.deg2rad(rng.uniform(-50, -10)), 0, np.deg2rad(rng.uniform(-15, 15))),
                           bumps=0.05, rng=rng)
            self.put(ut, T["gi_wall"], where=soft)
        elif not female:
            organ = "prostate"
            pr = np.array([20, 15, 17]) * rng.uniform(0.8, 1.5)
            self.put(Ellipsoid((0, -45 + rng.uniform(-4, 6), base - pr[2] * 0.6), pr), T["muscle"], where=soft)
        wall = rng.uniform(1.5, 4.0)
        layer = float(rng.uniform(0.05, 1.0)) if rng.uniform() < 0.7 else 1.0  # dependent (posterior) urine layer
        ylo, yhi = ctr[1] - r[1], ctr[1] + r[1]
        y_level = yhi - layer * (yhi - ylo)

        def urine(reg):
            mk = reg.mask
            d, y = reg.d[mk], reg.y[mk]
            inner = np.where(y > y_level, T["urine"], T["fluid"])
            return np.where(d > -wall, T["gi_wall"], inner).astype(np.float32)

        self.put(bladder, urine, where=soft)
        return {"bladder_fill": round(fill, 2), "pelvic_organ": organ}

    def ileum(self, z_sym: float) -> None:
        """Small-bowel loops in the remaining visceral fat above the bladder (blobs of a smooth field)."""
        c, rng = self.c, self.rng
        sel = (c.hu == _FREE) & (c.z > z_sym + 40) & (c.y < 40)
        if not sel.any():
            return
        x, y, z = c.x[sel], c.y[sel], c.z[sel]
        n0 = c.tex.sample(1, x, y, z)
        thr = rng.uniform(-0.3, 0.5)
        content = T["oral_contrast"] if rng.uniform() < 0.2 else T["fluid"]
        n2 = c.tex.sample(2, x, y, z)
        loop, vals = bowel_loop_values(n0, n2, thr, rng.uniform(1.0, 1.6), T["gi_wall"], T["gas"], content)
        sub = c.hu[sel]
        sub[loop] = vals[loop]
        c.hu[sel] = sub


# --------------------------------------------------------------------------------------------------------------
def _seg_dist(x, y, ax, ay, bx, by):
    """Distance in the axial plane from (x, y) to the segment a-b (a and b may vary per voxel)."""
    dx, dy = bx - ax, by - ay
    L2 = np.maximum(dx * dx + dy * dy, 1e-6)
    t = np.clip(((x - ax) * dx + (y - ay) * dy) / L2, 0, 1)
    ex, ey = x - (ax + t * dx), y - (ay + t * dy)
    return np.sqrt(ex * ex + ey * ey)


def _bone_shell(cortex_mm: float) -> Callable:
    def f(reg):
        d = reg.d[reg.mask]
        return np.where(d > -cortex_mm, T["bone_cortical"], T["bone_cancellous"]).astype(np.float32)

    return f


def _is(*tissues: int) -> Where:
    return lambda c, sl: np.isin(c.hu[sl], tissues)


def _not(*tissues: int) -> Where:
    return lambda c, sl: ~np.isin(c.hu[sl], tissues)


_not_bone = _not(T["bone_cortical"], T["bone_cancellous"])


def _unset(c: Canvas, sl) -> np.ndarray:
    return c.hu[sl] == _UNSET


def _z_above(z0: float) -> Where:
    return lambda c, sl: c.z[sl] >= z0
