"""Synthetic cardiac CT angiography with the 7 MM-WHS structures.

Reference anatomy (mm, LPS: x to the patient's left, y posterior, z superior; origin at the body centre at
mid-heart level): the heart lies in the anterior mediastinum, left of the midline, its long axis pointing from
the base (posterior, right, up) to the apex (anterior, left, down). The LV myocardium is a thick shell around
the LV cavity, open at the valve plane; the RV is a crescent wrapped round the septum, anterior-right; the LA
is the most posterior chamber, in front of the oesophagus and descending aorta; the RA forms the right heart
border between the caval veins; the ascending aorta leaves the LV centrally and arches over the pulmonary
artery, which leaves the RV anteriorly and splits under the arch. Lungs, spine, ribs, sternum, the liver dome,
the caval, pulmonary and coronary vessels, the arch's three branches and the brachiocephalic veins are unlabeled
surroundings.

What makes it hard: blood in neighbouring chambers has the same HU (only thin walls and valve planes separate
LA from LV, RA from RV), the contrast timing changes which side is bright, unopacified caval inflow swirls in
the RA, the descending aorta and pulmonary veins look like labeled vessels.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from dvcl.phantoms.shapes import (
    Body,
    Canvas,
    Ellipsoid,
    Func,
    PaintedAnatomy,
    Region,
    TorsoRanges,
    Tube,
    acquire_phantom,
    elliptic_cylinder,
    frame_from_axis,
    label_is,
    label_not,
    paint_body_wall,
    paint_ribs,
    paint_spine,
    random_rotation,
    smooth_curve,
    start_anatomy,
)
from dvcl.presets import PRESETS

log = logging.getLogger(__name__)

IDS: Dict[str, int] = {name: cid for cid, name in PRESETS["mmwhs"].labels.items()}
MYO, LA, LV, RA = IDS["left ventricle myocardium"], IDS["left atrium"], IDS["left ventricle"], IDS["right atrium"]
RV, AO, PA = IDS["right ventricle"], IDS["ascending aorta"], IDS["pulmonary artery"]

#: Contrast timings: which side of the heart is bright. "arterial" is the usual coronary CTA.
PHASES = ("arterial", "pulmonary", "venous")

REF_CAVITY = (135.0, 95.0)
REF_Z_CENTER, REF_Z_EXTENT = 22.0, 170.0
TORSO = TorsoRanges(REF_CAVITY, REF_Z_CENTER, REF_Z_EXTENT, ratio=(0.62, 0.78), fat=(0.04, 0.12),
                    muscle=(0.05, 0.08), extent_jitter=(1.0, 1.2), slice_mm=(0.8, 3.0), warp_mm=5.0,
                    texture_mm=5.0)
_RIBS_K = range(1, 13)


def cardiac_anatomy(
    seed: int,
    size: Optional[Sequence[int]] = None,
    spacing: Optional[Sequence[float]] = None,
    direction: Optional[Union[str, Sequence[float]]] = None,
    phase: Optional[str] = None,
    record_strokes: bool = False,
) -> PaintedAnatomy:
    """Paint one random chest and heart (arguments as :func:`make_cardiac_phantom`); ``record_strokes`` keeps,
    per voxel, which paint call wrote it (see :meth:`Canvas.record_strokes`). The random draws are the same
    with and without it."""
    anat = start_anatomy(seed, TORSO, PHASES, (0.5, 0.25, 0.25), (10, 30), size, spacing, direction, phase,
                         record_strokes)
    canvas, rng, body, hu = anat.canvas, anat.rng, anat.body, anat.hu
    hu.update(_contrast(rng, anat.phase))
    paint_body_wall(canvas, rng, body, hu["fat"], hu["muscle"])
    _paint_chest(canvas, rng, body, hu)
    _paint_heart(canvas, rng, hu)
    base = rng.uniform(-8, 8)  # rib k's head sits one thoracic vertebra (25 mm) below rib k-1
    ribs = [(25.0 * (7 - k) + base, *_rib_reach(k)) for k in _RIBS_K]
    paint_ribs(canvas, rng, body, ribs)
    return anat


def make_cardiac_phantom(
    seed: int,
    size: Optional[Sequence[int]] = None,
    spacing: Optional[Sequence[float]] = None,
    direction: Optional[Union[str, Sequence[float]]] = None,
    phase: Optional[str] = None,
    noise_sd: Optional[float] = None,
    raw_values: bool = False,
) -> Tuple[sitk.Image, sitk.Image]:
    """A random cardiac CT (int16 HU) and its MM-WHS label map on the same grid.

    Args:
        seed: same seed, same phantom (bit for bit).
        size, spacing, direction, noise_sd: as for :func:`dvcl.phantoms.make_abdominal_phantom` (slices are
            0.8-3 mm here).
        phase: ``"arterial"`` (left heart brightest), ``"pulmonary"`` (right heart brightest) or ``"venous"``.
        raw_values: write the raw MM-WHS values (205 myocardium ... 850 pulmonary artery, uint16) instead of
            class ids 1..7 (uint8), to exercise the remapping of the ``mmwhs`` preset.
    """
    anat = cardiac_anatomy(seed, size, spacing, direction, phase)
    grid = anat.grid
    arr = acquire_phantom(anat, noise_sd)
    lab = to_raw_mmwhs(anat.canvas.lab) if raw_values else anat.canvas.lab
    log.debug("cardiac phantom seed=%d phase=%s size=%s spacing=%s", seed, anat.phase, grid.size, grid.spacing)
    return grid.to_image(arr), grid.to_image(lab)


def to_raw_mmwhs(lab: np.ndarray) -> np.ndarray:
    """Class ids 0..7 -> the values MM-WHS files store (205 myocardium ... 850 pulmonary artery), uint16."""
    lut = np.zeros(256, np.uint16)
    for raw, cid in PRESETS["mmwhs"].raw_values.items():
        lut[cid] = raw
    return lut[lab]


def _rib_reach(k: int) -> Tuple[float, float]:
    """How far round rib ``k`` is bone and cartilage (radians from the back): true ribs reach the sternum."""
    if k <= 7:
        return 2.6, 2.95
    if k <= 10:
        return 2.45, 2.8
    return (1.6, 1.6) if k == 11 else (1.1, 1.1)


def _contrast(rng: np.random.Generator, phase: str) -> Dict[str, float]:
    """HU of blood and tissues for one contrast timing (with per-patient variation)."""
    if phase == "arterial":
        left, right = rng.uniform(330, 550), rng.uniform(120, 300)
    elif phase == "pulmonary":
        right, left = rng.uniform(300, 500), rng.uniform(150, 280)
    else:
        left = rng.uniform(150, 250)
        right = left + rng.uniform(-30, 30)
    return {
        "left": left, "aorta": left - rng.uniform(0, 40), "right": right, "pa": right + rng.uniform(-20, 50),
        "svc": rng.uniform(400, 1200) if (phase != "venous" and rng.uniform() < 0.4) else right,
        "myo": rng.uniform(90, 130), "fat": rng.uniform(-115, -85), "epi_fat": rng.uniform(-110, -70),
        "muscle": rng.uniform(40, 60), "lung": rng.uniform(-880, -820), "liver": rng.uniform(55, 110),
    }


def _paint_chest(canvas: Canvas, rng: np.random.Generator, body: Body, hu: Dict[str, float]) -> None:
    """Lungs, mediastinal fat, diaphragm with the liver dome below, spine, sternum, airways, oesophagus."""
    hr, hl = rng.uniform(-70, -45), rng.uniform(-80, -55)

    def zd(x, y):
        r = hr - 60.0 * (((x + 55.0) / 85.0) ** 2 + ((y - 5.0) / 85.0) ** 2)
        left = hl - 60.0 * (((x - 60.0) / 85.0) ** 2 + ((y - 5.0) / 85.0) ** 2)
        return np.maximum(r, left)

    cav = body.cavity()
    lung = Func(lambda x, y, z: np.maximum(cav.sdf(x, y, z) + 2, zd(x, y) + 5 - z), (-150, -110, -200),
                (150, 110, 1e4))

    def lung_hu(reg: Region) -> np.ndarray:
        m = reg.mask  # vessels: the bright tail of a smooth noise field
        t = canvas.tex.sample(0, reg.x[m], reg.y[m], reg.z[m])
        return np.where(t > 1.7, 30.0, hu["lung"] + 15 * t)

    canvas.paint(lung, lung_hu)
    below = Func(lambda x, y, z: np.maximum(cav.sdf(x, y, z), z - zd(x, y)), (-150, -110, -1e4), (150, 110, 0))
    canvas.paint(below, hu["muscle"])  # the diaphragm itself, then the liver dome and the stomach/spleen side

    def abdomen_hu(reg: Region) -> np.ndarray:
        x = reg.x[reg.mask]
        return np.where(x < 10, hu["liver"], hu["muscle"] + 5)

    canvas.paint(Func(lambda x, y, z: np.maximum(cav.sdf(x, y, z) + 2, z - zd(x, y) + 5), (-150, -110, -1e4),
                      (150, 110, 0)), abdomen_hu, texture=5)
    # mediastinum: a central column of fat from the sternum to the spine
    canvas.paint(elliptic_cylinder(28, 80, cx=5, cy=-12) & Func(lambda x, y, z: zd(x, y) + 3 - z, (-50, -100, -1e4),
                                                                   (60, 80, 1e4)), hu["fat"] + 10, texture=6)
    for side in (-1, 1):
        canvas.paint(elliptic_cylinder(rng.uniform(20, 26), rng.uniform(14, 18), cx=side * 32,
                                       cy=rng.uniform(92, 98)), hu["muscle"], texture=4)
    paint_spine(canvas, rng, rng.uniform(58, 64), hu["muscle"], period=25.0)
    canvas.paint(elliptic_cylinder(15, 6, cx=0, cy=-body.cy - 2), rng.uniform(250, 450))  # sternum
    # airways (air), oesophagus (collapsed), descending aorta (unlabeled, as bright as the labeled aorta)
    canvas.paint(Tube([(0, 12, 300), (0, 14, 75)], 9), -1000.0)
    for side in (-1, 1):
        canvas.paint(Tube([(0, 14, 78), (side * 22, 20, 62), (side * 45, 22, 50)], 6), -1000.0)
    canvas.paint(Tube([(2, 40, 300), (4, 38, 0), (12, 30, -120)], 7), hu["muscle"])
    canvas.paint(Tube(smooth_curve([(24, 48, 100), (26, 46, 0), (22, 40, -150)], 6), 12 * rng.uniform(0.85, 1.15)),
                 hu["aorta"])


def _paint_heart(canvas: Canvas, rng: np.random.Generator, hu: Dict[str, float]) -> None:
    """The chambers and great vessels in priority order (later wins; the LV myocardium owns the septum)."""
    H = np.array([20.0, -32.0, -8.0]) + rng.uniform(-8, 8, size=3)
    base_c = H + np.array([-20.0, 18.0, 22.0]) + rng.uniform(-4, 4, size=3)  # centre of the mitral valve plane
    apex = H + np.array([42.0, -36.0, -36.0]) + rng.uniform(-8, 8, size=3)
    w = (apex - base_c) / np.linalg.norm(apex - base_c)  # long axis, base -> apex
    rot = frame_from_axis(w, roll=rng.uniform(-0.3, 0.3))
    v_rv = np.array([-0.75, -0.62, 0.1])
    v_rv = v_rv - (v_rv @ w) * w
    v_rv /= np.linalg.norm(v_rv)  # from the LV centre towards the RV, perpendicular to the long axis
    length = np.linalg.norm(apex - base_c)
    c_lv = base_c + w * length * 0.45
    k = rng.uniform(0.85, 1.2)  # LV size (dilated hearts exist)
    r_cav = np.array([25.0 * k, 25.0 * k, 0.45 * length])
    t = rng.uniform(9, 14)  # myocardial wall

    def valve_plane(offset: float) -> Func:
        """Everything on the apex side of the plane through ``base_c + offset * w`` (the base is open)."""
        p0 = base_c + offset * w
        return Func(lambda x, y, z: -((x - p0[0]) * w[0] + (y - p0[1]) * w[1] + (z - p0[2]) * w[2]),
                    (-1e4, -1e4, -1e4), (1e4, 1e4, 1e4))

    # epicardial fat envelope around the whole heart
    env_c = c_lv + v_rv * 12 - w * 8
    canvas.paint(Ellipsoid(env_c, (r_cav[0] + t + 32, r_cav[1] + t + 24, r_cav[2] + t + 22), rot, bumps=0.06,
                           rng=rng), hu["epi_fat"], 0, texture=6)

    # caval veins (unlabeled) and the right atrium with swirling unopacified inflow
    ra_c = H + np.array([-62.0, 24.0, 12.0]) + rng.uniform(-5, 5, size=3)
    canvas.paint(Tube([ra_c + (8, -6, 110), ra_c + (4, -2, 20)], 10), hu["svc"], 0)
    canvas.paint(Tube([ra_c + (10, 12, -120), ra_c + (6, 8, -20)], 12), hu["right"] * 0.7 + 20, 0)
    ra = Ellipsoid(ra_c, np.array([28, 30, 32]) * rng.uniform(0.85, 1.2, size=3), random_rotation(rng, 15),
                   bumps=0.08, rng=rng)
    canvas.paint(ra, hu["right"], RA, texture=rng.uniform(20, 60))

    # right ventricle: a crescent against the septum, with a thin free wall; outflow tract up to the PA valve
    c_rv = c_lv + v_rv * (r_cav[0] + t + rng.uniform(4, 10)) - w * 6
    rv_rot = np.stack([v_rv, np.cross(w, v_rv), w], axis=1)
    r_rv = np.array([19.0, 42.0, 0.5 * length]) * rng.uniform(0.85, 1.2, size=3)
    cut_rv = valve_plane(-8.0)
    canvas.paint(Ellipsoid(c_rv, r_rv + 3.5, rv_rot, bend=(0.55, 0.2)) & cut_rv, hu["myo"] - 10, 0)
    rv = Ellipsoid(c_rv, r_rv, rv_rot, bend=(0.55, 0.2), bumps=0.05, rng=rng) & cut_rv
    canvas.paint(rv, hu["right"], RV, texture=10)
    rvot = c_rv - w * r_rv[2] * 0.45
    pa_valve = base_c + np.array([18.0, -30.0, 20.0]) + rng.uniform(-5, 5, size=3)

    # left atrium: posterior, with pulmonary vein stubs (labeled LA as in MM-WHS) running into the lungs
    la_c = base_c - w * 22 + np.array([0.0, 14.0, 4.0]) + rng.uniform(-4, 4, size=3)
    la_r = np.array([34, 20, 23]) * rng.uniform(0.85, 1.2, size=3)
    canvas.paint(Ellipsoid(la_c, la_r, random_rotation(rng, 12), bumps=0.06, rng=rng), hu["left"], LA, texture=8)
    for sx_, sz_ in ((-1, 1), (-1, -1), (1, 1), (1, -1)):
        inner = la_c + np.array([sx_ * la_r[0] * 0.7, 3.0, sz_ * 9.0])
        outer = la_c + np.array([sx_ * (la_r[0] + 28), 8.0, sz_ * 16.0]) + rng.uniform(-5, 5, size=3)
        mid = (inner + outer) / 2
        canvas.paint(Tube([mid, outer], [5.0, 4.0]), hu["left"], 0, where=label_not(MYO, LV, RV, RA))
        canvas.paint(Tube([inner, mid], 5.5), hu["left"], LA, where=label_not(MYO, LV, RV, RA))

    # LV myocardium and cavity, open at the mitral/aortic valve plane
    cut = valve_plane(0.0)
    canvas.paint(Ellipsoid(c_lv + w * 3, r_cav + (t, t, 0.8 * t), rot, bumps=0.04, rng=rng) & cut, hu["myo"], MYO,
                 texture=8)
    canvas.paint(Ellipsoid(c_lv, r_cav, rot, bumps=0.05, rng=rng) & cut, hu["left"], LV, texture=6)

    # pulmonary artery: from the RV outflow, up and left, splitting under the arch
    bif = pa_valve + np.array([2.0, 30.0, 26.0]) + rng.uniform(-5, 5, size=3)
    pa_r = rng.uniform(11, 15)
    canvas.paint(Tube(smooth_curve([rvot, pa_valve, pa_valve + (8, 14, 16), bif], 8), [pa_r * 0.9, pa_r, pa_r,
                                                                                       pa_r * 0.9]),
                 hu["pa"], PA, where=label_not(LA))
    for side, length_b in ((1, 40.0), (-1, 55.0)):
        end = bif + np.array([side * length_b, 14.0, -4.0]) + rng.uniform(-5, 5, size=3)
        canvas.paint(Tube(smooth_curve([bif, (bif + end) / 2 + (0, 4, 2), end], 6), [pa_r * 0.75, pa_r * 0.65]),
                     hu["pa"], PA, where=label_not(LA, AO))
        canvas.paint(Tube([end, end + (side * 20, 6, -6)], pa_r * 0.55), hu["pa"], 0)

    # ascending aorta: from the LV outflow next to the mitral valve, up and right, then the arch
    ao_root = base_c + w * 4 + v_rv * 10 + np.array([0.0, 0.0, 4.0])
    ao_r = rng.uniform(12, 16)
    top = bif[2] + rng.uniform(30, 45)
    pts = [ao_root, ao_root + (-10, -10, 25), ao_root + (-14, -8, top - ao_root[2] - 25),
           np.array([6.0, 10.0, top]), np.array([24.0, 35.0, top - 5])]
    canvas.paint(Tube(smooth_curve(pts, 12), ao_r), hu["aorta"], AO, texture=4)
    canvas.paint(Tube(smooth_curve([np.array([24.0, 35.0, top - 5]), (26, 46, top - 25), (24, 48, 100)], 6),
                      ao_r * 0.9), hu["aorta"], 0)
    _paint_neck_vessels(canvas, rng, hu, top, ra_c)

    # coronary arteries in the grooves (bright dots in the epicardial fat)
    lad = [base_c + v_rv * 16 - w * 2, c_lv + v_rv * (r_cav[0] + t + 2), apex + v_rv * 6]
    rca = [ao_root + v_rv * 12, c_rv + v_rv * 5 - np.cross(w, v_rv) * 28, c_rv + w * 35]
    for pts_c in (lad, rca):
        canvas.paint(Tube(smooth_curve(pts_c, 8), 2.2), hu["aorta"], 0, where=label_is(0))


def _paint_neck_vessels(canvas: Canvas, rng: np.random.Generator, hu: Dict[str, float], top: float,
                        ra_c: np.ndarray) -> None:
    """The arch's three branches and the brachiocephalic veins, unlabeled (MM-WHS labels the ascending aorta only).

    A chest CT that reaches above the arch shows contrast-filled tubes there: the brachiocephalic trunk (which
    splits into the right subclavian and right common carotid arteries), the left common carotid and left
    subclavian arteries, and the veins that join into the SVC. The left one crosses in front of the arteries and
    is the brightest vessel of a CTA injected in the left arm. Without them every bright tube above the
    heart in a synthetic case is a labeled structure, and a model calls the real ones heart or aorta.
    """
    def j() -> np.ndarray:  # a small positional jitter per landmark
        return rng.uniform(-4, 4, size=3)

    artery, r = hu["aorta"], rng.uniform(0.8, 1.15)
    bt0 = np.array([-8.0, 2.0, top - 3]) + j()  # brachiocephalic trunk: up and to the right
    bif = np.array([-22.0, 2.0, top + 35]) + j()
    canvas.paint(Tube(smooth_curve([bt0, bt0 + (-4, 0, 15), bif], 6), 6.5 * r), artery, 0, where=label_is(0))
    for end in (np.array([-62.0, 12.0, top + 45]), np.array([-26.0, 4.0, top + 90])):  # R subclavian, R carotid
        canvas.paint(Tube(smooth_curve([bif, (bif + end) / 2 + (0, 0, 6), end + j()], 6), 4.2 * r), artery, 0,
                     where=label_is(0))
    lcc0 = np.array([4.0, 10.0, top + 2]) + j()  # left common carotid: straight up
    canvas.paint(Tube([lcc0, lcc0 + (6, -2, 88) + j()], 3.8 * r), artery, 0, where=label_is(0))
    ls0 = np.array([16.0, 24.0, top]) + j()  # left subclavian: up, then out to the left
    canvas.paint(Tube(smooth_curve([ls0, ls0 + (12, 4, 32), np.array([60.0, 20.0, top + 45]) + j()], 6), 5.0 * r),
                 artery, 0, where=label_is(0))
    # veins: the right brachiocephalic continues the SVC upwards, the left one crosses in front of the arteries
    svc_top = ra_c + (8, -6, 110)
    rbv = svc_top + (-10, 4, 40) + j()
    canvas.paint(Tube([svc_top, rbv], 8.0), hu["right"] * 0.7 + 20, 0, where=label_is(0))
    lbv = np.array([55.0, -10.0, top + 30]) + j()
    canvas.paint(Tube(smooth_curve([lbv, (lbv + svc_top) / 2 + (0, -14, 12), svc_top + (0, 0, 4)], 6), 6.0),
                 hu["svc"], 0, where=label_is(0))
