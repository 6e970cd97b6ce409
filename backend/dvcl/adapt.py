"""Site adaptation: fine-tune an installed model semi-supervised on a site's own unlabeled scans (``dvcl adapt``).

Why: a model trained elsewhere (synthetic phantoms, another hospital's scanners) loses accuracy on a new site's
scans. The site has many unlabeled scans and no time to label them; DVCL co-training learns from exactly that.
``adapt_model`` starts both U-Nets from the model's own weights (``TrainConfig.init_model``) and trains DVCL on
labeled data of the model's label set plus the site's unlabeled scans, with the model's preprocessing, so the
inputs are what the networks saw. The result is a new model package whose card says what it was adapted from
and on which scans: any score measured on those scans is transductive (they were seen in training, unlabeled).

Work folder (default ``<out>.adapt-work`` next to the output)::

    WORK/adapt.json   the request (model + sha256, data folders, scans, schedule): a rerun must match it
    WORK/cache/       the prepared cache (the model's spacing, clip and percentiles)
    WORK/run/         the training run (config.yaml, metrics.csv, checkpoints ...; ``dvcl train --resume``-able)

Re-running the same command continues where it stopped (an up-to-date cache is not redone, the run resumes from
its last checkpoint, a finished run is only exported); other settings are refused, ``overwrite`` starts over.

Labeled data: ``labeled``, or, for a model whose card names a registered generator
(``card.labeled_data_generator``, :func:`register_labeled_data_generator`), data that generator writes into the work
folder: ``synthetic_abdomen`` and ``synthetic_heart`` are the domain-randomised synthetic CT of :mod:`dvcl.synthesis`
(FLARE22 and MM-WHS labels), the data the synthetic-trained abdominal and heart models were made from.

Torch-free at import (the CLI's help reads the defaults below).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from dvcl.errors import ConfigError, DatasetError, OutputExistsError
from dvcl.model_card import write_model_card
from dvcl.synthetic_training import SYNTHETIC_TRAINING
from dvcl.utils import progress

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Training iterations: the quick profile's budget; minutes on a CPU with the shipped models.
DEFAULT_ITERATIONS = 300
#: AdamW learning rate: a tenth of the quick profile's 3e-3. Fine-tuning keeps what the model knows; the quick
#: profile's rate is meant for training from scratch and would first undo the initialisation.
DEFAULT_LR = 3e-4
#: The profile whose patch, batch, optimizer and workers the adaptation run uses (CPU-sized).
PROFILE = "quick"
#: Random flips off, as for every model of synthetic CT (the reason: :mod:`dvcl.synthetic_training`).
FLIP_PROB = float(SYNTHETIC_TRAINING["flip_prob"])
#: The method: semi-supervised co-training of the package's two networks A and B (B<-A for a one-network model).
METHOD = "dvcl"
#: ``best`` (validation Dice on held-out *labeled* cases, i.e. the source domain) would favour the least adapted
#: state, so the last checkpoint is exported by default.
DEFAULT_CHECKPOINT = "last"
#: Split of the labeled cases: most train, a fifth validate (shows forgetting), none is held out for testing.
SPLIT_RATIOS = (8, 2, 0)
TRANSDUCTIVE_LINE = "scores on these scans are transductive"
WORK_SUFFIX = ".adapt-work"
REQUEST_FILE = "adapt.json"

#: A generator of labeled training data for a model: ``(model.json dict, model folder, output folder, seed)`` ->
#: a labeled data folder (simple layout) in the model's label set. Registered by name; a model's card selects one.
LabeledDataGenerator = Callable[[Mapping[str, Any], Path, Path, int], Path]
_GENERATORS: Dict[str, LabeledDataGenerator] = {}


def register_labeled_data_generator(name: str, generator: LabeledDataGenerator) -> None:
    """Make ``generator`` available to models whose card says ``"labeled_data_generator": name``.

    The extension point for synthetic labeled data (issue 13): until a generator is registered and named by a
    model's card, ``adapt_model`` needs real labeled data (``labeled``).
    """
    _GENERATORS[str(name)] = generator


def labeled_data_generators() -> List[str]:
    return sorted(_GENERATORS)


#: Synthetic labeled cases written for an adaptation of a model trained on synthetic CT (about 10 s each per core).
SYNTHETIC_LABELED_COUNT = 40


def synthetic_data(kind: str, organ_sizes: str = "phantom", fatty_pancreas: bool = False,
                   fat_planes: bool = False) -> LabeledDataGenerator:
    """Labeled data from the domain-randomised synthesis (``dvcl.synthesis``, ``kind`` ``abdomen``: FLARE22 labels,
    ``cardiac``: MM-WHS; ``organ_sizes`` as :class:`~dvcl.synthesis.config.SynthesisConfig`'s; ``fatty_pancreas``:
    a fatty pancreas at the literature's prevalence; ``fat_planes``: fat between the liver and its neighbours), for
    models trained on it: an adaptation keeps showing the model the anatomy it learned.

    Case ``i`` depends only on (``seed``, ``i``), so an interrupted generation is simply written again.
    """
    def generate(meta: Mapping[str, Any], model_dir: Path, out: Path, seed: int) -> Path:
        from dvcl.synthesis.config import SynthesisConfig
        from dvcl.synthesis.dataset import write_synthetic_dataset
        from dvcl.synthesis.priors import FATTY_PANCREAS_PREVALENCE

        if not (out / "dataset.json").is_file():
            write_synthetic_dataset(out, SYNTHETIC_LABELED_COUNT, seed=seed, overwrite=True,
                                    workers=max(1, min(8, os.cpu_count() or 1)), kind=kind,
                                    config=SynthesisConfig(organ_sizes=organ_sizes,
                                                           fatty_pancreas_p=FATTY_PANCREAS_PREVALENCE
                                                           if fatty_pancreas else 0.0, fat_planes=fat_planes))
        return out

    return generate


register_labeled_data_generator("synthetic_abdomen", synthetic_data("abdomen"))
register_labeled_data_generator("synthetic_abdomen_adult", synthetic_data("abdomen", organ_sizes="adult"))
register_labeled_data_generator("synthetic_abdomen_adult_fatty",
                                synthetic_data("abdomen", organ_sizes="adult", fatty_pancreas=True))
register_labeled_data_generator("synthetic_abdomen_adult_fatty_planes",
                                synthetic_data("abdomen", organ_sizes="adult", fatty_pancreas=True, fat_planes=True))
register_labeled_data_generator("synthetic_heart", synthetic_data("cardiac"))


# ------------------------------------------------------------------------------------------------- inputs
def check_unlabeled_folder(folder: PathLike) -> List[Path]:
    """The scans of the site's unlabeled folder (image files and DICOM series folders), each header checked.

    Every problem is collected before refusing, so the user fixes the folder once. Hidden entries are skipped;
    other files and sub-folders that are no image are ignored with a warning (a README next to the scans).

    Raises:
        DatasetError: the folder is missing or holds no scan, or one or more scans are unreadable (listed).
    """
    from dvcl.errors import DVCLError
    from dvcl.io.images import check_header, image_suffix, is_dicom_dir, read_header

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: unlabeled folder not found")
    scans: List[Path] = []
    bad: List[str] = []
    ignored: List[str] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if is_dicom_dir(p):
                scans.append(p)
            else:
                ignored.append(p.name + "/")
            continue
        suffix = image_suffix(p)
        if not suffix:
            if p.suffix.lower() not in (".raw", ".zraw", ".gz"):  # data files of detached .mhd/.nhdr headers
                ignored.append(p.name)
            continue
        if suffix == ".seg.nrrd":
            bad.append(f"{p.name} (a segmentation, not a scan)")
            continue
        try:
            reader = read_header(p)
            check_header(reader, p)
            if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
                raise DatasetError(f"{p}: not a 3D scalar volume")
        except (DVCLError, OSError) as exc:
            bad.append(f"{p.name} ({str(exc).split(': ', 1)[-1]})")
            continue
        scans.append(p)
    if ignored:
        log.warning("%s: ignored (not an image or DICOM series): %s", folder, ", ".join(ignored))
    if bad:
        raise DatasetError(f"{folder}: {len(bad)} unreadable scan(s): {'; '.join(bad)}")
    if not scans:
        raise DatasetError(f"{folder}: unlabeled folder holds no scans (NIfTI, NRRD, MHA/MHD or DICOM series folders)")
    return scans


def model_sha256(model_dir: PathLike) -> str:
    """sha256 of the package's weights file: identifies the exact model adapted (names and versions repeat)."""
    from dvcl.inference.model_package import WEIGHTS

    h = hashlib.sha256()
    with open(Path(model_dir) / WEIGHTS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def preset_for_model(meta: Mapping[str, Any]) -> Any:
    """The label table the labeled data is read with: the model's built-in preset when its labels are the model's
    (keeps raw-value maps such as MM-WHS's), else a custom preset made of the model's labels and colours."""
    from dvcl.presets import PRESETS, Preset

    labels = {int(k): str(v["name"]) for k, v in meta["labels"].items()}
    builtin = PRESETS.get(str(meta.get("preset", "")).lower())
    if builtin is not None and {k: v.lower() for k, v in builtin.labels.items()} == \
            {k: v.lower() for k, v in labels.items()}:
        return builtin
    colors = {int(k): tuple(v["color"]) for k, v in meta["labels"].items() if v.get("color")}
    return Preset(name=str(meta.get("preset") or meta["name"]), labels=labels, colors=colors,
                  description=f"label set of model {meta['name']}")


def labeled_data_for(meta: Mapping[str, Any], model_dir: Path, work: Path, seed: int) -> Path:
    """Labeled data when none is given: from the generator the model card names, else a clear refusal."""
    card = meta.get("card") if isinstance(meta.get("card"), dict) else {}
    name = card.get("labeled_data_generator")
    if name and name in _GENERATORS:
        out = work / "labeled"
        log.info("adapt: generating labeled data with '%s' into %s", name, out)
        return Path(_GENERATORS[name](meta, model_dir, out, seed))
    why = (f"its card names generator '{name}', which is not installed" if name else
           "its card names no labeled-data generator")
    raise ConfigError(f"model '{meta['name']}': --labeled DATA is required (labeled scans in the model's label set, "
                      f"nnU-Net or simple layout); {why} (installed: {', '.join(labeled_data_generators())})")


# ------------------------------------------------------------------------------------------------- request
def _request(model_dir: Path, meta: Mapping[str, Any], sha: str, labeled: Optional[Path], scans: Sequence[Path],
             unlabeled: Path, iterations: int, lr: float, seed: int, options: Mapping[str, Any]) -> Dict[str, Any]:
    """What defines an adaptation: a rerun with anything else here is refused (a run's schedule never changes)."""
    return {
        "model": str(meta["name"]),
        "model_sha256": sha,
        "model_path": str(model_dir.resolve()),
        "labeled": str(labeled.resolve()) if labeled is not None else None,
        "unlabeled": str(unlabeled.resolve()),
        "unlabeled_scans": [p.name for p in scans],
        "iterations": int(iterations),
        "lr": float(lr),
        "seed": int(seed),
        "options": {str(k): _plain(v) for k, v in sorted(options.items())},
    }


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _check_request(work: Path, request: Mapping[str, Any]) -> None:
    from dvcl.utils.json_files import read_json_object

    path = work / REQUEST_FILE
    if not path.is_file():
        if (work / "run" / "config.yaml").exists() or (work / "cache" / "dataset.json").exists():
            raise ConfigError(f"{work}: holds an adaptation without its {REQUEST_FILE}; start over with --overwrite "
                              "or choose another --work-dir")
        return
    before = read_json_object(path, ConfigError)
    diff = [f"{k} {before.get(k)!r} (asked: {request[k]!r})" for k in request
            if k != "model_path" and before.get(k) != request[k]]
    if diff:
        raise ConfigError(f"{work} holds an adaptation made with {'; '.join(diff)}; a run's schedule is never changed "
                          "midway: rerun with the same options to continue it, or start over with --overwrite "
                          "(or another --work-dir)")


# ------------------------------------------------------------------------------------------------- the API
def adapt_model(
    model: PathLike,
    unlabeled: PathLike,
    out: PathLike,
    labeled: Optional[PathLike] = None,
    iterations: int = DEFAULT_ITERATIONS,
    device: str = "auto",
    seed: int = 0,
    work_dir: Optional[PathLike] = None,
    lr: float = DEFAULT_LR,
    checkpoint: str = DEFAULT_CHECKPOINT,
    name: Optional[str] = None,
    options: Optional[Mapping[str, Any]] = None,
    workers: Optional[int] = None,
    overwrite: bool = False,
    argv: Optional[Sequence[str]] = None,
) -> Path:
    """Adapt ``model`` to the scans in ``unlabeled`` and write the adapted model package to ``out``.

    Args:
        model: a model folder or the name of an installed model (``dvcl info`` lists them).
        unlabeled: the site's scans (a folder of NIfTI/NRRD/MHA files or DICOM series folders); never labeled.
        out: the new model package folder; refused when it exists unless ``overwrite``.
        labeled: labeled data in the model's label set (nnU-Net or simple layout, as ``dvcl prepare`` reads);
            required unless the model card names a registered generator (:func:`register_labeled_data_generator`).
            Its cases are split 8:2 into training and validation (:data:`SPLIT_RATIOS`).
        iterations: DVCL iterations (default :data:`DEFAULT_ITERATIONS`, the quick profile's budget).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seed of the split and of training.
        work_dir: cache and run folder (default ``<out>.adapt-work``); rerunning with it resumes.
        lr: AdamW learning rate (default :data:`DEFAULT_LR`, a tenth of the quick profile's).
        checkpoint: ``last`` (default, see :data:`DEFAULT_CHECKPOINT`), ``best`` or ``auto``.
        name: the new model's name (default: ``out``'s folder name).
        options: further training options as ``--set`` keys them (``patch``, ``batch_labeled``, ``lambda_c``
            ...); everything else is the quick profile's with the model's network and sliding window.
        workers: parallel processes of the preparation (default: all cores).
        overwrite: replace an existing ``out`` and start the adaptation over (work folder included).

    Returns:
        The package folder ``out``: loadable with :func:`dvcl.inference.model_package.load_model_package`, its
        ``model.json`` ``card`` and ``MODEL_CARD.md`` saying what it was adapted from and on which scans.

    Raises:
        DVCLError subclasses for bad input, before anything is written: an invalid model, an empty or unreadable
        unlabeled folder (every bad scan listed), no labeled data, an existing ``out``, a work folder holding an
        adaptation with other settings.
    """
    from dvcl.inference.model_package import read_model_json, resolve_model
    from dvcl.utils.atomic import write_json_atomic

    options = dict(options or {})
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ConfigError(f"iterations must be a positive integer, got {iterations!r}")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr!r}")
    if checkpoint not in ("last", "best", "auto"):
        raise ConfigError(f"checkpoint must be 'last', 'best' or 'auto', got {checkpoint!r}")
    model_dir = resolve_model(model)
    meta = read_model_json(model_dir)
    out = Path(out)
    work = Path(work_dir) if work_dir is not None else out.parent / f"{out.name}{WORK_SUFFIX}"
    _check_output(out, model_dir, work, overwrite)
    unlabeled = Path(unlabeled)
    scans = check_unlabeled_folder(unlabeled)
    labeled_path = Path(labeled) if labeled is not None else None
    if labeled_path is not None and not labeled_path.exists():
        raise DatasetError(f"{labeled_path}: labeled data folder not found")
    sha = model_sha256(model_dir)
    request = _request(model_dir, meta, sha, labeled_path, scans, unlabeled, iterations, lr, seed, options)
    if overwrite:
        _clear_work(work)
    _check_request(work, request)
    if labeled_path is None:
        labeled_path = labeled_data_for(meta, model_dir, work, seed)
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(work / REQUEST_FILE, request)
    progress.emit("message", task="adapt", message=f"adapting model '{meta['name']}' to {len(scans)} unlabeled "
                  f"scan(s) in {unlabeled} ({iterations} iterations of {METHOD.upper()})")

    cache = _prepare(meta, labeled_path, unlabeled, work / "cache", seed, workers)
    result = _train(meta, model_dir, cache, work / "run", iterations, lr, seed, options, device, argv)
    command = (f"dvcl adapt --model {meta['name']} --unlabeled {unlabeled.name} --labeled {labeled_path.name} "
               f"-o {out.name} --iterations {iterations} --lr {lr:g} --seed {seed}"
               + "".join(f" --set {k}={_plain(v)}" for k, v in sorted(options.items())))
    card = _card(meta, model_dir, sha, labeled_path, scans, cache, result, iterations, lr, seed, command)
    return _export(work / "run", out, meta, card, name or out.name, checkpoint, overwrite)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _check_output(out: Path, model_dir: Path, work: Path, overwrite: bool) -> None:
    """Refuse an output that exists (without ``overwrite``) or that would replace the input model."""
    if _inside(out, model_dir) or _inside(model_dir, out):
        raise ConfigError(f"{out}: the output would replace the input model {model_dir}; choose another -o")
    if _inside(work, model_dir):
        raise ConfigError(f"{work}: the work folder must not lie inside the input model {model_dir}")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out}: exists (use --overwrite to replace it)")


def _clear_work(work: Path) -> None:
    """``overwrite``: remove what an earlier adaptation left in the work folder (only its own parts)."""
    for part in (REQUEST_FILE, "cache", "run", "labeled"):
        p = work / part
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _prepare(meta: Mapping[str, Any], labeled: Path, unlabeled: Path, cache_dir: Path, seed: int,
             workers: Optional[int]) -> Any:
    """The cache, preprocessed exactly as the model expects (its spacing, clip, percentiles, orientation)."""
    from dvcl.data.cache import prepare_dataset
    from dvcl.preprocessing import PreprocessConfig

    pcfg = PreprocessConfig.from_dict(dict(meta.get("preprocessing") or {}))
    cache, counts = prepare_dataset(labeled, cache_dir, preset=preset_for_model(meta), unlabeled=unlabeled, cfg=pcfg,
                                    workers=workers, seed=seed, ratios=SPLIT_RATIOS)
    log.info("adapt: cache %s (%d labeled, %d unlabeled cases; %d prepared, %d up to date)", cache_dir,
             len(cache.labeled_ids), len(cache.unlabeled_ids), counts["processed"], counts["skipped"])
    return cache


def adaptation_config(meta: Mapping[str, Any], model_dir: Path, cache_dir: Path, iterations: int, lr: float,
                      seed: int, options: Optional[Mapping[str, Any]] = None) -> Any:
    """The training configuration of an adaptation (a :class:`~dvcl.training.config.TrainConfig`).

    The quick profile (CPU-sized patch, batch 2+2, AdamW), DVCL, every labeled training case with its label and
    the site's scans as the unlabeled pool, the model's network (taken by the Trainer from ``init_model``) and its
    sliding window for validation; the patch is rounded up to the network's down-sampling. ``options`` last.
    """
    from dvcl.inference.sliding_window import overlap_for_stride
    from dvcl.networks.config import NetworkConfig
    from dvcl.training.config import TrainConfig, apply_options, apply_profile

    net = NetworkConfig.from_dict(meta["network"])
    cfg = TrainConfig(data=str(cache_dir), method=METHOD, labeled_fraction=1.0, seed=seed,
                      init_model=str(model_dir.resolve()))
    apply_profile(cfg, PROFILE)
    cfg.network = net
    roi = tuple(int(v) for v in meta["inference"]["roi"])
    overlap = min(overlap_for_stride(roi, meta["inference"]["stride"]))
    cfg.patch = tuple(-(-p // d) * d for p, d in zip(cfg.patch, net.divisor))
    apply_options(cfg, {"iterations": iterations, "lr": lr, "val_every": iterations, "val_roi": roi,
                        "flip_prob": FLIP_PROB,
                        "val_overlap": max(0.0, round(overlap, 6)),
                        # DVCL's projection size is the network's (a package fixes it)
                        "feature_dim": net.feature_dim})
    apply_options(cfg, options or {})
    cfg.__post_init__()
    return cfg


def _train(meta: Mapping[str, Any], model_dir: Path, cache: Any, run_dir: Path, iterations: int, lr: float,
           seed: int, options: Mapping[str, Any], device: str, argv: Optional[Sequence[str]]) -> Dict[str, Any]:
    """Train, resume or skip (a finished run); returns run.json."""
    from dvcl.training import TrainConfig, read_run_status, train

    status = read_run_status(run_dir) if (run_dir / "run.json").is_file() else {}
    if status.get("status") == "finished" and status.get("iteration") == iterations:
        log.info("adapt: %s has finished its %d iterations; exporting it", run_dir, iterations)
        return status
    if (run_dir / "checkpoints" / "last_state.pt").is_file():
        log.info("adapt: resuming %s at iteration %s", run_dir, status.get("iteration", "?"))
        train(TrainConfig.load(run_dir / "config.yaml"), run_dir, device=device, resume=True, argv=argv)
    else:  # nothing to resume (new, or killed before its first checkpoint): start the run
        cfg = adaptation_config(meta, model_dir, cache.root, iterations, lr, seed, options)
        train(cfg, run_dir, device=device, overwrite=True, argv=argv)
    return read_run_status(run_dir)


def _card(meta: Mapping[str, Any], model_dir: Path, sha: str, labeled: Path, scans: Sequence[Path], cache: Any,
          run: Mapping[str, Any], iterations: int, lr: float, seed: int, command: str) -> Dict:
    """The adapted model's card: provenance first, and that scores on the adaptation scans are transductive."""
    src_card = meta.get("card") if isinstance(meta.get("card"), dict) else {}
    names = [p.name for p in scans]
    n_train = len(cache.splits.get("train", []))
    return {
        "adapted_from": {"name": meta["name"], "sha256": sha, "dvcl_version": meta.get("dvcl_version"),
                         "description": meta.get("description", ""), "folder": model_dir.name},
        "adaptation": {"method": METHOD, "iterations": iterations, "lr": lr, "seed": seed,
                       "labeled_data": labeled.name, "labeled_training_cases": n_train,
                       "labeled_validation_cases": len(cache.splits.get("val", [])),
                       "unlabeled_scans": {"count": len(names), "files": names},
                       "best_val_dice": run.get("best_val_dice")},
        "training_data": f"{src_card.get('training_data') or 'see the source model'}; then adapted (DVCL) on "
                         f"{n_train} labeled case(s) of '{labeled.name}' and {len(names)} unlabeled site scan(s)",
        "intended_use": src_card.get("intended_use") or "Research only. Not a medical device; not for clinical use.",
        "transductive": f"{TRANSDUCTIVE_LINE}: the {len(names)} unlabeled scans listed above were used in training "
                        "(without labels); report accuracy on them separately from held-out scans",
        "date": datetime.date.today().isoformat(),
        "rebuild": command,  # folder names only: a shared package holds no paths of the machine that made it
    }


def _export(run_dir: Path, out: Path, meta: Mapping[str, Any], card: Dict, name: str, checkpoint: str,
            overwrite: bool) -> Path:
    """Export into a staging folder, add the card and the source's window, verify by loading, then rename."""
    from dvcl.inference.model_package import export_model, load_model_package, read_model_json

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        src = meta["name"]
        export_model(run_dir, staging, name=name, checkpoint=checkpoint,
                     description=f"{src} adapted (DVCL, {card['adaptation']['iterations']} iterations) to "
                     f"{card['adaptation']['unlabeled_scans']['count']} unlabeled site scan(s); "
                     f"{TRANSDUCTIVE_LINE}.")
        new = read_model_json(staging)
        new["inference"] = dict(meta["inference"])  # the same network on the same grid: the source's window
        if meta.get("mode"):
            new["mode"] = meta["mode"]
        new["card"] = card
        write_model_card(staging, new)
        load_model_package(staging)  # what is published always loads
        if out.exists():
            if not overwrite and any(out.iterdir()):
                raise OutputExistsError(f"{out}: exists (use --overwrite to replace it)")
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("adapt: wrote model '%s' to %s", name, out)
    progress.emit("output", path=str(out.resolve()), kind="model")
    return out


def default_work_dir(out: PathLike) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}{WORK_SUFFIX}"
