"""The end-to-end demo on the embedded default: phantoms -> prepare -> DVCL training -> export -> segment ->
Dice/Jaccard table. Works with nothing downloaded; every step reuses the public API of its module.

Each step is skipped when its output is already complete, so an interrupted demo continues where it stopped
(training resumes from its last checkpoint). The settings of a demo folder are recorded in ``demo.json``;
a rerun with other settings is refused (a run's schedule is never changed behind its back, the same rule
as ``dvcl train --resume``): rerun with the same options, or start over with ``--overwrite``.

Sized for a 2-core CPU (see :data:`EXPECTED_MINUTES` and :data:`BUSY_MINUTES`): 10 labeled
phantoms split 6:2:2 (3 of the 6 training phantoms keep their labels) plus 4 unlabeled, resampled to
2.5 x 2.5 x 5 mm (twice the paper's 1.25 x 1.25 x 2.5, so that the quick profile's 32x64x64 patch sees most
of a phantom's abdomen), 160 iterations of DVCL whose first half is supervised-only (``warmup_fraction``
0.5: on a budget this short the co-training terms collapse to background without a warm-up, see
docs/results/ssl_phantoms_cpu.md). The numbers show the pipeline working, not DVCL's accuracy.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from dvcl.errors import ConfigError

log = logging.getLogger(__name__)

#: Minutes the default demo takes on an idle 2-core CPU, measured: ``bash scripts/demo.sh`` into a fresh folder
#: on the project's idle 2-core machine (load average 0.3 at the start; dvcl.utils.threads chose 2 threads)
#: took 5 min 33 s wall time (185 % CPU), 316 s of it inside ``dvcl demo``: phantoms 13.5 s, prepare 0.6 s,
#: training 160 iterations 297.7 s, export 0.1 s, segmenting 2 phantoms 3.1 s, evaluation 1.3 s (2026-11-26).
EXPECTED_MINUTES = 6
#: Minutes it took in wall time in that same run, while about nine other processes shared the two cores (load
#: average 9-11, the demo got 21 % of a CPU): 40.4 min for scripts/demo.sh, 39.2 min inside `dvcl demo`.
#: An upper bound for a busy 2-core machine.
BUSY_MINUTES = 45

#: methods with a ``warmup_fraction`` parameter (the demo's default option)
WARMUP_METHODS = ("dvcl", "cps")

#: what ``--overwrite`` removes (only the demo's own outputs, never anything else in OUT)
DEMO_PARTS = ("phantoms", "cache", "run", "model", "segmentations", "references", "evaluation", "demo.json")


@dataclass
class DemoConfig:
    """What the demo runs. The defaults are the size the README's time is measured for."""

    out: Path = Path("demo_output")
    kind: str = "abdomen"
    labeled: int = 10  # split 6:2:2 -> 6 train, 2 val, 2 test
    unlabeled: int = 4
    labeled_fraction: float = 0.5  # 3 of the 6 training phantoms keep their labels; 3 + 4 unlabeled
    method: str = "dvcl"
    iterations: int = 160
    profile: str = "quick"
    seed: int = 0
    device: str = "auto"
    #: 2.5 x 2.5 x 5 mm: twice the paper's spacing, so the 32x64x64 patch sees most of a phantom's abdomen
    spacing: Tuple[float, float, float] = (2.5, 2.5, 5.0)
    #: method options (``--set``); the warm-up keeps the short co-training from collapsing to background
    options: Dict[str, Any] = field(default_factory=lambda: {"warmup_fraction": 0.5})

    def recorded(self) -> Dict[str, Any]:
        """The settings that define a demo folder's results (everything but where and on which device)."""
        d = asdict(self)
        d.pop("out")
        d.pop("device")
        d["spacing"] = [float(s) for s in self.spacing]
        return d


def is_default(cfg: DemoConfig) -> bool:
    return cfg.recorded() == DemoConfig().recorded()


def describe(cfg: DemoConfig) -> str:
    """The demo's first line: what it does, at which spacing, and how long it takes."""
    train_l = round(cfg.labeled * 0.6 * cfg.labeled_fraction)
    unl = cfg.unlabeled + round(cfg.labeled * 0.6) - train_l
    warm = float(cfg.options.get("warmup_fraction", 0) or 0)
    schedule = f"{cfg.iterations} iterations, the first {warm:.0%} supervised-only" if warm else \
        f"{cfg.iterations} iterations"
    spacing = "x".join(f"{s:g}" for s in cfg.spacing)
    when = (f"Takes about {EXPECTED_MINUTES} minutes on an idle 2-core CPU, up to {BUSY_MINUTES} on a busy one "
            "(measured)" if is_default(cfg) else f"The default size takes about {EXPECTED_MINUTES} minutes on an "
            "idle 2-core CPU; yours differs")
    return (f"dvcl demo: {cfg.labeled + cfg.unlabeled} synthetic {cfg.kind} CT phantoms -> prepared at "
            f"{spacing} mm -> {cfg.method.upper()} trained on {train_l} labeled + {unl} unlabeled ({cfg.profile} "
            f"profile, {schedule}) -> segment the {max(1, round(cfg.labeled * 0.2))} held-out test phantoms -> "
            f"Dice/Jaccard table. {when}. Output: {cfg.out}/")


def check_same_settings(cfg: DemoConfig) -> None:
    """Refuse to continue a demo folder made with other settings (see the module docstring).

    Raises:
        ConfigError: naming each differing setting, with the two ways forward.
    """
    out = Path(cfg.out)
    record = out / "demo.json"
    if record.is_file():
        try:
            before = json.loads(record.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{record}: unreadable demo record ({exc}); start over with --overwrite") from exc
        now = cfg.recorded()
        diff = [k for k in now if before.get(k) != now[k]]
        shown = [f"{k} {before.get(k)!r} (asked: {now[k]!r})" for k in diff]
    elif (out / "run" / "config.yaml").is_file():  # a folder from before demo.json: compare the schedule
        from dvcl.training.config import TrainConfig

        run = TrainConfig.load(out / "run" / "config.yaml")
        pairs = {"iterations": (run.iterations, cfg.iterations), "method": (run.method, cfg.method),
                 "labeled_fraction": (run.labeled_fraction, cfg.labeled_fraction), "seed": (run.seed, cfg.seed)}
        shown = [f"{k} {a!r} (asked: {b!r})" for k, (a, b) in pairs.items() if a != b]
    else:
        return
    if shown:
        raise ConfigError(f"{out} holds a demo made with {', '.join(shown)}; a run's schedule is never changed "
                          "midway: rerun with the same options to continue it, or start over with --overwrite "
                          "(or another --out)")


def clear_demo(out: Path) -> List[str]:
    """Remove the demo's own outputs from ``out`` (``--overwrite``); returns what was removed."""
    removed = []
    for name in DEMO_PARTS:
        p = Path(out) / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
        else:
            continue
        removed.append(name)
    return removed


def run_demo(cfg: DemoConfig, overwrite: bool = False) -> Dict[str, object]:
    """Run every step; returns paths, timings and the mean scores (Dice/Jaccard in percent)."""
    from dvcl.data.cache import prepare_dataset
    from dvcl.evaluation.report import evaluate_paths, write_report
    from dvcl.inference.model_package import export_model
    from dvcl.inference.segment import segment_files
    from dvcl.phantoms import write_phantom_dataset
    from dvcl.preprocessing import PreprocessConfig
    from dvcl.training import TrainConfig, apply_preset_schedule, apply_profile, read_run_status, train
    from dvcl.training.config import set_option
    from dvcl.utils.atomic import write_json_atomic

    out = Path(cfg.out)
    if overwrite:
        removed = clear_demo(out)
        if removed:
            log.info("demo: --overwrite removed %s from %s", ", ".join(removed), out)
    check_same_settings(cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "demo.json", {"settings": cfg.recorded()})
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
        resume = (run_dir / "config.yaml").is_file()
        if resume:  # continue exactly the recorded schedule, as `dvcl train --resume` does
            tcfg = TrainConfig.load(run_dir / "config.yaml")
        else:
            tcfg = TrainConfig()
            apply_preset_schedule(tcfg, cache.preset)
            apply_profile(tcfg, cfg.profile)
            tcfg.data = str(cache.root)
            tcfg.method = cfg.method
            tcfg.labeled_fraction = cfg.labeled_fraction
            tcfg.seed = cfg.seed
            tcfg.iterations = cfg.iterations
            tcfg.val_every = max(1, cfg.iterations // 2)
            for key, value in cfg.options.items():
                set_option(tcfg, key, value)
            tcfg.__post_init__()
        train(tcfg, run_dir, device=cfg.device, resume=resume)
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
    summary = result.summary()
    total = round(sum(timings.values()), 1)
    return {"out": str(out.resolve()), "report": str(paths["report"]), "timings_s": timings, "total_s": total,
            "mean_dice_pct": round(100 * summary["mean_dice"], 2),
            "mean_jaccard_pct": round(100 * summary["mean_jaccard"], 2)}


def default_config(**overrides: Optional[object]) -> DemoConfig:
    """The default :class:`DemoConfig` with the given (non-None) fields replaced, converted to each field's type."""
    cfg = DemoConfig()
    names = {f.name for f in fields(cfg)}
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in names:
            raise ConfigError(f"unknown demo setting '{k}'")
        current = getattr(cfg, k)
        if isinstance(current, Path):
            v = Path(v)
        elif isinstance(current, tuple):
            v = tuple(v)
        elif isinstance(current, dict):
            v = {**current, **dict(v)}
        else:
            v = type(current)(v)
        setattr(cfg, k, v)
    if cfg.method not in WARMUP_METHODS and "options" not in {k for k, v in overrides.items() if v is not None}:
        cfg.options = {}  # the other methods have no supervised warm-up option
    return cfg
