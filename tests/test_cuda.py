"""The CUDA paths: the same code on a GPU gives what it gives on the CPU. Skipped where no GPU is present (CI);
run on a GPU machine with ``pytest tests/test_cuda.py``.

- segmentation with the shipped demo model on CUDA (fp16 autocast) agrees with the CPU segmentation;
- DVCL trains a few real iterations on CUDA with AMP and cudnn.benchmark, writes finite losses and safe
  checkpoints, and resumes there to the same final iteration;
- every registered method takes two training steps on CUDA (no tensor is left on the CPU by mistake).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from dvcl.inference.model_package import default_model_dir, load_model_package
from dvcl.inference.segment import segment_image
from dvcl.methods.catalog import method_names
from dvcl.phantoms import make_abdominal_phantom

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_demo_segmentation_on_cuda_matches_cpu():
    image, reference = make_abdominal_phantom(seed=424242)
    cpu = sitk.GetArrayFromImage(segment_image(image, load_model_package(default_model_dir(), device="cpu"),
                                               device="cpu"))
    gpu_pkg = load_model_package(default_model_dir(), device="cuda")
    gpu = sitk.GetArrayFromImage(segment_image(image, gpu_pkg, device="cuda"))
    assert gpu.shape == cpu.shape
    agreement = float((gpu == cpu).mean())
    assert agreement > 0.995, agreement  # fp16 on the GPU may flip a few boundary voxels, no more
    ref = sitk.GetArrayFromImage(reference)
    liver = 2 * np.logical_and(gpu == 1, ref == 1).sum() / ((gpu == 1).sum() + (ref == 1).sum())
    assert liver > 0.6


def test_dvcl_trains_and_resumes_on_cuda(tiny_cache, tmp_path):
    from dvcl.training.config import TrainConfig
    from dvcl.training.trainer import train

    cfg = TrainConfig(data=str(tiny_cache), method="dvcl", iterations=6, patch=(8, 16, 16), val_roi=(8, 16, 16),
                      batch_labeled=1, batch_unlabeled=1, val_every=3, checkpoint_every=3, num_workers=0,
                      method_params={"feature_dim": 16, "num_anchors": 16, "num_queries": 16, "pool_size": 64})
    cfg.network.channels = (4, 8)
    cfg.network.feature_dim = 16
    cfg.amp = True
    run = tmp_path / "run"
    result = train(cfg, run, device="cuda")
    assert result.iteration == 6
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and "cuda" in json.dumps(info).lower()
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) > 1 and "nan" not in "\n".join(rows[1:]).lower()
    # continue the same run for more iterations is refused; resuming a finished run ends at the same count
    again = train(TrainConfig.load(run / "config.yaml"), run, device="cuda", resume=True)
    assert again.iteration == 6


@pytest.mark.parametrize("method", [m for m in method_names() if m != "fully"])
def test_every_method_steps_on_cuda(method, tiny_cache, tmp_path):
    from dvcl.training.config import TrainConfig
    from dvcl.training.trainer import train

    cfg = TrainConfig(data=str(tiny_cache), method=method, iterations=2, patch=(16, 32, 32), val_roi=(16, 32, 32),
                      batch_labeled=1, batch_unlabeled=1, val_every=2, num_workers=0,
                      method_params={"cube_size": [8, 16, 16]} if method == "magicnet" else {})
    cfg.network.channels = (4, 8, 16)
    cfg.amp = True
    result = train(cfg, tmp_path / method, device="cuda")
    assert result.iteration == 2
    assert torch.cuda.max_memory_allocated() > 0
