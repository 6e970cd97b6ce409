"""Checks and installs what the backend needs in Slicer's Python: torch, MONAI, SimpleITK and ``dvcl``.

Rules learned from the Slicer AI extensions (research/slicer_extensions.md, sections 3 and 8):

* torch comes from the *PyTorch* extension (``PyTorchUtils``), which picks the CUDA build that matches the
  NVIDIA driver; nothing installed here may replace it: every pip call gets a constraints file pinning the
  torch that is there (``monai`` with its dependencies would otherwise pull a CPU wheel of a newer torch);
  a torch older than the minimum is reported and refused, not skipped;
* pip must never replace Slicer's own SimpleITK (Slicer ships a build with its own IO), so the backend is
  installed with ``--no-deps`` and its other requirements are installed explicitly, skipping torch and
  SimpleITK;
* the backend is the extension's own: the installed ``dvcl`` must have the bundled backend's version exactly
  (an extension update reinstalls it), and it is installed offline, from a wheel built with the extension
  (``DVCLSegmentationBackend/*.whl``) or else from the bundled source with ``--no-build-isolation`` (no
  setuptools download) when Slicer's setuptools is recent enough for the backend's ``[build-system]``, and
  only otherwise with pip's default isolated build (which downloads setuptools);
* segmenting needs the core requirements only; the packages of the backend's ``train`` extra are installed
  when the user first trains;
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
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .Backend import DVCLModuleError, dvcl_command, find_backend_dir

try:  # Python >= 3.8
    from importlib import metadata as importlib_metadata
except ImportError:  # pragma: no cover
    import importlib_metadata  # type: ignore[no-redef]

log = logging.getLogger(__name__)

TORCH_MINIMUM = "2.1"
#: (distribution name, import name, minimum version) the backend cannot run without; dvcl's is the bundled one
REQUIREMENTS = [
    ("torch", "torch", TORCH_MINIMUM),
    ("monai", "monai", "1.3"),
    ("SimpleITK", "SimpleITK", "2.2"),
    ("dvcl", "dvcl", "0.1"),
]
#: never installed by pip from here (see module docstring); monai is installed on its own step
SKIPPED_BY_PIP = {"torch", "simpleitk", "monai"}
TORCH_REQUIREMENT = ">=" + TORCH_MINIMUM
#: the backend's optional-dependency group with the training-only packages
TRAIN_EXTRA = "train"


class InstallError(DVCLModuleError):
    """Installing failed or needs a step only the user can do (install an extension, update Slicer)."""


@dataclass
class PackageStatus:
    """One requirement as found. ``exact``: the version must equal ``required`` (the bundled backend)."""

    name: str
    required: str
    installed: Optional[str]
    ok: bool
    exact: bool = False

    def describe(self) -> str:
        if self.installed is None:
            return f"{self.name}: missing (needs {'' if self.exact else '>= '}{self.required})"
        if self.ok:
            return f"{self.name} {self.installed}: OK"
        if self.exact:
            return f"{self.name} {self.installed}: not the extension's backend {self.required} (will be reinstalled)"
        return f"{self.name} {self.installed}: too old (needs >= {self.required})"


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


def backend_dependencies(backend_dir: Path, extra: Optional[str] = None) -> List[str]:
    """The ``dependencies = [...]`` list of the backend's pyproject.toml, or the list of one optional extra.

    Parsed with a regular expression because ``tomllib`` is not in Python 3.9 (Slicer 5.8).
    """
    text = (backend_dir / "pyproject.toml").read_text(encoding="utf-8")
    if extra is None:
        match = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M)
    else:
        section = re.search(r"^\[project\.optional-dependencies\]\s*$(.*?)(?=^\[|\Z)", text, re.S | re.M)
        match = re.search(rf"^{re.escape(extra)}\s*=\s*\[(.*?)\]", section.group(1), re.S | re.M) \
            if section else None
    if not match:
        return []
    return re.findall(r"[\"']([^\"']+)[\"']", match.group(1))


def bundled_backend_version(backend_dir: Optional[Path]) -> Optional[str]:
    """``version = "..."`` of the bundled backend's pyproject.toml: the only dvcl this extension accepts."""
    if backend_dir is None or not (backend_dir / "pyproject.toml").is_file():
        return None
    text = (backend_dir / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r"^version\s*=\s*[\"']([^\"']+)[\"']", text, re.M)
    return match.group(1) if match else None


def find_backend_wheel(backend_dir: Optional[Path], version: Optional[str]) -> Optional[Path]:
    """A ``dvcl-<version>-*.whl`` built with the extension (CMakeLists.txt), next to or inside the backend."""
    if backend_dir is None or version is None:
        return None
    for folder in (backend_dir, backend_dir.parent, backend_dir / "dist"):
        if folder.is_dir():
            wheels = sorted(folder.glob(f"dvcl-{version}-*.whl"))
            if wheels:
                return wheels[-1]
    return None


def torch_constraint(torch_version: str) -> str:
    """The constraints-file line that keeps pip from replacing the torch that is there."""
    return f"torch=={torch_version}"


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
        version_of: callable(distribution, import name) -> installed version or None (default: package
            metadata, :func:`installed_version`).
    """

    def __init__(self, pip_install: Optional[Callable[[List[str]], Any]] = None,
                 torch_installer: Optional[Callable[[], Any]] = None,
                 confirm: Optional[Callable[[str], bool]] = None,
                 version_of: Callable[[str, str], Optional[str]] = installed_version) -> None:
        self._pip_install = pip_install
        self._torch_installer = torch_installer
        self._confirm = confirm or (lambda message: True)
        self._version_of = version_of
        self.log: Callable[[str], None] = log.info

    def check(self) -> List[PackageStatus]:
        """The state of every requirement; dvcl must be the bundled backend's version exactly."""
        bundled = bundled_backend_version(find_backend_dir())
        statuses = []
        for dist, import_name, minimum in REQUIREMENTS:
            version = self._version_of(dist, import_name)
            if dist == "dvcl" and bundled is not None:
                statuses.append(PackageStatus(dist, bundled, version, version == bundled, exact=True))
                continue
            ok = version is not None and version_at_least(version, minimum)
            statuses.append(PackageStatus(dist, minimum, version, ok))
        return statuses

    def missing(self, training: bool = False) -> List[PackageStatus]:
        """Requirements that are absent or wrong; with ``training`` also the backend's ``train`` extra."""
        missing = [s for s in self.check() if not s.ok]
        if training:
            backend = find_backend_dir()
            for requirement in backend_dependencies(backend, TRAIN_EXTRA) if backend else []:
                if not self._satisfied(requirement):
                    missing.append(PackageStatus(requirement_name(requirement), requirement, None, False))
        return missing

    def is_ready(self, training: bool = False) -> bool:
        return not self.missing(training)

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

    def plan(self, missing: List[PackageStatus], training: bool = False,
             constraints_file: Optional[Path] = None) -> List[List[str]]:
        """The pip command lines (arguments after ``pip install``) that fix ``missing``, in order.

        torch is not in them (the PyTorch extension's job) and every line carries ``-c constraints_file``
        (the torch that is there, pinned) so that no dependency can replace it.
        """
        names = {s.name for s in missing}
        backend = find_backend_dir()
        constraint = ["-c", str(constraints_file)] if constraints_file is not None else []
        commands: List[List[str]] = []
        if "monai" in names:
            monai = next((r for r in backend_dependencies(backend) if requirement_name(r).lower() == "monai"),
                         "monai>=1.3") if backend else "monai>=1.3"
            commands.append([*constraint, monai])
        if "dvcl" in names:
            if backend is None:
                raise InstallError("the dvcl backend folder was not found next to the module "
                                   "(set DVCL_BACKEND_DIR to the folder with pyproject.toml)")
            version = bundled_backend_version(backend)
            wheel = find_backend_wheel(backend, version)
            reinstall = ["--force-reinstall"] if any(s.name == "dvcl" and s.installed for s in missing) else []
            if wheel is not None:
                commands.append(["--no-deps", *reinstall, str(wheel)])
            elif self._can_build_offline(backend):  # with the setuptools Slicer's Python has: no download
                commands.append(["--no-deps", "--no-build-isolation", *reinstall, str(backend)])
            else:
                self.log("this Python's setuptools is too old to build the backend offline: pip downloads one")
                commands.append(["--no-deps", *reinstall, str(backend)])
        if (backend is not None and names & {"dvcl", "monai"}) or training:
            wanted = backend_dependencies(backend) if backend else []
            if training and backend:
                wanted += backend_dependencies(backend, TRAIN_EXTRA)
            todo = [r for r in wanted if requirement_name(r).lower() not in SKIPPED_BY_PIP
                    and not self._satisfied(r)]
            if todo:
                commands.append([*constraint, *todo])
        return commands

    def _can_build_offline(self, backend: Path) -> bool:
        """True when the installed setuptools meets the backend's ``[build-system] requires``."""
        text = (backend / "pyproject.toml").read_text(encoding="utf-8")
        match = re.search(r"requires\s*=\s*\[[^\]]*[\"']setuptools\s*>=\s*([\w.]+)", text)
        version = self._version_of("setuptools", "setuptools")
        if version is None:
            return False
        return version_at_least(version, match.group(1)) if match else True

    def install(self, training: bool = False) -> List[PackageStatus]:
        """Install whatever :meth:`missing` reports, after confirmation; returns the new status.

        Raises:
            InstallError: the user declined, torch is too old, the backend folder is missing, or a step failed.
        """
        missing = self.missing(training)
        if not missing:
            return self.check()
        names = ", ".join(s.describe() for s in missing)
        if not self._confirm(f"DVCLSegmentation needs these Python packages: {names}.\nInstall them now? "
                             "This can take several minutes."):
            raise InstallError("installation cancelled")
        torch = next((s for s in missing if s.name == "torch"), None)
        if torch is not None and torch.installed is not None:
            raise InstallError(f"torch {torch.installed} is older than {TORCH_MINIMUM}, which the backend needs. "
                               "Open the PyTorch Utils module, uninstall torch and install it again (it picks a "
                               "recent build for your GPU), restart Slicer, then press Install again.")
        if torch is not None:
            self.install_torch()
        if any(s.name == "SimpleITK" for s in missing):
            raise InstallError("SimpleITK is missing or too old; it ships with Slicer: please update Slicer")
        torch_version = self._version_of("torch", "torch")
        if torch_version is None:
            raise InstallError("torch is still not installed (restart Slicer after installing it, then retry)")
        with tempfile.TemporaryDirectory(prefix="dvcl-install-") as tmp:
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text(torch_constraint(torch_version) + "\n", encoding="utf-8")
            for args in self.plan(missing, training, constraints):
                self._pip(args)
        importlib.invalidate_caches()
        still = [s for s in self.missing(training) if s.name != "torch"]
        if still:
            raise InstallError("still missing after installation: " + "; ".join(s.describe() for s in still))
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
