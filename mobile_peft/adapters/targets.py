"""Which modules get an adapter, and with which rank: Hugging Face PEFT's matching rules.

* ``exclude_modules`` is applied first; a matched exclusion wins over any target.
* A ``str`` is a full regular expression over the module path (``re.fullmatch``).
* A ``list`` matches a module path exactly or as a dotted suffix
  (``key == t or key.endswith("." + t)``), so ``"q_proj"`` matches ``model.layers.0.self_attn.q_proj``.
* Only linear layers (``nn.Linear``, ``QuantLinear``) can carry an adapter: a target that matches
  any other module is an error, not a silent skip.
* ``rank_pattern`` / ``alpha_pattern`` keys are regexes matched against the end of the path after
  a dot (``re.match(rf"(.*\\.)?({p})$", key)``); the first matching key wins.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from torch import nn

from ..core.adapter_files import resolve_pattern
from ..core.errors import ConfigError
from ..quant import is_linear

__all__ = ["match_targets", "module_matches", "resolve_pattern"]

V = TypeVar("V")

_EXAMPLES = 6


def module_matches(key: str, spec: str | Sequence[str]) -> bool:
    """Whether module path ``key`` matches a target/exclude spec (regex string or name list)."""
    if isinstance(spec, str):
        return re.fullmatch(spec, key) is not None
    return any(key == t or key.endswith("." + t) for t in spec)


def match_targets(
    model: nn.Module,
    target_modules: str | Sequence[str],
    exclude_modules: str | Sequence[str] | None = None,
) -> list[str]:
    """Paths of the linear modules of ``model`` selected by ``target_modules`` minus
    ``exclude_modules``, in ``named_modules()`` order.

    Raises :class:`ConfigError` when a target matches a non-linear module, or when nothing
    matches (the message lists the targets and a few linear module names of the model).
    """
    matched: list[str] = []
    excluded = 0
    for name, module in model.named_modules():
        if not name:
            continue
        if exclude_modules is not None and module_matches(name, exclude_modules):
            excluded += 1
            continue
        if not module_matches(name, target_modules):
            continue
        if not is_linear(module):
            raise ConfigError(
                f"target_modules={target_modules!r} matches {name!r}, which is a "
                f"{type(module).__name__}; only linear layers (nn.Linear, QuantLinear) can carry an "
                "adapter. Name its linear children instead, or add it to exclude_modules."
            )
        matched.append(name)
    if not matched:
        linears = [name for name, module in model.named_modules() if name and is_linear(module)]
        examples = ", ".join(linears[:_EXAMPLES]) or "(the model has no linear layers)"
        hint = (
            f" ({excluded} modules were excluded by exclude_modules={exclude_modules!r})" if excluded else ""
        )
        raise ConfigError(
            f"target_modules={target_modules!r} matched no linear module{hint}. A list entry matches "
            "a module path exactly or as a '.suffix'; a string is a full regex. Linear modules of "
            f"this model include: {examples}."
        )
    return matched
