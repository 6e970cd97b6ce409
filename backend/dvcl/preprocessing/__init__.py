"""The paper's preprocessing (METHOD.md section 1) and its exact inverse for predictions."""

from dvcl.preprocessing.geometry import GeometryRecord, Grid
from dvcl.preprocessing.pipeline import (
    PreprocessConfig,
    preprocess_image,
    preprocess_label,
    restore_label,
    restore_probabilities,
)

__all__ = [
    "Grid",
    "GeometryRecord",
    "PreprocessConfig",
    "preprocess_image",
    "preprocess_label",
    "restore_label",
    "restore_probabilities",
]
