"""Configuration of Hydra adapters (parallel + sequential low-rank branches)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, Self

from torch import nn

from ...core.adapter_files import ModuleRanks, effective_config, hydra_config_json, resolve_pattern
from ...core.errors import ConfigError
from .._config import check_dropout, check_int, check_pattern_keys, check_positive, normalize_targets
from .layer import HydraLayer

HydraInit = Literal["default", "gaussian"]
HYDRA_INITS: tuple[str, ...] = ("default", "gaussian")
BRANCHES: tuple[str, str] = ("parallel", "sequential")


def _per_branch(field_name: str, value: object, check: Any) -> dict[str, Any]:
    """A pattern value: a number applies to both branches, a dict to the branches it names."""
    if isinstance(value, dict):
        unknown = set(value) - set(BRANCHES)
        if unknown or not value:
            raise ConfigError(
                f"{field_name}={value!r} is invalid; a dict value names branches {BRANCHES} only."
            )
        return {b: check(f"{field_name}[{b!r}]", v) for b, v in value.items()}
    return dict.fromkeys(BRANCHES, check(field_name, value))


@dataclass
class HydraConfig:
    """Hydra on the selected linear layers (see :class:`HydraLayer` for the formula).

    Each branch is scaled by ``alpha / r`` of that branch (``alpha`` is shared, so both branches
    start with the same per-rank weight as LoRA's ``lora_alpha / r``). ``rank_pattern`` and
    ``alpha_pattern`` values are either a number, which applies to both branches, or a dict such
    as ``{"parallel": 8, "sequential": 2}``; branches a dict leaves out keep the defaults.

    Files: saved with ``peft_type: "HYDRA"`` — this SDK's own format, not loadable by Hugging
    Face PEFT.
    """

    method: ClassVar[str] = "hydra"
    peft_type: ClassVar[str] = "HYDRA"

    r_parallel: int = field(default=8, metadata={"help": "Maximum rank of the parallel branch (reads x)."})
    r_sequential: int = field(
        default=8, metadata={"help": "Maximum rank of the sequential branch (reads W0 x + b0)."}
    )
    alpha: float = field(
        default=16, metadata={"help": "Scale numerator: each branch is multiplied by alpha / its rank."}
    )
    target_modules: str | list[str] | None = field(
        default=None,
        metadata={
            "help": "Modules to adapt: a full regex string, or names matched exactly or as a '.suffix'."
        },
    )
    exclude_modules: str | list[str] | None = field(
        default=None,
        metadata={"help": "Modules never adapted (same rules as target_modules; applied first)."},
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout probability on each branch input."})
    rank_pattern: dict[str, int | dict[str, int]] = field(
        default_factory=dict,
        metadata={
            "help": "Per-module ranks: {regex: r for both branches | {'parallel': rp, 'sequential': rs}}."
        },
    )
    alpha_pattern: dict[str, float | dict[str, float]] = field(
        default_factory=dict,
        metadata={"help": "Per-module alphas: {regex: alpha for both | {'parallel': a, 'sequential': a}}."},
    )
    init: HydraInit = field(
        default="default",
        metadata={
            "help": "Down-projections: 'default' kaiming-uniform or 'gaussian'; up-projections start at zero."
        },
    )

    def __post_init__(self) -> None:
        check_int("r_parallel", self.r_parallel, 0)
        check_int("r_sequential", self.r_sequential, 0)
        if self.r_parallel == 0 and self.r_sequential == 0:
            raise ConfigError("r_parallel=0 and r_sequential=0 leave no adapter; give one a rank >= 1.")
        check_positive("alpha", self.alpha)
        self.target_modules = normalize_targets("target_modules", self.target_modules, required=True)
        self.exclude_modules = normalize_targets("exclude_modules", self.exclude_modules, required=False)
        self.dropout = check_dropout("dropout", self.dropout)
        self.rank_pattern = check_pattern_keys("rank_pattern", self.rank_pattern)
        for key, value in self.rank_pattern.items():
            _per_branch(f"rank_pattern[{key!r}]", value, lambda f, v: check_int(f, v, 0))
        self.alpha_pattern = check_pattern_keys("alpha_pattern", self.alpha_pattern)
        for key, value in self.alpha_pattern.items():
            _per_branch(f"alpha_pattern[{key!r}]", value, check_positive)
        if self.init not in HYDRA_INITS:
            raise ConfigError(f"init={self.init!r} is not a Hydra init; expected one of {HYDRA_INITS}.")

    def ranks_for(self, path: str) -> dict[str, int]:
        ranks = {"parallel": self.r_parallel, "sequential": self.r_sequential}
        value = resolve_pattern(path, self.rank_pattern, None)
        if value is not None:
            ranks.update(_per_branch("rank_pattern", value, lambda f, v: v))
        return ranks

    def alphas_for(self, path: str) -> dict[str, float]:
        alphas = dict.fromkeys(BRANCHES, self.alpha)
        value = resolve_pattern(path, self.alpha_pattern, None)
        if value is not None:
            alphas.update(_per_branch("alpha_pattern", value, lambda f, v: v))
        return alphas

    @classmethod
    def uniform(cls, rank: int, alpha: float, target_modules: str | list[str], exclude_modules: str | list[str] | None = None) -> Self:
        return cls(r_parallel=rank, r_sequential=rank, alpha=alpha, target_modules=target_modules, exclude_modules=exclude_modules)

    def build_layer(self, base_layer: nn.Module, path: str) -> HydraLayer:
        ranks, alphas = self.ranks_for(path), self.alphas_for(path)
        if not any(ranks.values()):
            raise ConfigError(
                f"rank_pattern gives {path!r} rank 0 on both Hydra branches; exclude it instead."
            )
        return HydraLayer(
            base_layer,
            r_parallel=ranks["parallel"],
            r_sequential=ranks["sequential"],
            alpha_parallel=alphas["parallel"],
            alpha_sequential=alphas["sequential"],
            dropout=self.dropout,
            init=self.init,
        )

    # -- files ----------------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        return hydra_config_json(self.r_parallel, self.r_sequential, self.alpha, self.target_modules, self.exclude_modules,
                                 self.dropout, self.rank_pattern, self.alpha_pattern, self.init)

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - {"peft_type", "task_type"}
        if unknown:
            raise ConfigError(f"adapter_config.json has unknown Hydra fields {sorted(unknown)}.")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_effective(cls, modules: ModuleRanks, dropout: float) -> Self:
        """A config that rebuilds exactly ``modules`` (path -> branch -> (r, alpha | None)); see
        :func:`mobile_peft.core.adapter_files.effective_config`."""
        return cls.from_json_dict(effective_config(cls.method, modules, dropout))
