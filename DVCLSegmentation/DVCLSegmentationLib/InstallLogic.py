"""Checks and installs what the backend needs in Slicer's Python: torch, MONAI, SimpleITK and ``dvcl``.

Three rules learned from the Slicer AI extensions (research/slicer_extensions.md, sections 3 and 8):

* torch comes from the *PyTorch* extension (``PyTorchUtils``), which picks the CUDA build that matches the
  NVIDIA driver; a plain ``pip install torch`` often gets a CPU-only or incompatible wheel;
* pip must never replace Slicer's own SimpleITK (Slicer ships a build with its own IO), so the backend is
  installed with ``--no-deps`` and its other requirements one by one, skipping torch and SimpleITK;
* nothing is installed without the user's confirmation, and errors keep their cause.

Checking is cheap and imports nothing heavy (package metadata only); the GPU report runs ``dvcl info`` in
a child process so that torch is never imported into the GUI process just to look.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .Backend import DVCLModuleError, dvcl_command, find_backend_dir

try:  # Python >= 3.8
    from importlib import metadata as importlib_metadata
except ImportError:  # pragma: no cover
    import importlib_metadata  # type: ignore[no-redef]

log = logging.getLogger(__name__)

#: (distribution name, import name, minimum version) the backend cannot run without
REQUIREMENTS = [
    ("torch", "torch", "2.1"),
    ("monai", "monai", "1.3"),
    ("SimpleITK", "SimpleITK", "2.2"),
    ("dvcl", "dvcl", "0.1"),
]
#: never installed by pip from here (see module docstring)
SKIPPED_BY_PIP = {"torch", "simpleitk"}
TORCH_REQUIREMENT = ">=2.1"


class InstallError(DVCLModuleError):
    """Installing failed or needs a step only the user can do (install an extension, update Slicer)."""


@dataclass
class PackageStatus:
    name: str
    required: str
    installed: Optional[str]
    ok: bool

    def describe(self) -> str:
        if self.installed is None:
            return f"{self.name}: missing (needs >= {self.required})"
        state = "OK" if self.ok else f"too old (needs >= {self.required})"
        return f"{self.name} {self.installed}: {state}"


def _version_tuple(text: str) -> tuple:
    """``2.13.0+cpu`` -> (2, 13, 0); enough for ">= minimum" checks without ``packaging``."""
    parts = []
    for piece in re.split(r"[.+\-]", text):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def version_at_least(installed: str, minimum: str) -> bool:
    try:
        from packaging.version import Version

        return Version(installed) >= Version(minimum)
    except Exception:  # packaging missing or a non-PEP 440 version string
        return _version_tuple(installed) >= _version_tuple(minimum)


def installed_version(distribution: str, import_name: str) -> Optional[str]:
    """Version from package metadata; None when the package is not importable."""
    if importlib.util.find_spec(import_name) is None:
        return None
    try:
        return importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        module = importlib.import_module(import_name)  # e.g. Slicer's bundled SimpleITK has no metadata
        return str(getattr(module, "__version__", "0"))


def backend_dependencies(backend_dir: Path) -> List[str]:
    """The ``dependencies = [...]`` list of the backend's pyproject.toml (tomllib is not in Python 3.9)."""
    text = (backend_dir / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M)
    if not match:
        return []
    return re.findall(r"[\"']([^\"']+)[\"']", match.group(1))


def requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].strip()


def parse_info(stdout: str) -> Dict[str, Any]:
    """The JSON that ``dvcl info`` prints (possibly surrounded by other lines)."""
    start, end = stdout.find("{"), stdout.rfind("}")
    if start < 0 or end < start:
        raise DVCLModuleError("dvcl info printed no JSON")
    try:
        return json.loads(stdout[start:end + 1])
    except ValueError as exc:
        raise DVCLModuleError(f"dvcl info printed invalid JSON: {exc}") from exc


def device_message(info: Dict[str, Any]) -> str:
    """One paragraph for the Setup tab: the GPU that will be used, or why the CPU will be."""
    devices = info.get("devices") or {}
    gpus = devices.get("gpus") or []
    torch_version = info.get("torch", "?")
    if devices.get("cuda") and gpus:
        names = ", ".join(f"{g.get('name', 'GPU')} ({g.get('memory_gb', '?')} GB)" for g in gpus)
        return f"GPU available: {names}. torch {torch_version}."
    cpu_build = "+cpu" in str(torch_version)
    hint = (" This torch is a CPU-only build: if the computer has an NVIDIA GPU, reinstall torch with the "
            "PyTorch extension (PyTorch Utils module) to get the CUDA build.") if cpu_build else \
        " If the computer has an NVIDIA GPU, check its driver and reinstall torch with the PyTorch extension."
    return (f"No CUDA GPU found (torch {torch_version}): segmentation runs on the CPU (a few minutes per scan) "
            "and training on the CPU is only practical for tiny tests." + hint)


class InstallLogic:
    """Dependency check and installation for Slicer's Python.

    Args:
        pip_install: callable taking a list of pip arguments (default ``slicer.util.pip_install``).
        torch_installer: callable that installs torch (default: through ``PyTorchUtils``).
        confirm: callable(message) -> bool asked before anything is installed (default: always yes).
    """

    def __init__(self, pip_install: Optional[Callable[[List[str]], Any]] = None,
                 torch_installer: Optional[Callable[[], Any]] = None,
                 confirm: Optional[Callable[[str], bool]] = None) -> None:
        self._pip_install = pip_install
        self._torch_installer = torch_installer
        self._confirm = confirm or (lambda message: True)
        self.log: Callable[[str], None] = log.info

    def check(self) -> List[PackageStatus]:
        statuses = []
        for dist, import_name, minimum in REQUIREMENTS:
            version = installed_version(dist, import_name)
            ok = version is not None and version_at_least(version, minimum)
            statuses.append(PackageStatus(dist, minimum, version, ok))
        return statuses

    def missing(self) -> List[PackageStatus]:
        return [s for s in self.check() if not s.ok]

    def is_ready(self) -> bool:
        return not self.missing()

    def _pip(self, args: List[str]) -> None:
        if self._pip_install is None:
            import slicer  # noqa: PLC0415 - only inside Slicer

            self._pip_install = slicer.util.pip_install
        self.log("pip install " + " ".join(args))
        self._pip_install(args)

    def install_torch(self) -> None:
        """torch through the PyTorch extension, so that the CUDA build matches the driver."""
        if self._torch_installer is not None:
            self._torch_installer()
            return
        try:
            import PyTorchUtils  # noqa: PLC0415 - the PyTorch extension's module
        except ImportError as exc:
            raise InstallError("PyTorch is not installed. Install the 'PyTorch' extension from the Extensions "
                               "Manager (it picks the torch build that matches your GPU), restart Slicer, then "
                               "press Install again.") from exc
        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        if not torch_logic.torchInstalled():
            self.log("Installing torch with the PyTorch extension...")
            torch = torch_logic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT)
            if torch is None:
                raise InstallError("torch was not installed (cancelled or failed); see the Python console")

    def install(self) -> List[PackageStatus]:
        """Install whatever :meth:`check` reports missing, after confirmation; returns the new status.

        Raises:
            InstallError: the user declined, the backend folder is missing, or a step failed.
        """
        missing = self.missing()
        if not missing:
            return self.check()
        names = ", ".join(s.name for s in missing)
        if not self._confirm(f"DVCLSegmentation needs these Python packages: {names}. Install them now? "
                             "This can take several minutes."):
            raise InstallError("installation cancelled")
        if any(s.name == "torch" for s in missing):
            self.install_torch()
        backend = find_backend_dir()
        needs_backend = any(s.name in ("dvcl", "monai") for s in missing)
        if needs_backend:
            if backend is None:
                raise InstallError("the dvcl backend folder was not found next to the module "
                                   "(set DVCL_BACKEND_DIR to the folder with pyproject.toml)")
            self._pip(["--no-deps", str(backend)])
            wanted = [r for r in backend_dependencies(backend) if requirement_name(r).lower() not in SKIPPED_BY_PIP]
            todo = [r for r in wanted if not self._satisfied(r)]
            if todo:
                self._pip(todo)
        if any(s.name == "SimpleITK" for s in missing):
            raise InstallError("SimpleITK is missing or too old; it ships with Slicer: please update Slicer")
        importlib.invalidate_caches()
        return self.check()

    @staticmethod
    def _satisfied(requirement: str) -> bool:
        name = requirement_name(requirement)
        try:
            version = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            return False
        match = re.search(r">=\s*([\w.]+)", requirement)
        return version_at_least(version, match.group(1)) if match else True

    @staticmethod
    def info_command() -> List[str]:
        """``dvcl info`` (versions, GPUs); run it through a Process and feed stdout to :func:`parse_info`."""
        return dvcl_command(["info"], progress="none")
