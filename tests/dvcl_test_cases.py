"""Tiny CT-like cases written as real NIfTI files: shared by tests/conftest.py and tools/bad_input_table.py.

A module with its own name rather than ``from conftest import ...``: the repository has two conftest.py files,
and in a whole-suite run ``conftest`` may be tests/slicer_module's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


def write_tiny_case(folder: Path, name: str, rng: np.random.Generator, with_label: bool) -> None:
    """A 24 x 24 x 12 CT-like volume (fat, a bright box = class 1, a dark sphere = class 2), real NIfTI."""
    img = np.full((12, 24, 24), -100.0, dtype=np.float32)
    lab = np.zeros(img.shape, dtype=np.uint8)
    z0, y0, x0 = rng.integers(1, 4), rng.integers(2, 8), rng.integers(2, 8)
    img[z0:z0 + 6, y0:y0 + 8, x0:x0 + 8] = 60.0
    lab[z0:z0 + 6, y0:y0 + 8, x0:x0 + 8] = 1
    zz, yy, xx = np.mgrid[:12, :24, :24]
    ball = (zz - 6) ** 2 + (yy - 17) ** 2 + (xx - 17) ** 2 <= 9
    img[ball] = -300.0
    lab[ball] = 2
    img += rng.normal(0, 10, img.shape).astype(np.float32)
    for arr, sub in ((img, "images"), (lab, "labels")):
        if sub == "labels" and not with_label:
            continue
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((1.25, 1.25, 2.5))
        path = folder / sub / f"{name}.nii.gz" if with_label else folder / f"{name}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(im, str(path))


def two_box_batches(seed: int = 0):
    """Two labeled + two unlabeled 8x16x16 patches (torch): two boxes (classes 1, 2) brighter than background.

    The DVCL method and option tests share it, so their losses are computed on the same small case."""
    import torch

    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(4, 1, 8, 16, 16, dtype=torch.long)
    for b in range(4):
        z, y = torch.randint(0, 3, (2,), generator=g).tolist()
        label[b, 0, z:z + 4, y:y + 6, 2:7] = 1
        label[b, 0, z + 1:z + 5, y + 4:y + 10, 9:14] = 2
    image = label.float() * 0.8 + 0.3 * torch.randn(label.shape, generator=g)
    return ({"image": image[:2], "label": label[:2], "case": ["l0", "l1"]},
            {"image": image[2:], "case": ["u0", "u1"]})


def tiny_ab_package(folder: Path, name: str, seed: int, labels: dict) -> Path:
    """A model package of two random tiny U-Nets A and B (4 classes, differently initialised, so they
    disagree) on a coarse 6 mm grid with a small window: segmentation tests stay fast on a CPU."""
    import torch

    from dvcl.inference.model_package import save_model_package
    from dvcl.networks import NetworkConfig, build_network

    cfg = NetworkConfig(num_classes=4, channels=(4, 8), feature_dim=8)
    torch.manual_seed(seed)
    nets = {"A": build_network(cfg), "B": build_network(cfg)}
    return save_model_package(nets, cfg, labels, folder / name, name=name, preset="flare22",
                              preprocessing={"spacing": [6.0, 6.0, 6.0]}, roi=(32, 64, 64), stride=(16, 32, 32))


def load_script(path: Path, name: str):
    """Import a repository script that is not part of a package (``tools/*.py``, ``benchmarks/*.py``) as a module.

    Registered in ``sys.modules`` while it runs: dataclasses look their module up there.
    """
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
