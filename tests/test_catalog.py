"""One source of truth for the methods: the catalog, the registry, the result tables and the Slicer module agree,
and the torch-free entry points (catalog, profiles, presets, ``dvcl --help``) stay torch-free."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from dvcl.errors import ConfigError
from dvcl.methods.catalog import METHODS, get_method_info, method_names

REPO = Path(__file__).resolve().parents[1]
CATALOG_FILE = REPO / "backend" / "dvcl" / "methods" / "catalog.py"
SLICER_DIR = REPO / "DVCLSegmentation"


def test_catalog_names_are_unique_and_lookups_work() -> None:
    names = method_names()
    assert len(names) == len(set(names)) == len(METHODS) >= 16
    assert names[0] == "supervised" and names[-2:] == ["dvcl", "fully"]  # the paper's table order
    assert get_method_info("DVCL").display_name == "DVCL (ours)"
    with pytest.raises(ConfigError, match="unknown method 'nope'; available: supervised, dan"):
        get_method_info("nope")


def test_every_catalog_entry_resolves_to_a_matching_registered_class() -> None:
    import torch

    from dvcl.methods.registry import get_method_class, registered_classes
    from dvcl.networks.config import NetworkConfig
    from dvcl.training.config import TrainConfig

    for info in METHODS:
        cls = get_method_class(info.name)
        assert cls.name == info.name and cls.citation == info.citation
        assert cls.__module__ == f"dvcl.methods.{info.module}", info.name
        assert cls.uses_unlabeled == info.uses_unlabeled, info.name
        # two_networks: validation and the exported package average two co-trained networks
        params = {"cube_size": [8, 8, 8], "loc_hidden": 8} if info.name == "magicnet" else {}
        if info.name in ("dan", "sassnet"):
            params = {"disc_channels": 4}
        cfg = TrainConfig(method=info.name, patch=(16, 16, 16), val_roi=(16, 16, 16), amp=False, device="cpu",
                          network=NetworkConfig(channels=(4, 8), feature_dim=16), method_params=params)
        if info.name == "dvcl":
            cfg.method_params["feature_dim"] = 16
        method = cls(cfg, 3, torch.device("cpu"))
        method.setup()
        assert (len(method.inference_models()) == 2) == info.two_networks, info.name
    # nothing in dvcl.methods is registered outside the catalog (tests register their own stand-ins)
    shipped = {n for n, c in registered_classes().items() if c.__module__.startswith("dvcl.methods.")}
    assert shipped == set(method_names())


def test_experiment_tables_follow_the_catalog() -> None:
    from dvcl.experiment import _row_sort_key
    from dvcl.methods.catalog import display_name

    shuffled = list(reversed(method_names())) + ["my_method"]
    ordered = sorted(shuffled, key=lambda m: _row_sort_key(m, shuffled))
    assert ordered == method_names()[:-2] + ["my_method", "dvcl", "fully"]
    assert [display_name(m) for m in method_names()] == [m.display_name for m in METHODS]
    assert display_name("my_method") == "my_method"


def test_slicer_module_lists_the_catalog_methods() -> None:
    sys.path.insert(0, str(SLICER_DIR))
    try:
        from DVCLSegmentationLib import Catalog
    finally:
        sys.path.remove(str(SLICER_DIR))
    assert Catalog.method_names() == method_names()
    assert [Catalog.method_display_name(m) for m in method_names()] == [m.display_name for m in METHODS]


def test_slicer_module_lists_the_catalog_methods_without_the_backend() -> None:
    """With ``dvcl`` not importable (the GUI laid out before the backend is installed), the list still comes
    from the catalog file shipped with the extension, not from a hand-kept copy."""
    code = (
        "import sys; sys.modules['dvcl'] = None; sys.path.insert(0, sys.argv[1]);"
        "from DVCLSegmentationLib.Catalog import method_names; print(','.join(method_names()))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(SLICER_DIR)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].split(",") == method_names()


def test_catalog_loads_by_file_path_without_the_package() -> None:
    code = (
        "import sys, importlib.util; sys.modules['dvcl'] = None;"
        "spec = importlib.util.spec_from_file_location('dvcl_catalog', sys.argv[1]);"
        "mod = importlib.util.module_from_spec(spec); sys.modules['dvcl_catalog'] = mod; spec.loader.exec_module(mod);"
        "print(','.join(mod.method_names()))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(CATALOG_FILE)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(",") == method_names()
    spec = importlib.util.spec_from_file_location("catalog_copy", CATALOG_FILE)
    assert spec is not None


def test_torch_free_entry_points() -> None:
    """The catalog, profiles, presets and ``dvcl --help`` (and every subcommand's help) import neither torch nor
    MONAI: listing methods or reading help must stay instant, and the Slicer module imports these."""
    code = (
        "import sys\n"
        "import dvcl.methods.catalog, dvcl.methods, dvcl.profiles, dvcl.presets\n"
        "from dvcl.cli.main import main\n"
        "for argv in (['--help'], ['train', '--help'], ['segment', '--help'], ['experiment', '--help'],"
        " ['demo', '--help'], ['prepare', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "bad = sorted(m for m in ('torch', 'monai') if m in sys.modules)\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_methods_and_losses_do_not_import_training() -> None:
    """The Trainer uses the methods; the methods and their losses never import dvcl.training (no cycle).

    Read from the source (imports at run time, anywhere in the module; ``if TYPE_CHECKING:`` blocks excluded)."""
    import ast

    offenders = []
    for folder in ("methods", "losses"):
        for path in sorted((REPO / "backend" / "dvcl" / folder).glob("*.py")):
            tree = ast.parse(path.read_text())
            skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                    and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
            for node in ast.walk(tree):
                if id(node) in skip:
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{path.name}: {n}" for n in names if n.startswith("dvcl.training")]
    assert not offenders, offenders


def test_method_hooks_are_declared() -> None:
    """The Trainer asks ``needs_class_counts`` instead of probing for methods (hasattr)."""
    from dvcl.methods.base import Method
    from dvcl.methods.registry import registered_classes

    for name, cls in registered_classes().items():
        overrides = cls.set_class_counts is not Method.set_class_counts
        assert cls.needs_class_counts == overrides, name
    trainer = (REPO / "backend" / "dvcl" / "training" / "trainer.py").read_text()
    assert "hasattr(self.method" not in trainer
