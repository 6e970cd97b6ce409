"""`dvcl prepare`: the preprocessed cache that training reads (layout in docs/architecture.md).

Why a cache: resampling a CT to 1.25 x 1.25 x 2.5 mm takes seconds, a training run reads each case thousands
of times. The cache holds one ``.npy`` per image/label (memory-mappable) plus JSON metadata.

Guarantees:
- parallel over cases, with a progress bar;
- up-to-date cases (same source files, preset and preprocessing) are skipped, so a second run does nothing;
- all-or-nothing: cases are processed into a staging folder and moved into the cache only when every case
  passed validation, so bad input leaves the cache untouched and a killed run leaves no half-written case.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from dvcl import __version__
from dvcl.data.splits import make_splits
from dvcl.errors import ConfigError, DatasetError
from dvcl.io.datasets import CaseRef, DatasetSpec, discover_dataset
from dvcl.preprocessing import GeometryRecord, PreprocessConfig
from dvcl.presets import Preset, get_preset, preset_from_dataset_json
from dvcl.utils.atomic import write_json_atomic
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
        self.meta = json.loads(dj.read_text())
        if self.meta.get("format") != CACHE_FORMAT:
            raise DatasetError(f"{self.root}: unknown cache format {self.meta.get('format')!r}")
        sp = self.root / "splits.json"
        self.splits = json.loads(sp.read_text()) if sp.is_file() else {}

    @staticmethod
    def is_cache(path: PathLike) -> bool:
        dj = Path(path) / "dataset.json"
        if not dj.is_file():
            return False
        try:
            return json.loads(dj.read_text()).get("format") == CACHE_FORMAT
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False

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

    def load(self, case_id: str, mmap: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        mode = "r" if mmap else None
        img = np.load(self.image_path(case_id), mmap_mode=mode)
        lab = np.load(self.label_path(case_id), mmap_mode=mode) if self.index[case_id]["labeled"] else None
        return img, lab


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
                  check_ct: bool) -> Dict:
    """Worker: read, validate and preprocess one case into ``out_dir`` (a staging folder)."""
    import SimpleITK as sitk

    from dvcl.io.images import check_ct_intensities, read_image, read_label
    from dvcl.preprocessing import preprocess_image, preprocess_label

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    preset = Preset.from_dict(preset_dict)
    cfg = PreprocessConfig.from_dict(cfg_dict)
    img = read_image(case.image)
    if check_ct:
        check_ct_intensities(img, case.image)
    lab = None
    if case.label is not None:
        lab = read_label(case.label, img, preset.allowed_raw_values, preset.raw_values)
    arr, record = preprocess_image(img, cfg)
    out = Path(out_dir)
    np.save(out / f"{case.case_id}_img.npy", arr.astype(np.float32, copy=False))
    present: List[int] = []
    if lab is not None:
        seg = preprocess_label(lab, record, cfg)
        np.save(out / f"{case.case_id}_seg.npy", seg)
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
    return meta if all(p.is_file() for p in needed) else None


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
        raise ConfigError(f"{cache_dir}: folder is not empty and is not a dvcl cache; choose another --out")
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
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.staging-", dir=cache_dir.parent))
        try:
            new = _run_workers(todo, pdict, cdict, staging, workers, check_ct)
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
        old = json.loads(split_path.read_text())
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
    old_meta = json.loads(dj.read_text()) if dj.is_file() else None
    if old_meta is None or {k: v for k, v in old_meta.items() if k != "dvcl_version"} != \
            {k: v for k, v in dataset_meta.items() if k != "dvcl_version"}:
        write_json_atomic(dj, dataset_meta)
    counts = {"processed": len(todo), "skipped": len(spec.cases) - len(todo)}
    log.info("prepared %s: %d processed, %d up to date", cache_dir, counts["processed"], counts["skipped"])
    return Cache(cache_dir), counts


def _run_workers(todo: List[Tuple[CaseRef, Dict]], pdict: Dict, cdict: Dict, staging: Path,
                 workers: Optional[int], check_ct: bool) -> Dict[str, Dict]:
    workers = workers if workers is not None else min(len(todo), max(1, (os.cpu_count() or 2) - 0))
    out: Dict[str, Dict] = {}
    with Progress("prepare", total=len(todo), desc="preprocessing", unit="case") as bar:
        if workers <= 1 or len(todo) == 1:
            for case, sig in todo:
                out[case.case_id] = _process_case(case, pdict, cdict, str(staging), sig, check_ct)
                bar.update(message=case.case_id)
            return out
        ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(_process_case, case, pdict, cdict, str(staging), sig, check_ct): case
                       for case, sig in todo}
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
