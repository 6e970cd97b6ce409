"""Logic of the DVCLSegmentation module, importable without Slicer's GUI.

Everything here runs with only ``slicer`` (MRML) and ``vtk``: inside Slicer, or in pytest with the
``slicer-core`` wheel. The Qt widget lives in ``DVCLSegmentationLib.Widget`` and is imported only by the
module file, so importing this package never needs ``qt``.
"""

from .Backend import (
    DVCLModuleError,
    LabelInfo,
    ModelInfo,
    ModelPackageError,
    available_methods,
    available_presets,
    dvcl_command,
    installed_models,
    read_model_info,
)
from .EvaluationLogic import EvaluationLogic, EvaluationReport
from .InstallLogic import InstallError, InstallLogic
from .ModelRegistry import ModelRegistry
from .Parameter import EvaluationParameters, ParameterError, SegmentationParameters, TrainingParameters
from .Process import ProcessResult, ProcessStartError, ProgressInfo, QtProcess, SubprocessProcess, default_process
from .SceneBridge import SceneInputError, TrainingCurves
from .SegmentationLogic import SegmentationLogic, segment_volume
from .Signal import Signal
from .TrainingLogic import TrainingLogic

__all__ = [
    "DVCLModuleError", "EvaluationLogic", "EvaluationParameters", "EvaluationReport", "InstallError",
    "InstallLogic", "LabelInfo", "ModelInfo", "ModelPackageError", "ModelRegistry", "ParameterError",
    "ProcessResult", "ProcessStartError", "ProgressInfo", "QtProcess", "SceneInputError", "SegmentationLogic",
    "SegmentationParameters", "Signal", "SubprocessProcess", "TrainingCurves", "TrainingLogic",
    "TrainingParameters", "available_methods", "available_presets", "default_process", "dvcl_command",
    "installed_models", "read_model_info", "segment_volume",
]
