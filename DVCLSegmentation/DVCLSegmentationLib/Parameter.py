"""The options of each tab as plain dataclasses, mapped to ``dvcl`` arguments in exactly one place.

Kept free of Slicer and Qt so that tests can check the command lines and the validation messages directly.
The Widget mirrors these fields in a ``parameterNodeWrapper`` (saved with the scene) and copies them here
when a button is pressed. ``validate()`` raises :class:`ParameterError` with a message a user can act on,
before any process is started or any file is written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

from . import Catalog
from .Backend import SEGMENTATION_FORMATS, DVCLModuleError

DEVICES = ("auto", "cuda", "cpu")
#: the stop-request file in a run folder (backend/dvcl/utils/runlock.py STOP_FILE; a test checks it)
STOP_FILE = "STOP"
#: ``dvcl adapt``'s default work folder is ``<out>`` + this, next to the output (backend/dvcl/adapt.py WORK_SUFFIX;
#: a test checks they match)
ADAPT_WORK_SUFFIX = ".adapt-work"
T = TypeVar("T", bound="_Serializable")


class ParameterError(DVCLModuleError):
    """An option value that cannot work (missing folder, fraction out of range, ...)."""


class _Serializable:
    """JSON round trip for QSettings: unknown keys are ignored, missing keys keep their defaults."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls: Type[T], text: Optional[str]) -> T:
        instance = cls()
        if not text:
            return instance
        try:
            data = json.loads(text)
        except ValueError:
            return instance
        if not isinstance(data, dict):
            return instance
        names = {f.name for f in fields(instance)}
        for key, value in data.items():
            if key in names:
                setattr(instance, key, tuple(value) if isinstance(value, list) else value)
        return instance


def _check_device(device: str) -> None:
    if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise ParameterError(f"unknown device '{device}': use auto, cuda, cuda:N or cpu")


@dataclass
class SegmentationParameters(_Serializable):
    """``dvcl segment`` options (the model folder is checked separately by ``read_model_info``)."""

    model_dir: str = ""
    device: str = "auto"
    tta: bool = False
    output_format: str = "nii.gz"
    #: the lower-resolution fast model shipped next to the default one (``dvcl segment --fast``)
    fast: bool = False
    #: also write the entropy and A/B disagreement maps (``dvcl segment --uncertainty``)
    uncertainty: bool = False

    def validate(self) -> None:
        _check_device(self.device)
        if self.output_format not in SEGMENTATION_FORMATS:
            choices = " or ".join(SEGMENTATION_FORMATS)
            raise ParameterError(f"unknown output format '{self.output_format}': use {choices}")

    def cli_args(self, input_path: Path, output_path: Path) -> List[str]:
        self.validate()
        args = ["segment", str(input_path), "-o", str(output_path), "--model", str(self.model_dir),
                "--device", self.device, "--format", self.output_format, "--overwrite"]
        if self.tta:
            args.append("--tta")
        if self.fast:
            args.append("--fast")
        if self.uncertainty:
            args.append("--uncertainty")
        return args


@dataclass
class TrainingParameters(_Serializable):
    """``dvcl train`` options; defaults are the paper's FLARE22 10 % schedule (METHOD.md section 1)."""

    data_dir: str = ""
    unlabeled_dir: str = ""
    preset: str = "flare22"
    method: str = "dvcl"
    labeled_fraction: float = 0.1
    iterations: int = 20000
    batch_labeled: int = 4
    batch_unlabeled: int = 4
    patch: Tuple[int, int, int] = (64, 128, 128)
    run_dir: str = ""
    device: str = "auto"
    profile: str = "paper"
    #: ``--set KEY=VALUE`` options (network size, method hyper-parameters, validation schedule)
    settings: Tuple[str, ...] = ()
    workers: Optional[int] = None

    def validate(self, resume: bool = False) -> None:
        if not self.run_dir.strip():
            raise ParameterError("choose an output folder for the training run")
        _check_device(self.device)
        if resume:
            # the run continues its own schedule (config.yaml); the CLI refuses schedule flags with --resume
            if not (Path(self.run_dir).expanduser() / "config.yaml").is_file():
                raise ParameterError(f"{self.run_dir}: nothing to resume (no config.yaml from an earlier run)")
            return
        if not self.data_dir.strip():
            raise ParameterError("choose the labeled data folder")
        if not Path(self.data_dir).expanduser().is_dir():
            raise ParameterError(f"{self.data_dir}: labeled data folder not found")
        if self.unlabeled_dir.strip() and not Path(self.unlabeled_dir).expanduser().is_dir():
            raise ParameterError(f"{self.unlabeled_dir}: unlabeled folder not found")
        if not self.preset.strip():
            raise ParameterError("choose a preset or a dataset.json")
        if self.preset.endswith(".json") and not Path(self.preset).expanduser().is_file():
            raise ParameterError(f"{self.preset}: dataset.json not found")
        if not self.method.strip():
            raise ParameterError("choose a training method")
        profiles = Catalog.profile_names()
        if self.profile not in profiles:
            raise ParameterError(f"unknown profile '{self.profile}': use {' or '.join(profiles)}")
        for item in self.settings:
            if "=" not in item or not item.split("=", 1)[0].strip():
                raise ParameterError(f"setting '{item}' must look like KEY=VALUE")
        if not 0.0 < float(self.labeled_fraction) <= 1.0:
            raise ParameterError(f"labeled fraction must be in (0, 1], got {self.labeled_fraction}")
        for name in ("iterations", "batch_labeled"):
            if int(getattr(self, name)) < 1:
                raise ParameterError(f"{name.replace('_', ' ')} must be at least 1")
        if int(self.batch_unlabeled) < 0:
            raise ParameterError("batch unlabeled must not be negative")
        if len(self.patch) != 3 or any(int(p) < 8 for p in self.patch):
            raise ParameterError(f"patch size must be three sizes (z, y, x) of at least 8 voxels, got {self.patch}")

    def run_exists(self) -> bool:
        """True when ``run_dir`` already holds a run (starting anew then needs ``overwrite``)."""
        return bool(self.run_dir.strip()) and (Path(self.run_dir).expanduser() / "config.yaml").is_file()

    def cli_args(self, resume: bool = False, overwrite: bool = False) -> List[str]:
        """``dvcl train`` arguments. A raw data folder is prepared by the CLI into ``RUN_DIR/cache``."""
        self.validate(resume)
        workers = ["--workers", str(int(self.workers))] if self.workers is not None else []
        if resume:
            return ["train", "--resume", self.run_dir, "--device", self.device, *workers]
        args = ["train", "--preset", self.preset, "--data", self.data_dir, "--profile", self.profile,
                "--method", self.method,
                "--labeled-fraction", f"{float(self.labeled_fraction):g}", "--iterations", str(int(self.iterations)),
                "--batch-labeled", str(int(self.batch_labeled)), "--batch-unlabeled", str(int(self.batch_unlabeled)),
                "--patch", *[str(int(p)) for p in self.patch], "--out", self.run_dir, "--device", self.device]
        if self.unlabeled_dir.strip():
            args += ["--unlabeled", self.unlabeled_dir]
        for item in self.settings:
            args += ["--set", item]
        args += workers
        if overwrite:
            args.append("--overwrite")
        return args


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies below it (both resolved)."""
    return path == folder or folder in path.parents


def _resolved(text: str) -> Path:
    return Path(text).expanduser().resolve()


@dataclass
class AdaptParameters(_Serializable):
    """``dvcl adapt`` options: fine-tune a model on the site's unlabeled scans into a new model package.

    ``iterations`` None leaves the schedule to the backend (``DEFAULT_ITERATIONS`` in backend/dvcl/adapt.py; the
    Train tab shows that number, read by :func:`Catalog.adapt_default_iterations`). Re-running the same command
    resumes an adaptation that was stopped (the backend's work folder, :meth:`work_path`, holds the run).
    """

    model_dir: str = ""
    labeled_dir: str = ""
    unlabeled_dir: str = ""
    out_dir: str = ""
    iterations: Optional[int] = None
    device: str = "auto"
    #: cache and training run; "" = the backend's default ``<out>.adapt-work`` next to the output
    work_dir: str = ""

    def out_path(self) -> Path:
        return Path(self.out_dir).expanduser()

    def work_path(self) -> Path:
        if self.work_dir.strip():
            return Path(self.work_dir).expanduser()
        out = self.out_path()
        return out.parent / f"{out.name}{ADAPT_WORK_SUFFIX}"

    def stop_file(self) -> Path:
        """The stop request the adaptation's trainer polls: ``<work>/run/STOP``."""
        return self.work_path() / "run" / STOP_FILE

    def output_exists(self) -> bool:
        """True when ``out_dir`` holds something (starting then needs ``overwrite``; an empty folder is fine)."""
        if not self.out_dir.strip():
            return False
        out = self.out_path()
        if out.is_dir():
            return any(out.iterdir())
        return out.exists()

    def resumable(self) -> bool:
        """True when the work folder holds an adaptation that has not written its model yet (Start resumes it)."""
        return (bool(self.out_dir.strip()) and (self.work_path() / "adapt.json").is_file()
                and not self.output_exists())

    def validate(self, overwrite: bool = False) -> None:
        if not self.model_dir.strip():
            raise ParameterError("choose the model to adapt")
        model = Path(self.model_dir).expanduser()
        if not model.is_dir():
            raise ParameterError(f"{self.model_dir}: model folder not found")
        if not (model / "model.json").is_file():
            raise ParameterError(f"{self.model_dir}: not a dvcl model package (model.json is missing)")
        if not self.labeled_dir.strip():
            if not _labeled_data_generator(model):
                raise ParameterError("choose the labeled data folder (labeled scans in the model's label set): "
                                     "this model's card names no generator of synthetic labeled data")
        elif not Path(self.labeled_dir).expanduser().is_dir():
            raise ParameterError(f"{self.labeled_dir}: labeled data folder not found")
        if not self.unlabeled_dir.strip():
            raise ParameterError("choose the folder of your unlabeled scans")
        if not Path(self.unlabeled_dir).expanduser().is_dir():
            raise ParameterError(f"{self.unlabeled_dir}: unlabeled scans folder not found")
        if not self.out_dir.strip():
            raise ParameterError("choose an output folder for the adapted model")
        out, model_path = _resolved(self.out_dir), model.resolve()
        if _inside(out, model_path) or _inside(model_path, out):
            raise ParameterError(f"{self.out_dir}: the output must not lie inside the model folder "
                                 f"{self.model_dir} (nor hold it): choose another output folder")
        for name, folder in (("unlabeled scans", self.unlabeled_dir), ("labeled data", self.labeled_dir)):
            if folder.strip() and _inside(out, _resolved(folder)):
                raise ParameterError(f"{self.out_dir}: the output must not lie inside the {name} folder {folder}")
        if self.out_path().exists() and not self.out_path().is_dir():
            raise ParameterError(f"{self.out_dir}: exists and is not a folder")
        if self.output_exists() and not overwrite:
            raise ParameterError(f"{self.out_dir} already exists: confirm to replace it (the adaptation then "
                                 "starts over), or choose another output folder")
        if self.iterations is not None and int(self.iterations) < 1:
            raise ParameterError("iterations must be at least 1")
        _check_device(self.device)

    def cli_args(self, overwrite: bool = False) -> List[str]:
        """``dvcl adapt`` arguments; the same arguments again continue a stopped adaptation."""
        self.validate(overwrite)
        args = ["adapt", "--model", self.model_dir, "--unlabeled", self.unlabeled_dir]
        if self.labeled_dir.strip():  # else the model card's generator writes synthetic labeled data
            args += ["--labeled", self.labeled_dir]
        args += ["-o", self.out_dir]
        if self.iterations is not None:
            args += ["--iterations", str(int(self.iterations))]
        args += ["--device", self.device]
        if self.work_dir.strip():
            args += ["--work-dir", self.work_dir]
        if overwrite:
            args.append("--overwrite")
        return args


def _labeled_data_generator(model: Path) -> str:
    """The generator of synthetic labeled data a model's card names (``dvcl adapt`` uses it without --labeled)."""
    try:
        card = json.loads((model / "model.json").read_text(encoding="utf-8")).get("card")
    except (OSError, ValueError, AttributeError):
        return ""
    return str(card.get("labeled_data_generator") or "") if isinstance(card, dict) else ""


@dataclass
class EvaluationParameters(_Serializable):
    """``dvcl evaluate`` options; prediction and reference are given as nodes or files to the logic.

    ``out_dir`` is optional: without it the logic writes the report into a temporary folder of its own (the
    table node in the scene is the result a user looks at).
    """

    preset: str = "flare22"
    out_dir: str = ""
    plots: bool = True
    distances: bool = True

    def validate(self) -> None:
        if not self.preset.strip():
            raise ParameterError("choose the preset whose label table the files use")

    def cli_args(self, prediction: Path, reference: Path) -> List[str]:
        self.validate()
        if not self.out_dir.strip():
            raise ParameterError("no report folder: EvaluationLogic chooses one when none is given")
        # --overwrite: the user chose the report folder; re-evaluating into it replaces the previous report
        args = ["evaluate", str(prediction), str(reference), "--preset", self.preset, "--out", self.out_dir,
                "--overwrite"]
        if not self.plots:
            args.append("--no-plots")
        if not self.distances:
            args.append("--no-distances")
        return args


def as_dict(params: Any) -> Dict[str, Any]:
    return asdict(params)
