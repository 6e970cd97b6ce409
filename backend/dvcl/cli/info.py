"""`dvcl info`: versions, devices, presets and installed models (what the Slicer module shows in Setup)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show versions, devices, presets, methods and installed models as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import platform

    import monai
    import SimpleITK as sitk
    import torch

    from dvcl import __version__
    from dvcl.presets import PRESETS
    from dvcl.utils.device import describe_devices

    info = {
        "dvcl": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "SimpleITK": sitk.Version_VersionString(),
        "devices": describe_devices(),
        "presets": {k: {"labels": v.labels, "description": v.description} for k, v in PRESETS.items()},
    }
    from dvcl.methods.catalog import METHODS

    info["methods"] = [m.name for m in METHODS]
    try:
        from dvcl.inference.model_package import list_installed_models

        info["models"] = [m.to_dict() for m in list_installed_models()]
    except ImportError:
        info["models"] = []
    print(json.dumps(info, indent=2, default=str))
    return 0
