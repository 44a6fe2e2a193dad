"""Configuration of LoRA adapters (field names and file format follow Hugging Face PEFT)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from torch import nn

from ...core.adapter_files import LORA_FIXED, ModuleRanks, effective_config, lora_config_json, resolve_pattern
from ...core.errors import ConfigError
from .._config import check_dropout, check_int, check_pattern_keys, check_positive, normalize_targets
from .layer import LoraLayer

LoraInit = Literal["default", "gaussian"]
LORA_INITS: tuple[str, ...] = ("default", "gaussian")

@dataclass
class LoraConfig:
    """LoRA on the selected linear layers: ``y = W0 x + b0 + (alpha / r) * B diag(m) A x``."""

    method: ClassVar[str] = "lora"
    peft_type: ClassVar[str] = "LORA"

    r: int = field(
        default=8,
        metadata={"help": "Rank (r_max) of every adapted layer unless rank_pattern says otherwise."},
    )
    lora_alpha: float = field(
        default=16, metadata={"help": "Scale numerator: the branch is multiplied by lora_alpha / r."}
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
    lora_dropout: float = field(
        default=0.0, metadata={"help": "Dropout probability on the LoRA branch input."}
    )
    rank_pattern: dict[str, int] = field(
        default_factory=dict, metadata={"help": "Per-module rank: {regex matched at the path's end: r}."}
    )
    alpha_pattern: dict[str, float] = field(
        default_factory=dict, metadata={"help": "Per-module alpha: {regex matched at the path's end: alpha}."}
    )
    init: LoraInit = field(
        default="default",
        metadata={
            "help": "'default': A kaiming-uniform (as PEFT), B zeros; 'gaussian': A ~ N(0, 1/r), B zeros."
        },
    )

    def __post_init__(self) -> None:
        check_int("r", self.r, 1)
        check_positive("lora_alpha", self.lora_alpha)
        self.target_modules = normalize_targets("target_modules", self.target_modules, required=True)
        self.exclude_modules = normalize_targets("exclude_modules", self.exclude_modules, required=False)
        self.lora_dropout = check_dropout("lora_dropout", self.lora_dropout)
        self.rank_pattern = check_pattern_keys("rank_pattern", self.rank_pattern)
        for key, value in self.rank_pattern.items():
            check_int(f"rank_pattern[{key!r}]", value, 1)
        self.alpha_pattern = check_pattern_keys("alpha_pattern", self.alpha_pattern)
        for key, value in self.alpha_pattern.items():
            check_positive(f"alpha_pattern[{key!r}]", value)
        if self.init not in LORA_INITS:
            raise ConfigError(f"init={self.init!r} is not a LoRA init; expected one of {LORA_INITS}.")

    @classmethod
    def uniform(cls, rank: int, alpha: float, target_modules: str | list[str], exclude_modules: str | list[str] | None = None) -> Self:
        return cls(r=rank, lora_alpha=alpha, target_modules=target_modules, exclude_modules=exclude_modules)

    def build_layer(self, base_layer: nn.Module, path: str) -> LoraLayer:
        return LoraLayer(
            base_layer,
            r=resolve_pattern(path, self.rank_pattern, self.r),
            alpha=resolve_pattern(path, self.alpha_pattern, self.lora_alpha),
            dropout=self.lora_dropout,
            init=self.init,
        )

    # -- files (PEFT adapter_config.json) -------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        """The PEFT ``adapter_config.json`` contents (loadable by ``peft.LoraConfig``)."""
        return lora_config_json(self.r, self.lora_alpha, self.target_modules, self.exclude_modules, self.lora_dropout,
                                self.rank_pattern, self.alpha_pattern)

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> Self:
        """Read a PEFT LoRA ``adapter_config.json``; features this SDK lacks are refused."""
        for key, fine in LORA_FIXED.items():
            value = data.get(key, fine)
            if value != fine and not (fine is None and not value):
                raise ConfigError(
                    f"adapter_config.json has {key}={value!r}, which mobile-peft's LoRA does not support "
                    f"(expected {fine!r}); re-save the adapter without it."
                )
        return cls(
            r=data.get("r", 8),
            lora_alpha=data.get("lora_alpha", 8),
            target_modules=data.get("target_modules"),
            exclude_modules=data.get("exclude_modules"),
            lora_dropout=data.get("lora_dropout", 0.0),
            rank_pattern=data.get("rank_pattern") or {},
            alpha_pattern=data.get("alpha_pattern") or {},
        )

    @classmethod
    def from_effective(cls, modules: ModuleRanks, dropout: float) -> Self:
        """A config that rebuilds exactly ``modules`` (path -> {"lora": (r, alpha)}); see
        :func:`mobile_peft.core.adapter_files.effective_config`."""
        return cls.from_json_dict(effective_config(cls.method, modules, dropout))
