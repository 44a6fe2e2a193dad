"""Rank allocators (uniform, HyDRA, ARD-LoRA) and the ``RankSchedule`` they produce."""

from .schedule import BUDGET_TOLERANCE, Phase, RankSchedule, current_schedule, model_slots

__all__ = ["BUDGET_TOLERANCE", "Phase", "RankSchedule", "current_schedule", "model_slots"]
