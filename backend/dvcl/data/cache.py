"""`dvcl prepare`: the preprocessed cache that training reads (layout in docs/architecture.md).

Why a cache: resampling a CT to 1.25 x 1.25 x 2.5 mm takes seconds, a training run reads each case thousands
of times. The cache holds one ``.npy`` per image/label (memory-mappable) plus JSON metadata.

Guarantees:
- parallel over cases, with a progress bar;
- up-to-date cases (same source files, preset and preprocessing) are skipped, so a second run does nothing;
- all-or-nothing: cases are processed into a staging folder and moved into the cache only when every case
  passed validation, so bad input leaves the cache untouched and a killed run leaves no half-written case;
- self-repairing: a cached array whose header or length does not match its metadata (a truncated ``.npy``)
  is not up to date and is redone; a corrupt ``dataset.json`` or ``splits.json`` is rewritten; staging folders
  left by a killed run (their pid is dead) are removed;
- workers die with their parent: each pool worker asks the kernel for SIGKILL when its parent dies (Linux
  ``PR_SET_PDEATHSIG``) and also watches its parent pid, so ``kill -9`` of ``dvcl prepare`` leaves no worker.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from dvcl import __version__
from dvcl.data.splits import make_splits
from dvcl.errors import ConfigError, DatasetError, DVCLError
from dvcl.io.datasets import CaseRef, DatasetSpec, discover_dataset
from dvcl.preprocessing import GeometryRecord, PreprocessConfig
from dvcl.presets import Preset, get_preset, preset_from_dataset_json
from dvcl.utils.atomic import check_writable, write_json_atomic
from dvcl.utils.progress import Progress

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
CACHE_FORMAT = "dvcl-cache/1"


def source_signature(path: Path) -> List:
    """(name, size, mtime_ns) of a file, or of every file of a DICOM folder: changes when the source changes."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


@dataclass
class Cache:
    """Read access to a prepared cache folder."""

    root: Path
    meta: Dict = field(default_factory=dict)
    splits: Dict[str, List[str]] = field(default_factory=dict)

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root)
        dj = self.root / "dataset.json"
        if not dj.is_file():
            raise DatasetError(f"{self.root}: not a prepared cache (no dataset.json); run `dvcl prepare` first")
        self.meta = _read_json(dj)
        if not isinstance(self.meta, dict):
            raise DatasetError(f"{dj}: corrupt cache metadata; run `dvcl prepare` again to repair it")
        if self.meta.get("format") != CACHE_FORMAT:
            raise DatasetError(f"{self.root}: unknown cache format {self.meta.get('format')!r}")
        sp = self.root / "splits.json"
        self.splits = _read_json(sp) if sp.is_file() else {}
        if not isinstance(self.splits, dict):
            raise DatasetError(f"{sp}: corrupt split file; run `dvcl prepare` again to repair it")

    @staticmethod
    def is_cache(path: PathLike) -> bool:
        dj = Path(path) / "dataset.json"
        if not dj.is_file():
            return False
        meta = _read_json(dj)
        return isinstance(meta, dict) and meta.get("format") == CACHE_FORMAT

    @staticmethod
    def is_damaged_cache(path: PathLike) -> bool:
        """A cache whose dataset.json is unreadable but whose ``cases/`` folder is there: prepare repairs it."""
        root = Path(path)
        return (root / "cases").is_dir() and (root / "dataset.json").is_file() and not Cache.is_cache(root)

    @property
    def preset(self) -> Preset:
        return Preset.from_dict(self.meta["preset"])

    @property
    def labels(self) -> Dict[int, str]:
        return {int(k): v for k, v in self.meta["labels"].items()}

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def preprocessing(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.meta["preprocessing"])

    @property
    def index(self) -> Dict[str, Dict]:
        """case id -> {"labeled": bool, "shape": [Z, Y, X]}."""
        return self.meta["cases"]

    @property
    def labeled_ids(self) -> List[str]:
        return sorted(k for k, v in self.index.items() if v["labeled"])

    @property
    def unlabeled_ids(self) -> List[str]:
        return sorted(k for k, v in self.index.items() if not v["labeled"])

    def image_path(self, case_id: str) -> Path:
        return self.root / "cases" / f"{case_id}_img.npy"

    def label_path(self, case_id: str) -> Path:
        return self.root / "cases" / f"{case_id}_seg.npy"

    def case_meta(self, case_id: str) -> Dict:
        return json.loads((self.root / "cases" / f"{case_id}.json").read_text())

    def geometry(self, case_id: str) -> GeometryRecord:
        return GeometryRecord.from_dict(self.case_meta(case_id)["geometry"])

    def source_files(self, case_id: str, split: str) -> Tuple[Path, Path]:
        """The original image and reference label files of a labeled case of ``split`` (what evaluation and
        post-processing read: they score at native resolution, not on the cache's resampled arrays).

        Raises:
            DatasetError: the case has no label, or its original files are gone.
        """
        meta = self.case_meta(case_id)
        if not meta.get("label"):
            raise DatasetError(f"{self.root}: {split} case '{case_id}' has no reference label")
        image, label = Path(meta["image"]), Path(meta["label"])
        for path in (image, label):
            if not path.exists():
                raise DatasetError(f"{path}: source file of {split} case '{case_id}' is gone; the {split} split is "
                                   "read from the original files (re-run `dvcl prepare` where they are)")
        return image, label

    def verify(self) -> None:
        """Check every cached array against its recorded shape (headers and lengths only, fast).

        Raises:
            DatasetError: a missing, truncated or reshaped array; ``dvcl prepare`` repairs it.
        """
        for cid, entry in self.index.items():
            paths = [self.image_path(cid)] + ([self.label_path(cid)] if entry.get("labeled") else [])
            for path in paths:
                why = npy_problem(path, entry.get("shape"))
                if why:
                    raise DatasetError(f"{path}: {why}; run `dvcl prepare` again to repair the cache")

    def load(self, case_id: str, mmap: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """The case's arrays; :class:`DatasetError` when a file is missing, truncated or of another shape."""
        mode = "r" if mmap else None
        shape = self.index[case_id]["shape"]
        paths = [self.image_path(case_id)] + ([self.label_path(case_id)] if self.index[case_id]["labeled"] else [])
        out = []
        for path in paths:
            why = npy_problem(path, shape)
            if why:
                raise DatasetError(f"{path}: {why}; run `dvcl prepare` again to repair the cache")
            out.append(np.load(path, mmap_mode=mode))
        return out[0], (out[1] if len(out) > 1 else None)


def _read_json(path: Path) -> object:
    """Parsed JSON, or None when the file is unreadable or not JSON (callers repair or report)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def npy_problem(path: Path, shape: Optional[Sequence[int]] = None) -> Optional[str]:
    """Why a cached ``.npy`` cannot be used (missing, unreadable header, other shape, truncated), or None.

    Reads only the header and compares the file length with header + data size, so a file cut short by a
    full disk or a kill is caught without reading the data.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                hshape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                hshape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as exc:
        return f"unreadable array header ({exc})"
    if shape is not None and list(hshape) != list(shape):
        return f"array shape {list(hshape)} differs from the recorded {list(shape)}"
    expected = offset + math.prod(hshape) * np.dtype(dtype).itemsize
    if size != expected:
        return f"truncated array ({size} bytes, expected {expected})"
    return None


def resolve_preset(spec: DatasetSpec, preset: Optional[Union[str, Preset]]) -> Preset:
    """The preset given explicitly, else the one named in dataset.json, else a custom one from its labels."""
    if isinstance(preset, Preset):
        return preset
    if preset:
        return get_preset(preset)
    meta = spec.meta()
    if meta.get("preset"):
        return get_preset(str(meta["preset"]))
    if spec.dataset_json is not None:
        return preset_from_dataset_json(spec.dataset_json)
    raise ConfigError(f"{spec.root}: no preset given and no dataset.json with labels; use --preset")


def _case_signature(case: CaseRef, preset: Preset, cfg: PreprocessConfig) -> Dict:
    return {
        "image": source_signature(case.image),
        "label": source_signature(case.label) if case.label else None,
        "preset": {"labels": preset.to_dict()["labels"], "raw_values": preset.to_dict()["raw_values"]},
        "preprocessing": cfg.to_dict(),
        "format": CACHE_FORMAT,
    }


def _process_case(case: CaseRef, preset_dict: Dict, cfg_dict: Dict, out_dir: str, signature: Dict,
                  check_ct: bool, accept_nonuniform: bool = False) -> Dict:
    """Worker: read, validate and preprocess one case into ``out_dir`` (a staging folder)."""
    import SimpleITK as sitk

    from dvcl.io.images import check_ct_intensities, read_image, read_label
    from dvcl.preprocessing import preprocess_image, preprocess_label

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    preset = Preset.from_dict(preset_dict)
    cfg = PreprocessConfig.from_dict(cfg_dict)
    img = read_image(case.image, accept_nonuniform=accept_nonuniform)
    if check_ct:
        check_ct_intensities(img, case.image)
    lab = None
    if case.label is not None:
        lab = read_label(case.label, img, preset.allowed_raw_values, preset.raw_values)
    arr, record = preprocess_image(img, cfg)
    out = Path(out_dir)
    _save_verified(out / f"{case.case_id}_img.npy", arr.astype(np.float32, copy=False))
    present: List[int] = []
    if lab is not None:
        seg = preprocess_label(lab, record, cfg)
        _save_verified(out / f"{case.case_id}_seg.npy", seg)
        present = [int(v) for v in np.unique(seg) if v]
    meta = {
        "case_id": case.case_id,
        "image": str(case.image),
        "label": str(case.label) if case.label else None,
        "labeled": lab is not None,
        "shape": list(arr.shape),
        "labels_present": present,
        "geometry": record.to_dict(),
        "signature": signature,
    }
    (out / f"{case.case_id}.json").write_text(json.dumps(meta, indent=1))
    return meta


def _save_verified(path: Path, arr: np.ndarray) -> None:
    """np.save into the staging folder, then check header and length (a short write must never be cached)."""
    from dvcl.errors import OutputWriteError
    from dvcl.utils.atomic import describe_os_error

    try:
        np.save(path, arr)
    except OSError as exc:  # numpy's short write ("N requested and M written") carries no errno
        reason = describe_os_error(exc) if exc.errno else str(exc)
        raise OutputWriteError(f"cannot write {path.name} in the cache staging folder {path.parent}: {reason} "
                               "(disk full?)") from exc
    why = npy_problem(path, arr.shape)
    if why:
        raise OutputWriteError(f"cannot write {path.name} in the cache staging folder: {why} (disk full?)")


def _up_to_date(cases_dir: Path, case: CaseRef, signature: Dict) -> Optional[Dict]:
    mj = cases_dir / f"{case.case_id}.json"
    if not mj.is_file():
        return None
    try:
        meta = json.loads(mj.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if meta.get("signature") != signature:
        return None
    needed = [cases_dir / f"{case.case_id}_img.npy"] + ([cases_dir / f"{case.case_id}_seg.npy"] if case.label else [])
    for p in needed:
        why = npy_problem(p, meta.get("shape"))
        if why:
            log.warning("%s: %s; preparing the case again", p, why)
            return None
    return meta


def prepare_dataset(
    data: Union[PathLike, DatasetSpec],
    cache_dir: PathLike,
    preset: Optional[Union[str, Preset]] = None,
    unlabeled: Optional[PathLike] = None,
    cfg: Optional[PreprocessConfig] = None,
    workers: Optional[int] = None,
    seed: int = 0,
    ratios: Sequence[int] = (6, 2, 2),
    check_ct: bool = True,
    accept_nonuniform: bool = False,
) -> Tuple[Cache, Dict[str, int]]:
    """Preprocess a data set into ``cache_dir``; returns the cache and counts ``{"processed", "skipped"}``.

    Raises:
        DVCLError subclasses for bad input; the cache is left exactly as it was.
    """
    spec = data if isinstance(data, DatasetSpec) else discover_dataset(data, unlabeled)
    preset_obj = resolve_preset(spec, preset)
    cfg = cfg or PreprocessConfig()
    cache_dir = Path(cache_dir)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise ConfigError(f"{cache_dir}: cache path exists and is not a folder")
    if cache_dir.is_dir() and any(cache_dir.iterdir()) and not Cache.is_cache(cache_dir):
        if not Cache.is_damaged_cache(cache_dir):
            raise ConfigError(f"{cache_dir}: folder is not empty and is not a dvcl cache; choose another --out")
        log.warning("%s: cache metadata (dataset.json) is corrupt; rebuilding it", cache_dir)
    clean_stale_staging(cache_dir)
    if not spec.labeled:
        raise DatasetError(f"{spec.root}: no labeled case found")
    cases_dir = cache_dir / "cases"
    pdict, cdict = preset_obj.to_dict(), cfg.to_dict()

    todo: List[Tuple[CaseRef, Dict]] = []
    metas: Dict[str, Dict] = {}
    for case in spec.cases:
        sig = _case_signature(case, preset_obj, cfg)
        meta = _up_to_date(cases_dir, case, sig)
        if meta is None:
            todo.append((case, sig))
        else:
            metas[case.case_id] = meta

    if todo:
        check_writable(cache_dir, _estimate_cache_bytes([c for c, _ in todo], cfg), what="cache")
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.staging-{os.getpid()}-", dir=cache_dir.parent))
        try:
            new = _run_workers(todo, pdict, cdict, staging, workers, check_ct, accept_nonuniform)
            cases_dir.mkdir(parents=True, exist_ok=True)
            for cid in sorted(new):
                # arrays first, metadata last: a case counts as cached only once its .json is in place
                for suffix in ("_img.npy", "_seg.npy"):
                    src = staging / f"{cid}{suffix}"
                    if src.exists():
                        os.replace(src, cases_dir / src.name)
                os.replace(staging / f"{cid}.json", cases_dir / f"{cid}.json")
            metas.update(new)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    labeled_ids = sorted(cid for cid, m in metas.items() if m["labeled"])
    split_path = cache_dir / "splits.json"
    splits = None
    if split_path.is_file():
        old = _read_json(split_path)
        if not isinstance(old, dict):
            log.warning("%s: corrupt; writing it again", split_path)
            old = {}
        if sorted(old.get("train", []) + old.get("val", []) + old.get("test", [])) == labeled_ids and \
                old.get("seed") == seed and list(old.get("ratios", [])) == list(ratios):
            splits = old
    if splits is None:
        splits = {"seed": seed, "ratios": list(ratios), **make_splits(labeled_ids, seed, tuple(ratios))}
        splits["unlabeled"] = sorted(cid for cid, m in metas.items() if not m["labeled"])
        write_json_atomic(split_path, splits)

    dataset_meta = {
        "format": CACHE_FORMAT,
        "preset": pdict,
        "labels": {"0": "background", **{str(k): v for k, v in preset_obj.labels.items()}},
        "num_classes": preset_obj.num_classes,
        "preprocessing": cdict,
        "source": str(spec.root),
        "layout": spec.layout,
        "cases": {cid: {"labeled": m["labeled"], "shape": m["shape"]} for cid, m in sorted(metas.items())},
        "dvcl_version": __version__,
    }
    dj = cache_dir / "dataset.json"
    old_meta = _read_json(dj) if dj.is_file() else None
    if not isinstance(old_meta, dict) or {k: v for k, v in old_meta.items() if k != "dvcl_version"} != \
            {k: v for k, v in dataset_meta.items() if k != "dvcl_version"}:
        write_json_atomic(dj, dataset_meta)
    counts = {"processed": len(todo), "skipped": len(spec.cases) - len(todo)}
    log.info("prepared %s: %d processed, %d up to date", cache_dir, counts["processed"], counts["skipped"])
    return Cache(cache_dir), counts


_STAGING_RE = re.compile(r"^\.(?P<name>.+)\.staging-(?P<pid>\d+)-")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(cache_dir: Path) -> List[Path]:
    """Remove staging folders of ``cache_dir`` left by a killed ``prepare`` (their pid no longer runs)."""
    removed: List[Path] = []
    parent = cache_dir.parent
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        m = _STAGING_RE.match(p.name)
        if p.is_dir() and m and m.group("name") == cache_dir.name and not _pid_alive(int(m.group("pid"))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            log.info("removed stale staging folder %s", p)
    return removed


def _estimate_cache_bytes(cases: Sequence[CaseRef], cfg: PreprocessConfig) -> int:
    """Bytes the cached arrays of ``cases`` will take: resampled voxels x (4 image + 1 label) per case.

    From the image headers (no pixel read); a DICOM folder or unreadable header counts its file sizes twice.
    """
    from dvcl.io.images import read_header

    total = 0
    for case in cases:
        try:
            if case.image.is_dir():
                raise DVCLError("dicom")
            hdr = read_header(case.image)
            vox = 1
            for n, sp, t in zip(hdr.GetSize(), hdr.GetSpacing(), cfg.spacing):
                vox *= max(1, int(math.ceil((n - 1) * sp / t)) + 1)
            total += vox * (5 if case.label else 4)
        except (DVCLError, OSError):
            files = [case.image] if case.image.is_file() else [f for f in case.image.iterdir() if f.is_file()]
            total += 2 * sum(f.stat().st_size for f in files)
    return total


def _worker_init() -> None:
    """Pool worker start: die when the parent dies (kill -9 of `dvcl prepare` must not leave workers).

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``. Everywhere: a daemon thread that exits the worker as soon
    as its parent pid changes (the worker was re-parented to init).
    """
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _run_workers(todo: List[Tuple[CaseRef, Dict]], pdict: Dict, cdict: Dict, staging: Path,
                 workers: Optional[int], check_ct: bool, accept_nonuniform: bool = False) -> Dict[str, Dict]:
    workers = workers if workers is not None else min(len(todo), max(1, (os.cpu_count() or 2) - 0))
    out: Dict[str, Dict] = {}
    with Progress("prepare", total=len(todo), desc="preprocessing", unit="case") as bar:
        if workers <= 1 or len(todo) == 1:
            for case, sig in todo:
                out[case.case_id] = _process_case(case, pdict, cdict, str(staging), sig, check_ct,
                                                  accept_nonuniform)
                bar.update(message=case.case_id)
            return out
        ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            futures = {pool.submit(_process_case, case, pdict, cdict, str(staging), sig, check_ct,
                                   accept_nonuniform): case for case, sig in todo}
            try:
                for fut in as_completed(futures):
                    meta = fut.result()
                    out[meta["case_id"]] = meta
                    bar.update(message=meta["case_id"])
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    return out
