"""Mobile VLMs: presets with real architectures, the export-friendly model, checkpoint loaders."""

from .config import DEFAULT_TARGETS, MobileVLMConfig
from .io import build_model, checkpoint_layout, count_parameters, load_model, meta_model, save_model
from .presets import PRESETS, Preset, preset_config
from .projectors import PROJECTORS, ProjectorConfig
from .vlm import MobileVLM, VLMOutput, answer_loss, correct_answers

__all__ = [
    "DEFAULT_TARGETS",
    "PRESETS",
    "PROJECTORS",
    "MobileVLM",
    "MobileVLMConfig",
    "Preset",
    "ProjectorConfig",
    "VLMOutput",
    "answer_loss",
    "build_model",
    "checkpoint_layout",
    "correct_answers",
    "count_parameters",
    "load_model",
    "meta_model",
    "preset_config",
    "save_model",
]
