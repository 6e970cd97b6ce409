"""Logic of the DVCLSegmentation module, importable without Slicer's GUI.

Everything here runs with only ``slicer`` (MRML) and ``vtk``: inside Slicer, or in pytest with the
``slicer-core`` wheel. The Qt panel lives in ``DVCLSegmentationLib.Widget`` (and one file per tab) and is
imported only by the module file, so importing this package never needs ``qt``.

Names are resolved on first use (PEP 562): importing one light module (e.g. ``Catalog`` or ``ProcessTree``)
does not import the MRML-bound ones, which keeps the catalogue usable from a bare Python.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "AdaptLogic": "AdaptLogic",
    "DVCLModuleError": "Backend", "LabelInfo": "Backend", "ModelInfo": "Backend", "ModelPackageError": "Backend",
    "dvcl_command": "Backend", "installed_models": "Backend", "read_model_info": "Backend",
    "EvaluationLogic": "EvaluationLogic", "EvaluationReport": "EvaluationLogic",
    "InstallError": "InstallLogic", "InstallLogic": "InstallLogic",
    "ModelRegistry": "ModelRegistry",
    "AdaptParameters": "Parameter", "EvaluationParameters": "Parameter", "ParameterError": "Parameter",
    "SegmentationParameters": "Parameter", "TrainingParameters": "Parameter",
    "ProcessResult": "Process", "ProcessStartError": "Process", "ProgressInfo": "Process", "QtProcess": "Process",
    "SubprocessProcess": "Process", "default_process": "Process",
    "SceneInputError": "SceneBridge", "TrainingCurves": "SceneBridge",
    "SegmentationLogic": "SegmentationLogic", "segment_volume": "SegmentationLogic",
    "Signal": "Signal",
    "TrainingLogic": "TrainingLogic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'DVCLSegmentationLib' has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
