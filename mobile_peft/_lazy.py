"""PEP 562 lazy attributes for package faces (``mobile_peft``, ``mobile_peft.export``): the
on-device runtime imports parts of these packages and must not pull in torch export machinery or
the authoring layer through an ``__init__``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, names: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing ``names[attr]`` (a submodule of ``package``) on first use
    and caching the attribute in ``namespace`` (the package's ``globals()``)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    return __getattr__
