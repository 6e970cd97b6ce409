"""Sample data for the Sample Data module: a real abdomen CT and a synthetic phantom, so a new user can try
the module without bringing data.

* **DVCL abdomen CT (3 mm)** and its reference: the real, small abdomen CT of ``tests/data/abdomen_ct_3mm``
  (TotalSegmentator's test data, Apache-2.0) and its FLARE22 label map (TotalSegmentator predictions, not
  manual ground truth) as a label map volume for the Evaluate tab. Not a download: the extension installs the
  repository's copy (CMakeLists.txt) and the sources point at it with ``file://`` URIs and SHA256 checksums,
  so one copy serves the tests and the extension.
* **DVCL phantom CT**: generated on demand by the bundled backend (``dvcl phantom``, no torch) with its labels;
  the demo model was trained on such phantoms.

:func:`register_sample_data` is called from the module's startup hook; it takes the SampleData logic class as
an argument so that tests can check what is registered without Slicer's GUI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from .Backend import DVCLModuleError, dvcl_command, module_dir, resource_path

CATEGORY = "DVCL Segmentation"
#: the installed copy (CMakeLists.txt) and, in a source checkout, the repository's test data
INSTALLED_DIR_NAME = "DVCLSegmentationSampleData"
ABDOMEN_FILES = {  # file name in the installed folder -> (path in tests/data, SHA256)
    "abdomen_ct_3mm.nii.gz": ("abdomen_ct_3mm/image.nii.gz",
                              "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1"),
    "abdomen_ct_3mm_flare22_labels.nii.gz": ("abdomen_ct_3mm/label_flare22.nii.gz",
                                             "b256bc62e2a6b7a310beda7cbe746995c5d90566d497bd8296d3d88661d217af"),
}


def sample_file(name: str) -> Optional[Path]:
    """Where sample file ``name`` is: the extension's installed copy, else the repository's test data."""
    installed = module_dir() / INSTALLED_DIR_NAME / name
    if installed.is_file():
        return installed
    source = module_dir().parent / "tests" / "data" / ABDOMEN_FILES[name][0]
    return source if source.is_file() else None


def sample_sources() -> List[Dict[str, Any]]:
    """Keyword arguments of ``SampleDataLogic.registerCustomSampleDataSource`` for each sample."""
    icon = str(resource_path("Icons", "DVCLSegmentation.png"))
    sources: List[Dict[str, Any]] = []
    files = {name: sample_file(name) for name in ABDOMEN_FILES}
    samples = (("abdomen_ct_3mm.nii.gz", "DVCLAbdomenCT3mm", "DVCL abdomen CT", False),
               ("abdomen_ct_3mm_flare22_labels.nii.gz", "DVCLAbdomenCT3mmReference", "DVCL abdomen CT reference",
                True))
    for name, sample, node, labelmap in samples:
        if files[name] is None:
            continue
        sources.append(dict(
            category=CATEGORY, sampleName=sample, uris=[files[name].resolve().as_uri()], fileNames=[name],
            nodeNames=[node], thumbnailFileName=icon, loadFileType="VolumeFile",
            loadFileProperties={"labelmap": labelmap}, checksums=[f"SHA256:{ABDOMEN_FILES[name][1]}"]))
    sources.append(dict(category=CATEGORY, sampleName="DVCLPhantomCT", customDownloader=load_phantom,
                        thumbnailFileName=icon))
    return sources


def register_sample_data(sample_data_logic: Any = None) -> int:
    """Register the samples with Slicer's Sample Data module; returns how many were registered.

    Args:
        sample_data_logic: the class with ``registerCustomSampleDataSource`` (default ``SampleData.SampleDataLogic``).
    """
    if sample_data_logic is None:
        import SampleData  # noqa: PLC0415 - Slicer's module, only inside Slicer

        sample_data_logic = SampleData.SampleDataLogic
    sources = sample_sources()
    for kwargs in sources:
        sample_data_logic.registerCustomSampleDataSource(**kwargs)
    return len(sources)


def write_phantom(folder: Path, timeout: float = 300.0) -> Dict[str, Path]:
    """Run ``dvcl phantom`` (one labeled abdomen phantom, seed 0) into ``folder``; returns image and label."""
    from .Process import SubprocessProcess  # noqa: PLC0415

    process = SubprocessProcess()
    process.start(dvcl_command(["phantom", str(folder), "--kind", "abdomen", "--labeled", "1", "--unlabeled", "0",
                                "--overwrite"]))
    result = process.wait(timeout)
    if not result.ok:
        raise DVCLModuleError(f"could not generate the phantom: {result.error}")
    images = sorted((folder / "labeled" / "images").glob("*.nii.gz"))
    labels = sorted((folder / "labeled" / "labels").glob("*.nii.gz"))
    if not images or not labels:
        raise DVCLModuleError(f"dvcl phantom wrote no image in {folder}")
    return {"image": images[0], "label": labels[0]}


def load_phantom(source: Any = None) -> List[Any]:
    """The Sample Data button of the phantom: generate it, load the CT and its reference labels."""
    import slicer  # noqa: PLC0415

    files = write_phantom(Path(tempfile.mkdtemp(prefix="dvcl-phantom-")))
    volume = slicer.util.loadVolume(str(files["image"]), {"name": "DVCL phantom CT"})
    label = slicer.util.loadLabelVolume(str(files["label"]), {"name": "DVCL phantom CT reference"})
    return [volume, label]
