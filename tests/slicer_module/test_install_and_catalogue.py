"""Installation command lines and version rules, sample data registration, and ExtensionsIndex readiness.

pip itself is not run (it would download); the tests check the command lines InstallLogic builds and feeds
to the pip runner, the files they point at, and the version decisions, against this environment's real
package metadata and the real backend folder.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from dvcl_slicer_helpers import MODULE_DIR, REPO

from DVCLSegmentationLib import SampleDataSources
from DVCLSegmentationLib.InstallLogic import (
    InstallError,
    InstallLogic,
    backend_dependencies,
    bundled_backend_version,
    installed_version,
)

BACKEND = REPO / "backend"


def _versions(**override):
    """version_of: this machine's real versions, with some packages replaced (None: not installed)."""
    def version_of(dist, import_name):
        return override[dist] if dist in override else installed_version(dist, import_name)
    return version_of


def test_the_backend_is_pinned_to_the_bundled_version():
    import dvcl

    assert bundled_backend_version(BACKEND) == dvcl.__version__ == "0.1.0"
    logic = InstallLogic(version_of=_versions(dvcl="0.0.9"))
    (stale,) = logic.missing()
    assert stale.name == "dvcl" and "not the extension's backend 0.1.0 (will be reinstalled)" in stale.describe()
    assert logic.plan([stale]) == [["--no-deps", "--no-build-isolation", "--force-reinstall", str(BACKEND)]]
    old_setuptools = InstallLogic(version_of=_versions(dvcl="0.0.9", setuptools="65.5.0"))
    assert old_setuptools.plan([stale]) == [["--no-deps", "--force-reinstall", str(BACKEND)]]  # needs >= 77
    newer = InstallLogic(version_of=_versions(dvcl="0.2.0"))  # a newer backend is not this extension's either
    assert [s.name for s in newer.missing()] == ["dvcl"]
    assert InstallLogic().missing() == []


def test_a_wheel_built_with_the_extension_is_preferred(tmp_path, monkeypatch):
    backend = tmp_path / "DVCLSegmentationBackend"
    backend.mkdir()
    shutil.copy(BACKEND / "pyproject.toml", backend / "pyproject.toml")
    wheel = backend / "dvcl-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    monkeypatch.setenv("DVCL_BACKEND_DIR", str(backend))
    logic = InstallLogic(version_of=_versions(dvcl=None))
    assert logic.plan(logic.missing()) == [["--no-deps", str(wheel)]]


def test_monai_and_the_rest_are_installed_against_the_present_torch(tmp_path):
    import torch

    seen = []

    def pip(args):
        constraint = Path(args[args.index("-c") + 1]) if "-c" in args else None
        seen.append((list(args), constraint.read_text() if constraint else None))

    logic = InstallLogic(pip_install=pip, version_of=_versions(monai=None))
    with pytest.raises(InstallError, match="still missing after installation: monai: missing"):
        logic.install()  # the runner installs nothing, and that is said, not hidden
    (args, constraints), = seen
    assert args[0] == "-c" and args[2:] == ["monai>=1.3"]
    assert constraints == f"torch=={torch.__version__}\n"
    assert not any(a.startswith("torch") for a in args)


def test_an_old_torch_is_reported_not_skipped():
    calls = []
    logic = InstallLogic(pip_install=calls.append, version_of=_versions(torch="2.0.1"))
    (torch,) = logic.missing()
    assert torch.describe() == "torch 2.0.1: too old (needs >= 2.1)"
    with pytest.raises(InstallError, match="torch 2.0.1 is older than 2.1.*PyTorch Utils"):
        logic.install()
    assert calls == []


def test_training_packages_are_a_separate_extra(tmp_path, monkeypatch):
    assert backend_dependencies(BACKEND, "train") == ["tensorboard>=2.10"]
    assert not any(d.startswith("tensorboard") for d in backend_dependencies(BACKEND))
    backend = tmp_path / "backend"
    backend.mkdir()
    text = (BACKEND / "pyproject.toml").read_text().replace('train = ["tensorboard>=2.10"]',
                                                             'train = ["dvcl-test-no-such-package>=1"]')
    (backend / "pyproject.toml").write_text(text)
    monkeypatch.setenv("DVCL_BACKEND_DIR", str(backend))
    logic = InstallLogic()
    assert logic.is_ready() and not logic.is_ready(training=True)
    (extra,) = logic.missing(training=True)
    assert extra.name == "dvcl-test-no-such-package"
    plan = logic.plan([extra], training=True, constraints_file=tmp_path / "c.txt")
    assert plan == [["-c", str(tmp_path / "c.txt"), "dvcl-test-no-such-package>=1"]]


# -- sample data ------------------------------------------------------------------------------------------
SLICER_SAMPLE_DATA_ARGUMENTS = {"category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader",
                                "thumbnailFileName", "loadFileType", "loadFiles", "loadFileProperties",
                                "checksums"}


class _SampleDataLogic:
    """Records registrations; its signature is Slicer 5.8's ``registerCustomSampleDataSource``."""

    calls = []

    @staticmethod
    def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,
                                       nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                       loadFileType="VolumeFile", loadFiles=None, loadFileProperties=None,
                                       checksums=None):
        _SampleDataLogic.calls.append(dict(locals()))


def test_sample_data_registration():
    assert set(inspect.signature(_SampleDataLogic.registerCustomSampleDataSource).parameters) == \
        SLICER_SAMPLE_DATA_ARGUMENTS
    _SampleDataLogic.calls = []
    assert SampleDataSources.register_sample_data(_SampleDataLogic) == 3
    by_name = {c["sampleName"]: c for c in _SampleDataLogic.calls}
    assert set(by_name) == {"DVCLAbdomenCT3mm", "DVCLAbdomenCT3mmReference", "DVCLPhantomCT"}
    assert {c["category"] for c in _SampleDataLogic.calls} == {"DVCL Segmentation"}
    for name, labelmap in (("DVCLAbdomenCT3mm", False), ("DVCLAbdomenCT3mmReference", True)):
        call = by_name[name]
        (uri,), (file_name,), (checksum,) = call["uris"], call["fileNames"], call["checksums"]
        path = Path(unquote(urlparse(uri).path))
        assert urlparse(uri).scheme == "file" and path.is_file()
        assert checksum == "SHA256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert file_name.endswith(".nii.gz") and call["loadFileProperties"] == {"labelmap": labelmap}
        assert Path(call["thumbnailFileName"]).is_file()
    assert Path(unquote(urlparse(by_name["DVCLAbdomenCT3mm"]["uris"][0]).path)) == \
        REPO / "tests" / "data" / "abdomen_ct_3mm" / "image.nii.gz"  # the one copy, not a second one
    assert callable(by_name["DVCLPhantomCT"]["customDownloader"])


def test_cmake_installs_the_sample_files_under_the_names_the_module_expects():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    for name, (source, _) in SampleDataSources.ABDOMEN_FILES.items():
        assert f"RENAME {name}" in cmake and f"${{_dvcl_sample_dir}}/{Path(source).name}" in cmake
    assert f"/{SampleDataSources.INSTALLED_DIR_NAME}" in cmake


@pytest.mark.slow
def test_the_phantom_sample_is_generated_by_the_backend(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    files = SampleDataSources.write_phantom(tmp_path)
    image, label = sitk.ReadImage(str(files["image"])), sitk.ReadImage(str(files["label"]))
    assert image.GetSize() == label.GetSize() and image.GetDimension() == 3
    assert sitk.GetArrayFromImage(label).max() == 13  # the 13 FLARE22 organs


# -- ExtensionsIndex readiness ---------------------------------------------------------------------------
def _cmake_var(name):
    match = re.search(rf'set\({name} "([^"]*)"\)', (REPO / "CMakeLists.txt").read_text())
    assert match, name
    return match.group(1)


def test_license_and_index_entry():
    license_text = (REPO / "LICENSE").read_text()
    assert license_text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert 'license = "Apache-2.0"' in (BACKEND / "pyproject.toml").read_text()
    entry = json.loads((REPO / "DVCLSegmentation.json").read_text())
    assert entry["build_dependencies"] == ["PyTorch"] and entry["category"] == _cmake_var("EXTENSION_CATEGORY")
    assert set(entry) <= {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_revision",
                          "scm_url", "tier", "enabled"}
    homepage = _cmake_var("EXTENSION_HOMEPAGE")
    assert entry["scm_url"] == homepage + ".git"
    repo_path = urlparse(homepage).path.strip("/")
    for key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert f"/{repo_path}/" in _cmake_var(key)
    assert _cmake_var("EXTENSION_DEPENDS") == "PyTorch"


def test_description_is_short_and_honest():
    description = _cmake_var("EXTENSION_DESCRIPTION")
    sentences = [s for s in re.split(r"(?<=\.)\s+", description) if s.strip()]
    assert 1 <= len(sentences) <= 2
    assert "demo" in description and "not a clinical model" in description
    contributors = _cmake_var("EXTENSION_CONTRIBUTORS")
    assert contributors == "DVCLSegmentation developers"
    assert f'contributors = ["{contributors}"]' in (MODULE_DIR / "DVCLSegmentation.py").read_text()
