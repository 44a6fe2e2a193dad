"""The configuration of a :class:`~mobile_peft.models.MobileVLM`, saved as ``config.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError
from ..core.spec import InputSpec
from ..quant import check_quant_mode
from .projectors import ProjectorConfig

FORMAT_NAME = "mobile-peft-vlm"
FORMAT_VERSION = 1
VISION_TYPES = ("clip", "siglip")

# Linear layers adapted by default, per tower: every attention and MLP projection of the
# language model and the vision tower, plus the projector's linears.
DEFAULT_TARGETS = (
    r"language_model\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    r"|vision_tower\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])"
    r"|projector\.(linear_[12]|proj|mlp\.[13])"
)


@dataclass
class MobileVLMConfig:
    """Architecture of a mobile VLM: vision tower -> projector -> Llama-style decoder.

    ``vision`` and ``text`` are keyword arguments of the Hugging Face configs
    (``CLIPVisionConfig``/``SiglipVisionConfig`` and ``LlamaConfig``), so any published
    checkpoint of those families can be described.
    """

    name: str = field(metadata={"help": "Preset or model name."})
    vision_type: str = field(metadata={"help": f"Vision tower family: {VISION_TYPES}."})
    vision: dict[str, Any] = field(metadata={"help": "Vision config kwargs (HF)."})
    text: dict[str, Any] = field(metadata={"help": "LlamaConfig kwargs (HF)."})
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    vision_feature_layer: int = field(default=-1, metadata={"help": "Index into the tower's hidden states (LLaVA: -2)."})
    drop_cls: bool = field(default=True, metadata={"help": "Drop the CLS token of CLIP towers."})
    input_spec: InputSpec | None = None
    quant: str = field(default="none", metadata={"help": "Backbone quantisation: none|int8|int4."})
    quant_group_size: int = 32
    default_targets: str = DEFAULT_TARGETS

    def __post_init__(self) -> None:
        if self.vision_type not in VISION_TYPES:
            raise ConfigError(f"vision_type={self.vision_type!r}; expected one of {VISION_TYPES}.")
        if isinstance(self.projector, dict):
            self.projector = ProjectorConfig(**self.projector)
        if isinstance(self.input_spec, dict):
            self.input_spec = InputSpec.from_dict(self.input_spec)
        if self.input_spec is None:
            self.input_spec = InputSpec(image_size=int(self.vision["image_size"]))
        if self.input_spec.image_size != int(self.vision["image_size"]):
            raise ConfigError(
                f"input_spec.image_size={self.input_spec.image_size} differs from the vision tower's "
                f"image_size={self.vision['image_size']}; make them equal."
            )
        check_quant_mode(self.quant)
        if self.vision_type == "siglip":
            self.drop_cls = False  # SigLIP has no CLS token.

    @property
    def num_patches(self) -> int:
        return (int(self.vision["image_size"]) // int(self.vision["patch_size"])) ** 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "vision_type": self.vision_type,
            "vision": dict(self.vision),
            "text": dict(self.text),
            "projector": self.projector.to_dict(),
            "vision_feature_layer": self.vision_feature_layer,
            "drop_cls": self.drop_cls,
            "input_spec": self.input_spec.to_dict(),
            "quant": self.quant,
            "quant_group_size": self.quant_group_size,
            "default_targets": self.default_targets,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MobileVLMConfig:
        d = dict(d)
        fmt, version = d.pop("format", None), d.pop("format_version", None)
        if fmt != FORMAT_NAME:
            raise ConfigError(f"config format {fmt!r} is not {FORMAT_NAME!r}.")
        if version != FORMAT_VERSION:
            raise ConfigError(f"config format_version {version!r} is not supported (expected {FORMAT_VERSION}); upgrade mobile-peft.")
        return cls(**d)
