"""Anatomy of a synthetic case: the phantom's painted abdomen turned into two maps, FLARE22 labels and
generation tissues, plus what the phantom lacks (organ absence, arms, a patient table, metal).

Why generation tissues: FLARE22 labels only 13 organs; an image drawn from them alone would put the organs on a
flat background, which transfers poorly to real CT (research note, section 4.4). SynthSeg keeps extra
generation-only labels so each gets its own random intensity; here they are fat, muscle, bone, lung, bowel gas,
wall and contents, vessels, table... (:data:`priors.TISSUES`), all mapped to label 0 in the output.

How they are found: the phantom is painted once (portal phase) with stroke recording on
(:meth:`dvcl.phantoms.shapes.Canvas.record_strokes`). Each paint call is named from its HU argument, which is
one of the phantom's named tissue values (``PaintedAnatomy.hu``) or a known constant, or from the function that
computed it (bowel lumen, kidney, spine). Voxels written without a paint call (ribs, small-bowel loops) are
told apart by value: ribs and costal cartilage carry one exact HU each, bowel contents a continuous field.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from dvcl.phantoms.abdomen import GB, IDS, LIVER, LKID, PANC, RKID, SPLEEN, abdominal_anatomy
from dvcl.phantoms.shapes import FREE, PaintedAnatomy
from dvcl.synthesis.config import SynthesisConfig
from dvcl.synthesis.pelvis import add_pelvis, draw_pelvis
from dvcl.synthesis.priors import (
    ABSENCE,
    ADULT_ORGAN_SCALE,
    FAT_PLANE_MM,
    FAT_PLANE_ORGANS,
    PANCREAS_FAT_FRACTION,
    PANCREAS_LOBULE_MM,
    T,
)

log = logging.getLogger(__name__)

ESO = 10


@dataclass
class Anatomy:
    """Label (FLARE22 0..13) and tissue (:data:`priors.TISSUES` index) maps, (Z, Y, X), on an isotropic grid
    of ``spacing`` mm whose voxel (0, 0, 0) lies at ``origin`` (x, y, z; LPS, identity direction)."""

    label: np.ndarray
    tissue: np.ndarray
    spacing: float
    origin: np.ndarray
    body_center: Tuple[float, float]
    body_axes: Tuple[float, float]
    """half-width and half-depth of the body outline (mm)"""
    info: Dict[str, object]

    def physical_xy(self) -> Tuple[np.ndarray, np.ndarray]:
        """x (shape (1, X)) and y (shape (Y, 1)) physical coordinates of the grid columns and rows."""
        nz, ny, nx = self.label.shape
        x = self.origin[0] + self.spacing * np.arange(nx, dtype=np.float32)[None, :]
        y = self.origin[1] + self.spacing * np.arange(ny, dtype=np.float32)[:, None]
        return x, y


def paint_anatomy(seed: int, rng: np.random.Generator, cfg: SynthesisConfig,
                  pelvis_rng: Optional[np.random.Generator] = None) -> Anatomy:
    """The phantom abdomen of ``seed`` on a ``cfg.anatomy_mm`` grid, classified into tissues, then organ
    absence, table, arms and metal drawn from ``rng``; the pelvis (:mod:`dvcl.synthesis.pelvis`) from
    ``pelvis_rng`` (its own stream; default: one derived from ``seed``)."""
    size, spacing = draw_anatomy_grid(rng, cfg, cfg.z_extent_mm)
    organ_scale = draw_organ_scale(seed, cfg)
    anat = abdominal_anatomy(seed, size=size, spacing=spacing, direction="LPS", phase="portal", record_strokes=True,
                             organ_scale=organ_scale)
    out = anatomy_of(anat, classify_tissues(anat))
    if organ_scale:  # (phantom sizes add nothing, so their cases' records stay as they were)
        out.info["organ_scale"] = {k: round(v, 3) for k, v in organ_scale.items()}
    if not cfg.lesions:  # the lesion's voxels become liver tissue; its label was liver already
        out.tissue[out.tissue == T["liver_lesion"]] = T["liver"]
    fat = add_pancreatic_fat(out, seed, cfg)
    if fat is not None:  # (only fatty cases say so, so the records of the others stay as they were)
        out.info["pancreas_fat"] = round(fat, 3)
    planes = add_fat_planes(out, seed, cfg)
    if planes is not None:  # (only cases made with the option say so)
        out.info["fat_planes_mm"] = planes
    # draws happen whatever the switches, so switching one off leaves the others' draws unchanged
    u_absent, u_table, u_arms, u_metal = rng.uniform(size=4)
    absent = remove_organs(out, rng, cfg.absence_p or ABSENCE) if cfg.absence else []
    out.info["absent"] = absent
    prng = pelvis_rng if pelvis_rng is not None else own_stream(seed, 0x50454C)
    pdraw = draw_pelvis(prng, cfg)
    nz_abd = out.label.shape[0]
    out.info["pelvis"] = bool(pdraw["on"])
    if pdraw["on"]:
        out.label, out.tissue, out.origin, pinfo = add_pelvis(out.label, out.tissue, out.origin, out.spacing,
                                                              anat, pdraw)
        out.info.update(pinfo)
    n_ext = out.label.shape[0] - nz_abd
    add_surroundings(out, rng, cfg, (u_table, u_arms, u_metal),
                     lambda a, metal_rng: add_metal(a, metal_rng, anat, nz_abd, n_ext))
    return out


def own_stream(seed: int, tag: int) -> np.random.Generator:
    """A random stream of its own for one optional part of a case (pelvis, organ sizes, fatty pancreas, fat planes),
    derived from the case's ``seed`` and the part's ``tag``: turning the part on or off leaves every other draw of the
    case alone, so a case with it is the twin of the case without it."""
    return np.random.default_rng([int(seed), int(tag)])


def draw_organ_scale(seed: int, cfg: SynthesisConfig) -> Dict[str, float]:
    """Size factors of the scalable organs for ``cfg.organ_sizes`` ("phantom": none). Drawn from a stream of
    their own (derived from ``seed``), so a case with adult sizes differs from its phantom-size twin only there."""
    if cfg.organ_sizes == "phantom":
        return {}
    srng = own_stream(seed, 0x53495A45)
    return {name: float(srng.uniform(*ADULT_ORGAN_SCALE[name])) for name in ADULT_ORGAN_SCALE}


def add_pancreatic_fat(a: Anatomy, seed: int, cfg: SynthesisConfig) -> Optional[float]:
    """Make the pancreas of ``a`` fatty with probability ``cfg.fatty_pancreas_p``: a fraction of its voxels, drawn
    from :data:`priors.PANCREAS_FAT_FRACTION`, becomes fat tissue (label unchanged) where a smooth random field is
    lowest, so the fat lies between lobules of :data:`priors.PANCREAS_LOBULE_MM` and blurs into the parenchyma at
    the output resolution as it does on a scanner. Returns the fraction, or None (not fatty).

    Why: the phantom paints every pancreas as soft tissue (35-55 HU without contrast), while pancreatic steatosis
    is common in adults and can bring the organ's mean below 0 HU; a network that never saw one calls it fat.
    Drawn from a stream of its own (derived from ``seed``), so a fatty case is the twin of its plain one."""
    from dvcl.synthesis.spatial import smooth_field  # (spatial imports this module)

    if cfg.fatty_pancreas_p <= 0:
        return None
    frng = own_stream(seed, 0x46415450)
    u, fraction, lobule_mm = frng.uniform(), frng.uniform(*PANCREAS_FAT_FRACTION), frng.uniform(*PANCREAS_LOBULE_MM)
    field_seed = int(frng.integers(2**32))
    pancreas = a.label == PANC
    if u >= cfg.fatty_pancreas_p or not pancreas.any():
        return None
    box = ndimage.find_objects(pancreas.astype(np.uint8))[0]
    inside = pancreas[box]
    field = smooth_field(np.random.default_rng(field_seed), inside.shape, lobule_mm / a.spacing)
    fat = inside & (field < np.quantile(field[inside], fraction))
    a.tissue[box][fat] = T["fat"]
    return float(fraction)


def add_fat_planes(a: Anatomy, seed: int, cfg: SynthesisConfig) -> Optional[Dict[str, float]]:
    """With ``cfg.fat_planes``, turn the liver within a margin of each organ of :data:`priors.FAT_PLANE_ORGANS` into
    fat (label 0): one margin per organ, drawn from :data:`priors.FAT_PLANE_MM`; for the gallbladder only below its
    centre, so its upper part stays in the liver's fossa. Returns the margins (mm), or None (option off).

    Why: the phantom paints the gallbladder, pancreas, duodenum and adrenal glands over its liver, so in its cases
    the liver wraps them, where in a patient they lie in fat beside it; a network that never saw them in fat found
    few of them on a real scan (docs/results/synthetic_fat_planes_cpu/). Drawn from a stream of its own (derived
    from ``seed``), so a case with fat planes is the twin of the case without."""
    if not cfg.fat_planes:
        return None
    prng = own_stream(seed, 0x46504C4E)
    margins = {name: float(prng.uniform(*FAT_PLANE_MM)) for name in FAT_PLANE_ORGANS}
    for name in FAT_PLANE_ORGANS:
        organ = a.label == IDS[name]
        if not organ.any():
            continue
        pad = int(np.ceil(margins[name] / a.spacing)) + 1
        box = tuple(slice(max(s.start - pad, 0), s.stop + pad)
                    for s in ndimage.find_objects(organ.astype(np.uint8))[0])
        near = ndimage.distance_transform_edt(~organ[box], sampling=a.spacing) <= margins[name]
        near &= a.label[box] == LIVER
        if IDS[name] == GB:  # the fossa holds the upper half
            z_centre = ndimage.center_of_mass(organ)[0]
            near &= (np.arange(box[0].start, box[0].stop) < z_centre)[:, None, None]
        a.label[box][near] = 0
        a.tissue[box][near] = T["fat"]
    return {name: round(m, 2) for name, m in margins.items()}


def draw_anatomy_grid(rng: np.random.Generator, cfg: SynthesisConfig,
                      extent_mm: Tuple[float, float]) -> Tuple[Tuple[int, int, int], Tuple[float, float, float]]:
    """Size (x, y, z) and spacing of the isotropic ``cfg.anatomy_mm`` grid a phantom is painted on: a random
    in-plane field of view (``cfg.body_fov_mm``) and cranio-caudal extent (``extent_mm``, the kind's)."""
    g = float(cfg.anatomy_mm)
    fov = float(rng.uniform(*cfg.body_fov_mm))
    extent = float(rng.uniform(*extent_mm))
    n_xy, n_z = max(int(round(fov / g)), 16), max(int(round(extent / g)), 8)
    return (n_xy, n_xy, n_z), (g, g, g)


def anatomy_of(phantom, tissue: np.ndarray, info: Optional[Dict[str, object]] = None) -> Anatomy:
    """The :class:`Anatomy` of a phantom painted with stroke recording (an abdominal or cardiac one: anything with
    ``canvas``, ``grid`` and ``body``) and its tissue map; the phantom's own table becomes air (a random one is
    drawn later)."""
    scale = phantom.canvas.scale
    sx, sy = float(phantom.body.rx * scale[0]), float(phantom.body.ry * scale[1])
    cx, cy = float(phantom.grid.body_center[0]), float(phantom.grid.body_center[1])
    tissue[tissue == T["table"]] = T["air"]
    return Anatomy(phantom.canvas.lab.copy(), tissue, float(phantom.grid.spacing[0]),
                   np.asarray(phantom.grid.origin, float), (cx, cy), (sx, sy), dict(info or {}))


def add_surroundings(a: Anatomy, rng: np.random.Generator, cfg: SynthesisConfig, u: Tuple[float, float, float],
                     add_implant: Callable[[Anatomy, np.random.Generator], None]) -> None:
    """Room around the body, then a table, arms and a metal implant, each where its uniform draw in ``u``
    (table, arms, metal) falls under its probability; ``add_implant`` places the kind's implant. Shared by the
    abdominal and the cardiac anatomy (same draws in the same order)."""
    u_table, u_arms, u_metal = u
    pad_around(a, (150.0 if cfg.arms else 0.0), 90.0 if cfg.table else 0.0)
    table_rng, arms_rng, metal_rng = (np.random.default_rng(rng.integers(2**32)) for _ in range(3))
    a.info["table"] = bool(cfg.table and u_table < cfg.table_p)
    if a.info["table"]:
        add_table(a, table_rng)
    a.info["arms"] = bool(cfg.arms and u_arms < cfg.arms_p)
    if a.info["arms"]:
        add_arms(a, arms_rng)
    a.info["metal"] = bool(cfg.streaks and u_metal < cfg.metal_p)
    if a.info["metal"]:
        add_implant(a, metal_rng)


# --------------------------------------------------------------------------------------------------------------
def classify_tissues(anat: PaintedAnatomy) -> np.ndarray:
    """Generation tissue per voxel of a phantom painted in the portal phase with stroke recording on."""
    canvas, hu = anat.canvas, anat.hu
    if canvas.strokes is None:
        raise ValueError("the phantom was painted without stroke recording")
    strokes, H, lab = canvas.strokes, canvas.hu, canvas.lab
    kind = np.full(len(canvas.stroke_log) + 1, T["muscle"], np.uint8)  # index 0: never painted
    kind[0] = T["air"]
    per_voxel: Dict[str, List[int]] = {"lumen": [], "kidney": [], "spine": [], "wall": [], "free": []}
    fat = hu["fat"]
    named = {T["fat"]: [fat, fat + 5, fat + 10, fat + 20], T["muscle"]: [hu["muscle"]], T["heart"]: [hu["heart"]],
             T["vein"]: [hu["vein"]], T["portal_vein"]: [hu["portal"]], T["artery"]: [hu["artery"]],
             T["liver"]: [hu["liver"]], T["spleen"]: [hu["spleen"]], T["pancreas"]: [hu["pancreas"]],
             T["adrenal"]: [hu["adrenal"]], T["fluid"]: [25.0]}
    for i, s in enumerate(canvas.stroke_log, start=1):  # kind[i] is stroke i - 1 (kind[0]: never painted)
        if s.hu is None:
            fn = s.fn
            if "lumen_hu" in fn:
                per_voxel["lumen"].append(i - 1)
            elif "kid_hu" in fn:
                per_voxel["kidney"].append(i - 1)
            elif "paint_spine" in fn:
                per_voxel["spine"].append(i - 1)
            elif "ivc" in fn:
                kind[i] = T["vein"]
            else:
                log.debug("unnamed phantom stroke %d (%s): soft tissue", i, fn)
            continue
        match = [t for t, values in named.items() if any(abs(s.hu - v) < 1e-4 for v in values)]
        if s.label == GB:
            kind[i] = T["bile"]
        elif match:
            kind[i] = match[0]
            if match[0] == T["fat"]:
                per_voxel["free" if s.tissue == FREE else "wall"].append(i - 1)
            elif match[0] == T["muscle"]:
                per_voxel["wall"].append(i - 1)
        elif -920 <= s.hu <= -780:
            kind[i] = T["lung"]
        elif s.label is None and 0 <= s.hu <= 40:
            kind[i] = T["liver_lesion"]  # painted only where the label is liver
        elif s.label == 0 and -5 <= s.hu <= 25:
            kind[i] = T["fluid"]  # renal pelvis
        elif s.label is None and 40 <= s.hu <= 260:
            kind[i] = T["table"]
        else:
            log.debug("phantom stroke %d (HU %.1f, label %s): soft tissue", i, s.hu, s.label)
    tissue = kind[strokes.astype(np.int32) + 1]

    # bowel lumens (stomach, duodenum, oesophagus, colon): gas, enhancing wall, then contents
    for i in per_voxel["lumen"]:
        m = strokes == i
        v = H[m]
        out = np.full(v.shape, T["food"], np.uint8)
        wall = (np.abs(v - hu["wall"]) < 1e-3) | (np.abs(v - (hu["wall"] - 10)) < 1e-3)
        if np.all(lab[m] == ESO):
            wall |= v > -500
        content = ~wall & (v > -500)
        if content.any():
            c = v[content]
            kind_c = T["oral_contrast"] if np.median(c) > 100 else (T["food"] if c.std() > 15 else T["fluid"])
            out[content] = kind_c
        out[wall] = T["gi_wall"]
        out[v <= -500] = T["gas"]
        tissue[m] = out
    # kidneys: cortex within 5 mm of the organ's surface, medulla inside
    for i in per_voxel["kidney"]:
        m = strokes == i
        sl = ndimage.find_objects(m.astype(np.uint8))[0]
        sub = m[sl]
        dist = ndimage.distance_transform_edt(np.pad(sub, 1), sampling=canvas.grid.spacing[::-1])[1:-1, 1:-1, 1:-1]
        t = np.where(dist <= 5.0, T["kidney_cortex"], T["kidney_medulla"]).astype(np.uint8)
        tissue[sl][sub] = t[sub]
    # spine: cortical and cancellous bone, discs, soft tissue between the processes
    if per_voxel["spine"]:
        m = np.isin(strokes, per_voxel["spine"])
        v = H[m]
        tissue[m] = spine_tissues(v)
    # ribs (one exact HU for bone, one for cartilage) in the body wall and fat; small bowel in the free fat
    if per_voxel["wall"] or per_voxel["free"]:
        m = np.isin(strokes, per_voxel["wall"] + per_voxel["free"])
        v = H[m]
        rib = rib_voxels(v)
        t = tissue[m]
        t[rib] = np.where(v[rib] >= 300, T["bone_cortical"], T["cartilage"])
        free = np.isin(strokes[m], per_voxel["free"])
        bowel = free & ~rib & (np.abs(v - fat) > 40)
        t[bowel] = np.where(v[bowel] <= -500, T["gas"],
                            np.where(np.abs(v[bowel] - hu["wall"]) < 1e-3, T["gi_wall"],
                                     np.where(v[bowel] > 100, T["oral_contrast"], T["fluid"])))
        tissue[m] = t
    # inside the liver: hepatic veins and portal branches keep the liver label but not its intensity
    in_liver = lab == LIVER
    tissue[in_liver & ~np.isin(tissue, [T["vein"], T["portal_vein"], T["liver_lesion"]])] = T["liver"]
    return tissue


def spine_tissues(v: np.ndarray) -> np.ndarray:
    """Tissues of the voxels :func:`~dvcl.phantoms.shapes.paint_spine` wrote, from their HU ``v``: cortical and
    cancellous bone, discs (exactly 90 HU), soft tissue between the processes."""
    out = np.where(v >= 400, T["bone_cortical"], np.where(v >= 150, T["bone_cancellous"], T["muscle"]))
    out[np.abs(v - 90.0) < 1e-3] = T["disc"]
    return out.astype(np.uint8)


def rib_voxels(v: np.ndarray) -> np.ndarray:
    """Which of the HU values ``v`` (voxels of the body wall) are rib bone or costal cartilage:
    :func:`~dvcl.phantoms.shapes.paint_ribs` writes one exact value for each, over many voxels, while
    textured soft tissue never repeats a value that often."""
    dense = v > 100
    values, counts = np.unique(v[dense], return_counts=True)
    return dense & np.isin(v, values[counts >= 8])


# --------------------------------------------------------------------------------------------------------------
def remove_organs(a: Anatomy, rng: np.random.Generator, probs: Dict[str, float]) -> List[str]:
    """Drop organs with the given probabilities (their voxels become fat, label 0); returns what was removed."""
    u_gb, u_kid, u_side, u_spleen = rng.uniform(size=4)
    removed = []
    if u_gb < probs.get("gallbladder", 0.0):
        removed.append(("gallbladder", GB))
    if u_kid < probs.get("kidney", 0.0):
        removed.append(("right kidney", RKID) if u_side < 0.5 else ("left kidney", LKID))
    if u_spleen < probs.get("spleen", 0.0):
        removed.append(("spleen", SPLEEN))
    for _name, cid in removed:
        m = a.label == cid
        a.label[m] = 0
        a.tissue[m] = T["fat"]
    if removed:
        log.debug("absent organs: %s", [n for n, _ in removed])
    return [n for n, _ in removed]


def pad_around(a: Anatomy, side_mm: float, back_mm: float) -> None:
    """Room beside (arms) and behind (table) the body, filled with air."""
    px, py = int(np.ceil(side_mm / a.spacing)), int(np.ceil(back_mm / a.spacing))
    if px == 0 and py == 0:
        return
    pad = ((0, 0), (0, py), (px, px))
    a.label = np.pad(a.label, pad)
    a.tissue = np.pad(a.tissue, pad)
    a.origin = a.origin - np.array([px * a.spacing, 0.0, 0.0])


def add_table(a: Anatomy, rng: np.random.Generator) -> None:
    """A curved carbon-fibre table (a shell, slightly concave towards the patient) just behind the body."""
    x, y = a.physical_xy()
    cx, cy = a.body_center
    y0 = cy + a.body_axes[1] + rng.uniform(2, 25)
    half_w, thick, curve = rng.uniform(180, 250), rng.uniform(6, 14), rng.uniform(0.0, 0.0012)
    top = y0 - curve * (x - cx) ** 2
    shell = (y >= top) & (y <= top + thick) & (np.abs(x - cx) <= half_w)
    _paint2d(a, shell, T["table"])


def add_arms(a: Anatomy, rng: np.random.Generator) -> None:
    """Arms down beside the body: skin fat, muscle, humerus (cortex around marrow), along the whole scan."""
    x, y = a.physical_xy()
    cx, cy = a.body_center
    for side in (-1, 1):
        r = rng.uniform(35, 50)
        ax = cx + side * (a.body_axes[0] + rng.uniform(3, 40) + r)
        ay = cy + rng.uniform(-0.3, 0.3) * a.body_axes[1]
        d = np.sqrt(((x - ax) / r) ** 2 + ((y - ay) / (r * rng.uniform(0.8, 1.0))) ** 2) * r
        rb = rng.uniform(9, 13)
        bx, by = ax + rng.uniform(-0.3, 0.3) * r, ay + rng.uniform(-0.3, 0.3) * r
        db = np.sqrt((x - bx) ** 2 + (y - by) ** 2)
        arm = (T["fat"], T["muscle"], T["bone_cortical"])
        _paint2d(a, d <= r, T["fat"])
        _paint2d(a, d <= r - rng.uniform(4, 12), T["muscle"], arm)
        _paint2d(a, db <= rb, T["bone_cortical"], arm)
        _paint2d(a, db <= rb - rng.uniform(2.5, 4), T["bone_cancellous"], arm)


def add_metal(a: Anatomy, rng: np.random.Generator, anat: PaintedAnatomy, nz: Optional[int] = None,
              offset: int = 0) -> None:
    """A pair of pedicle screws at a random vertebral level of the abdomen (its ``nz`` slices from ``offset``
    on: a pelvis below does not move them): dense enough to cause strong streaks."""
    sc = anat.canvas.scale
    cx, cy = a.body_center
    spine_y = cy + 42.0 * sc[1]
    nz = a.label.shape[0] if nz is None else nz
    k0 = offset + int(rng.integers(nz // 4, max(nz // 4 + 1, 3 * nz // 4)))
    k1 = min(a.label.shape[0], k0 + max(1, int(round(rng.uniform(5, 8) / a.spacing))))
    x, y = a.physical_xy()
    for side in (-1, 1):
        sx = cx + side * 12.0 * sc[0]
        t = np.clip((y - (spine_y + 35)) / -45.0, 0, 1)  # from the lamina forwards into the vertebral body
        px = sx - side * 6.0 * t
        screw = (np.abs(x - px) <= 3.0) & (y >= spine_y - 10) & (y <= spine_y + 35)
        a.tissue[k0:k1][:, screw] = T["metal"]


def _paint2d(a: Anatomy, mask2d: np.ndarray, tissue: int, over: tuple = ()) -> None:
    """Paint a z-invariant cross-section on every slice, only over air (and the tissues in ``over``: an arm's
    muscle over its own fat), so the table and arms never cut into the body."""
    m = np.broadcast_to(mask2d, a.tissue.shape[1:])
    allowed = np.array((T["air"],) + tuple(over), np.uint8)
    for k in range(a.tissue.shape[0]):
        t = a.tissue[k]
        t[m & np.isin(t, allowed) & (a.label[k] == 0)] = tissue
