"""Data sets on disk: the nnU-Net v2 layout and the simple labeled/unlabeled folders the GUI uses.

nnU-Net v2 (``dataset.json``, ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``, ``imagesTs/``)::

    Dataset001_X/dataset.json
    Dataset001_X/imagesTr/case_000_0000.nii.gz     labelsTr/case_000.nii.gz
    Dataset001_X/imagesTr/case_100_0000.nii.gz     (no label: used as unlabeled)
    Dataset001_X/imagesUnlabeled/case_200_0000.nii.gz   (optional extension: unlabeled scans)
    Dataset001_X/imagesTs/...                      (test images: never used for training)

Simple layout (what the Slicer module's Train tab points at)::

    DATA/labeled/images/<case>.nii.gz   DATA/labeled/labels/<case>.nii.gz     (matched by name)
    DATA/unlabeled/<case>.nii.gz | <case>/ (DICOM folder)
    DATA/dataset.json                   (optional: labels, preset)

A labeled folder may also be flat, pairing ``<case>.nii.gz`` with ``<case>_label.nii.gz`` (or ``_seg``,
``_labels``, ``_mask``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from dvcl.errors import DatasetError
from dvcl.io.images import image_suffix, is_dicom_dir, strip_suffix
from dvcl.utils.json_files import read_json_object

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
LABEL_TAGS = ("_label", "_labels", "_seg", "_mask", "_gt")


@dataclass(frozen=True)
class CaseRef:
    """One scan of a data set: its id, image path (file or DICOM folder) and label path if labeled."""

    case_id: str
    image: Path
    label: Optional[Path] = None

    @property
    def labeled(self) -> bool:
        return self.label is not None


@dataclass
class DatasetSpec:
    """The cases of a data set plus its dataset.json (if any)."""

    root: Path
    layout: str  # "nnunet" | "simple"
    cases: List[CaseRef]
    dataset_json: Optional[Path] = None

    @property
    def labeled(self) -> List[CaseRef]:
        return [c for c in self.cases if c.labeled]

    @property
    def unlabeled(self) -> List[CaseRef]:
        return [c for c in self.cases if not c.labeled]

    def meta(self) -> Dict:
        if self.dataset_json is None:
            return {}
        return read_dataset_json(self.dataset_json)


def read_dataset_json(path: Path) -> Dict:
    """A data set's ``dataset.json`` as a dict; :class:`DatasetError` when it is not JSON or not an object."""
    return read_json_object(path, DatasetError)


def _image_entries(folder: Path) -> List[Path]:
    """Image files and DICOM sub-folders of ``folder``, sorted by name (hidden files skipped)."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and image_suffix(p):
            out.append(p)
        elif p.is_dir() and is_dicom_dir(p):
            out.append(p)
    return out


def _case_id(p: Path) -> str:
    return p.name if p.is_dir() else strip_suffix(p)


def _unique(cases: Sequence[CaseRef], where: Path) -> List[CaseRef]:
    seen: Dict[str, Path] = {}
    for c in cases:
        if c.case_id in seen:
            raise DatasetError(f"{where}: case '{c.case_id}' appears twice ({seen[c.case_id]} and {c.image})")
        seen[c.case_id] = c.image
    return list(cases)


def read_nnunet_dataset(root: PathLike) -> DatasetSpec:
    """Cases of an nnU-Net v2 data set folder (``dataset.json`` + ``imagesTr``/``labelsTr``)."""
    root = Path(root)
    djson = root / "dataset.json"
    images_tr = root / "imagesTr"
    if not images_tr.is_dir():
        raise DatasetError(f"{root}: nnU-Net data set without imagesTr/ folder")
    meta = read_dataset_json(djson) if djson.is_file() else {}
    ending = meta.get("file_ending", ".nii.gz")
    labels_tr = root / "labelsTr"
    cases: List[CaseRef] = []
    channel_files = [p for p in _image_entries(images_tr) if p.is_file()]
    if not channel_files:
        raise DatasetError(f"{images_tr}: no images")
    for p in channel_files:
        stem = strip_suffix(p)
        if not stem.endswith("_0000"):
            if stem[-5:-4] == "_" and stem[-4:].isdigit():
                raise DatasetError(f"{p}: only single-channel (CT, _0000) data sets are supported")
            raise DatasetError(f"{p}: nnU-Net image names must end with the channel suffix _0000")
        cid = stem[:-5]
        lab = labels_tr / f"{cid}{ending}"
        if not lab.is_file():
            cands = [q for q in labels_tr.glob(f"{cid}.*") if strip_suffix(q) == cid] if labels_tr.is_dir() else []
            lab = cands[0] if cands else None
        cases.append(CaseRef(cid, p, lab))
    extra = root / "imagesUnlabeled"
    if extra.is_dir():
        for p in _image_entries(extra):
            cid = _case_id(p)
            cases.append(CaseRef(cid[:-5] if cid.endswith("_0000") else cid, p, None))
    if labels_tr.is_dir():
        ids = {c.case_id for c in cases}
        orphans = [q for q in labels_tr.iterdir() if image_suffix(q) and strip_suffix(q) not in ids]
        if orphans:
            raise DatasetError(f"{orphans[0]}: label without image in imagesTr/")
    return DatasetSpec(root, "nnunet", _unique(cases, root), djson if djson.is_file() else None)


def _pair_flat_folder(folder: Path) -> List[CaseRef]:
    entries = _image_entries(folder)
    by_id = {_case_id(p): p for p in entries}
    labels = {}
    for cid, p in by_id.items():
        for tag in LABEL_TAGS:
            if cid.endswith(tag) and cid[: -len(tag)] in by_id:
                labels[cid[: -len(tag)]] = p
    label_paths = set(labels.values())
    cases = []
    for cid, p in by_id.items():
        if p in label_paths:
            continue
        if cid not in labels:
            raise DatasetError(f"{p}: image in the labeled folder has no label (expected e.g. {cid}_label"
                               f"{image_suffix(p) or '.nii.gz'})")
        cases.append(CaseRef(cid, p, labels[cid]))
    return cases


def read_labeled_folder(folder: PathLike) -> List[CaseRef]:
    """Image + label pairs of a labeled folder (``images/`` + ``labels/``, or flat ``<case>`` + ``<case>_label``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: labeled folder not found")
    img_dir, lab_dir = folder / "images", folder / "labels"
    if img_dir.is_dir():
        if not lab_dir.is_dir():
            raise DatasetError(f"{folder}: has images/ but no labels/ folder")
        labels = {_case_id(p): p for p in _image_entries(lab_dir)}
        cases = []
        for p in _image_entries(img_dir):
            cid = _case_id(p)
            if cid not in labels:
                raise DatasetError(f"{p}: image in the labeled folder has no label in {lab_dir}")
            cases.append(CaseRef(cid, p, labels.pop(cid)))
        if labels:
            raise DatasetError(f"{next(iter(labels.values()))}: label without image in {img_dir}")
    else:
        cases = _pair_flat_folder(folder)
    if not cases:
        raise DatasetError(f"{folder}: labeled folder holds no images")
    return _unique(cases, folder)


def read_unlabeled_folder(folder: PathLike) -> List[CaseRef]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: unlabeled folder not found")
    cases = [CaseRef(_case_id(p), p, None) for p in _image_entries(folder)]
    if not cases:
        raise DatasetError(f"{folder}: unlabeled folder holds no images")
    return _unique(cases, folder)


def read_simple_dataset(labeled: PathLike, unlabeled: Optional[PathLike] = None,
                        dataset_json: Optional[PathLike] = None) -> DatasetSpec:
    """Cases of the simple layout: a labeled folder and an optional unlabeled folder."""
    labeled = Path(labeled)
    cases = read_labeled_folder(labeled)
    if unlabeled is not None:
        cases += read_unlabeled_folder(unlabeled)
    djson = Path(dataset_json) if dataset_json else None
    if djson is None:
        for cand in (labeled.parent / "dataset.json", labeled / "dataset.json"):
            if cand.is_file():
                djson = cand
                break
    return DatasetSpec(labeled.parent, "simple", _unique(cases, labeled.parent), djson)


def discover_dataset(root: PathLike, unlabeled: Optional[PathLike] = None) -> DatasetSpec:
    """Recognise the layout of ``root`` and list its cases.

    ``root`` may be an nnU-Net folder, a simple-layout root (``labeled/`` [+ ``unlabeled/``]), or a labeled
    folder itself (then ``unlabeled`` names the unlabeled folder).
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: data folder not found")
    if not root.is_dir():
        raise DatasetError(f"{root}: expected a data folder")
    if not any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise DatasetError(f"{root}: data folder is empty")
    if (root / "imagesTr").is_dir():
        spec = read_nnunet_dataset(root)
        if unlabeled is not None:
            spec.cases = _unique(spec.cases + read_unlabeled_folder(unlabeled), root)
        return spec
    if (root / "labeled").is_dir():
        unl = unlabeled if unlabeled is not None else (root / "unlabeled" if (root / "unlabeled").is_dir() else None)
        return read_simple_dataset(root / "labeled", unl)
    return read_simple_dataset(root, unlabeled)
