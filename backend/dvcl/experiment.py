"""The comparison grid behind ``dvcl experiment``: the paper's tables in one command.

A grid is methods x labeled fractions x seeds. Every cell is one ordinary training run of the shared
Trainer in ``OUT/<method>_f<fraction>_s<seed>/`` (the run directory of docs/architecture.md), followed by

1. export of the run's *best* checkpoint as a model package (``RUN/model/``),
2. segmentation of every case of the cache's **test** split from its original file, exactly as a user would
   run ``dvcl segment`` (predictions come back in the original geometry: ``RUN/test_predictions/``),
3. evaluation against the original reference labels (Dice, Jaccard, HD95, ASSD at native spacing with the
   convention of :mod:`dvcl.evaluation.metrics`): ``RUN/evaluation/{summary.json, metrics.csv, report.md}``.

Two-network methods (DVCL, CPS, CLD, DHC) are evaluated twice from the same checkpoint: as the A+B ensemble
(``RUN/evaluation``) and with model A alone (``RUN/evaluation_A``), so that their rows compare like for like
with one-network methods; every row names its inference model (A+B, A, student, teacher, net).

Honest model selection: the checkpoint of every run is the best one on the cache's **validation** split (the
Trainer's ``best``); the test split is read only here, once per finished run and inference model (counted in
``RUN/evaluation*/selection.json``). ``--tuned-on`` records how the settings (``--set``) were chosen; tables of a
grid whose settings were tuned on the test split, or whose test split was read more than once for a run, carry
a warning at the top. Validation and test splits must not overlap.

Then the seeds are aggregated (mean +/- sample SD, :func:`dvcl.evaluation.aggregate_runs`) into
``OUT/results.md`` (one table per labeled fraction or count, in the paper's layout, then the per-seed values
and the paired differences against a reference method with a 95 % bootstrap interval,
:mod:`dvcl.paired_stats`), ``OUT/results.csv``, ``OUT/runs.csv`` (one row per run, inference model, test case
and structure; Dice and Jaccard as fractions) and ``OUT/results.png`` (mean Dice per method and fraction).

Resumable by construction: a run whose ``run.json`` says ``finished`` and whose evaluation is written is
skipped; a finished run without evaluation is only evaluated; an interrupted run continues from its
``last_state.pt`` (the Trainer's exact resume); a run that never reached a checkpoint starts over. A run
directory made with other settings (say, another ``--iterations``) is refused rather than mixed into the
table. ``fully`` (supervised on every training label) is trained once per seed and shown as the upper-bound
row of every fraction's table.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from dvcl.errors import ConfigError, DatasetError, DVCLError
from dvcl.methods.catalog import display_name, table_rank
from dvcl.utils import progress
from dvcl.utils.atomic import atomic_path, write_json_atomic, write_text_atomic
from dvcl.utils.runlock import STOP_FILE

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

EVAL_DIR = "evaluation"
EVAL_DIR_A = "evaluation_A"
TUNED_ON = ("none", "validation", "test")
"""How the grid's settings were chosen: ``none`` (defaults / given up front), ``validation``, ``test``."""
PRED_DIR = "test_predictions"
MODEL_DIR = "model"


# ------------------------------------------------------------------------------------------------ the grid
def fraction_tag(fraction: float) -> str:
    """``0.1 -> "0.1"``, ``1.0 -> "1"``: the fraction as it appears in run names."""
    return f"{float(fraction):g}"


@dataclass(frozen=True)
class GridRun:
    """One cell of the grid."""

    method: str
    fraction: float
    seed: int
    count: Optional[int] = None
    """labeled training cases (``--labeled-count``) instead of ``fraction``"""

    @property
    def name(self) -> str:
        if self.count is not None:
            return f"{self.method}_n{self.count}_s{self.seed}"
        return f"{self.method}_f{fraction_tag(self.fraction)}_s{self.seed}"

    @property
    def setting(self) -> Tuple[str, float]:
        """Which table the run belongs to: ``("count", N)`` or ``("fraction", f)``."""
        return ("count", float(self.count)) if self.count is not None else ("fraction", float(self.fraction))


@dataclass
class ExperimentConfig:
    """What ``dvcl experiment`` was asked for.

    Attributes:
        data: a prepared cache (``dvcl prepare``).
        out: folder of the run directories and the tables.
        methods / fractions / seeds: the grid.
        profile: ``paper`` or ``quick`` (see :mod:`dvcl.training.config`).
        iterations: override of the profile's iteration count (e.g. a short smoke grid).
        options: ``KEY=VALUE`` overrides for every run (a TrainConfig field, ``network.X`` or a method
            parameter), or ``METHOD:KEY=VALUE`` for the runs of one method only.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for training and segmentation.
        num_workers: data-loading processes per stream (default: the profile's).
        keep_going: when a run fails (not a configuration error), log it and go on with the others.
        tta: flip test-time augmentation for the test-split segmentation.
        overwrite: discard existing run directories of this grid and start over.
        jobs: runs trained at the same time, each in its own process (one GPU is shared by all of them:
            the quick profile's small networks leave most of a large GPU idle, so several runs at once finish
            a grid several times sooner). Each process gets ``cpu_count // jobs`` torch threads.
        labeled_count: labeled training cases of every run (``--labeled-count``), instead of ``fractions``.
        tuned_on: how the settings were chosen (:data:`TUNED_ON`); ``test`` marks every table as invalid.
        reference: method the paired differences are taken against (default: ``dvcl`` if in the grid, else
            the first method).
        bootstrap: bootstrap replicates of the paired-difference intervals.
        tables_only: rewrite the tables from the runs already finished and evaluated in ``out``; nothing is
            trained, evaluated or deleted (e.g. after a change of the table layout, or while a grid runs).
    """

    data: Path
    out: Path
    methods: List[str]
    fractions: List[float]
    seeds: List[int]
    profile: str = "paper"
    iterations: Optional[int] = None
    options: List[str] = field(default_factory=list)
    device: str = "auto"
    num_workers: Optional[int] = None
    keep_going: bool = False
    tta: bool = False
    overwrite: bool = False
    jobs: int = 1
    labeled_count: Optional[int] = None
    tuned_on: str = "none"
    reference: Optional[str] = None
    bootstrap: int = 10000
    tables_only: bool = False


def plan_grid(methods: Sequence[str], fractions: Sequence[float], seeds: Sequence[int],
              labeled_count: Optional[int] = None) -> List[GridRun]:
    """The runs of a grid, in the order they are trained: seed by seed, and within a seed method by method,
    then fraction. A grid stopped part-way (a lease that ends, a Ctrl-C) so leaves whole seeds of every method,
    which make a table, rather than every seed of the first methods and nothing of the last.

    A method that forces its labeled fraction (``fully``: 1.0) gets one run per seed, whatever ``fractions``.
    With ``labeled_count`` every other run uses that many labeled cases (one setting; ``fractions`` unused).

    Raises:
        ConfigError: an unknown method, a fraction outside (0, 1], an empty or duplicated list.
    """
    from dvcl.methods import get_method_class

    if not methods or not fractions or not seeds:
        raise ConfigError("an experiment needs at least one method, one labeled fraction and one seed")
    for what, values in (("method", methods), ("fraction", fractions), ("seed", seeds)):
        if len(set(values)) != len(values):
            raise ConfigError(f"a {what} is listed twice: {', '.join(str(v) for v in values)}")
    for f in fractions:
        if not 0 < float(f) <= 1:
            raise ConfigError(f"labeled fraction must be in (0, 1], got {f}")
    if labeled_count is not None and (isinstance(labeled_count, bool) or int(labeled_count) < 1):
        raise ConfigError(f"labeled count must be a positive integer, got {labeled_count}")
    classes = [get_method_class(method) for method in methods]  # ConfigError listing the available methods
    runs: List[GridRun] = []
    for s in seeds:
        for cls in classes:
            forced = getattr(cls, "labeled_fraction", None)
            if forced is None and labeled_count is not None:
                runs.append(GridRun(cls.name, float(fractions[0]), int(s), int(labeled_count)))
                continue
            run_fractions = [float(forced)] if forced is not None else [float(f) for f in fractions]
            runs.extend(GridRun(cls.name, f, int(s)) for f in run_fractions)
    return runs


# ------------------------------------------------------------------------------------------------ run state
def run_state(run_dir: Path) -> str:
    """``done`` (trained and evaluated), ``trained`` (evaluation missing), ``partial`` (interrupted with a
    checkpoint to resume from) or ``new`` (nothing usable yet)."""
    info = _read_json(run_dir / "run.json")
    if info.get("status") == "finished":
        dirs = [EVAL_DIR] + ([EVAL_DIR_A] if len(info.get("inference_models") or []) > 1 else [])
        evaluated = all((run_dir / d / "summary.json").is_file() and (run_dir / d / "report.md").is_file()
                        for d in dirs)
        return "done" if evaluated else "trained"
    if (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last_state.pt").is_file():
        return "partial"
    return "new"


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def build_run_config(exp: ExperimentConfig, run: GridRun):
    """The TrainConfig of one run: preset schedule < profile < --iterations < options (as ``dvcl train``)."""
    from dvcl.data.cache import Cache
    from dvcl.training.config import TrainConfig, apply_preset_schedule, apply_profile, set_option

    cfg = TrainConfig()
    apply_preset_schedule(cfg, Cache(exp.data).preset)
    apply_profile(cfg, exp.profile)
    cfg.data = str(Path(exp.data).resolve())
    cfg.method = run.method
    cfg.labeled_fraction = run.fraction
    cfg.labeled_count = run.count
    cfg.seed = run.seed
    if exp.iterations is not None:
        cfg.iterations = int(exp.iterations)
    if exp.num_workers is not None:
        cfg.num_workers = int(exp.num_workers)
    for item in exp.options:
        scope, key, value = parse_option(item)
        if scope is None or scope == run.method:
            set_option(cfg, key, value)
    cfg.device = exp.device
    cfg.__post_init__()
    return cfg


def parse_option(item: str) -> Tuple[Optional[str], str, str]:
    """``KEY=VALUE`` -> (None, key, value); ``METHOD:KEY=VALUE`` -> (method, key, value)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE or METHOD:KEY=VALUE, got '{item}'")
    scope = None
    if ":" in key:
        scope, _, key = key.partition(":")
        scope = scope.strip().lower()
    return scope, key.strip(), value.strip()


#: TrainConfig fields that define a run's result; a run directory made with other values is not reused.
_SIGNATURE_FIELDS = ("method", "labeled_fraction", "labeled_count", "seed", "iterations", "batch_labeled",
                     "batch_unlabeled", "patch", "lr", "momentum", "weight_decay", "poly_power", "flip_prob",
                     "foreground_oversample", "oversample_mode")


def config_mismatch(stored, wanted) -> List[str]:
    """Differences (``"iterations: 300 != 2"``) between an existing run's config and the one requested.

    Method parameters are compared with the request's full set, defaults included, after parsing them as the
    method does (``"16"`` equals ``16``): a run made before a default changed is not the run asked for now, so it
    is refused rather than mixed into the table. A parameter the stored config does not list (added to the
    method after the run was made) is compared only where the request sets it.
    """
    from dvcl.methods import get_method_class

    diffs = []
    s, w = stored.to_dict(), wanted.to_dict()
    for key in _SIGNATURE_FIELDS:
        if s[key] != w[key]:
            diffs.append(f"{key}: {s[key]} != {w[key]}")
    for key in ("channels", "strides", "feature_dim", "norm", "dropout", "upsample"):
        if s["network"].get(key) != w["network"].get(key):
            diffs.append(f"network.{key}: {s['network'].get(key)} != {w['network'].get(key)}")
    if s["method"] == w["method"]:
        cls = get_method_class(w["method"])
        parsed = cls.params_to_dict(cls.parse_params(w["method_params"]))
        stored_params = s["method_params"] or {}
        for key, value in parsed.items():
            if (key in stored_params or key in (w["method_params"] or {})) and stored_params.get(key) != value:
                diffs.append(f"{key}: {stored_params.get(key)} != {value}")
    return diffs


# ------------------------------------------------------------------------------------------------ one run
def train_run(exp: ExperimentConfig, run: GridRun, run_dir: Path, state: str) -> None:
    """Train (``new``), resume (``partial``) or do nothing (``trained``/``done``)."""
    from dvcl.training.config import TrainConfig
    from dvcl.training.trainer import train

    if state in ("trained", "done"):
        return
    for d in (EVAL_DIR, EVAL_DIR_A):  # a (re)trained run is a new final run: evaluated afresh
        shutil.rmtree(run_dir / d, ignore_errors=True)
    argv = list(sys.argv) + [f"[run {run.name}]"]
    if state == "partial":
        log.info("%s: resuming from its last checkpoint", run.name)
        cfg = TrainConfig.load(run_dir / "config.yaml")
        if exp.num_workers is not None:
            cfg.num_workers = int(exp.num_workers)
        train(cfg, run_dir, device=exp.device, resume=True, argv=argv)
        return
    cfg = build_run_config(exp, run)
    train(cfg, run_dir, device=exp.device, overwrite=True, argv=argv)


def inference_settings(model_names: Sequence[str]) -> List[Tuple[str, Optional[List[str]], str]]:
    """``(label, models, eval dir)`` of each evaluation of a run: the package's ensemble in ``evaluation/``
    and, for two-network packages, model A alone in ``evaluation_A/`` (the same checkpoint)."""
    names = list(model_names)
    settings: List[Tuple[str, Optional[List[str]], str]] = [("+".join(names), None, EVAL_DIR)]
    if len(names) > 1:
        settings.append((names[0], [names[0]], EVAL_DIR_A))
    return settings


def evaluate_run(run_dir: Path, cache, device: str = "auto", tta: bool = False) -> Dict[str, Dict[str, Any]]:
    """Export the best checkpoint, segment the cache's test cases from their original files, evaluate.

    The checkpoint is the Trainer's ``best``, chosen on the validation split; the test split is read here only.
    Two-network packages are evaluated as the ensemble and as model A alone; an evaluation that exists already
    is not repeated. Each evaluation folder gets ``selection.json`` (what was chosen on which split, how often
    the test split was read for this run and inference model). Returns inference model -> summary.
    """
    from dvcl.evaluation import EvaluationResult, evaluate_case, load_summary, write_report
    from dvcl.evaluation.metrics import MonaiMetrics
    from dvcl.inference.model_package import export_model, load_model_package
    from dvcl.inference.segment import segment_image
    from dvcl.io.images import read_image, read_label, write_image
    from dvcl.utils.device import select_device

    splits = cache.splits
    test_ids = list(splits.get("test", []))
    if not test_ids:
        raise DatasetError(f"{cache.root}: splits.json has no test case to evaluate on")
    check_selection_splits(splits, cache.root)
    preset = cache.preset
    labels = {int(k): v for k, v in cache.labels.items() if int(k) != 0}
    package_dir = export_model(run_dir, run_dir / MODEL_DIR, checkpoint="best", overwrite=True)
    dev = select_device(device)
    package = load_model_package(package_dir, device=dev)
    val_ids = sorted(splits.get("val", []))
    used_val = _config_extra(run_dir, "val_cases")
    used_val = list(used_val) if isinstance(used_val, list) else val_ids
    summaries: Dict[str, Dict[str, Any]] = {}
    for label, models, eval_name in inference_settings(package.model_names):
        eval_dir = run_dir / eval_name
        if (eval_dir / "summary.json").is_file() and (eval_dir / "report.md").is_file():
            summaries[label] = load_summary(eval_dir / "summary.json")
            continue
        previous = _read_json(eval_dir / "selection.json")
        result = EvaluationResult(labels=labels, name=f"{run_dir.name} [{label}]", preset=preset.name)
        metrics = MonaiMetrics()
        pred_dir = run_dir / (PRED_DIR if models is None else f"{PRED_DIR}_{label}")
        pred_dir.mkdir(parents=True, exist_ok=True)
        for cid in test_ids:
            image_path, label_path = cache.source_files(cid, "test")
            image = read_image(image_path)
            pred = segment_image(image, package, device=dev, tta=tta, models=models, name=cid)
            write_image(pred, pred_dir / f"{cid}.nii.gz", overwrite=True)  # the verified write path
            ref = read_label(label_path, image, allowed_values=preset.allowed_raw_values, remap=preset.raw_values)
            result.cases.append(evaluate_case(pred, ref, labels, case=cid, pred_name=str(pred_dir / f"{cid}.nii.gz"),
                                              ref_name=str(label_path), metrics=metrics))
        write_report(result, eval_dir, overwrite=True, plots=False)
        write_json_atomic(eval_dir / "selection.json", {
            "split": "test", "test_cases": test_ids, "inference_model": label,
            "checkpoint": "best" if val_ids else "final",
            "checkpoint_selected_on": "validation" if val_ids else "none (no validation split: final weights)",
            "validation_cases": used_val,
            "test_reads": int(previous.get("test_reads", 0)) + 1,
        })
        summaries[label] = result.summary()
        log.info("%s [%s]: test mean Dice %.4f over %d case(s)", run_dir.name, label, summaries[label]["mean_dice"],
                 len(result.cases))
    return summaries


def _config_extra(run_dir: Path, key: str) -> Any:
    """A value the Trainer wrote into ``RUN/config.yaml`` next to the config (e.g. ``val_cases``)."""
    import yaml

    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def check_selection_splits(splits: Dict[str, Any], root: Any = "") -> None:
    """Refuse a cache whose validation and test splits share cases (selection would then see the test set)."""
    shared = sorted(set(splits.get("val", [])) & set(splits.get("test", [])))
    if shared:
        raise DatasetError(f"{root}: validation and test splits share case(s) {', '.join(shared)}; checkpoints are "
                           "chosen on validation, so the test split must be disjoint from it")


# ------------------------------------------------------------------------------------------------ grid
@dataclass
class ExperimentResult:
    """What :func:`run_experiment` did."""

    out: Path
    runs: List[GridRun]
    trained: List[str] = field(default_factory=list)
    evaluated: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    outputs: Dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def run_experiment(exp: ExperimentConfig) -> ExperimentResult:
    """Run (or resume) the whole grid, then write the tables. See the module docstring."""
    from dvcl.data.cache import Cache
    from dvcl.profiles import get_profile
    from dvcl.training.config import TrainConfig

    t0 = time.monotonic()
    get_profile(exp.profile)  # ConfigError listing the profiles
    cache = Cache(exp.data)
    runs = plan_grid(exp.methods, exp.fractions, exp.seeds, exp.labeled_count)
    if exp.tuned_on not in TUNED_ON:
        raise ConfigError(f"--tuned-on must be one of {', '.join(TUNED_ON)}, got '{exp.tuned_on}'")
    if exp.tuned_on == "test":
        log.warning("settings tuned on the test split: every table of this grid is marked as not a valid comparison")
    if exp.reference is not None and exp.reference not in {r.method for r in runs}:
        raise ConfigError(f"--reference '{exp.reference}' is not one of the grid's methods")
    check_selection_splits(cache.splits, cache.root)
    out = Path(exp.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    # validate every run's configuration (and existing run directories) before training anything
    from dvcl.methods import get_method_class

    wanted = {r.name: build_run_config(exp, r) for r in runs}
    for r in runs:
        wanted[r.name].validate()
        get_method_class(r.method).parse_params(wanted[r.name].method_params)  # unknown keys fail now
        run_dir = out / r.name
        if exp.overwrite or exp.tables_only or not (run_dir / "config.yaml").is_file():
            continue  # (tables-only: the table shows the stored runs as they are; nothing is added to them)
        diffs = config_mismatch(TrainConfig.load(run_dir / "config.yaml"), wanted[r.name])
        if diffs:
            raise ConfigError(f"{run_dir}: made with other settings ({'; '.join(diffs)}); use another --out or "
                              "--overwrite to start this grid over")
    if exp.tables_only:
        if exp.overwrite:
            raise ConfigError("--tables-only and --overwrite exclude each other (tables-only deletes nothing)")
        if not out.is_dir():
            raise ConfigError(f"{out}: no grid folder to make tables from")
        result = ExperimentResult(out=out, runs=runs)
        result.skipped = [r.name for r in runs if run_state(out / r.name) == "done"]
        result.outputs = write_tables(out, runs, exp, cache.labels)
        result.seconds = time.monotonic() - t0
        return result
    out.mkdir(parents=True, exist_ok=True)
    (out / STOP_FILE).unlink(missing_ok=True)  # an earlier stop, not a request to this run
    if exp.overwrite:
        for r in runs:
            shutil.rmtree(out / r.name, ignore_errors=True)
    _write_experiment_json(exp, runs, out)

    result = ExperimentResult(out=out, runs=runs)
    if exp.jobs > 1:
        _run_parallel(exp, runs, out, result)
    else:
        _run_sequential(exp, runs, out, cache, result)
    result.outputs = write_tables(out, runs, exp, cache.labels, failed=result.failed)
    result.seconds = time.monotonic() - t0
    return result


def _run_sequential(exp: ExperimentConfig, runs: Sequence[GridRun], out: Path, cache,
                    result: ExperimentResult) -> None:
    """Train and evaluate the unfinished runs one after the other in this process."""
    with progress.Progress("experiment", total=len(runs), desc="experiment", unit="run") as bar:
        for r in runs:
            run_dir = out / r.name
            state = run_state(run_dir)
            if state == "done":
                result.skipped.append(r.name)
                bar.update(message=f"{r.name} (done)")
                continue
            try:
                if state in ("new", "partial"):
                    train_run(exp, r, run_dir, state)
                    result.trained.append(r.name)
                evaluate_run(run_dir, cache, exp.device, exp.tta)
                result.evaluated.append(r.name)
            except (DVCLError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - with --keep-going one broken run must not stop the grid
                if not exp.keep_going:
                    raise
                log.error("%s failed: %s: %s (continuing: --keep-going)", r.name, type(exc).__name__, exc)
                result.failed[r.name] = f"{type(exc).__name__}: {exc}"
            bar.update(message=r.name)


def _run_cell(exp: ExperimentConfig, run: GridRun, threads: int) -> Tuple[str, bool, Optional[str]]:
    """One grid cell in a worker process: train (or resume) and evaluate. Returns (name, trained, error)."""
    import torch

    from dvcl.data.cache import Cache

    torch.set_num_threads(max(1, threads))
    progress.set_mode("none")  # many runs at once: the parent's bar counts finished runs
    run_dir = Path(exp.out) / run.name
    if (Path(exp.out) / STOP_FILE).exists():  # the grid was stopped while this cell was queued
        return run.name, False, "not started: the experiment was stopped"
    state = run_state(run_dir)
    needs_training = state in ("new", "partial")
    try:
        if needs_training:
            train_run(exp, run, run_dir, state)
        evaluate_run(run_dir, Cache(exp.data), exp.device, exp.tta)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which decides (--keep-going)
        return run.name, False, f"{type(exc).__name__}: {exc}"
    return run.name, needs_training, None


def _run_parallel(exp: ExperimentConfig, runs: Sequence[GridRun], out: Path, result: ExperimentResult) -> None:
    """Train and evaluate the unfinished runs ``exp.jobs`` at a time in spawned processes (CUDA-safe)."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    pending = []
    for r in runs:
        if run_state(out / r.name) == "done":
            result.skipped.append(r.name)
        else:
            pending.append(r)
    threads = max(1, (os.cpu_count() or 1) // exp.jobs)
    log.info("experiment: %d run(s) to do, %d at a time, %d torch thread(s) each", len(pending), exp.jobs, threads)
    errors: Dict[str, str] = {}
    with progress.Progress("experiment", total=len(runs), desc="experiment", unit="run",
                           initial=len(result.skipped)) as bar, \
            ProcessPoolExecutor(max_workers=exp.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_cell, exp, r, threads): r for r in pending}
        not_done = set(futures)
        try:
            _collect(not_done, exp, result, errors, bar)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (the CLI turns it into this): stop the grid, keep the work
            _stop_grid(out, pending, pool)
            raise
    if errors and not exp.keep_going:
        name, error = next(iter(errors.items()))
        raise DVCLError(f"run {name} failed: {error} (use --keep-going to finish the other runs anyway)")
    result.failed.update(errors)


def _stop_grid(out: Path, pending: Sequence[GridRun], pool: Any) -> None:
    """Stop a parallel grid: queued cells do not start, running ones stop after their current iteration.

    Without this the pool's shutdown would wait for every queued cell, so a stopped grid went on training in
    the background. A running run is asked through its ``STOP`` file (the Trainer polls it every iteration and
    saves its checkpoint, so ``dvcl experiment`` again resumes it); queued cells see the grid's stop file.
    """
    log.warning("experiment stopping: queued runs are dropped, running ones save a checkpoint and stop")
    with contextlib.suppress(OSError):
        (out / STOP_FILE).touch()
    for r in pending:
        if (out / r.name).is_dir():
            with contextlib.suppress(OSError):
                (out / r.name / STOP_FILE).touch()
    pool.shutdown(wait=True, cancel_futures=True)


def _collect(not_done: set, exp: ExperimentConfig, result: ExperimentResult,
             errors: Dict[str, str], bar: Any) -> None:
    """Record the grid's cells as they finish (``errors`` gets the failed ones)."""
    from concurrent.futures import FIRST_COMPLETED, wait

    while not_done:
        finished, not_done = wait(not_done, return_when=FIRST_COMPLETED)
        for fut in finished:
            name, trained, error = fut.result()
            if error is None:
                if trained:
                    result.trained.append(name)
                result.evaluated.append(name)
                log.info("%s: done", name)
            else:
                errors[name] = error
                log.error("%s failed: %s", name, error)
                if not exp.keep_going:
                    for other in not_done:
                        other.cancel()
            bar.update(message=name)
        if errors and not exp.keep_going:
            break


def _write_experiment_json(exp: ExperimentConfig, runs: Sequence[GridRun], out: Path) -> None:
    from dvcl import __version__

    write_json_atomic(out / "experiment.json", {
        "data": str(Path(exp.data).resolve()), "methods": list(exp.methods), "fractions": list(exp.fractions),
        "seeds": list(exp.seeds), "profile": exp.profile, "iterations": exp.iterations,
        "options": list(exp.options), "device": exp.device, "tta": exp.tta, "labeled_count": exp.labeled_count,
        "selection": {"checkpoint": "best on the validation split", "hyperparameters_tuned_on": exp.tuned_on,
                      "test_split": "read once per finished run and inference model"},
        "runs": [r.name for r in runs], "dvcl_version": __version__,
    })


# ------------------------------------------------------------------------------------------------ tables
def collect_summaries(out: Path, runs: Sequence[GridRun]) -> Dict[Tuple[GridRun, str], Dict[str, Any]]:
    """(run, inference model) -> evaluation summary, for the finished runs that have one."""
    from dvcl.evaluation import load_summary

    found = {}
    for r in runs:
        run_dir = out / r.name
        if run_state(run_dir) != "done":
            continue
        for eval_name in (EVAL_DIR, EVAL_DIR_A):
            path = run_dir / eval_name / "summary.json"
            if path.is_file():
                label = _read_json(run_dir / eval_name / "selection.json").get("inference_model") or \
                    _default_label(run_dir, eval_name)
                found[(r, label)] = load_summary(path)
    return found


def _default_label(run_dir: Path, eval_name: str) -> str:
    """Inference label of an evaluation made before selection.json existed (from run.json)."""
    names = list(_read_json(run_dir / "run.json").get("inference_models") or [])
    if eval_name == EVAL_DIR_A:
        return names[0] if names else "A"
    return "+".join(names) if names else "?"


def _row_sort_key(method: str, given: Sequence[str]) -> Tuple[int, int]:
    """Catalog (paper table) order; methods not in the catalog just before ours, in the order they were given."""
    return (table_rank(method), list(given).index(method) if method in given else 0)


def _settings(runs: Sequence[GridRun]) -> List[Tuple[str, float]]:
    """The tables of a grid: its fractions or its labeled count (methods that force a fraction join each)."""
    own = sorted({r.setting for r in runs if not _forced(r.method)})
    return own or sorted({r.setting for r in runs})


def _setting_title(setting: Tuple[str, float]) -> str:
    kind, value = setting
    return f"{int(value)} labeled training cases" if kind == "count" else f"{100 * value:g}% labeled"


Setting = Tuple[str, float]


def aggregate_tables(out: Path, runs: Sequence[GridRun],
                     methods: Sequence[str]) -> Tuple[Dict[Setting, dict], Dict[Tuple[GridRun, str], dict]]:
    """Setting -> :func:`aggregate_runs` output (rows in table order, upper bound last), and the summaries.

    One row per method and inference model (two-network methods: A+B, then A alone). Methods with a forced
    fraction (``fully``) appear in every table. Each row also carries ``method``, ``inference_model`` and
    ``seeds`` (the seeds in it, in the order of its values).
    """
    from dvcl.evaluation import aggregate_runs

    summaries = collect_summaries(out, runs)
    tables: Dict[Setting, dict] = {}
    for setting in _settings(runs):
        per_row: Dict[Tuple[str, str], List[Tuple[int, dict]]] = {}
        # method order, then the ensemble before model A alone, then seeds
        ordered = sorted(summaries, key=lambda k: (_row_sort_key(k[0].method, methods), k[1] == "A", k[0].seed))
        for key in ordered:
            r, label = key
            if r.setting == setting or _forced(r.method):
                per_row.setdefault((r.method, label), []).append((r.seed, summaries[key]))
        if not per_row:
            continue
        rows_in = {f"{display_name(m)} [{label}]": [v for _, v in values]
                   for (m, label), values in per_row.items()}
        agg = aggregate_runs(rows_in)
        for row, (method, label) in zip(agg["rows"], per_row):
            row["method"] = method
            row["inference_model"] = label
            row["seeds"] = [seed for seed, _ in per_row[(method, label)]]
            row["seed_values"] = [v.get("mean_dice") for _, v in per_row[(method, label)]]
            row["case_values"] = {seed: {c: d.get("mean_dice") for c, d in (v.get("cases") or {}).items()}
                                  for seed, v in per_row[(method, label)]}
        tables[setting] = agg
    return tables, summaries


def _forced(method: str) -> bool:
    """True for methods trained at one fraction only because they force it (``fully``)."""
    from dvcl.methods import get_method_class

    return getattr(get_method_class(method), "labeled_fraction", None) is not None


def paired_rows(agg: dict, reference: Optional[str], n_boot: int = 10000) -> List[Dict[str, Any]]:
    """Paired differences (reference row minus each other row) of per-case mean Dice, same seed and case.

    The reference row is the reference method's first inference model (A+B for two-network methods). Only
    seeds and cases present in both rows are paired. Returns dicts with ``name``, ``difference``
    (:class:`dvcl.paired_stats.PairedDifference`, in Dice fractions) and ``pairs``.
    """
    import numpy as np

    from dvcl.paired_stats import paired_bootstrap

    rows = agg["rows"]
    if not rows:
        return []
    ref_rows = [r for r in rows if r["method"] == reference] if reference else []
    ref = ref_rows[0] if ref_rows else rows[0]
    out = []
    for row in rows:
        if row is ref:
            continue
        seeds = [s for s in ref["case_values"] if s in row["case_values"]]
        cases = sorted(set.intersection(*[set(ref["case_values"][s]) & set(row["case_values"][s]) for s in seeds])) \
            if seeds else []
        if not seeds or not cases:
            continue
        diffs = np.array([[_num(ref["case_values"][s][c]) - _num(row["case_values"][s][c]) for c in cases]
                          for s in seeds])
        if not np.isfinite(diffs).any():
            continue
        out.append({"name": row["name"], "reference": ref["name"], "pairs": f"{len(seeds)} seeds x {len(cases)} cases",
                    "difference": paired_bootstrap(diffs, n_boot=n_boot)})
    return out


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def test_rereads(out: Path, runs: Sequence[GridRun]) -> List[str]:
    """``RUN/evaluation*`` folders whose test split was read more than once (``selection.json`` ``test_reads``).

    A re-read test split can have steered a decision, so every table built from such runs says so.
    """
    reread = []
    for r in runs:
        for eval_name in (EVAL_DIR, EVAL_DIR_A):
            n = _read_json(out / r.name / eval_name / "selection.json").get("test_reads")
            if n and int(n) > 1:
                reread.append(f"{r.name}/{eval_name}")
    return sorted(reread)


def write_tables(out: Path, runs: Sequence[GridRun], exp: ExperimentConfig, labels: Dict[int, str],
                 failed: Optional[Dict[str, str]] = None) -> Dict[str, Path]:
    """Write results.md, results.csv, runs.csv and results.png from the evaluated runs in ``out``."""
    from dvcl.evaluation import markdown_table

    tables, summaries = aggregate_tables(out, runs, exp.methods)
    structures = [labels[k] for k in sorted(labels) if int(k) != 0]
    paths = {"markdown": out / "results.md", "csv": out / "results.csv", "runs_csv": out / "runs.csv",
             "plot": out / "results.png"}
    missing = sorted({r.name for r in runs} - {r.name for r, _ in summaries})
    reread = test_rereads(out, runs)
    reference = exp.reference or ("dvcl" if "dvcl" in exp.methods else (exp.methods[0] if exp.methods else None))
    iters = f", {exp.iterations} iterations" if exp.iterations else ""
    lines = ["# Comparison", ""]
    if exp.tuned_on == "test" or reread:
        why = ("its settings were tuned on the test split (--tuned-on test)" if exp.tuned_on == "test" else
               f"the test split was read more than once for {', '.join(reread)}")
        lines += [f"> **WARNING: NOT A VALID COMPARISON.** {why[0].upper() + why[1:]}; test-split numbers below "
                  "are biased upwards and must not be reported as results.", ""]
    lines += [f"Data: `{Path(exp.data).resolve()}`; profile `{exp.profile}`{iters}; "
              f"seeds {', '.join(map(str, exp.seeds))}.",
              "",
              "Model selection: each run's checkpoint is its best on the **validation** split; hyper-parameters: "
              f"{_TUNED_TEXT[exp.tuned_on]}; the **test** split is read once per finished run and inference model "
              "(counts in `RUN/evaluation*/selection.json`).",
              "",
              "Test split of the cache, segmented from the original files and evaluated at native resolution. "
              "Dice per structure and mean Dice / Jaccard in %, HD95 in mm; mean ± sample SD over seeds (the value "
              "of a seed is its mean over structures, then over test cases; no SD for a single seed). The "
              "inference model of each row is in brackets: A+B = mean softmax of both networks, A = model A alone "
              "(for two-network methods from the same checkpoint as A+B; a one-network method's only network), "
              "student / teacher = the network of a mean-teacher method that is used.", ""]
    for setting, agg in tables.items():
        lines += [f"## {_setting_title(setting)}", "", markdown_table(agg["rows"], structures).rstrip(), ""]
        seeds_note = ", ".join(f"{row['name']}: {row['n_seeds']}" for row in agg["rows"]
                               if row["n_seeds"] != len(exp.seeds))
        if seeds_note:
            lines += [f"Seeds evaluated (fewer than asked): {seeds_note}.", ""]
        lines += seed_and_paired_lines(agg, exp.seeds, reference, exp.bootstrap)
    if missing:
        lines += [f"Not in the table (not finished or failed): {', '.join(missing)}.", ""]
    if failed:
        lines += ["Failed runs:", ""] + [f"- `{k}`: {v}" for k, v in failed.items()] + [""]
    write_text_atomic(paths["markdown"], "\n".join(lines))
    write_text_atomic(paths["csv"], _results_csv(tables, structures))
    write_text_atomic(paths["runs_csv"], _runs_csv(out, summaries, exp.tuned_on))
    plot_results(tables, paths["plot"])
    return paths


def seed_and_paired_lines(agg: dict, seeds: Sequence[int], reference: Optional[str],
                          bootstrap: int) -> List[str]:
    """Markdown under a results table: per-seed mean Dice of every row, then the paired differences.

    ``reference`` is a row's ``method`` (its first row is the reference; see :func:`paired_rows`). Shared by
    the grid's own tables and by :mod:`dvcl.grid_comparison`.
    """
    lines = ["Per-seed mean Dice (%):", "", "| Row | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|" + ":-:|" * len(seeds)]
    for row in agg["rows"]:
        by_seed = dict(zip(row["seeds"], row["seed_values"]))
        lines.append(f"| {row['name']} | " + " | ".join(
            "" if by_seed.get(s) is None else f"{100 * by_seed[s]:.2f}" for s in seeds) + " |")
    diffs = paired_rows(agg, reference, bootstrap)
    if diffs:
        lines += ["", f"Paired differences in mean Dice (percentage points), {diffs[0]['reference']} minus "
                  "each row, same seed and same test case; 95 % bootstrap interval over cases and seeds "
                  f"({bootstrap} replicates):", "", "| Row | Difference [95 % CI] | Pairs | CI excludes 0 |",
                  "|---|:-:|:-:|:-:|"]
        for d in diffs:
            lines.append(f"| {d['name']} | {d['difference'].text(100)} | {d['pairs']} | "
                         f"{'yes' if d['difference'].excludes_zero else 'no'} |")
    return lines + [""]


_TUNED_TEXT = {"none": "the defaults and the `--set` values given up front (not tuned)",
               "validation": "tuned on the validation split (declared with --tuned-on validation)",
               "test": "**tuned on the test split** (declared with --tuned-on test)"}


def _fraction(percent: Any) -> str:
    """A metrics.csv percentage as a fraction with 6 decimals (``"87.5" -> "0.875000"``; empty stays empty)."""
    if percent in (None, ""):
        return ""
    return _fmt(float(percent) / 100.0)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6f}" if isinstance(v, float) else str(v)


def _results_csv(tables: Dict[Setting, dict], structures: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    metrics = ("dice", "jaccard", "hd95", "assd")
    w.writerow(["fraction", "labeled_count", "method", "inference_model", "name", "n_seeds"]
               + [c for m in metrics for c in (f"mean_{m}", f"mean_{m}_sd")]
               + [c for s in structures for c in (f"dice_{s}", f"dice_{s}_sd")])
    for (kind, value), agg in tables.items():
        for row in agg["rows"]:
            forced = _forced(row["method"])
            fraction = "1" if forced else (f"{value:g}" if kind == "fraction" else "")
            count = "" if forced or kind != "count" else str(int(value))
            w.writerow([fraction, count, row["method"], row["inference_model"], row["name"], row["n_seeds"]]
                       + [_fmt(row.get(k)) for m in metrics for k in (f"mean_{m}", f"mean_{m}_sd")]
                       + [_fmt(v) for s in structures
                          for v in (row["structures"].get(s), row["structures_sd"].get(s))])
    return buf.getvalue()


def _runs_csv(out: Path, summaries: Dict[Tuple[GridRun, str], dict], tuned_on: str = "none") -> str:
    """One row per run, inference model, test case and structure (from each evaluation's metrics.csv).

    ``dice`` and ``jaccard`` are fractions in [0, 1] like ``results.csv`` (the evaluation's metrics.csv holds
    percentages); empty where the structure was not scored.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "method", "fraction", "labeled_count", "seed", "inference_model", "split", "case", "structure",
                "dice", "jaccard", "hd95_mm", "assd_mm", "status", "checkpoint_selected_on",
                "hyperparameters_tuned_on"])
    for r, label in sorted(summaries, key=lambda k: (k[0].method, k[0].fraction, k[0].seed, k[1])):
        for eval_name in (EVAL_DIR, EVAL_DIR_A):
            eval_dir = out / r.name / eval_name
            selection = _read_json(eval_dir / "selection.json")
            if (selection.get("inference_model") or _default_label(out / r.name, eval_name)) != label:
                continue
            try:
                with open(eval_dir / "metrics.csv", newline="") as fh:
                    case_rows = list(csv.DictReader(fh))
            except OSError:
                continue
            selected_on = selection.get("checkpoint_selected_on", "validation")
            for c in case_rows:
                w.writerow([r.name, r.method, f"{r.fraction:g}", "" if r.count is None else r.count, r.seed, label,
                            selection.get("split", "test"), c.get("case"), c.get("structure"),
                            _fraction(c.get("dice_pct")), _fraction(c.get("jaccard_pct")), c.get("hd95_mm"),
                            c.get("assd_mm"), c.get("status"), selected_on,
                            tuned_on])
    return buf.getvalue()


def plot_results(tables: Dict[float, dict], path: Path) -> Path:
    """Grouped bars: mean Dice (%) +/- SD over seeds per method, one bar per labeled fraction (Agg)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names: List[str] = []
    for agg in tables.values():
        for row in agg["rows"]:
            if row["name"] not in names:
                names.append(row["name"])
    fractions = list(tables)
    width = 0.8 / max(1, len(fractions))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 4.0))
    for i, f in enumerate(fractions):
        by_name = {row["name"]: row for row in tables[f]["rows"]}
        xs, ys, es = [], [], []
        for j, n in enumerate(names):
            row = by_name.get(n)
            if row is None or row["mean_dice"] is None or math.isnan(row["mean_dice"]):
                continue
            xs.append(j + (i - (len(fractions) - 1) / 2) * width)
            ys.append(100 * row["mean_dice"])
            sd = row.get("mean_dice_sd")
            es.append(0.0 if sd is None or math.isnan(sd) else 100 * sd)
        ax.bar(xs, ys, width=width, yerr=es, capsize=3, label=_setting_title(f))
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("mean Dice (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    if fractions:
        ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=120, format="png")
    plt.close(fig)
    return path
