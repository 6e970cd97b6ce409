"""Training methods (DVCL, CPS, baselines): the :class:`Method` interface and a registry by name.

Importing this package does not import torch: :mod:`dvcl.methods.catalog` (names, display names, table
order) is plain data, and ``Method``/``get_method_class``/``register_method`` load on first use.
"""

from __future__ import annotations

from typing import Any

from dvcl.methods.catalog import method_names as available_methods

__all__ = ["Method", "available_methods", "get_method_class", "register_method"]


def __getattr__(name: str) -> Any:
    if name == "Method":
        from dvcl.methods.base import Method

        return Method
    if name in ("get_method_class", "register_method"):
        from dvcl.methods import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'dvcl.methods' has no attribute {name!r}")
