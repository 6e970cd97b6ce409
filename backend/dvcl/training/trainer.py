"""The one shared Trainer: every method (DVCL, CPS, baselines) trains through this loop.

What a method does not have to think about lives here: data streams over the prepared cache, SGD with the
poly schedule, AMP on CUDA, sliding-window validation, best/last checkpoints, exact resume, TensorBoard and
metrics.csv, progress events, clean stop on SIGINT/SIGTERM and multi-process (torchrun) training.

Resume is exact: the data stream is a pure function of the iteration (:mod:`dvcl.training.loaders`), the
LR a pure function of the iteration, and the optimizer, grad scaler, RNG states, method state and best
metric come back from ``last_state.pt``. A resumed run therefore produces the weights the uninterrupted run
would have produced (bit for bit on CPU).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch

from dvcl import __version__
from dvcl.data.cache import Cache
from dvcl.data.splits import labeled_subset
from dvcl.errors import ConfigError, DatasetError, ModelError, OutputExistsError
from dvcl.methods import Method, get_method_class
from dvcl.networks.memory_format import (
    batch_to_channels_last,
    channels_last_enabled,
    match_optimizer_state,
    to_channels_last,
)
from dvcl.presets import PRESETS
from dvcl.training import checkpoint as ckpt
from dvcl.training import distributed as ddp
from dvcl.training.config import TrainConfig
from dvcl.training.loaders import (
    STREAM_LABELED,
    STREAM_UNLABELED,
    CaseItem,
    PatchStream,
    SpatialAugmentation,
    make_loader,
)
from dvcl.training.schedules import poly_lr, set_lr
from dvcl.utils import progress
from dvcl.utils.atomic import write_json_atomic, write_text_atomic
from dvcl.utils.device import select_device
from dvcl.utils.runlock import STOP_FILE
from dvcl.utils.seeding import seed_everything

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
#: files of a run directory (removed by ``overwrite``)
RUN_FILES = ("config.yaml", "environment.json", "metrics.csv", "run.json", "tb", "checkpoints")
MAX_NONFINITE = 10
# STOP_FILE (dvcl.utils.runlock) in the run directory asks the run to save and stop at the next iteration
# boundary; same effect as SIGINT/SIGTERM
#: test hook: seconds slept inside every iteration (makes "Stop during a slow iteration" testable on a real run)
SLOW_ITERATION_ENV = "DVCL_TEST_SLOW_ITERATION_S"
_PROCESS_START = time.time()


@dataclass
class TrainResult:
    """What :meth:`Trainer.run` returns (also in ``run.json``)."""

    run_dir: Path
    status: str
    iteration: int
    best_val_dice: Optional[float]
    best_iteration: int
    seconds: float


# ------------------------------------------------------------------------------------------------ metrics log
class MetricsCsv:
    """``metrics.csv``: one row per logged iteration, appended across resumes without gaps or duplicates.

    On resume the rows after the resumed iteration (logged after the last checkpoint by the killed process)
    are dropped, as is a torn last line. New columns (a loss term that appears later) rewrite the file with
    the wider header.
    """

    FIRST = ("iteration", "lr", "loss")

    def __init__(self, path: Path, resume_from: Optional[int]) -> None:
        self.path = path
        self.header: List[str] = []
        self.rows: List[Dict[str, str]] = []
        if resume_from is not None and path.is_file():
            self._load(resume_from)
            self._rewrite()
        elif path.exists():
            path.unlink()

    def _load(self, upto: int) -> None:
        text = self.path.read_text()
        lines = text.split("\n")
        complete = lines[:-1]  # the text after the last newline is empty or a torn line
        if not complete:
            return
        reader = csv.reader(complete)
        header = next(reader)
        for values in reader:
            if len(values) != len(header):
                continue
            row = dict(zip(header, values))
            try:
                it = int(row["iteration"])
            except (KeyError, ValueError):
                continue
            if it <= upto and (not self.rows or it > int(self.rows[-1]["iteration"])):
                self.rows.append(row)
        self.header = header

    def _rewrite(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.header, lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buf.getvalue())

    def update(self, iteration: int, values: Dict[str, Any]) -> None:
        """Fill columns of the row of ``iteration`` (a validation done late, after a resume)."""
        for row in reversed(self.rows):
            if int(row["iteration"]) == iteration:
                row.update({k: _csv_value(v) for k, v in values.items()})
                self.header += [k for k in values if k not in self.header]
                self._rewrite()
                return

    def append(self, row: Dict[str, Any]) -> None:
        values = {k: _csv_value(v) for k, v in row.items()}
        new_keys = [k for k in values if k not in self.header]
        if new_keys:
            first = [k for k in self.FIRST if k in values or k in self.header]
            rest = [k for k in self.header if k not in first] + [k for k in new_keys if k not in first]
            self.header = first + rest
        self.rows.append(values)
        if new_keys:
            self._rewrite()
            return
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self.header, lineterminator="\n", restval="").writerow(values)
        with open(self.path, "a") as f:  # one write per row: a kill leaves at most one torn last line
            f.write(buf.getvalue())
            f.flush()


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class _StopRequest:
    """SIGINT/SIGTERM or a ``STOP_FILE`` in the run directory set a flag; the loop stops at the next iteration
    boundary and saves ``last``.

    A second signal raises KeyboardInterrupt at once (the user insists). Only the main thread can install
    handlers; elsewhere (e.g. a GUI worker thread) the caller's own handling applies. The stop file is polled
    whenever the loop asks (a stat per iteration); one older than this process is a leftover and is removed,
    and the file is removed when the run has stopped, so ``--resume`` is not stopped by it again.
    """

    def __init__(self, stop_file: Optional[Path] = None) -> None:
        self._requested = False
        self.stop_file = stop_file
        self._old: Dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        if not self._requested and self.stop_file is not None and self.stop_file.exists():
            self._requested = True
            log.warning("%s found: stopping after this iteration (checkpoint is saved)", self.stop_file)
        return self._requested

    def _handle(self, signum: int, frame: Any) -> None:
        if self._requested:
            raise KeyboardInterrupt
        self._requested = True
        log.warning("signal %d received: stopping after this iteration (checkpoint is saved)", signum)

    def _remove_stop_file(self) -> None:
        if self.stop_file is not None:
            with contextlib.suppress(OSError):
                self.stop_file.unlink()

    def __enter__(self) -> _StopRequest:
        with contextlib.suppress(OSError):
            if self.stop_file is not None and self.stop_file.stat().st_mtime < _PROCESS_START - 1.0:
                self._remove_stop_file()  # from an earlier process, not a request to this one
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self._requested:
            self._remove_stop_file()


# ------------------------------------------------------------------------------------------------ trainer
class Trainer:
    """Train ``cfg.method`` on the cache ``cfg.data`` into ``run_dir`` (layout in docs/architecture.md).

    Args:
        cfg: the training configuration (for a resume, the run's own config.yaml).
        run_dir: output folder.
        device: ``auto``/``cpu``/``cuda``/``cuda:N`` (under torchrun each rank takes GPU ``LOCAL_RANK``).
        resume: continue the run in ``run_dir`` from ``checkpoints/last_state.pt``.
        overwrite: replace an existing run in ``run_dir`` instead of refusing.
        argv: command line recorded in environment.json.
    """

    def __init__(self, cfg: TrainConfig, run_dir: PathLike, device: str = "auto", resume: bool = False,
                 overwrite: bool = False, argv: Optional[Sequence[str]] = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.overwrite = overwrite
        self.argv = list(argv) if argv is not None else list(sys.argv)
        self.requested_device = device
        self.ckpt_dir = self.run_dir / "checkpoints"

    # -------------------------------------------------------------------------------------------- setup
    def _prepare(self) -> None:
        """Validate everything that can be wrong with the input before any file is written."""
        cfg = self.cfg
        self.cache = Cache(cfg.data)
        cache_preset = self.cache.preset
        # a built-in preset name must match the cache's (a dataset.json path names a custom preset: no check)
        if cfg.preset.lower() in PRESETS and cfg.preset.lower() != cache_preset.name.lower():
            raise ConfigError(
                f"{cfg.data}: the cache was prepared with preset '{cache_preset.name}', not '{cfg.preset}'"
            )
        cfg.preset = cache_preset.name
        self.num_classes = self.cache.num_classes
        if cfg.init_model and not self.resume:  # a resumed run's config.yaml already holds the package's network
            take_init_network(cfg, self.cache.labels)
        cfg.network.num_classes = self.num_classes
        cfg.network.validate()
        self.method_cls = get_method_class(cfg.method)
        cfg.method = self.method_cls.name
        cfg.method_params = self.method_cls.params_to_dict(self.method_cls.parse_params(cfg.method_params))
        if self.method_cls.labeled_fraction is not None:
            cfg.labeled_fraction = float(self.method_cls.labeled_fraction)
        cfg.validate()

        splits = self.cache.splits
        train = list(splits.get("train", []))
        if not train:
            raise DatasetError(f"{cfg.data}: splits.json has no training cases")
        subset_seed = cfg.subset_seed if cfg.subset_seed is not None else int(splits.get("seed", 0))
        forced = self.method_cls.labeled_fraction is not None  # "fully": every training case, whatever the count
        self.labeled_ids = labeled_subset(train, cfg.labeled_fraction, subset_seed,
                                          count=None if forced else cfg.labeled_count, preset=cfg.preset)
        self.unlabeled_ids = sorted(set(train) - set(self.labeled_ids)) + sorted(splits.get("unlabeled", []))
        val = sorted(splits.get("val", []))
        self.val_ids = val[: cfg.val_cases] if cfg.val_cases else val
        uses_u = self.method_cls.uses_unlabeled
        if uses_u and cfg.batch_unlabeled < 1:
            raise ConfigError(f"method '{cfg.method}' trains on unlabeled patches: batch_unlabeled must be >= 1")
        if uses_u and not self.unlabeled_ids:
            raise DatasetError(
                f"{cfg.data}: method '{cfg.method}' needs unlabeled cases, but labeled fraction "
                f"{cfg.labeled_fraction} leaves none and the cache has no unlabeled-only cases"
            )
        for cid in self.labeled_ids + self.unlabeled_ids + self.val_ids:
            if cid not in self.cache.index:
                raise DatasetError(f"{cfg.data}: case '{cid}' of splits.json is not in the cache")
        if not self.val_ids:
            log.warning("no validation cases: 'best' will be the final weights")

        if self.resume:
            self.state_path = self.ckpt_dir / "last_state.pt"
            self.state = ckpt.load_state(self.state_path)
        else:
            existing = [n for n in RUN_FILES if (self.run_dir / n).exists()]
            if existing and not self.overwrite:
                raise OutputExistsError(
                    f"{self.run_dir}: already holds a training run ({', '.join(existing)}); "
                    "use --resume to continue it or --overwrite to replace it"
                )
            self.state = None

    def _setup_runtime(self) -> None:
        cfg = self.cfg
        device = select_device(self.requested_device)
        self.dist, self.device = ddp.init_distributed(device)
        self.is_main = self.dist.is_main
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.amp_dtype: Optional[torch.dtype] = None
        if cfg.amp and self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        # identical initial weights on every rank (also broadcast below); A and B differ from each other
        seed_everything(cfg.seed)
        self.method: Method = self.method_cls(cfg, self.num_classes, self.device)
        self.method.setup()
        if cfg.init_model and self.state is None:  # a resume restores its own checkpoint instead
            init_from_model_package(self.method, cfg.init_model)
        if self.method.needs_class_counts:
            # class-balancing methods (CLD, DHC) weight classes by their frequency in the labeled set, as the
            # released code does; only the labeled training cases of this run are counted
            self.method.set_class_counts(self._labeled_class_counts())
        ddp.broadcast_models(self.method.models, self.dist)
        # the CPU's fast layout (dvcl.networks.memory_format): before the optimiser's state exists, so its momenta
        # take the parameters' layout; batches follow in _to_device, validation follows the weights
        self.channels_last = channels_last_enabled(cfg.channels_last, self.device)
        if self.channels_last:
            to_channels_last(self.method.models)
        log.info("memory format: %s", "channels-last" if self.channels_last else "contiguous (NCDHW)")
        self.params = list(self.method.trainable_parameters())
        if not self.params:
            raise ConfigError(f"method '{cfg.method}' has no trainable parameters")
        self.optimizer = build_optimizer(cfg, self.params)
        # each rank its own random stream for the losses' voxel sampling (a function of seed and rank)
        seed_everything(cfg.seed * 7919 + 104729 * (self.dist.rank + 1))

        self.start_iteration = 0
        self.best_metric = -math.inf
        self.best_iteration = 0
        self.elapsed_before = 0.0
        if self.state is not None:
            st = self.state
            ckpt.load_models(self.method.models, st["models"], str(self.state_path))
            self.optimizer.load_state_dict(st["optimizer"])
            match_optimizer_state(self.optimizer)  # a state saved with the other channels_last setting
            if st.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(st["scaler"])
            self.method.load_extra_state(st.get("method_extra") or {})
            self.start_iteration = int(st["iteration"])
            self.best_metric = float(st.get("best_metric", -math.inf))
            self.best_iteration = int(st.get("best_iteration", 0))
            self.elapsed_before = float(st.get("elapsed_s", 0.0))
            if self.start_iteration > cfg.iterations:
                raise ConfigError(f"{self.state_path}: iteration {self.start_iteration} is past the schedule "
                                  f"({cfg.iterations} iterations)")

        pin = self.device.type == "cuda"
        lab_items = [CaseItem(c, str(self.cache.image_path(c)), str(self.cache.label_path(c)))
                     for c in self.labeled_ids]
        spatial = SpatialAugmentation(cfg.affine_prob, cfg.scale_range, cfg.rotate_deg)
        self.stream_l = PatchStream(lab_items, cfg.patch, cfg.seed, STREAM_LABELED, labeled=True,
                                    foreground_oversample=cfg.foreground_oversample, flip_prob=cfg.flip_prob,
                                    cache_in_memory=cfg.cache_in_memory, oversample_mode=cfg.oversample_mode,
                                    num_classes=self.num_classes, spatial=spatial)
        self.loader_l = make_loader(self.stream_l, cfg.batch_labeled, self.start_iteration, self.dist.rank,
                                    self.dist.world_size, cfg.num_workers, pin)
        self.loader_u: Optional[Iterator] = None
        if self.method_cls.uses_unlabeled:
            unl_items = [CaseItem(c, str(self.cache.image_path(c))) for c in self.unlabeled_ids]
            self.stream_u = PatchStream(unl_items, cfg.patch, cfg.seed, STREAM_UNLABELED, labeled=False,
                                        flip_prob=cfg.flip_prob, cache_in_memory=cfg.cache_in_memory,
                                        spatial=spatial)
            self.loader_u = make_loader(self.stream_u, cfg.batch_unlabeled, self.start_iteration, self.dist.rank,
                                        self.dist.world_size, cfg.num_workers, pin)
        if self.state is not None:
            # after the loaders (which draw nothing from the global RNGs) so the streams continue exactly
            rngs = self.state.get("rng_per_rank") or [self.state["rng"]]
            if len(rngs) == self.dist.world_size:
                ckpt.restore_rng(rngs[self.dist.rank])
            else:
                log.warning("resuming with %d process(es), saved with %d: the random streams of the losses are "
                            "re-seeded, so the run is not bit-identical to an uninterrupted one",
                            self.dist.world_size, len(rngs))
                ckpt.restore_rng(rngs[0])
                seed_everything(cfg.seed * 7919 + 104729 * (self.dist.rank + 1) + self.start_iteration)

    def _labeled_class_counts(self) -> torch.Tensor:
        """Voxel count of every class over the labeled training cases (memory-mapped, one case at a time)."""
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for cid in self.labeled_ids:
            seg = np.load(self.cache.label_path(cid), mmap_mode="r")
            counts += np.bincount(np.asarray(seg).ravel(), minlength=self.num_classes)[: self.num_classes]
        return torch.as_tensor(counts, dtype=torch.float64)

    def _setup_outputs(self) -> None:
        if not self.is_main:
            return
        if not self.resume and self.overwrite:
            for name in RUN_FILES:
                p = self.run_dir / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        extra = {
            "labels": {str(k): v for k, v in self.cache.labels.items()},
            "num_classes": self.num_classes,
            "labeled_cases": self.labeled_ids,
            "unlabeled_cases": len(self.unlabeled_ids),
            "val_cases": self.val_ids,
            "world_size": self.dist.world_size,
        }
        if not self.resume:
            self.cfg.save(self.run_dir / "config.yaml", extra=extra)
        write_json_atomic(self.run_dir / "environment.json", environment_info(self.device, self.argv, self.dist))
        self.csv = MetricsCsv(self.run_dir / "metrics.csv", self.start_iteration if self.resume else None)
        self.tb = _tensorboard_writer(self.run_dir / "tb", self.start_iteration + 1 if self.resume else None)
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")

    # -------------------------------------------------------------------------------------------- running
    def run(self) -> TrainResult:
        """Train to ``cfg.iterations``; raises KeyboardInterrupt after a clean stop on SIGINT/SIGTERM."""
        self._prepare()
        self._setup_runtime()
        try:
            self._setup_outputs()
            result = self._loop()
            # every rank leaves together: a rank that tears down its gloo connections while another still writes
            # its last files is the one suspect found for a worker's SIGABRT seen once at the end of a CI run
            ddp.barrier(self.dist)
            return result
        finally:
            if self.is_main and hasattr(self, "tb"):
                self.tb.close()
            ddp.shutdown(self.dist)

    def _to_device(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        nb = self.device.type == "cuda"
        batch = {k: v.to(self.device, non_blocking=nb) if torch.is_tensor(v) else v for k, v in batch.items()}
        return batch_to_channels_last(batch) if self.channels_last else batch

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _loop(self) -> TrainResult:
        cfg = self.cfg
        total = cfg.iterations
        it = self.start_iteration
        self.window: Dict[str, List[float]] = {}
        self.t_session = time.monotonic()
        self.data_time = 0.0
        self.steps_done = 0
        nonfinite = 0
        status = "running"
        self._write_run_json(status, it)
        bar = progress.Progress("train", total=total, desc=f"train {cfg.method}", initial=it) if self.is_main \
            else None
        stopped = False
        try:
            slow_s = float(os.environ.get(SLOW_ITERATION_ENV) or 0.0)
            with _StopRequest(self.run_dir / STOP_FILE) as stop:
                if self.state is not None and self.state.get("pending_validation") and self.is_main:
                    self._pending_validation(it, stop)
                while it < total:
                    lr = poly_lr(cfg.lr, it, total, cfg.poly_power)
                    set_lr(self.optimizer, lr)
                    t0 = time.monotonic()
                    batch_l = self._to_device(next(self.loader_l))
                    batch_u = self._to_device(next(self.loader_u)) if self.loader_u is not None else None
                    self.data_time += time.monotonic() - t0

                    self.method.train()
                    self.optimizer.zero_grad(set_to_none=True)
                    with self._autocast():
                        loss, terms = self.method.compute_loss(batch_l, batch_u, it)
                    if slow_s > 0:
                        time.sleep(slow_s)
                    finite = bool(torch.isfinite(loss.detach()).item())
                    if finite:
                        self.scaler.scale(loss).backward()
                    stop_any, bad_any = ddp.average_gradients(self.params, self.dist, [stop.requested, not finite])
                    if bad_any:
                        nonfinite += 1
                        log.warning("iteration %d: loss is not finite (%s); step skipped", it + 1, terms)
                        if nonfinite >= MAX_NONFINITE:
                            raise RuntimeError(
                                f"training diverged: loss not finite for {MAX_NONFINITE} iterations in a row at "
                                f"iteration {it + 1} (try a lower --lr)"
                            )
                    else:
                        nonfinite = 0
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                        self.method.after_step(it)
                    it += 1
                    self.steps_done += 1
                    self._accumulate(float(loss.detach()), terms)

                    val = None
                    validate = bool(it == total or (cfg.val_every and it % cfg.val_every == 0))
                    if validate and not stop_any and self.is_main:
                        val = self._validate(stop)
                        self._update_best(it, val)
                    # a stop skips or aborts a due validation; the resumed run does it first (exact schedule)
                    if stop.requested and not self.dist.enabled:
                        stop_any = True
                    pending = validate and val is None and bool(self.val_ids) and stop_any
                    save = validate or it == total or stop_any or (
                        cfg.checkpoint_every and it % cfg.checkpoint_every == 0)
                    if it % cfg.log_every == 0 or save or val is not None:
                        self._log_row(it, lr, val)
                    if save:
                        self._save_last(it, pending_validation=pending)
                    if bar is not None:
                        # the aggregate terms (sup, cps, contra ...); per-model terms ("sup_A") stay in the logs
                        shown = {k: v for k, v in terms.items() if "_" not in k and k != "loss"}
                        bar.update(loss=float(loss.detach()), **shown, lr=lr)
                    if stop_any:
                        stopped = True
                        break
        except BaseException as exc:
            if self.is_main:
                self._write_run_json("cancelled" if isinstance(exc, KeyboardInterrupt) else "failed", it)
            raise
        finally:
            if bar is not None:
                bar.close()
        if stopped:
            self._write_run_json("cancelled", it)
            raise KeyboardInterrupt
        if self.is_main and not self.val_ids:
            self._save_weights("best", it, None)
            self.best_iteration = it
        ddp.check_in_sync(self.method.models, self.dist)
        status = "finished"
        self._write_run_json(status, it)
        return TrainResult(self.run_dir, status, it, self._best_or_none(), self.best_iteration, self._elapsed())

    # -------------------------------------------------------------------------------------------- pieces
    def _accumulate(self, loss: float, terms: Dict[str, float]) -> None:
        self.window.setdefault("loss", []).append(loss)
        for k, v in terms.items():
            if k != "loss":  # the total is logged once, from the returned tensor
                self.window.setdefault(k, []).append(float(v))

    def _log_row(self, it: int, lr: float, val: Optional[Dict[str, Any]]) -> None:
        means = {k: float(np.mean(v)) for k, v in self.window.items() if v}
        self.window = {}
        if not self.is_main:
            return
        elapsed = self._elapsed()
        row: Dict[str, Any] = {"iteration": it, "lr": lr, **means}
        row.update(self._val_columns(val))
        row["seconds"] = round(elapsed, 2)
        row["s_per_it"] = round(self._session_rate(), 4)
        self.csv.append(row)
        for k, v in means.items():
            self.tb.add_scalar(f"loss/{k}", v, it)
        self.tb.add_scalar("lr", lr, it)
        if val:
            self.tb.add_scalar("val/dice", val["dice"], it)
            for name, d in val["per_class"].items():
                if d is not None:
                    self.tb.add_scalar(f"val/dice_{name}", d, it)
        self.tb.flush()
        progress.emit("metrics", iteration=it, losses=means, lr=lr, val_dice=val["dice"] if val else None,
                      s_per_it=row["s_per_it"])

    def _session_rate(self) -> float:
        return (time.monotonic() - self.t_session) / max(1, self.steps_done)

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.t_session)

    def _best_or_none(self) -> Optional[float]:
        return None if self.best_metric == -math.inf else self.best_metric

    def _save_weights(self, which: str, it: int, val_dice: Optional[float]) -> None:
        meta = {"iteration": it, "method": self.cfg.method, "val_dice": "" if val_dice is None else val_dice,
                "models": ",".join(self.method.models), "inference_models": ",".join(self.method.inference_models()),
                "dvcl_version": __version__}
        ckpt.save_weights(self.ckpt_dir / f"{which}.safetensors", self.method.models, meta)

    def _update_best(self, it: int, val: Optional[Dict[str, Any]]) -> None:
        if val is not None and val["dice"] > self.best_metric:
            self.best_metric = val["dice"]
            self.best_iteration = it
            self._save_weights("best", it, val["dice"])

    def _pending_validation(self, it: int, stop: _StopRequest) -> None:
        """The validation a stop skipped at the resumed iteration: same weights, so the same result and best."""
        val = self._validate(stop)
        if val is None:
            return
        self._update_best(it, val)
        self.csv.update(it, self._val_columns(val))
        self.tb.add_scalar("val/dice", val["dice"], it)
        self.tb.flush()

    @staticmethod
    def _val_columns(val: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        cols: Dict[str, Any] = {"val_dice": val["dice"] if val else None}
        for name, d in (val["per_class"] if val else {}).items():
            cols[f"val_dice_{name}"] = d
        return cols

    def _save_last(self, it: int, pending_validation: bool = False) -> None:
        """Called on every rank at the same iteration: each rank's RNG state goes into the checkpoint."""
        rngs = ddp.gather_objects(ckpt.capture_rng(), self.dist)
        if not self.is_main:
            return
        self._save_weights("last", it, None)
        state = {
            "iteration": it,
            "models": ckpt.models_state(self.method.models),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rngs[0],
            "rng_per_rank": rngs,
            "best_metric": self.best_metric,
            "best_iteration": self.best_iteration,
            "pending_validation": bool(pending_validation),
            "method_extra": {k: v.detach().cpu() for k, v in self.method.extra_state().items()},
            "elapsed_s": self._elapsed(),
            "method": self.cfg.method,
        }
        ckpt.save_state(self.ckpt_dir / "last_state.pt", state)
        self._write_run_json("running", it)

    def _write_run_json(self, status: str, it: int) -> None:
        if not self.is_main:
            return
        data = {
            "status": status,
            "iteration": it,
            "iterations": self.cfg.iterations,
            "method": self.cfg.method,
            "preset": self.cfg.preset,
            "labeled_fraction": self.cfg.labeled_fraction,
            "seed": self.cfg.seed,
            "best_val_dice": self._best_or_none(),
            "best_iteration": self.best_iteration,
            "inference_models": self.method.inference_models(),
            "device": str(self.device),
            "channels_last": getattr(self, "channels_last", None),
            "world_size": self.dist.world_size,
            "started": getattr(self, "started", None),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "timings": {
                "elapsed_s": round(self._elapsed(), 2) if hasattr(self, "t_session") else self.elapsed_before,
                "s_per_it": round(self._session_rate(), 4) if getattr(self, "steps_done", 0) else None,
                "data_s_per_it": round(self.data_time / self.steps_done, 4) if getattr(self, "steps_done", 0)
                else None,
            },
        }
        write_json_atomic(self.run_dir / "run.json", data)

    # -------------------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def _validate(self, stop: _StopRequest) -> Optional[Dict[str, Any]]:
        """Mean Dice (foreground classes, then cases) of the inference models' mean softmax on val cases.

        Returns None when there are no val cases or a stop was requested midway.
        """
        if not self.val_ids:
            return None
        from monai.metrics import DiceHelper

        from dvcl.inference.sliding_window import WindowConfig, sliding_window

        cfg = self.cfg
        window = WindowConfig.from_train_config(cfg)  # the same windows the exported model will use
        self.method.eval()
        dice_fn = DiceHelper(include_background=False, num_classes=self.num_classes, reduction="none",
                             ignore_empty=True, get_not_nans=False)
        per_case = []
        t0 = time.monotonic()
        for cid in self.val_ids:
            if stop.requested:
                self.method.train()
                return None
            img = torch.from_numpy(np.load(self.cache.image_path(cid)).astype(np.float32))[None, None].to(self.device)
            lab = torch.from_numpy(np.load(self.cache.label_path(cid)).astype(np.int64))[None, None].to(self.device)
            with self._autocast():
                probs = sliding_window(img[0], window.roi, window.stride, self.method.predict_proba,
                                       window.sw_batch_size)[None]
            pred = torch.argmax(probs, dim=1, keepdim=True)
            del probs
            per_case.append(dice_fn(pred, lab)[0].float().cpu().numpy())  # (C-1,) NaN where the class is absent
        self.method.train()
        scores = np.stack(per_case)
        with np.errstate(all="ignore"), _quiet_nan_warnings():
            case_means = np.nanmean(scores, axis=1)
            class_means = np.nanmean(scores, axis=0)
            mean = float(np.nanmean(case_means)) if np.isfinite(case_means).any() else 0.0
        names = {int(k): v for k, v in self.cache.labels.items()}
        per_class = {_safe(names.get(c, str(c))): (None if np.isnan(v) else float(v))
                     for c, v in zip(range(1, self.num_classes), class_means)}
        log.info("validation: mean Dice %.4f on %d case(s) in %.1f s", mean, len(per_case), time.monotonic() - t0)
        return {"dice": mean, "per_class": per_class}


class _NoTensorBoard:
    """Stands in for SummaryWriter when TensorBoard (the ``train`` extra) is not installed: metrics.csv
    still records everything, so training must not fail for want of a viewer."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _tensorboard_writer(path: Path, purge_step: Optional[int]) -> Any:
    """TensorBoard events when TensorBoard is installed, otherwise a no-op writer and one warning."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("TensorBoard is not installed (pip install 'dvcl[train]'): no tb/ events; metrics.csv "
                    "has every value")
        return _NoTensorBoard()
    return SummaryWriter(str(path), purge_step=purge_step)


# ------------------------------------------------------------------------------------ starting from a package
#: the NetworkConfig fields that decide the weights' shapes and meaning (dropout does not)
_STRUCTURE_FIELDS = ("in_channels", "num_classes", "channels", "strides", "feature_dim", "norm", "upsample")


def take_init_network(cfg: TrainConfig, data_labels: Dict[int, str]) -> None:
    """Check ``cfg.init_model`` against the data and take its network config (fine-tuning, ``dvcl adapt``).

    Why taken rather than compared: the package fixes the architecture its weights fit, so asking the user to
    repeat channels/strides/feature_dim could only produce mismatches. Reads ``model.json`` only (torch-free);
    ``cfg.init_model`` becomes the resolved folder, so config.yaml records which package the run started from.

    Raises:
        ModelError: the package is missing or invalid, or its label set (class ids and names) differs from the
            data's: the output channels would mean other structures.
    """
    from dvcl.inference.model_package import read_model_json, resolve_model
    from dvcl.networks.config import NetworkConfig

    folder = resolve_model(cfg.init_model)
    meta = read_model_json(folder)
    pkg_labels = {int(k): str(v["name"]) for k, v in meta["labels"].items()}
    run_labels = {int(k): str(v) for k, v in data_labels.items() if int(k) != 0}
    if {k: v.lower() for k, v in pkg_labels.items()} != {k: v.lower() for k, v in run_labels.items()}:
        diff = sorted(set(pkg_labels) | set(run_labels))
        shown = [f"{k}: {pkg_labels.get(k, '-')!r} vs {run_labels.get(k, '-')!r}" for k in diff
                 if pkg_labels.get(k, "").lower() != run_labels.get(k, "").lower()]
        raise ModelError(f"{folder}: init model's labels do not match the data's (package vs data: "
                         f"{'; '.join(shown[:5])}{' ...' if len(shown) > 5 else ''})")
    net = NetworkConfig.from_dict(meta["network"])
    before, after = cfg.network.to_dict(), net.to_dict()
    changed = [k for k in _STRUCTURE_FIELDS if k != "num_classes" and before.get(k) != after.get(k)]
    if changed:
        log.info("network taken from init model %s: %s", folder.name,
                 ", ".join(f"{k} {after[k]}" for k in changed))
    cfg.network = net
    cfg.init_model = str(folder.resolve())


def init_from_model_package(method: Method, model_dir: PathLike) -> Dict[str, str]:
    """Load a model package's networks into ``method``'s models (a fresh run with ``cfg.init_model``).

    The mapping is the method's (:meth:`Method.init_model_sources`). Weights are read by
    :func:`dvcl.inference.model_package.load_model_package`: safetensors only (nothing unpickled), checked
    against the package's own network config. Returns ``{model: package network}``.

    Raises:
        ModelError: no model of the method can take a package network, or a model's network config
            (channels, strides, classes, feature size ...) differs from the package's.
    """
    from dvcl.inference.model_package import load_model_package, resolve_model

    folder = resolve_model(model_dir)
    pkg = load_model_package(folder)
    sources = method.init_model_sources(pkg.model_names)
    if not sources:
        raise ModelError(f"{folder}: method '{method.name}' has no U-Net that a model package can initialise")
    want = pkg.network_config.to_dict()
    for target, source in sources.items():
        net = method.models[target]
        have = net.cfg.to_dict() if hasattr(net, "cfg") else {}
        diff = [f"{k} {have.get(k)} (package: {want.get(k)})" for k in _STRUCTURE_FIELDS if have.get(k) != want.get(k)]
        if diff:
            raise ModelError(f"{folder}: network of model '{target}' does not match the init model's: "
                             + ", ".join(diff))
        try:
            net.load_state_dict(pkg.models[source].state_dict(), strict=True)
        except RuntimeError as exc:
            raise ModelError(f"{folder}: weights of '{source}' do not fit model '{target}' ({exc})") from exc
    log.info("initialised %s from model '%s' (%s)", ", ".join(f"{t}<-{s}" for t, s in sources.items()),
             pkg.name, folder)
    return sources


def build_optimizer(cfg: TrainConfig, params: Sequence[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD with momentum as the paper [given], or AdamW for short CPU runs (the quick profile)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer '{cfg.optimizer}': use sgd or adamw")


@contextlib.contextmanager
def _quiet_nan_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        yield


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def environment_info(device: torch.device, argv: Sequence[str], dist_ctx: Optional[ddp.DistContext] = None) -> Dict:
    """Versions, git commit, device and command line of a run (``environment.json``)."""
    import monai
    import SimpleITK as sitk  # noqa: N813

    info: Dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "SimpleITK": sitk.Version_VersionString(),
        "numpy": np.__version__,
        "dvcl": __version__,
        "git_commit": git_commit(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "world_size": dist_ctx.world_size if dist_ctx else 1,
        "argv": list(argv),
    }
    return info


def git_commit() -> Optional[str]:
    """The commit of the source tree dvcl runs from, if it is a git checkout (read-only query)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def train(cfg: TrainConfig, run_dir: PathLike, device: str = "auto", resume: bool = False,
          overwrite: bool = False, argv: Optional[Sequence[str]] = None) -> TrainResult:
    """API entry point behind ``dvcl train`` (see :class:`Trainer`)."""
    from dvcl.utils.allocator import keep_freed_memory

    keep_freed_memory()  # every step re-allocates the same large tensors (dvcl/utils/allocator.py)
    return Trainer(cfg, run_dir, device=device, resume=resume, overwrite=overwrite, argv=argv).run()


def read_run_status(run_dir: PathLike) -> Dict[str, Any]:
    """``run.json`` of a run directory (what the Slicer module polls)."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise DatasetError(f"{run_dir}: no run.json (not a training run)")
    return json.loads(path.read_text())
