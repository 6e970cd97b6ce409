"""The end-to-end demo on the embedded default: phantoms -> prepare -> DVCL training -> export -> segment ->
Dice/Jaccard table. Works with nothing downloaded; every step reuses the public API of its module.

Each step is skipped when its output is already complete, so an interrupted demo continues where it stopped
(training resumes from its last checkpoint).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """What the demo runs. Defaults finish in a few minutes on a 2-core CPU (quick profile)."""

    out: Path = Path("demo_output")
    kind: str = "abdomen"
    labeled: int = 10  # split 6:2:2 -> 6 train, 2 val, 2 test
    unlabeled: int = 12
    labeled_fraction: float = 0.34  # 2 of the 6 training phantoms keep their labels
    method: str = "dvcl"
    iterations: int = 200
    profile: str = "quick"
    seed: int = 0
    device: str = "auto"
    #: The demo resamples to 2.5 x 2.5 x 5 mm (twice the paper's 1.25 x 1.25 x 2.5) so that the quick profile's
    #: 32x64x64 patch sees most of a phantom's abdomen and a CPU run of minutes learns something.
    spacing: Tuple[float, float, float] = (2.5, 2.5, 5.0)


def run_demo(cfg: DemoConfig) -> Dict[str, object]:
    """Run every step; returns paths and the mean scores."""
    from dvcl.data.cache import prepare_dataset
    from dvcl.evaluation.report import evaluate_paths, write_report
    from dvcl.inference.model_package import export_model
    from dvcl.inference.segment import segment_files
    from dvcl.phantoms import write_phantom_dataset
    from dvcl.preprocessing import PreprocessConfig
    from dvcl.training import TrainConfig, apply_preset_schedule, apply_profile, read_run_status, train

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    timings: Dict[str, float] = {}

    def step(name: str) -> None:
        timings[name] = round(time.monotonic() - t0 - sum(timings.values()), 1)
        log.info("demo: %s done (%.1f s)", name, timings[name])

    raw = out / "phantoms"
    if not (raw / "dataset.json").is_file():
        write_phantom_dataset(raw, cfg.labeled, cfg.unlabeled, cfg.kind, cfg.seed)
    step("phantoms")

    cache, _ = prepare_dataset(raw, out / "cache", seed=cfg.seed, cfg=PreprocessConfig(spacing=tuple(cfg.spacing)))
    step("prepare")

    run_dir = out / "run"
    status = read_run_status(run_dir).get("status") if (run_dir / "run.json").is_file() else None
    if status != "finished":
        tcfg = TrainConfig()
        apply_preset_schedule(tcfg, cache.preset)
        apply_profile(tcfg, cfg.profile)
        tcfg.data = str(cache.root)
        tcfg.method = cfg.method
        tcfg.labeled_fraction = cfg.labeled_fraction
        tcfg.seed = cfg.seed
        tcfg.iterations = cfg.iterations
        tcfg.val_every = max(1, cfg.iterations // 4)
        train(tcfg, run_dir, device=cfg.device, resume=(run_dir / "config.yaml").is_file())
    step("train")

    model_dir = out / "model"
    if not (model_dir / "model.json").is_file():
        export_model(run_dir, model_dir, name=f"phantom-{cfg.kind}-{cfg.method}",
                     description="Demo model trained on synthetic phantoms by `dvcl demo`; not for clinical use.")
    step("export")

    test_ids = cache.splits.get("test", [])
    images = {cid: Path(cache.case_meta(cid)["image"]) for cid in test_ids}
    labels = {cid: Path(cache.case_meta(cid)["label"]) for cid in test_ids}
    pred_dir = out / "segmentations"
    todo = [p for cid, p in images.items() if not (pred_dir / f"{cid}.nii.gz").is_file()]
    if todo:
        segment_files(todo, pred_dir, model_dir, device=cfg.device, volumes=None)
    step("segment")

    # the references of the held-out test cases only, next to the predictions (evaluate matches folders by name)
    ref_dir = out / "references"
    ref_dir.mkdir(exist_ok=True)
    for lab in labels.values():
        if not (ref_dir / lab.name).is_file():
            shutil.copyfile(lab, ref_dir / lab.name)
    result = evaluate_paths(pred_dir, ref_dir, preset=cache.preset, name=cfg.method)
    paths = write_report(result, out / "evaluation", overwrite=True, images=images,
                         predictions={cid: pred_dir / f"{cid}.nii.gz" for cid in test_ids}, references=labels)
    step("evaluate")
    summary = json.loads(Path(paths["summary"]).read_text())
    return {"out": str(out.resolve()), "report": str(paths["report"]), "timings_s": timings,
            "mean_dice": summary.get("mean_dice"), "mean_jaccard": summary.get("mean_jaccard")}


def default_config(**overrides: Optional[object]) -> DemoConfig:
    cfg = DemoConfig()
    for k, v in overrides.items():
        if v is not None:
            current = getattr(cfg, k)
            setattr(cfg, k, Path(v) if isinstance(current, Path) else tuple(v) if isinstance(current, tuple)
                    else type(current)(v))
    return cfg
