"""Methods by name: ``@register_method("dvcl")`` on the class, ``get_method_class("dvcl")`` to find it.

Which names exist, and which module registers each, is data in :mod:`dvcl.methods.catalog`;
:func:`get_method_class` imports only the module the asked-for name needs (listing methods imports nothing).
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, List, Type

from dvcl.errors import ConfigError
from dvcl.methods.catalog import get_method_info, method_names

_REGISTRY: Dict[str, type] = {}


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator: make a :class:`~dvcl.methods.base.Method` subclass available as ``name``."""
    key = name.lower()

    def deco(cls: type) -> type:
        other = _REGISTRY.get(key)
        if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
            raise ValueError(f"method name '{key}' registered twice ({other.__qualname__}, {cls.__qualname__})")
        cls.name = key
        if key in method_names():
            cls.citation = get_method_info(key).citation  # the catalog holds the reference
        _REGISTRY[key] = cls
        return cls

    return deco


def get_method_class(name: str) -> Type:
    """The registered class for ``name``; :class:`ConfigError` lists the valid names otherwise."""
    key = str(name).lower()
    if key not in _REGISTRY:
        info = get_method_info(key)  # ConfigError for a name the catalog does not know
        module = f"dvcl.methods.{info.module}"
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"method '{name}': {module} failed to import ({type(exc).__name__}: {exc})") from exc
        if key not in _REGISTRY:
            raise ConfigError(f"method '{name}': {module} does not register it (see dvcl/methods/catalog.py)")
    return _REGISTRY[key]


def registered_classes() -> Dict[str, type]:
    """Every method class registered so far (after importing every catalog module): for consistency tests."""
    for name in method_names():
        get_method_class(name)
    return dict(_REGISTRY)


def available_methods() -> List[str]:
    """Method names in table order (the catalog's; importing nothing)."""
    return method_names()
