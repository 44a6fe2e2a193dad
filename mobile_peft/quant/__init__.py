"""Weight-only int8 / int4 quantisation of the frozen backbone (export-friendly, no subclasses)."""

from .model import BackboneBytes, backbone_bytes, quantize_model
from .qlinear import QUANT_MODES, QuantLinear, QuantMode, check_quant_mode, is_linear, linear_weight

__all__ = [
    "QUANT_MODES",
    "BackboneBytes",
    "QuantLinear",
    "QuantMode",
    "backbone_bytes",
    "check_quant_mode",
    "is_linear",
    "linear_weight",
    "quantize_model",
]
