"""Anatomy of a synthetic cardiac case: the cardiac phantom's chest and heart turned into MM-WHS labels and
generation tissues, plus a patient table, arms and sternotomy wires.

Why the same route as the abdomen (:mod:`dvcl.synthesis.anatomy`): a model for the seven MM-WHS structures must
not learn one contrast timing or one scanner either. The phantom (:mod:`dvcl.phantoms.cardiac`) is painted once
with stroke recording on; every paint call is named from the HU it was given (the phantom's named values:
left and right blood, myocardium, fat, muscle ...) or from the function that computed it (lungs with their
vessels, the liver dome, the spine). The generator (:func:`dvcl.synthesis.generator.synthesize` with
``kind="cardiac"``) then deforms the maps and draws every tissue's HU for one of the cardiac contrast timings
(:data:`dvcl.synthesis.priors.CARDIAC_PHASES`): coronary CTA with the left heart brightest, pulmonary CTA with
the right heart brightest, a venous scan, or no contrast.

What the abdominal switches mean here: ``absence`` and ``pelvis`` do nothing (no chamber is ever missing);
``streaks`` also governs sternotomy wires (the cardiac counterpart of the abdomen's pedicle screws, same
probability); the cranio-caudal extent is drawn from ``heart_z_extent_mm``.
"""

from __future__ import annotations

import logging
from typing import Dict, List

import numpy as np

from dvcl.phantoms.cardiac import cardiac_anatomy
from dvcl.phantoms.shapes import PaintedAnatomy
from dvcl.synthesis.anatomy import (
    Anatomy,
    add_surroundings,
    anatomy_of,
    draw_anatomy_grid,
    rib_voxels,
    spine_tissues,
)
from dvcl.synthesis.config import SynthesisConfig
from dvcl.synthesis.priors import T

log = logging.getLogger(__name__)

#: the phase the phantom is painted in (its HU are replaced; the phase only decides whether an SVC jet exists)
PAINT_PHASE = "arterial"


def paint_cardiac_anatomy(seed: int, rng: np.random.Generator, cfg: SynthesisConfig) -> Anatomy:
    """The cardiac phantom of ``seed`` on a ``cfg.anatomy_mm`` grid, classified into tissues, then table, arms
    and sternotomy wires drawn from ``rng`` (every draw made whatever the switches)."""
    size, spacing = draw_anatomy_grid(rng, cfg, cfg.heart_z_extent_mm)
    anat = cardiac_anatomy(seed, size=size, spacing=spacing, direction="LPS", phase=PAINT_PHASE, record_strokes=True)
    out = anatomy_of(anat, classify_cardiac_tissues(anat), {"absent": [], "pelvis": False})
    u_table, u_arms, u_metal = rng.uniform(size=3)
    add_surroundings(out, rng, cfg, (u_table, u_arms, u_metal),
                     lambda a, metal_rng: add_sternal_wires(a, metal_rng, anat))
    return out


def classify_cardiac_tissues(anat: PaintedAnatomy) -> np.ndarray:
    """Generation tissue per voxel of a cardiac phantom painted with stroke recording on."""
    canvas, hu = anat.canvas, anat.hu
    if canvas.strokes is None:
        raise ValueError("the phantom was painted without stroke recording")
    strokes, H = canvas.strokes, canvas.hu
    # named values, first match wins (the SVC carries the right heart's value when it has no jet of its own)
    named = [(T["blood_right"], [hu["right"], hu["pa"]]), (T["blood_left"], [hu["left"], hu["aorta"]]),
             (T["contrast_inflow"], [hu["svc"]]), (T["vein"], [hu["right"] * 0.7 + 20]),
             (T["myocardium"], [hu["myo"], hu["myo"] - 10]),
             (T["fat"], [hu["fat"], hu["fat"] + 5, hu["fat"] + 10, hu["epi_fat"]]), (T["muscle"], [hu["muscle"]]),
             (T["gas"], [-1000.0]), (T["fluid"], [25.0])]
    kind = np.full(len(canvas.stroke_log) + 1, T["muscle"], np.uint8)  # index 0: never painted
    kind[0] = T["air"]
    per_voxel: Dict[str, List[int]] = {"lung": [], "abdomen": [], "spine": [], "wall": []}
    for i, s in enumerate(canvas.stroke_log, start=1):  # kind[i] is stroke i - 1
        if s.hu is None:
            key = next((k for k, fn in (("lung", "lung_hu"), ("abdomen", "abdomen_hu"), ("spine", "paint_spine"))
                        if fn in s.fn), None)
            if key is None:
                log.debug("unnamed cardiac phantom stroke %d (%s): soft tissue", i, s.fn)
            else:
                per_voxel[key].append(i - 1)
            continue
        match = next((t for t, values in named if any(abs(s.hu - v) < 1e-4 for v in values)), None)
        if match is not None:
            kind[i] = match
            if match in (T["fat"], T["muscle"]):
                per_voxel["wall"].append(i - 1)
        elif s.label is None and 250 <= s.hu <= 450:
            kind[i] = T["bone_cancellous"]  # sternum
        elif s.label is None and 40 <= s.hu < 250:
            kind[i] = T["table"]
        else:
            log.debug("cardiac phantom stroke %d (HU %.1f, label %s): soft tissue", i, s.hu, s.label)
    tissue = kind[strokes.astype(np.int32) + 1]

    # lungs: parenchyma with vessels (the bright tail of a noise field, painted at exactly 30 HU)
    if per_voxel["lung"]:
        m = np.isin(strokes, per_voxel["lung"])
        tissue[m] = np.where(np.abs(H[m] - 30.0) < 1e-3, T["blood_right"], T["lung"]).astype(np.uint8)
    # below the diaphragm: the liver dome on the right (x < 10 mm in the reference frame), muscle on the left
    if per_voxel["abdomen"]:
        m = np.isin(strokes, per_voxel["abdomen"])
        tissue[m] = np.where(canvas.x[m] < 10, T["liver"], T["muscle"]).astype(np.uint8)
    if per_voxel["spine"]:
        m = np.isin(strokes, per_voxel["spine"])
        tissue[m] = spine_tissues(H[m])
    # ribs and costal cartilage, written into whatever the wall, fat or lung held there
    wall = np.isin(strokes, per_voxel["wall"] + per_voxel["lung"])
    if wall.any():
        v = H[wall]
        rib = rib_voxels(v)
        t = tissue[wall]
        t[rib] = np.where(v[rib] >= 300, T["bone_cortical"], T["cartilage"])
        tissue[wall] = t
    return tissue


def add_sternal_wires(a: Anatomy, rng: np.random.Generator, anat: PaintedAnatomy) -> None:
    """Sternotomy wires: 4-7 steel loops round the sternum at intervals along it (dense enough for streaks)."""
    sc = anat.canvas.scale
    cx, cy = a.body_center
    # the phantom's sternum: an ellipse of 15 x 6 reference mm just in front of the cavity
    sy = cy + (-anat.body.cy - 2.0) * sc[1]
    ax, ay = 15.0 * sc[0] + rng.uniform(1.5, 3.0), 6.0 * sc[1] + rng.uniform(1.5, 3.0)
    x, y = a.physical_xy()
    ring = np.abs(np.sqrt(((x - cx) / ax) ** 2 + ((y - sy) / ay) ** 2) - 1.0) * min(ax, ay) <= 0.75 * a.spacing
    nz = a.label.shape[0]
    n_wires = int(rng.integers(4, 8))
    step = rng.uniform(18, 28) / a.spacing
    first = nz / 2 - step * (n_wires - 1) / 2 + rng.uniform(-0.2, 0.2) * nz
    for j in range(n_wires):
        k = int(round(first + j * step))
        if 0 <= k < nz:
            t = a.tissue[k]
            t[ring & (a.label[k] == 0)] = T["metal"]
