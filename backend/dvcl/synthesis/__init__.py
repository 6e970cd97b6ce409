"""Domain-randomised synthetic abdominal CT with FLARE22 labels (issue 13), the SynthSeg idea for CT.

Why: no labeled abdominal CT can be used for training here, so a model must learn anatomy from images whose
appearance varies more than real scanners do. Each case takes the anatomical phantom's abdomen
(:mod:`dvcl.phantoms.abdomen`), names every tissue in it (organs, fat, muscle, bone, bowel, vessels, lung,
table ...), deforms it, draws every tissue's HU from literature ranges for a random contrast phase and
simulates a scan (bias, blur, slice thickness and spacing, noise, streaks, field of view). Every randomisation
has a switch in :class:`SynthesisConfig`. See ``docs/synthesis.md``.

Cardiac cases (``kind="cardiac"``, the 7 MM-WHS structures) take the same route from the cardiac phantom, with
cardiac contrast timings (:mod:`dvcl.synthesis.cardiac`).

Modules: ``priors`` (HU tables and probabilities, with sources), ``config`` (switches and ranges), ``anatomy``
(tissue maps, absence, arms, table, metal), ``cardiac`` (the heart's tissue maps and sternotomy wires),
``spatial`` (affine and elastic), ``intensity`` (phase, HU, texture), ``acquisition`` (scanner), ``generator``
(one case), ``dataset`` (a data folder).
"""

from __future__ import annotations

from dvcl.synthesis.config import SWITCHES, SynthesisConfig
from dvcl.synthesis.dataset import write_synthetic_dataset
from dvcl.synthesis.generator import SyntheticCase, synthesize
from dvcl.synthesis.priors import HU, PHASES, TISSUES

__all__ = ["HU", "PHASES", "SWITCHES", "TISSUES", "SyntheticCase", "SynthesisConfig", "synthesize",
           "write_synthetic_dataset"]
