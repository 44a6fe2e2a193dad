"""Vision -> language projectors (the "connector" of a VLM), one small class each.

All map image features ``[B, N, vision_hidden]`` to image tokens ``[B, N', text_hidden]`` with
static shapes (``N'`` is known from the config), so the fused sequence has a fixed layout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.registry import Registry

PROJECTORS: Registry[type[nn.Module]] = Registry("projector")


@dataclass
class ProjectorConfig:
    type: str = field(default="mlp", metadata={"help": f"One of the registered projectors ({'mlp', 'ldp', 'pixel_shuffle'})."})
    scale_factor: int = field(default=2, metadata={"help": "pixel_shuffle: tokens merged per side."})
    bias: bool = field(default=True, metadata={"help": "mlp: linear layers carry a bias (LLaVA: True)."})

    def __post_init__(self) -> None:
        if self.type not in PROJECTORS:
            raise ConfigError(f"projector type {self.type!r} is unknown; expected one of {PROJECTORS.names()}.")
        if self.scale_factor < 1:
            raise ConfigError(f"projector scale_factor must be >= 1, got {self.scale_factor}.")

    def to_dict(self) -> dict:
        return asdict(self)


def _grid_side(num_tokens: int) -> int:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ConfigError(f"image features form no square grid: {num_tokens} tokens.")
    return side


@PROJECTORS.register("mlp")
class MLPProjector(nn.Module):
    """LLaVA-1.5 projector: ``linear_2(GELU(linear_1(x)))``; tokens unchanged."""

    def __init__(self, vision_hidden: int, text_hidden: int, config: ProjectorConfig) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(vision_hidden, text_hidden, bias=config.bias)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(text_hidden, text_hidden, bias=config.bias)

    @staticmethod
    def num_tokens(num_patches: int, config: ProjectorConfig) -> int:
        return num_patches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


@PROJECTORS.register("pixel_shuffle")
class PixelShuffleProjector(nn.Module):
    """SmolVLM / Idefics3 connector: space-to-depth by ``scale_factor`` (``s**2`` neighbouring
    patches become one token of ``s**2 * vision_hidden`` features), then one linear map."""

    def __init__(self, vision_hidden: int, text_hidden: int, config: ProjectorConfig) -> None:
        super().__init__()
        self.scale = config.scale_factor
        self.proj = nn.Linear(vision_hidden * self.scale**2, text_hidden, bias=False)

    @staticmethod
    def num_tokens(num_patches: int, config: ProjectorConfig) -> int:
        side = _grid_side(num_patches)
        if side % config.scale_factor:
            raise ConfigError(f"pixel_shuffle scale_factor {config.scale_factor} does not divide the {side}x{side} patch grid.")
        return num_patches // config.scale_factor**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        side, s = _grid_side(n), self.scale
        x = x.reshape(b, side, side // s, c * s).permute(0, 2, 1, 3)
        x = x.reshape(b, side // s, side // s, c * s * s).permute(0, 2, 1, 3)
        return self.proj(x.reshape(b, n // (s * s), c * s * s))


class _LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (MobileVLM's ``LayerNormAct2d`` without act)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvNorm(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int, act: bool) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
            _LayerNorm2d(cout),
        ]
        if act:
            layers.append(nn.Hardswish())
        super().__init__(*layers)


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        squeeze = max(8, int(channels // 4 + 4) // 8 * 8)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(scale))))
        return x * scale


class _InvertedResidual(nn.Module):
    """MobileNetV3 block with expansion 1: depthwise k3 conv -> SE -> pointwise conv."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.use_residual = stride == 1
        self.block = nn.Sequential(
            _ConvNorm(channels, channels, 3, stride, groups=channels, act=True),
            _SqueezeExcite(channels),
            _ConvNorm(channels, channels, 1, 1, groups=1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


@PROJECTORS.register("ldp")
class LDPProjector(nn.Module):
    """MobileVLM's Lightweight Downsample Projector (Chu et al. 2023, arXiv 2312.16886).

    ``mlp`` (vision -> text width) then two MobileNetV3 blocks on the patch grid; the second
    has stride 2, so the image tokens drop 4x (576 -> 144 for CLIP ViT-L/14-336). Sub-module
    names follow MobileVLM's checkpoints (``mlp.1``, ``mb_block.1.block.0.0``, ...).
    """

    def __init__(self, vision_hidden: int, text_hidden: int, config: ProjectorConfig) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Identity(), nn.Linear(vision_hidden, text_hidden), nn.GELU(), nn.Linear(text_hidden, text_hidden))
        self.mb_block = nn.Sequential(nn.Identity(), _InvertedResidual(text_hidden, 1), _InvertedResidual(text_hidden, 2))

    @staticmethod
    def num_tokens(num_patches: int, config: ProjectorConfig) -> int:
        side = _grid_side(num_patches)
        return ((side + 1) // 2) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        side = _grid_side(n)
        x = self.mlp(x)
        x = x.permute(0, 2, 1).reshape(b, -1, side, side)
        x = self.mb_block(x)
        return x.flatten(2).permute(0, 2, 1)


def build_projector(vision_hidden: int, text_hidden: int, config: ProjectorConfig) -> nn.Module:
    return PROJECTORS[config.type](vision_hidden, text_hidden, config)


def projector_tokens(num_patches: int, config: ProjectorConfig) -> int:
    return PROJECTORS[config.type].num_tokens(num_patches, config)  # type: ignore[attr-defined]
