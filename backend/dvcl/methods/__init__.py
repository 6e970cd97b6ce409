"""Training methods (DVCL, CPS, baselines): the :class:`Method` interface and a registry by name."""

from __future__ import annotations

from dvcl.methods.base import Method
from dvcl.methods.registry import available_methods, get_method_class, register_method

__all__ = ["Method", "available_methods", "get_method_class", "register_method"]
