"""Inference: model packages, the sliding-window predictor and ``segment``.

Importing this package does not import torch. The segmentation functions import it when they run, except on
the CPU with an ONNX engine whose graph and agreement check are cached (:mod:`dvcl.inference.engines`): such a
run never imports torch.
"""

from dvcl.inference.model_package import (
    ModelInfo,
    ModelPackage,
    default_model_dir,
    export_model,
    list_installed_models,
    load_model_package,
    read_model_json,
    resolve_model,
    save_model_package,
    user_models_dir,
)
from dvcl.inference.segment import segment_files, segment_image, structure_volumes_ml

__all__ = [
    "ModelInfo",
    "ModelPackage",
    "default_model_dir",
    "export_model",
    "list_installed_models",
    "load_model_package",
    "read_model_json",
    "resolve_model",
    "save_model_package",
    "segment_files",
    "segment_image",
    "structure_volumes_ml",
    "user_models_dir",
]
