"""Every literature fact the synthesis uses, in one place: tissue list, HU per tissue and contrast phase, texture,
phase frequencies and organ-absence probabilities.

Why: SynthSeg-style training (Billot et al., MedIA 2023) only transfers to real scans when every tissue's
intensity is drawn from a range wide enough to cover real scanners, and for CT those ranges are known in
Hounsfield units. Each case draws one mean per tissue uniformly from the range of its contrast phase below.
Sources as collected in ``/work/shared/research/synthesis.md`` (section 3.1); **(est.)** marks an engineering
estimate with no source. No scan of ``tests/data`` was used to set or tune any value.

=================  =============  ==============  ==============  ==============  ===============================
tissue             native (NC)    arterial (LA)   portal (PV)     delayed         source
=================  =============  ==============  ==============  ==============  ===============================
air, bowel gas     -1000          =               =               =               physics
lung               -910..-800     =               =               =               radclass (-850..-910), radgray
fat                -120..-70      =               =               =               radclass (-50..-100), biologyinsights
liver              45..70         65..100         90..140         70..110         radclass, seekhealthz, Boyce AJR
                                                                                  (58.8+-10.8); LA = NC+20..30
                                                                                  (Radiopaedia); PV, del (est.),
                                                                                  PV > 80..90 (Pickhardt ARRS 2024)
spleen             35..55         80..160         100..140        80..110         radclass; LA heterogeneous; (est.)
kidney cortex      20..45         190..260        150..210        100..160        radclass; LA = NC+195..217
                                                                                  (PubMed 17367973); PV, del (est.)
kidney medulla     20..45         70..140         140..200        100..160        cortex-medulla gap 110..140 LA,
                                                                                  < 30 PV (same study)
pancreas           35..55         100..150        85..130         70..100         ppdoc (40..50, not verified);
                                                                                  peak 40..70 s (Lu, Radiology
                                                                                  1996); PV, del (est.)
aorta, arteries    30..55         250..450        150..220        100..150        radgray (30..45), radclass
                                                                                  (45..65); LA 290..360
                                                                                  (Radiopaedia), 464+-58 peak
                                                                                  (PLOS ONE); PV, del (est.)
IVC, veins         30..55         40..120         120..180        100..150        NC as blood; LA, PV, del (est.)
portal vein        30..55         120..170        150..220        100..150        LA 145+-20 (PLOS ONE); (est.)
heart blood        30..55         150..350        130..200        100..150        as blood (est.)
adrenal            10..40         50..90          50..90          40..70          soft tissue; <=10 HU lipid-rich
                                                                                  adenoma (Park, KJR 2007); (est.)
GI wall            30..55         60..110         60..100         50..80          wall 30..60; mucosa enhances (est.)
bile               0..20          =               =               =               The Common Vein (1..5), use 0..20
water, urine, CSF  -5..20         =               =               =               water 0
food, stool        -40..60        =               =               =               (est.)
oral contrast      150..600       =               =               =               "several hundred HU" (est.)
muscle             40..60         45..70          50..75          50..70          Grainger 40..80, biologyinsights
                                                                                  45..50; slight rise (est.)
liver lesion       0..40          10..60          10..70          10..70          cyst/metastasis (est.)
bone, cancellous   60..250        =               =               =               radgray (+50..200), radclass
bone, cortical     350..1000      =               =               =               radgray (+250..1000)
costal cartilage   80..200        =               =               =               (est.)
disc               60..110        =               =               =               (est.)
scanner table      50..400        =               =               =               (est.)
metal              2000..3000     =               =               =               (est.), clipped at 3071
bladder urine,     -5..20         -5..20          -5..20          0..600          water until excretion; the
dependent layer                                                                   excretory (delayed, 3-5 min)
                                                                                  phase opacifies the urinary
                                                                                  lumen (O'Connor, AJR CT
                                                                                  urography review; ESUR CTU
                                                                                  guideline, Van Der Molen, Eur
                                                                                  Radiol 2008); density (est.)
=================  =============  ==============  ==============  ==============  ===============================

Cardiac cases (:mod:`dvcl.synthesis.cardiac`) have their own contrast timings: ``native``, ``arterial``
(coronary CT angiography: left heart and aorta brightest), ``pulmonary`` (pulmonary CT angiography: right heart
and pulmonary artery brightest) and ``venous`` (a late chest scan: both sides alike). The tissues they share
with the abdomen take the abdominal range of the matching phase (:data:`CARDIAC_PHASE_MAP`); blood pools and
myocardium have their own ranges:

=================  =============  ==============  ==============  ==============  ===============================
cardiac tissue     native         arterial        pulmonary       venous          source
=================  =============  ==============  ==============  ==============  ===============================
left heart blood,  30..55         300..550        120..300        120..220        coronary CTA aims at >= 250..300
aorta                                                                             HU in the aortic root and
                                                                                  coronaries (SCCT guideline,
                                                                                  Abbara JCCT 2016); native as
                                                                                  blood; others (est.)
right heart        30..55         60..350         250..500        120..220        saline chaser washes the right
blood, PA                                                                         heart out in coronary CTA;
                                                                                  CTPA >= 250 HU in the pulmonary
                                                                                  trunk (est. from CTPA practice)
myocardium         30..55         80..160         60..120         80..130         first-pass enhancement about
                                                                                  100..130 HU (est.)
contrast inflow    30..55         200..1500       300..1500       100..200        undiluted contrast in the SVC /
(SVC jet)                                                                         brachiocephalic vein during
                                                                                  injection (est.)
=================  =============  ==============  ==============  ==============  ===============================

Phase timing (radiodaddy, seekhealthz): late arterial 25-40 s, portal venous 60-70 s (50-90 s), delayed 3-5 min.
Image noise of abdominal CT: 8 HU standard dose, 11.5 HU low dose (Husarik, Acad Radiol 2011); 30-38 HU on
thin-slice FBP chest CT (Eur Radiol Exp 2018); it is spatially correlated (Kanal, AJR 2007).
"""

from __future__ import annotations

from typing import Dict, Tuple

Range = Tuple[float, float]

#: contrast phases, as the phantoms name them plus "delayed"
PHASES: Tuple[str, ...] = ("native", "arterial", "portal", "delayed")
#: how often each phase is drawn (est.: portal venous is the routine abdominal protocol)
PHASE_WEIGHTS: Dict[str, float] = {"native": 0.2, "arterial": 0.25, "portal": 0.4, "delayed": 0.15}
#: the phase used when phase randomisation is off
DEFAULT_PHASE = "portal"

#: generation tissues; index 0 must be the air outside the body (the fill value of every resampling)
TISSUES: Tuple[str, ...] = (
    "air", "gas", "lung", "fat", "muscle", "bone_cancellous", "bone_cortical", "cartilage", "disc", "fluid",
    "bile", "food", "oral_contrast", "gi_wall", "liver", "liver_lesion", "spleen", "kidney_cortex",
    "kidney_medulla", "pancreas", "adrenal", "artery", "vein", "portal_vein", "heart", "table", "metal",
    "urine",
    # cardiac cases only (dvcl.synthesis.cardiac); after every abdominal tissue, so abdominal draws are unchanged
    "myocardium", "blood_left", "blood_right", "contrast_inflow",
)
#: tissues before the pelvis was added: their random draws come first and in this order, so a case without
#: a pelvis keeps the intensities it had (the later tissues draw after everything else)
N_BASE_TISSUES = 27
#: tissues an abdominal case can hold (the pelvis's included); the ones after them are the cardiac tissues
N_ABDOMEN_TISSUES = 28
T: Dict[str, int] = {name: i for i, name in enumerate(TISSUES)}


def _same(lo: float, hi: float) -> Dict[str, Range]:
    return {p: (lo, hi) for p in PHASES}


def _phases(native: Range, arterial: Range, portal: Range, delayed: Range) -> Dict[str, Range]:
    return {"native": native, "arterial": arterial, "portal": portal, "delayed": delayed}


#: mean HU range per tissue and phase (the table in the module docstring)
HU: Dict[str, Dict[str, Range]] = {
    "air": _same(-1010, -990),
    "gas": _same(-1010, -960),
    "lung": _same(-910, -800),
    "fat": _same(-120, -70),
    "muscle": _phases((40, 60), (45, 70), (50, 75), (50, 70)),
    "bone_cancellous": _same(60, 250),
    "bone_cortical": _same(350, 1000),
    "cartilage": _same(80, 200),
    "disc": _same(60, 110),
    "fluid": _same(-5, 20),
    "bile": _same(0, 20),
    "food": _same(-40, 60),
    "oral_contrast": _same(150, 600),
    "gi_wall": _phases((30, 55), (60, 110), (60, 100), (50, 80)),
    "liver": _phases((45, 70), (65, 100), (90, 140), (70, 110)),
    "liver_lesion": _phases((0, 40), (10, 60), (10, 70), (10, 70)),
    "spleen": _phases((35, 55), (80, 160), (100, 140), (80, 110)),
    "kidney_cortex": _phases((20, 45), (190, 260), (150, 210), (100, 160)),
    "kidney_medulla": _phases((20, 45), (70, 140), (140, 200), (100, 160)),
    "pancreas": _phases((35, 55), (100, 150), (85, 130), (70, 100)),
    "adrenal": _phases((10, 40), (50, 90), (50, 90), (40, 70)),
    "artery": _phases((30, 55), (250, 450), (150, 220), (100, 150)),
    "vein": _phases((30, 55), (40, 120), (120, 180), (100, 150)),
    "portal_vein": _phases((30, 55), (120, 170), (150, 220), (100, 150)),
    "heart": _phases((30, 55), (150, 350), (130, 200), (100, 150)),
    "table": _same(50, 400),
    "metal": _same(2000, 3000),
    "urine": _phases((-5, 20), (-5, 20), (-5, 20), (0, 600)),
}

#: cardiac contrast timings (see the module docstring), how often each is drawn (est.: MM-WHS-like data are
#: mostly coronary CTA), and the phase used when phase randomisation is off
CARDIAC_PHASES: Tuple[str, ...] = ("native", "arterial", "pulmonary", "venous")
CARDIAC_PHASE_WEIGHTS: Dict[str, float] = {"native": 0.1, "arterial": 0.5, "pulmonary": 0.2, "venous": 0.2}
CARDIAC_DEFAULT_PHASE = "arterial"
#: the abdominal phase whose ranges a cardiac phase uses for the tissues both share (fat, muscle, bone, lung ...)
CARDIAC_PHASE_MAP: Dict[str, str] = {"native": "native", "arterial": "arterial", "pulmonary": "arterial",
                                     "venous": "portal"}

#: mean HU range of the cardiac-only tissues per cardiac phase (the second table of the module docstring)
CARDIAC_HU: Dict[str, Dict[str, Range]] = {
    "blood_left": {"native": (30, 55), "arterial": (300, 550), "pulmonary": (120, 300), "venous": (120, 220)},
    "blood_right": {"native": (30, 55), "arterial": (60, 350), "pulmonary": (250, 500), "venous": (120, 220)},
    "myocardium": {"native": (30, 55), "arterial": (80, 160), "pulmonary": (60, 120), "venous": (80, 130)},
    "contrast_inflow": {"native": (30, 55), "arterial": (200, 1500), "pulmonary": (300, 1500),
                        "venous": (100, 200)},
}


#: per kind of case: its phases, how often each is drawn, and the phase used when phase randomisation is off
PHASE_TABLES: Dict[str, Tuple[Tuple[str, ...], Dict[str, float], str]] = {
    "abdomen": (PHASES, PHASE_WEIGHTS, DEFAULT_PHASE),
    "cardiac": (CARDIAC_PHASES, CARDIAC_PHASE_WEIGHTS, CARDIAC_DEFAULT_PHASE),
}


def hu_range(tissue: str, phase: str, kind: str = "abdomen") -> Range:
    """The mean HU range of ``tissue`` in ``phase`` of a ``kind`` case (``abdomen`` or ``cardiac``)."""
    if kind == "cardiac":
        return CARDIAC_HU[tissue][phase] if tissue in CARDIAC_HU else HU[tissue][CARDIAC_PHASE_MAP[phase]]
    return HU[tissue][phase]


#: standard deviation (HU) of each tissue's smooth texture, drawn per case (est.; organs are nearly homogeneous,
#: lung, bone, bowel content and the arterial spleen are not)
TEXTURE_SD: Dict[str, Range] = {name: (2.0, 8.0) for name in TISSUES}
TEXTURE_SD.update({"air": (0.0, 2.0), "gas": (0.0, 10.0), "lung": (10.0, 40.0), "bone_cancellous": (10.0, 40.0),
                   "bone_cortical": (20.0, 80.0), "food": (10.0, 40.0), "oral_contrast": (10.0, 60.0),
                   "spleen": (2.0, 20.0), "metal": (0.0, 50.0), "table": (0.0, 20.0)})

#: probability that an organ is absent (resected or congenitally missing): cholecystectomy is common, a missing
#: kidney (nephrectomy, agenesis) rarer, splenectomy rare (est.); at most one kidney is removed
ABSENCE: Dict[str, float] = {"gallbladder": 0.15, "kidney": 0.05, "spleen": 0.02}

#: adult organ volumes on CT, millilitres (10th, 50th, 90th percentile; one kidney): approximate ranges of the
#: volumetry literature, not fitted to any scan here. Spleen: mean 215 ml, range 107-314 in 140 adults
#: (Prassopoulos et al., Eur Radiol 1997); liver: standard liver volume 706 x BSA + 2.4 ml (Urata et al., 1995),
#: about 1100-1600 ml for a body surface of 1.6-2.2 m^2, larger in Western cohorts; kidney: 120-220 ml each;
#: gallbladder: 15-50 ml fasting (smaller after a meal). The phantom paints the spleen, kidneys and gallbladder at
#: about half to three quarters of these volumes (``tools/organ_volumes.py`` measures both), so
#: ``organ_sizes="adult"`` scales them by :data:`ADULT_ORGAN_SCALE`.
ADULT_ORGAN_VOLUME_ML: Dict[str, Tuple[float, float, float]] = {
    "liver": (1100.0, 1450.0, 1900.0), "spleen": (110.0, 190.0, 320.0), "kidney": (120.0, 160.0, 220.0),
    "gallbladder": (15.0, 30.0, 50.0)}

#: linear size factor per organ, drawn uniformly per case for ``organ_sizes="adult"`` (liver, both kidneys,
#: spleen, gallbladder; calibrated with ``tools/organ_volumes.py`` so that the painted volumes, clipped by the
#: body and the neighbouring organs, have about the medians of :data:`ADULT_ORGAN_VOLUME_ML`; the test suite checks
#: that each grows and that the spleen's median lands in the adult range)
ADULT_ORGAN_SCALE: Dict[str, Range] = {"liver": (1.0, 1.06), "kidney": (1.0, 1.16), "spleen": (1.35, 1.65),
                                       "gallbladder": (1.1, 1.35)}


#: fatty pancreas (pancreatic steatosis, fat interdigitating between the lobules; common with age, obesity and
#: diabetes): pooled prevalence 33 % in a meta-analysis of imaging and histology studies (Singh et al., Metabolism
#: 2017). What ``dvcl synth --fatty-pancreas`` uses when no probability is given.
FATTY_PANCREAS_PREVALENCE = 0.33

#: fat fraction of a fatty pancreas, drawn uniformly per case: with parenchyma at about 45 HU and fat at about
#: -100 HU (non-contrast, table above), 0.1 is mild steatosis (about 15 HU below the parenchyma, the order of the
#: pancreas-to-spleen differences used to define steatosis on CT) and 0.6 is fatty replacement at about -40 HU
#: (-40 to -10 HU, radiologykey; research note section 3.1). Arithmetic on those values, not fitted to any scan here.
PANCREAS_FAT_FRACTION: Range = (0.1, 0.6)

#: correlation length (mm) of the fat between the lobules (est.: pancreatic lobules measure a few millimetres)
PANCREAS_LOBULE_MM: Range = (4.0, 10.0)


#: fat planes: the gallbladder, pancreas, duodenum and adrenal glands are not wrapped in liver. The gallbladder lies
#: in a fossa on the liver's visceral (inferior) surface with its body and fundus below it; the pancreas, the
#: duodenum beyond its bulb and the adrenal glands are retroperitoneal, set in fat (the adrenals inside the perirenal
#: fat) and separated from the liver by it (standard anatomy, e.g. Gray's Anatomy, 42nd ed., abdomen chapters). The
#: phantom paints these organs over its liver, so the liver surrounds them. ``dvcl synth --fat-planes`` turns the
#: liver within a margin of them into fat: one margin per organ and case, drawn uniformly from this range (mm; est.:
#: the phantom leaves 6 mm of perirenal fat around the kidneys, and retroperitoneal fat is thin in lean patients).
FAT_PLANE_MM: Range = (2.0, 8.0)
#: the organs a fat plane separates from the liver (FLARE22 names); the gallbladder only below its centre (the part
#: outside the fossa)
FAT_PLANE_ORGANS: Tuple[str, ...] = ("gallbladder", "pancreas", "duodenum", "right adrenal gland",
                                     "left adrenal gland")


def check_tables() -> None:
    """Fail loudly if the tables disagree (every tissue has a range for every phase, lo <= hi)."""
    for name in TISSUES:
        for kind, phases in (("abdomen", PHASES), ("cardiac", CARDIAC_PHASES)):
            if kind == "abdomen" and name in CARDIAC_HU:
                continue
            for phase in phases:
                lo, hi = hu_range(name, phase, kind)
                assert lo <= hi, (name, phase)
        lo, hi = TEXTURE_SD[name]
        assert 0 <= lo <= hi, name
    assert set(HU) == set(TISSUES[:N_ABDOMEN_TISSUES]) and set(CARDIAC_HU) == set(TISSUES[N_ABDOMEN_TISSUES:])
    assert T["air"] == 0 and TISSUES[N_BASE_TISSUES - 1] == "metal" and TISSUES[N_ABDOMEN_TISSUES - 1] == "urine"
    assert set(CARDIAC_PHASE_WEIGHTS) == set(CARDIAC_PHASES) == set(CARDIAC_PHASE_MAP)
