"""Methods by name: ``@register_method("dvcl")`` on the class, ``get_method_class("dvcl")`` to find it.

Method modules register themselves when imported; :func:`get_method_class` imports every module of the
``dvcl.methods`` package first, so adding a method is adding one file.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from typing import Callable, Dict, List, Type

from dvcl.errors import ConfigError

log = logging.getLogger(__name__)

_REGISTRY: Dict[str, type] = {}
_IMPORT_ERRORS: Dict[str, str] = {}
_LOADED = False
_SKIP = {"base", "registry", "__init__"}


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator: make a :class:`~dvcl.methods.base.Method` subclass available as ``name``."""
    key = name.lower()

    def deco(cls: type) -> type:
        other = _REGISTRY.get(key)
        if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
            raise ValueError(f"method name '{key}' registered twice ({other.__qualname__}, {cls.__qualname__})")
        cls.name = key
        _REGISTRY[key] = cls
        return cls

    return deco


def _load_all() -> None:
    """Import every method module once; a module that fails to import is remembered, not fatal."""
    global _LOADED
    if _LOADED:
        return
    import dvcl.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name in _SKIP or info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"dvcl.methods.{info.name}")
        except Exception as exc:  # noqa: BLE001 - one broken method must not hide all others
            _IMPORT_ERRORS[info.name] = f"{type(exc).__name__}: {exc}"
            log.warning("method module dvcl.methods.%s failed to import: %s", info.name, exc)
    _LOADED = True


def get_method_class(name: str) -> Type:
    """The registered class for ``name``; :class:`ConfigError` lists the valid names otherwise."""
    _load_all()
    key = str(name).lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    hint = f" (dvcl.methods.{key} failed to import: {_IMPORT_ERRORS[key]})" if key in _IMPORT_ERRORS else ""
    raise ConfigError(f"unknown method '{name}'{hint}; available: {', '.join(available_methods())}")


def available_methods() -> List[str]:
    _load_all()
    return sorted(_REGISTRY)
