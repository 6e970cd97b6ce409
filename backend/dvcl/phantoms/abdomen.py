"""Synthetic abdominal CT with the 13 FLARE22 organs, for tests, demos and learning-curve experiments.

The anatomy is written in reference millimetres of a standard adult (LPS: x to the patient's left, y
posterior, z superior; origin at the body centre at the level of L1) and scaled to a random body that fits a
random field of view. Positions follow real CT (centroids measured on ``tests/data/abdomen_ct_3mm``): liver in
the right upper abdomen, spleen left posterior, kidneys beside the spine, aorta just left of the midline in
front of the vertebra, IVC on its right, pancreas across the midline in front of the aorta with its head in the
duodenal C-loop, stomach left anterior, gallbladder under the liver, adrenals above the kidneys.

Difficulty comes from what makes real CT hard: three contrast phases (native, arterial, portal venous) that
change organ intensities, organs with similar HU touching each other (liver/spleen/stomach wall/bowel),
unlabeled look-alikes (bowel loops, colon, portal and splenic veins, renal veins, psoas), random shape, size,
position and rotation, partial-volume blur and correlated noise.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk

from dvcl.errors import ConfigError
from dvcl.phantoms.shapes import (
    FREE,
    SOLID,
    Body,
    Bumpy,
    Canvas,
    Ellipsoid,
    Func,
    PaintedAnatomy,
    Region,
    TorsoRanges,
    Tube,
    acquire_phantom,
    elliptic_cylinder,
    free_only,
    label_is,
    label_not,
    lumen_hu,
    paint_body_wall,
    paint_ribs,
    paint_spine,
    random_rotation,
    rotation,
    smooth_curve,
    start_anatomy,
)
from dvcl.presets import PRESETS

log = logging.getLogger(__name__)

#: FLARE22 class ids, from the preset so the two can never disagree.
IDS: Dict[str, int] = {name: cid for cid, name in PRESETS["flare22"].labels.items()}
LIVER, RKID, SPLEEN, PANC = IDS["liver"], IDS["right kidney"], IDS["spleen"], IDS["pancreas"]
AORTA, IVC, RADR, LADR = IDS["aorta"], IDS["inferior vena cava"], IDS["right adrenal gland"], IDS["left adrenal gland"]
GB, ESO, STOM, DUOD, LKID = IDS["gallbladder"], IDS["esophagus"], IDS["stomach"], IDS["duodenum"], IDS["left kidney"]

#: organs whose drawn size ``organ_scale`` may multiply (both kidneys share one factor)
SCALABLE = ("liver", "kidney", "spleen", "gallbladder")

PHASES = ("native", "arterial", "portal")

#: Mean HU per tissue and contrast phase (literature values for adult CT; the liver is kept <= ~88 HU).
_HU: Dict[str, Dict[str, float]] = {
    "native": dict(liver=57, spleen=47, cortex=33, medulla=28, pancreas=42, artery=42, vein=40, portal=40,
                   adrenal=28, wall=40, heart=42, muscle=48, spleen_tex=4),
    "arterial": dict(liver=68, spleen=100, cortex=185, medulla=85, pancreas=110, artery=290, vein=80, portal=120,
                     adrenal=60, wall=85, heart=230, muscle=52, spleen_tex=22),
    "portal": dict(liver=80, spleen=98, cortex=160, medulla=145, pancreas=88, artery=165, vein=150, portal=170,
                   adrenal=55, wall=70, heart=150, muscle=55, spleen_tex=6),
}

#: Reference body: half-width and half-depth of the abdominal cavity inside the muscle wall (mm).
REF_CAVITY = (143.0, 102.0)
#: Ribs 12 (floating) to 6: (rib number, how far round bone reaches, how far cartilage reaches; radians from
#: the posterior midline).
_RIBS = ((12, 1.1, 1.1), (11, 1.6, 1.6), (10, 2.2, 2.65), (9, 2.45, 2.9), (8, 2.55, 2.95), (7, 2.65, 2.95),
         (6, 2.7, 2.95))
#: Reference z range of the organs (mm, L1 = 0): the scan covers about this, centred here.
REF_Z_CENTER, REF_Z_EXTENT = 12.0, 180.0
TORSO = TorsoRanges(REF_CAVITY, REF_Z_CENTER, REF_Z_EXTENT, ratio=(0.66, 0.82), fat=(0.05, 0.15),
                    muscle=(0.035, 0.055), extent_jitter=(1.0, 1.25), slice_mm=(1.5, 5.0), warp_mm=6.0,
                    texture_mm=6.0)


def abdominal_anatomy(
    seed: int,
    size: Optional[Sequence[int]] = None,
    spacing: Optional[Sequence[float]] = None,
    direction: Optional[Union[str, Sequence[float]]] = None,
    phase: Optional[str] = None,
    record_strokes: bool = False,
    organ_scale: Optional[Dict[str, float]] = None,
) -> PaintedAnatomy:
    """Paint one random abdomen (arguments as :func:`make_abdominal_phantom`); ``record_strokes`` keeps, per
    voxel, which paint call wrote it (see :meth:`Canvas.record_strokes`). The random draws are the same with
    and without it. ``organ_scale`` multiplies the drawn sizes of the organs it names (:data:`SCALABLE`), after
    every draw, so the rest of the case is unchanged (the synthetic generator's adult organ sizes use it)."""
    anat = start_anatomy(seed, TORSO, PHASES, (0.25, 0.35, 0.40), (8, 22), size, spacing, direction, phase,
                         record_strokes)
    canvas, rng, body, phase, hu = anat.canvas, anat.rng, anat.body, anat.phase, anat.hu
    jitter = {"artery": {"native": 4, "arterial": 40, "portal": 20}[phase]}
    hu.update({k: v + rng.normal(0, jitter.get(k, 4)) for k, v in _HU[phase].items()})
    hu["liver"] = float(np.clip(hu["liver"], 48, 88))
    hu["fat"] = rng.uniform(-115, -85)
    paint_body_wall(canvas, rng, body, hu["fat"], hu["muscle"])
    zd = _paint_thorax(canvas, rng, body, hu)
    _paint_back_muscles(canvas, rng, hu["muscle"])
    paint_spine(canvas, rng, rng.uniform(38, 46), hu["muscle"])
    _paint_organs(canvas, rng, body, hu, phase, zd, organ_scale or {})
    _paint_bowel(canvas, rng, hu)
    base = rng.uniform(-8, 8)  # ribs 12 (lowest, floating) up to 6; heads one vertebra (33 mm) apart
    paint_ribs(canvas, rng, body, [(33.0 * (13 - k) + base, tb, tc) for k, tb, tc in _RIBS])
    return anat


def make_abdominal_phantom(
    seed: int,
    size: Optional[Sequence[int]] = None,
    spacing: Optional[Sequence[float]] = None,
    direction: Optional[Union[str, Sequence[float]]] = None,
    phase: Optional[str] = None,
    noise_sd: Optional[float] = None,
) -> Tuple[sitk.Image, sitk.Image]:
    """A random abdominal CT (int16 HU) and its FLARE22 label map (uint8) on the same grid.

    Args:
        seed: everything is a function of the seed (same seed, same phantom, bit for bit).
        size: voxels (x, y, z); default random 96-160 in-plane, 40-80 slices.
        spacing: mm (x, y, z); default random 0.7-1.5 in-plane (field of view >= 130 mm), 1.5-5 mm slices.
        direction: ``"LPS"``, ``"RAS"``, ``"LPI"``, ``"RAI"`` or 9 numbers; default random among the names.
        phase: ``"native"``, ``"arterial"`` or ``"portal"``; default random.
        noise_sd: HU standard deviation of the image noise; default random 8-22.

    Returns:
        ``(image, label)``: SimpleITK images with identical geometry.
    """
    anat = abdominal_anatomy(seed, size, spacing, direction, phase)
    grid = anat.grid
    image = grid.to_image(acquire_phantom(anat, noise_sd))
    label = grid.to_image(anat.canvas.lab)
    log.debug("abdominal phantom seed=%d phase=%s size=%s spacing=%s", seed, anat.phase, grid.size, grid.spacing)
    return image, label


# --------------------------------------------------------------------------------------------------------------
def _dome(rng: np.random.Generator) -> Tuple[float, float]:
    return float(rng.uniform(92, 112)), float(rng.uniform(82, 102))


def _diaphragm_z(hr: float, hl: float):
    """Height (ref mm) of the diaphragm above (x, y): two paraboloid domes, lower posteriorly and laterally."""

    def zd(x, y):
        r = hr - 70.0 * (((x + 55.0) / 85.0) ** 2 + ((y - 5.0) / 85.0) ** 2)
        left = hl - 70.0 * (((x - 60.0) / 85.0) ** 2 + ((y - 5.0) / 85.0) ** 2)
        return np.maximum(r, left)

    return zd


def _paint_thorax(canvas: Canvas, rng: np.random.Generator, body: Body, hu: dict) -> Callable:
    """Above the diaphragm: diaphragm muscle, lung bases (-850 HU), mediastinal fat and the heart.

    Returns the diaphragm height function; the upper abdominal organs are clipped below it.
    """
    hr, hl = _dome(rng)
    zd = _diaphragm_z(hr, hl)
    cav = body.cavity()
    top = 1e4
    above = Func(lambda x, y, z: np.maximum(cav.sdf(x, y, z), zd(x, y) - z), (-150, -110, 20), (150, 110, top))
    canvas.paint(above, hu["muscle"])
    lung = Func(lambda x, y, z: np.maximum(cav.sdf(x, y, z) + 2, zd(x, y) + 6 - z), (-150, -110, 20), (150, 110, top))
    canvas.paint(lung, rng.uniform(-880, -820), texture=25)
    canvas.paint(elliptic_cylinder(32, 34, cy=15, z0=max(hr, hl) - 20), hu["fat"] + 10)
    heart = Ellipsoid((rng.uniform(5, 25), rng.uniform(-50, -30), max(hr, hl) + 25), (75, 55, 55),
                      random_rotation(rng, 10), bumps=0.05, rng=rng)
    canvas.paint(heart & Func(lambda x, y, z: zd(x, y) + 6 - z, (-1e4, -1e4, 0), (1e4, 1e4, 1e4)), hu["heart"],
                 texture=8)
    return zd


def _paint_back_muscles(canvas: Canvas, rng: np.random.Generator, muscle_hu: float) -> None:
    """Paraspinal muscles, psoas (growing towards the pelvis) and quadratus lumborum."""
    for side in (-1, 1):
        canvas.paint(elliptic_cylinder(rng.uniform(24, 32), rng.uniform(20, 26), cx=side * 34,
                                       cy=rng.uniform(84, 92)), muscle_hu, texture=4)
        psoas = Tube(smooth_curve([(side * 20, 36, 45), (side * 30, 32, -10), (side * 42, 24, -70),
                                   (side * 50, 18, -130)], 8),
                     [2, 12 * rng.uniform(0.8, 1.2), 20 * rng.uniform(0.8, 1.2), 24])
        canvas.paint(psoas, muscle_hu, texture=4)
        ql = Tube([(side * 62, 66, 25), (side * 70, 64, -40), (side * 76, 60, -130)], [4, 12, 14])
        canvas.paint(ql, muscle_hu, texture=4)


# --------------------------------------------------------------------------------------------------------------
def _jit(rng: np.random.Generator, p: Sequence[float], amount: Union[float, Sequence[float]]) -> np.ndarray:
    return np.asarray(p, float) + rng.uniform(-1, 1, size=3) * np.asarray(amount, float)


def _below_diaphragm(zd: Callable, margin: float) -> Func:
    return Func(lambda x, y, z: z - (zd(x, y) - margin), (-1e4, -1e4, -1e4), (1e4, 1e4, 1e4))


def _paint_organs(canvas: Canvas, rng: np.random.Generator, body: Body, hu: dict, phase: str,
                  zd: Callable, scale: Dict[str, float]) -> None:
    """The 13 FLARE organs plus the unlabeled vessels between them, in priority order (later wins).
    ``scale``: extra size factors of :data:`SCALABLE` organs (missing: 1), applied to the drawn sizes."""
    unknown = set(scale) - set(SCALABLE)
    if unknown:
        raise ConfigError(f"organ_scale: unknown organs {sorted(unknown)}; scalable: {', '.join(SCALABLE)}")
    k_liver, k_kid, k_spleen, k_gb = (float(scale.get(n, 1.0)) for n in SCALABLE)
    below = _below_diaphragm(zd, 2.5)
    cav = body.cavity(3.0)
    S = rng.uniform(0.85, 1.15, size=3)  # per-patient organ size factors (x, y, z)

    # kidneys first as shapes (the liver and spleen are carved around them), painted later
    kidneys = {}
    for side, cid, c in ((-1, RKID, (-68, 42, -14)), (1, LKID, (75, 45, -3))):
        c = _jit(rng, c, (8, 6, 14))
        r = np.array([27, 29, 52]) * rng.uniform(0.85, 1.15) * S * k_kid
        rot = rotation(np.deg2rad(-15), side * np.deg2rad(-15), np.deg2rad(side * 35)) @ random_rotation(rng, 8)
        kid = Ellipsoid(c, r, rot, bumps=0.06, rng=rng)
        hdir = np.array([-side * 0.8, -0.6, 0.0])
        sinus = Ellipsoid(c + hdir * 0.75 * r[0], (0.55 * r[0], 0.5 * r[0], 0.45 * r[2]), rot)
        kidneys[cid] = (kid, sinus, c, r, side)

    # liver: right lobe + left lobe, clipped by the wall, the diaphragm and the right kidney
    right = Ellipsoid(_jit(rng, (-62, -10, 28), (8, 8, 10)),
                      np.array([80, 92, 85]) * S * rng.uniform(0.9, 1.1) * k_liver,
                      random_rotation(rng, 8), bumps=0.08, rng=rng)
    left = Ellipsoid(_jit(rng, (15, -50, 48), (12, 8, 10)),
                     np.array([62, 36, 40]) * S * rng.uniform(0.8, 1.2) * k_liver,
                     rotation(0, 0, np.deg2rad(-15)) @ random_rotation(rng, 10), bumps=0.1, rng=rng)
    spine_keepout = elliptic_cylinder(32, 45, cx=8, cy=40)
    kc, kr, krot = kidneys[RKID][2], kidneys[RKID][3], kidneys[RKID][0].rot
    # the kidney and the retroperitoneum behind it are no place for the liver (leave perirenal fat)
    behind_kidney = Ellipsoid(kc + (0, 30, -10), (kr[0] + 10, kr[1] + 32, kr[2] + 6), krot)
    liver = ((right | left) & cav & below) - spine_keepout - Ellipsoid(kc, kr + 6, krot) - behind_kidney
    canvas.paint(Bumpy(liver, rng, 2.0, 60.0), hu["liver"], LIVER, texture=4)
    if rng.uniform() < 0.25:  # a hypodense lesion (cyst/metastasis): still liver in FLARE's labels
        canvas.paint(Ellipsoid(_jit(rng, (-70, -10, 35), (30, 30, 25)), rng.uniform(6, 16, size=3), bumps=0.1,
                               rng=rng), rng.uniform(5, 35), label=None, where=label_is(LIVER))

    # spleen: a crescent against the left posterolateral wall
    sc = _jit(rng, (98, 50, 38), (8, 8, 10))
    az = np.arctan2(sc[1], sc[0])
    spleen = Ellipsoid(sc, np.array([22, 50, 52]) * rng.uniform(0.75, 1.3) * S[[0, 1, 2]] * k_spleen,
                       rotation(0, 0, az) @ random_rotation(rng, 10), bend=(0.5, 0.3), bumps=0.08, rng=rng)
    spleen = (spleen & cav & below) - Ellipsoid(kidneys[LKID][2], kidneys[LKID][3] + 5, kidneys[LKID][0].rot)
    canvas.paint(spleen, hu["spleen"], SPLEEN, texture=hu["spleen_tex"] + 3)

    # stomach: fundus under the left dome, body anterior, antrum crossing to the pylorus right of midline
    dist = rng.uniform(0.7, 1.25)
    pts = [_jit(rng, p, 8) for p in [(55, 15, 78), (62, -15, 55), (55, -45, 25), (35, -65, 5), (5, -62, -5)]]
    pylorus = _jit(rng, (-18, -48, -5), 5)
    stomach = Tube(smooth_curve(pts + [pylorus], 14), np.array([32, 34, 30, 24, 18, 10]) * dist)
    stomach = Bumpy(stomach, rng, 3.0, 40.0) & cav & below
    canvas.paint(stomach, lumen_hu(canvas, rng, 4.0, hu["wall"], "level"), STOM)

    # pancreas: head in the duodenal C, neck in front of the portal confluence, tail at the splenic hilum
    pts = [_jit(rng, p, 6) for p in [(-35, -22, -28), (-28, -25, -12), (-2, -32, -2), (30, -28, 6), (60, -5, 14),
                                     (82, 20, 22)]]
    pr = np.array([15, 15, 11, 10, 9, 8]) * rng.uniform(0.8, 1.2)
    canvas.paint(Bumpy(Tube(smooth_curve(pts, 12), pr), rng, 2.5, 25.0), hu["pancreas"], PANC, texture=10)

    # duodenum: bulb, descending, horizontal (in front of IVC and aorta), ascending limb
    pts = [pylorus] + [_jit(rng, p, 6) for p in [(-38, -38, -2), (-52, -20, -12), (-52, -12, -35), (-38, -18, -55),
                                                 (-10, -22, -60), (18, -22, -50), (26, -28, -30)]]
    duo = Tube(smooth_curve(pts, 16), 11 * rng.uniform(0.8, 1.2))
    canvas.paint(Bumpy(duo, rng, 1.5, 30.0) & cav, lumen_hu(canvas, rng, 3.0, hu["wall"], "level"), DUOD,
                 where=label_not(PANC))

    # gallbladder: a pear in the liver's fossa, fundus pointing anterior-inferior (sometimes contracted)
    gb_size = rng.uniform(0.55, 1.25) * k_gb
    gb = Ellipsoid(_jit(rng, (-60, -50, -4), (8, 8, 8)), np.array([16, 30, 16]) * gb_size,
                   rotation(np.deg2rad(rng.uniform(20, 45)), 0, np.deg2rad(rng.uniform(-30, 10))), bumps=0.05,
                   rng=rng)
    canvas.paint(gb & cav, rng.uniform(0, 25), GB)

    # renal veins (unlabeled), then kidneys with cortex / medulla and a hilum of sinus fat
    canvas.paint(Tube([kidneys[RKID][2] + (20, -14, 2), (-16, 4, -8)], 5), hu["vein"], 0)
    canvas.paint(Tube([kidneys[LKID][2] + (-22, -14, 0), (14, -9, -5), (-12, 0, -6)], 4.5), hu["vein"], 0)
    for cid, (kid, sinus, _c, _r, _side) in kidneys.items():
        def kid_hu(reg: Region) -> np.ndarray:
            d = reg.d[reg.mask]
            return np.where(d > -5.5, hu["cortex"], hu["medulla"])

        canvas.paint(kid - sinus, kid_hu, cid, texture=5)
        canvas.paint(sinus & kid, hu["fat"] + 20, 0)
        canvas.paint(Ellipsoid(sinus.c, sinus.r * 0.45, sinus.rot), rng.uniform(0, 20), 0)  # renal pelvis (urine)

    # adrenal glands: thin inverted-Y plates above and medial to the upper poles
    for cid, c, sgn in ((RADR, (-33, 24, 40), -1), (LADR, (46, 20, 32), 1)):
        c = _jit(rng, c, (5, 5, 8))
        limb1 = Ellipsoid(c, (4.5, 16, 15) * rng.uniform(0.85, 1.2, size=3), rotation(0, 0, np.deg2rad(sgn * 40)))
        limb2 = Ellipsoid(c + (sgn * 6, 4, -10), (4.5, 13, 12) * rng.uniform(0.85, 1.2, size=3),
                          rotation(0, 0, np.deg2rad(-sgn * 30)))
        canvas.paint(limb1 | limb2, hu["adrenal"], cid, where=label_not(RKID, LKID, IVC, AORTA))

    # oesophagus: from the posterior mediastinum through the hiatus into the cardia of the stomach
    pts = [_jit(rng, p, 4) for p in [(2, 22, 200), (5, 12, 120), (18, -5, 88), (36, -10, 72), (48, -8, 66)]]
    canvas.paint(Tube(smooth_curve(pts, 10), 7.5 * rng.uniform(0.85, 1.2)),
                 lumen_hu(canvas, rng, 3.5, hu["wall"], "collapsed"), ESO)

    # portal system (unlabeled): splenic vein along the back of the pancreas, SMV, portal vein to the hilum
    conf = _jit(rng, (0, -16, -3), 4)
    splenic = Tube(smooth_curve([conf, _jit(rng, (30, -12, 6), 4), _jit(rng, (60, 8, 14), 4), (85, 28, 22)], 8), 4.5)
    canvas.paint(splenic, hu["portal"], 0, where=label_not(SPLEEN))
    portal = Tube(smooth_curve([conf, _jit(rng, (-20, -20, 12), 4), _jit(rng, (-40, -18, 25), 4)], 6), 7)
    canvas.paint(portal, hu["portal"], 0, where=label_not(LIVER))
    canvas.paint(Tube([conf, (2, -32, -12), _jit(rng, (0, -40, -80), 6)], 5), hu["portal"], 0)  # SMV
    canvas.paint(Tube([(12, -2, 8), (10, -30, -12), _jit(rng, (8, -42, -80), 6)], 3.5), hu["artery"], 0)  # SMA

    # intrahepatic vessels: texture inside the liver (still labeled liver)
    hv_hu = {"native": hu["liver"] - 22, "arterial": hu["liver"] + rng.uniform(-10, 15),
             "portal": hu["vein"]}[phase]
    pv_hu = {"native": hu["liver"] - 22, "arterial": hu["portal"], "portal": hu["portal"]}[phase]
    root_h, root_p = np.array([-18.0, -2.0, 72.0]), np.array([-40.0, -18.0, 25.0])
    for root, vhu, ends in ((root_h, hv_hu, [(-100, -40, 55), (-50, -70, 62), (20, -55, 62), (-95, 20, 40)]),
                            (root_p, pv_hu, [(-95, 10, 10), (-75, -60, 20), (10, -60, 40), (-60, 40, 50)])):
        for e in ends:
            tip = _jit(rng, e, 15)
            mid = (root + tip) / 2 + rng.uniform(-8, 8, size=3)
            canvas.paint(Tube(smooth_curve([root, mid, tip], 6), [5.5, 3.5, 1.5]), vhu, None,
                         where=label_is(LIVER))

    # aorta and IVC last: they run through everything else
    pts = [(18, 24, 260), (14, 12, 80), (12, 8, 20), (10, 6, -40), (8, 4, -140)]
    aorta = Tube(smooth_curve([_jit(rng, p, (5, 3, 0)) for p in pts], 12), 11 * rng.uniform(0.85, 1.15))
    canvas.paint(aorta, hu["artery"], AORTA, texture=3)
    ivc_hu = hu["vein"]

    def ivc_values(reg: Region) -> np.ndarray:
        z = reg.z[reg.mask]  # arterial phase: enhanced renal return above the renal veins mixes in
        if phase == "arterial":
            return np.where(z > -5, ivc_hu + 40, ivc_hu)
        return np.full(z.shape, ivc_hu, np.float32)

    pts = [(-16, 4, -140), (-16, 3, -30), (-20, -2, 20), (-18, -2, 70), (-8, -12, 112)]
    ivc = Tube(smooth_curve([_jit(rng, p, (4, 3, 0)) for p in pts], 12), 12 * rng.uniform(0.85, 1.15),
               scale=(1.25, 0.8, 1.0))
    canvas.paint(ivc, ivc_values, IVC, texture=3)



def bowel_loop_values(n_loop, n_gas, threshold: float, gas_threshold: float, wall_hu, gas_hu, content_hu):
    """Bowel loops from two smooth noise fields -> ``(loop mask, HU)``: voxels above ``threshold`` of ``n_loop`` are
    bowel, a 0.35-wide band above it the wall, and the lumen is gas where ``n_gas`` exceeds ``gas_threshold``, else
    content. Shared by the phantom's small bowel and the synthetic pelvis's ileum."""
    loop = n_loop > threshold
    wall = loop & (n_loop < threshold + 0.35)
    return loop, np.where(wall, wall_hu, np.where(n_gas > gas_threshold, gas_hu, content_hu))

def _paint_bowel(canvas: Canvas, rng: np.random.Generator, hu: dict) -> None:
    """Colon frame and small-bowel loops in the remaining visceral fat (unlabeled hard negatives)."""
    pts = [(-105, 5, -150), (-105, 0, -40), (-92, -40, -15), (-50, -82, -25), (0, -88, -30), (50, -80, -12),
           (100, -30, 20), (110, 20, 5), (110, 25, -150)]
    pts = [_jit(rng, p, (10, 8, 12)) for p in pts]
    colon = Bumpy(Tube(smooth_curve(pts, 24), 20 * rng.uniform(0.75, 1.2)), rng, 4.0, 22.0)
    canvas.paint(colon, lumen_hu(canvas, rng, 2.5, hu["wall"] - 10, "colon"), 0, where=free_only)

    # small bowel: blobs of a smooth noise field, only in free space, mostly below L1 and anterior
    free = canvas.tissue == FREE
    z_lim = rng.uniform(-15, 25)
    sel = free & (canvas.z < z_lim) & (canvas.y < 45)
    if not sel.any() or canvas.tex is None:
        return
    x, y, z = canvas.x[sel], canvas.y[sel], canvas.z[sel]
    n0 = canvas.tex.sample(0, x, y, z)
    thr = rng.uniform(-0.3, 0.4)
    contrast = rng.uniform() < 0.2
    content_hu = rng.uniform(180, 300) if contrast else rng.uniform(5, 30)
    n1 = canvas.tex.sample(1, x, y, z)
    loop, vals = bowel_loop_values(n0, n1, thr, rng.uniform(1.0, 1.6), hu["wall"], -1000.0, content_hu + 8 * n1)
    hu_sel = canvas.hu[sel]
    hu_sel[loop] = vals[loop]
    canvas.hu[sel] = hu_sel
    tis = canvas.tissue[sel]
    tis[loop] = SOLID
    canvas.tissue[sel] = tis
