"""Every training method the product knows, as data: the one list everything else derives from.

Name -> module that registers it, display name in result tables, citation, and two facts the GUI and the
tables need without importing torch (two co-trained networks; uses the unlabeled pool). The order of
:data:`METHODS` is the paper's table order (labeled-only baseline, SSL baselines, ours, then the
fully-supervised upper bound). The registry imports only the module of the method asked for; result tables,
CLI help and the Slicer module's method list read this file.

Standard library only (plus :mod:`dvcl.errors` when the package is importable), so the Slicer module can load
it by file path (``importlib.util.spec_from_file_location``) without the backend installed.

Adding a method: one line here and one file ``dvcl/methods/<module>.py`` with ``@register_method(name)``
(tests/test_catalog.py checks that both agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

try:  # a plain ValueError subclass when loaded by file path without the backend
    from dvcl.errors import ConfigError
except ImportError:  # pragma: no cover - exercised by the Slicer module without the backend
    class ConfigError(ValueError):  # type: ignore[no-redef]
        """Stand-in for :class:`dvcl.errors.ConfigError`."""


@dataclass(frozen=True)
class MethodInfo:
    """One method of the catalog.

    Attributes:
        name: registry name (``dvcl train --method NAME``).
        display_name: row name in result tables (the paper's abbreviation).
        module: module under ``dvcl.methods`` whose import registers the method.
        citation: the reference (authors, title, venue, year); also ``Method.citation`` of the class.
        two_networks: validation/inference average two co-trained networks (exported packages hold both).
        uses_unlabeled: trains on the unlabeled pool (False: labeled-only baselines).
    """

    name: str
    display_name: str
    module: str
    citation: str
    two_networks: bool = False
    uses_unlabeled: bool = True


METHODS: Tuple[MethodInfo, ...] = (
    MethodInfo("supervised", "U-Net (labeled only)", "supervised",
               "The segmentation network trained on the labeled subset only (the lower bound).", uses_unlabeled=False),
    MethodInfo("dan", "DAN", "dan",
               "Zhang Y., Yang L., Chen J., Fredericksen M., Hughes D.P., Chen D.Z. Deep Adversarial Networks for "
               "Biomedical Image Segmentation Utilizing Unannotated Images. MICCAI 2017."),
    MethodInfo("mean_teacher", "MT", "mean_teacher",
               "Tarvainen A., Valpola H. Mean teachers are better role models: Weight-averaged consistency targets "
               "improve semi-supervised deep learning results. NeurIPS 2017."),
    MethodInfo("uamt", "UA-MT", "uamt",
               "Yu L., Wang S., Li X., Fu C.-W., Heng P.-A. Uncertainty-aware Self-ensembling Model for "
               "Semi-supervised 3D Left Atrium Segmentation. MICCAI 2019."),
    MethodInfo("sassnet", "SASSNet", "sassnet",
               "Li S., Zhang C., He X. Shape-aware Semi-supervised 3D Semantic Segmentation for Medical Images. "
               "MICCAI 2020."),
    MethodInfo("dtc", "DTC", "dtc",
               "Luo X., Chen J., Song T., Wang G. Semi-supervised Medical Image Segmentation through Dual-task "
               "Consistency. AAAI 2021."),
    MethodInfo("cps", "CPS", "cps",
               "Chen X., Yuan Y., Zeng G., Wang J. Semi-supervised Semantic Segmentation with Cross Pseudo "
               "Supervision. CVPR 2021.", two_networks=True),
    MethodInfo("cld", "CLD", "cld",
               "Lin Y., Wang H., Cheng K., Zhang X., Li X. Calibrating Label Distribution for Class-Imbalanced "
               "Barely-Supervised Knee Segmentation. MICCAI 2022.", two_networks=True),
    MethodInfo("dhc", "DHC", "dhc",
               "Wang H., Li X. DHC: Dual-debiased Heterogeneous Co-training Framework for Class-imbalanced "
               "Semi-supervised Medical Image Segmentation. MICCAI 2023.", two_networks=True),
    MethodInfo("magicnet", "MagicNet", "magicnet",
               "Chen D., Bai Y., Shen W., Li Q., Yu L., Wang Y. MagicNet: Semi-Supervised Multi-Organ Segmentation "
               "via Magic-Cube Partition and Recovery. CVPR 2023."),
    MethodInfo("ugpcl", "UGPCL", "ugpcl",
               "Wang T., Lu J., Lai Z., Wen J., Kong H. Uncertainty-Guided Pixel Contrastive Learning for "
               "Semi-Supervised Medical Image Segmentation. IJCAI 2022."),
    MethodInfo("u2pl", "U2PL", "u2pl",
               "Wang Y., Wang H., Shen Y., Fei J., Li W., Jin G., Wu L., Zhao R., Le X. Semi-Supervised Semantic "
               "Segmentation Using Unreliable Pseudo-Labels. CVPR 2022."),
    MethodInfo("bacon", "BaCon", "bacon",
               "Feng Q., Xie L., Fang S., Lin T. BaCon: Boosting Imbalanced Semi-supervised Learning via Balanced "
               "Feature-Level Contrastive Learning. AAAI 2024."),
    MethodInfo("ccl", "CCL", "ccl",
               "Deng Q., Guo Y., Yang Z., Pan H., Chen J. Boosting Semi-Supervised Learning with Contrastive "
               "Complementary Labeling. arXiv:2212.06643, 2022."),
    MethodInfo("dvcl", "DVCL (ours)", "dvcl",
               "Keep Your Friends Close, and Your Enemies Farther: Distance-aware Voxel-wise Contrastive Learning "
               "for Semi-supervised Multi-organ Segmentation. ICCV 2025.", two_networks=True),
    MethodInfo("fully", "U-Net (fully supervised)", "supervised",
               "The segmentation network trained on every training label (the upper bound).", uses_unlabeled=False),
)

DEFAULT_METHOD = "dvcl"

_BY_NAME: Dict[str, MethodInfo] = {m.name: m for m in METHODS}


def method_names() -> List[str]:
    """Names in table order."""
    return [m.name for m in METHODS]


def get_method_info(name: str) -> MethodInfo:
    """The catalog entry of ``name`` (case-insensitive); :class:`ConfigError` listing the names otherwise."""
    info = _BY_NAME.get(str(name).lower())
    if info is None:
        raise ConfigError(f"unknown method '{name}'; available: {', '.join(method_names())}")
    return info


def display_name(name: str) -> str:
    """Table row name of ``name``; a method not in the catalog keeps its own name."""
    info = _BY_NAME.get(str(name).lower())
    return info.display_name if info else str(name)


def table_rank(name: str) -> int:
    """Position of ``name`` in the paper's table order; methods not in the catalog go just before ours."""
    info = _BY_NAME.get(str(name).lower())
    return METHODS.index(info) * 2 if info else METHODS.index(_BY_NAME[DEFAULT_METHOD]) * 2 - 1


def help_list() -> str:
    """``"dvcl (default), cps, supervised, ..."`` for CLI help texts."""
    rest = [n for n in method_names() if n != DEFAULT_METHOD]
    return ", ".join([f"{DEFAULT_METHOD} (default)"] + rest)
