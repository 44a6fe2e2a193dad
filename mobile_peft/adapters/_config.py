"""Shared pieces of the adapter configs: the protocol every config follows and field checks
whose messages name the field, the value and the fix."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from torch import nn

from ..core.adapter_files import ModuleRanks
from ..core.errors import ConfigError

if TYPE_CHECKING:
    from .base import AdapterLayer




class AdapterConfig(Protocol):
    """What :func:`~mobile_peft.adapters.apply_adapters` and the file I/O need from a config."""

    method: ClassVar[str]
    target_modules: str | list[str]
    exclude_modules: str | list[str] | None

    @classmethod
    def uniform(cls, rank: int, alpha: float, target_modules: str | list[str], exclude_modules: str | list[str] | None = None) -> Self:
        """Every adapted module (every slot) at ``rank`` with scale numerator ``alpha``."""
        ...

    def build_layer(self, base_layer: nn.Module, path: str) -> AdapterLayer: ...

    def to_json_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> Self: ...

    @classmethod
    def from_effective(cls, modules: ModuleRanks, dropout: float) -> Self: ...


def check_int(field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{field}={value!r} is invalid; expected an integer >= {minimum}.")
    return value


def check_positive(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{field}={value!r} is invalid; expected a number > 0.")
    return value


def check_dropout(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{field}={value!r} is invalid; expected a probability in [0, 1).")
    return float(value)


def _check_regex(field: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{field} entry {pattern!r} is not a valid regular expression: {exc}.") from None


def normalize_targets(field: str, value: object, required: bool) -> str | list[str] | None:
    """A regex string, or a list of module names (tuples/sets become sorted lists)."""
    if value is None and not required:
        return None
    if isinstance(value, str):
        if not value:
            raise ConfigError(f"{field}='' is empty; give a regex string or a list of module names.")
        _check_regex(field, value)
        return value
    if isinstance(value, list | tuple | set | frozenset) and value:
        names = sorted(value) if isinstance(value, set | frozenset) else list(value)
        if all(isinstance(n, str) and n for n in names):
            return names
    raise ConfigError(
        f"{field}={value!r} is invalid; expected a regex string or a non-empty list of module names "
        "such as ['q_proj', 'v_proj']."
    )


def check_pattern_keys(field: str, pattern: object) -> dict[str, Any]:
    if not isinstance(pattern, dict):
        raise ConfigError(f"{field}={pattern!r} is invalid; expected a dict of module pattern -> value.")
    for key in pattern:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{field} key {key!r} is invalid; expected a non-empty regex string.")
        _check_regex(field, key)
    return dict(pattern)
