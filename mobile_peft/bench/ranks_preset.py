"""The rank benchmark on a preset with a pretrained language model (``smollm2-vlm``).

Same protocol and row format as :mod:`.ranks` (``task``, ``method``, ``adapter``, ``seed``,
``accuracy``, ...), on a different base and with more rows:

* base: the preset's vision tower + projector aligned (LLaVA stage 1, :mod:`mobile_peft.train.align`)
  on ``digit-name`` with the language model frozen; cached on disk keyed by the alignment config;
* ``uniform``, ``hydra-rank``, ``ard`` at the budget of uniform LoRA rank ``budget_rank`` on the
  default targets (adapters built with ``r_max``);
* ``uniform-8x``: uniform LoRA at 8x that budget (rank ``8 * budget_rank``), the upper reference
  in place of full fine-tuning (135 M parameters do not fit the time);
* ``peft-lora`` and ``peft-adalora`` (the AdaLoRA baseline): Hugging Face PEFT's own ``LoraModel``
  / ``AdaLoraModel`` wrapped around the same model, on the same target modules (the same regex),
  data, batches, steps, optimiser and learning rate; LoRA at rank ``budget_rank``, AdaLoRA from
  ``init_r = r_max`` down to an average ``target_r = budget_rank`` (its rank budget), with its
  orthogonality regulariser and ``update_and_allocate`` after every step, as PEFT documents.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from ..core.errors import ConfigError
from ..train import TrainConfig, batches, evaluate, make_optimizer
from ..train.align import AlignConfig, aligned_base, source_label
from .ranks import BenchConfig, _curve, _one_run, run_rank_bench

__all__ = ["PresetBenchConfig", "base_note", "preset_smoke_config", "run_preset_rank_bench"]

UPPER_FACTOR = 8  # uniform-8x: the upper reference's budget, in multiples of the benchmark's
PEFT_METHODS = ("peft-lora", "peft-adalora")


@dataclass
class PresetBenchConfig(BenchConfig):
    preset: str = "smollm2-vlm"
    allocators: tuple[str, ...] = ("uniform", "hydra-rank", "ard", "uniform-8x", *PEFT_METHODS)
    adapters: tuple[str, ...] = ("lora",)
    full: bool = False
    # A 135 M-parameter decoder step costs ~50x a tiny one: smaller batches, a capped eval split.
    steps: int = 60
    batch_size: int = 8
    eval_limit: int | None = 200
    # Warm-up, probes and ARD's planning run at the benchmark's batch size (their default 16 would
    # double the cost of every planning step on this model).
    hydra_rank: dict[str, Any] = field(
        default_factory=lambda: {"warmup_steps": 10, "probes": 6, "probe_steps": 8, "probe_batch_size": 8, "probe_val": 64}
    )
    ard: dict[str, Any] = field(default_factory=lambda: {"plan_steps": 20, "plan_batch_size": 8})
    align: AlignConfig = field(default_factory=AlignConfig)

    def __post_init__(self) -> None:
        if self.full:
            raise ConfigError(
                f"full fine-tuning of {self.preset!r} does not fit the benchmark's time; its upper reference is "
                "'uniform-8x' (uniform LoRA at 8x the budget). Set full=False."
            )
        if isinstance(self.align, dict):
            self.align = AlignConfig(**self.align)


def preset_smoke_config(cache_dir: str, preset: str = "smollm2-vlm") -> PresetBenchConfig:
    """Seconds per run on the real model: one task, one seed, a few steps and examples."""
    return PresetBenchConfig(
        preset=preset,
        tasks=("parity",),
        seeds=(0,),
        steps=2,
        batch_size=2,
        train_limit=8,
        eval_limit=4,
        hydra_rank={"warmup_steps": 1, "probes": 3, "probe_steps": 1, "probe_val": 4, "probe_batch_size": 2},
        ard={"plan_steps": 1},
        align=AlignConfig(steps=1, batch_size=2, train_limit=8, eval_limit=4, vision_steps=2, vision_batch_size=4),
        cache_dir=cache_dir,
    )


def _methods(config: PresetBenchConfig) -> list[tuple[str, str | None]]:
    """PEFT's rows exist for LoRA adapters only (PEFT has no Hydra adapter)."""
    return [
        (m, ad) for ad in config.adapters for m in config.allocators if not (m in PEFT_METHODS and ad != "lora")
    ]


def _upper_run(config: PresetBenchConfig, base: Any, data: tuple[Any, Any], method: str, adapter: str | None, seed: int) -> dict[str, Any]:
    rank = UPPER_FACTOR * config.budget_rank
    row = _one_run(replace(config, budget_rank=rank, r_max=max(rank, config.r_max)), base, data, "uniform", adapter, seed)
    return {**row, "method": method}


def _peft_tuner(config: PresetBenchConfig, model: Any, method: str) -> Any:
    from peft import AdaLoraConfig, LoraConfig
    from peft.tuners.adalora import AdaLoraModel
    from peft.tuners.lora import LoraModel

    targets = model.config.default_targets
    if method == "peft-lora":
        r = config.budget_rank
        return LoraModel(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=targets), "default")
    # AdaLoRA's schedule: a warm-up without pruning, budget decay to target_r, a final phase at it.
    tinit, tfinal = config.steps // 10, config.steps // 5
    adalora = AdaLoraConfig(
        init_r=config.r_max,
        target_r=config.budget_rank,
        lora_alpha=2 * config.r_max,  # scaling alpha / r as for our adapters built with r_max
        lora_dropout=0.0,
        target_modules=targets,
        total_step=max(config.steps, tinit + tfinal + 1),
        tinit=tinit,
        tfinal=tfinal,
        deltaT=max(1, config.steps // 20),
    )
    return AdaLoraModel(model, adalora, "default")


def _peft_active_params(model: Any, method: str) -> int:
    """Trainable parameters in effect: LoRA's A and B; for AdaLoRA, per module the ranks whose
    singular value ``lora_E`` survived pruning, times (in + out + 1)."""
    total = 0
    for module in model.modules():
        if method == "peft-adalora" and hasattr(module, "lora_E") and "default" in getattr(module, "lora_E", {}):
            rank = int((module.lora_E["default"].detach() != 0).sum())
            a, b = module.lora_A["default"], module.lora_B["default"]
            total += rank * (a.shape[1] + b.shape[0] + 1)
        elif method == "peft-lora" and hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            total += module.lora_A["default"].weight.numel() + module.lora_B["default"].weight.numel()
    return total


def _peft_run(config: PresetBenchConfig, base: Any, data: tuple[Any, Any], method: str, adapter: str | None, seed: int) -> dict[str, Any]:
    """PEFT's own tuner on a copy of the base; the loop is the reference trainer's (same seeded
    batches, same AdamW, same learning rate) plus AdaLoRA's ``update_and_allocate``."""
    train_ds, eval_ds = data
    model = copy.deepcopy(base)
    torch.manual_seed(seed)
    start = time.perf_counter()
    tuner = _peft_tuner(config, model, method)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, TrainConfig(lr=config.lr_adapter, optimizer="adamw"))
    stream = batches(train_ds, config.batch_size, seed)
    model.train()
    losses = []
    for step in range(1, config.steps + 1):
        batch = next(stream)
        loss = tuner(batch["pixel_values"], batch["input_ids"], batch["labels"]).loss  # AdaLoRA adds its regulariser
        loss.backward()
        losses.append(float(loss.detach()))
        optimizer.step()
        if method == "peft-adalora":
            tuner.update_and_allocate(step)
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    wall = time.perf_counter() - start
    result = evaluate(model, eval_ds)
    return {
        "method": method,
        "adapter": adapter or "lora",
        "seed": seed,
        "trainable_params": _peft_active_params(model, method),
        "wall_s": round(wall, 2),
        "plan_s": 0.0,
        "losses": _curve(losses),
        "accuracy": result.accuracy,
        "eval_loss": result.loss,
    }


_RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {"uniform-8x": _upper_run, "peft-lora": _peft_run, "peft-adalora": _peft_run}


def _run(config: PresetBenchConfig, base: Any, data: tuple[Any, Any], method: str, adapter: str | None, seed: int) -> dict[str, Any]:
    return _RUNNERS.get(method, _one_run)(config, base, data, method, adapter, seed)


def base_note(label: str, record: dict[str, Any]) -> str:
    """The table's line on the base: the alignment stages and the caption accuracy they reached."""
    vision = record.get("vision_pretraining")
    cfg = record["config"]
    stage0 = f"vision tower pre-trained {vision['steps']} steps as a digit classifier, then " if vision else ""
    stage1 = "projector" if not cfg.get("train_vision_tower", True) else "vision tower + projector"
    return (
        f"Base: {label}, {stage0}{stage1} aligned {record['steps']} steps on {cfg['task']} (language model frozen; "
        f"caption accuracy {100 * record['accuracy_after']:.1f} % on the eval split, {record['seconds']:.0f} s, cached)"
    )


def run_preset_rank_bench(
    config: PresetBenchConfig,
    progress: Callable[[str], None] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Align (or read the cached alignment), then run the grid; results as :func:`.ranks.run_rank_bench`
    (``resume`` as there) plus ``preset`` and the ``alignment`` record (its caption accuracy and seconds)."""
    model, tokenizer, record, cached = aligned_base(config.preset, config.align, config.cache_dir)
    label = source_label(config.preset)
    extra = {"preset": label, "alignment": record, "base_note": base_note(label, record)}

    def with_extra(results: dict[str, Any]) -> dict[str, Any]:
        return {**results, **extra}

    results = run_rank_bench(
        config,
        progress=progress,
        checkpoint=(lambda partial: checkpoint(with_extra(partial))) if checkpoint else None,
        base=(model, tokenizer, 0.0 if cached else record["seconds"], cached),
        methods=_methods(config),
        runner=_run,
        resume=resume,
    )
    results["config"] = asdict(config)
    return with_extra(results)
