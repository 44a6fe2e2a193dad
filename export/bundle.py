"""``export_bundle``: model (+ adapters, + rank schedule) -> bundle directory (and optional zip).

What goes in:

* a model directory (``load_model``) or an in-memory ``(model, tokenizer)``;
* adapters: the model's own if it carries some, else those saved in ``adapter_dir``
  (``save_adapter`` format), else a uniform default (``adapter`` lora|hydra at ``rank`` on the
  model's ``default_targets``);
* a rank schedule (``RankSchedule`` or JSON path); without one, the one-phase schedule of the
  model's current masks. The masks of its first phase are the example inputs; a phone feeds
  other phases' masks without re-export.

Batch size and sequence length are fixed at export time and recorded in the manifest.
"""

from __future__ import annotations

import copy
import logging
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobile_peft import __version__
from mobile_peft.adapters import (
    AdapterLayer,
    adapter_layers,
    adapter_parameters,
    apply_adapters,
    load_adapter,
)
from mobile_peft.allocators import RankSchedule, current_schedule
from mobile_peft.core import contract
from mobile_peft.core.contract import Key
from mobile_peft.core.errors import ConfigError
from mobile_peft.core.manifest import Trainable, size_of, write_manifest
from mobile_peft.core.schedule import MaskInput
from mobile_peft.core.spec import BundleInputSpec, TokenIds
from mobile_peft.data import save_tokenizer, special_token_ids
from mobile_peft.models import load_model
from mobile_peft.quant import QuantLinear, check_quant_mode, quantize_model
from mobile_peft.train.job import make_adapter_config

from .formats import FORMATS, ExportJob, OptimizerDefaults
from .memory_bound import adapter_step_terms, memory_bound
from .pte import PteOptions
from .wrappers import mask_slots

__all__ = ["BundleResult", "export_bundle", "prepare_model", "zip_bundle"]

logger = logging.getLogger(__name__)


@dataclass
class BundleResult:
    path: Path
    manifest: dict[str, Any]
    seconds: float
    zip_path: Path | None = None
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


def prepare_model(
    source: str | Path | tuple[nn.Module, Any],
    quant: str | None = None,
    adapter: str = "lora",
    rank: int = 8,
    adapter_dir: str | Path | None = None,
    seed: int = 0,
) -> tuple[nn.Module, Any]:
    """A copy of the model (never the caller's object) with adapters, quantised as asked.

    Default adapters are initialised from ``seed`` (without touching the global RNG), so the same
    command writes the same bundle bytes."""
    if isinstance(source, tuple):
        model, tokenizer = source
        model = copy.deepcopy(model)
        if quant and quant != "none" and quant != model.config.quant:
            if model.config.quant != "none":
                raise ConfigError(
                    f"the model is stored {model.config.quant}; it cannot be re-quantised to {quant}."
                )
            check_quant_mode(quant)
            quantize_model(model, quant, model.config.quant_group_size)
            model.config.quant = quant
    else:
        model, tokenizer = load_model(source, quant=quant)
    if not adapter_layers(model):
        if adapter_dir is not None:
            load_adapter(model, adapter_dir)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                apply_adapters(model, make_adapter_config(adapter, rank, None, model.config.default_targets))
    elif adapter_dir is not None:
        raise ConfigError("the model already carries adapters; drop adapter_dir (or pass the base model).")
    model.eval()
    return model, tokenizer


def _schedule(model: nn.Module, schedule: RankSchedule | str | Path | None) -> RankSchedule:
    if schedule is None:
        return current_schedule(model)
    if not isinstance(schedule, RankSchedule):
        schedule = RankSchedule.load(schedule)
    schedule.check_model(model)
    schedule.apply(model, step=0)
    return schedule


def _trainable(model: nn.Module) -> list[Trainable]:
    """Every trainable tensor with its slot and role, from the adapter protocol (``RankSlot``)."""
    rows = []
    for path, layer in adapter_layers(model).items():
        role_of = {}
        for name, slot in layer.rank_slots().items():
            role_of[slot.down], role_of[slot.up] = (name, contract.ROLE_DOWN), (name, contract.ROLE_UP)
        for param_name, p in layer.adapter_params().items():
            slot_name, role = role_of[param_name]
            rows.append(
                Trainable(
                    f"{contract.TRAINABLE_PREFIX}{path}.{param_name}",
                    path,
                    slot_name,
                    role,
                    param_name,
                    tuple(p.shape),
                    str(p.dtype).removeprefix("torch."),
                )
            )
    return rows


def _backbone(model: nn.Module) -> dict[str, Any]:
    """Bytes of the frozen weights by dtype (persistent state, adapter tensors and masks left out)."""
    skip = set(adapter_parameters(model))
    skip |= {
        f"{path}.{name}"
        for path, layer in adapter_layers(model).items()
        for name, _ in layer.named_buffers(recurse=False)
    }
    by_dtype: Counter[str] = Counter()
    for name, t in model.state_dict().items():
        if name not in skip:
            by_dtype[str(t.dtype).removeprefix("torch.")] += t.numel() * t.element_size()
    return {
        "quant": model.config.quant,
        "bytes_by_dtype": dict(sorted(by_dtype.items())),
        "total_bytes": sum(by_dtype.values()),
    }


def _backbone_parameters(model: nn.Module) -> int:
    """Frozen numbers of the model (a quantised weight counts its logical ``out * in``)."""
    skip = {id(p) for p in adapter_parameters(model).values()}
    total = 0
    for module in model.modules():
        if isinstance(module, QuantLinear):
            total += module.in_features * module.out_features + (
                module.bias.numel() if module.bias is not None else 0
            )
            continue
        for t in [
            *module.parameters(recurse=False),
            *(
                b
                for n, b in module.named_buffers(recurse=False)
                if n not in module._non_persistent_buffers_set
            ),
        ]:
            if id(t) not in skip and not isinstance(module, AdapterLayer):
                total += t.numel()
    return total


def _rank_schedule(schedule: RankSchedule, model: nn.Module) -> dict[str, Any]:
    """The bundle's schedule: each slot's branch scale (alpha / r_max, which a runtime needs to
    write the personal adapter), the adapter dropout and the mask inputs in graph order."""
    layers = adapter_layers(model)
    bundled = copy.deepcopy(schedule)
    for module, slots in bundled.modules.items():
        for slot, info in slots.items():
            info[contract.SlotKey.SCALE] = layers[module].rank_slots()[slot].scale
    bundled.dropout = next(iter(layers.values())).dropout_p
    bundled.mask_inputs = [MaskInput(s.module, s.slot, s.r_max) for s in mask_slots(model)]
    return bundled.validate().to_dict(performance_model=False)


def build_manifest(
    fmt: str,
    model: nn.Module,
    tokenizer: Any,
    schedule: RankSchedule,
    batch_size: int,
    methods: dict[str, Any],
    optimizer: OptimizerDefaults,
) -> dict[str, Any]:
    spec = model.config.input_spec
    inputs = BundleInputSpec(
        spec,
        batch_size,
        model.num_image_tokens + spec.max_text_len,
        TokenIds(*special_token_ids(tokenizer, spec)),
        contract.TOKENIZER_FILE,
    )
    return {
        Key.SCHEMA: contract.SCHEMA_NAME,
        Key.SCHEMA_VERSION: contract.SCHEMA_VERSION,
        Key.FORMAT: fmt,
        Key.SDK_VERSION: __version__,
        Key.MODEL: {
            "name": model.config.name,
            "quant": model.config.quant,
            "parameters": _backbone_parameters(model),
            "num_image_tokens": model.num_image_tokens,
            "vocab_size": int(model.config.text["vocab_size"]),
            "adapter": schedule.adapter,
            "config": model.config.to_dict(),
        },
        Key.INPUT_SPEC: inputs.to_dict(),
        Key.METHODS: methods,
        Key.TRAINABLE: [t.to_dict() for t in _trainable(model)],
        Key.RANK_SCHEDULE: _rank_schedule(schedule, model),
        Key.PERFORMANCE_MODEL: schedule.performance_model,
        Key.OPTIMIZER: optimizer.to_dict(),
        Key.BACKBONE: _backbone(model),
    }


def export_bundle(
    source: str | Path | tuple[nn.Module, Any],
    fmt: str,
    out: str | Path,
    quant: str | None = None,
    schedule: RankSchedule | str | Path | None = None,
    adapter: str = "lora",
    rank: int = 8,
    adapter_dir: str | Path | None = None,
    batch_size: int = 8,
    lr: float | None = None,
    xnnpack: bool = True,
    make_zip: bool = False,
    answers: list[str] | None = None,
    seed: int = 0,
    pte_options: PteOptions | None = None,
) -> BundleResult:
    """Export a trainable bundle of format ``fmt`` (:data:`~.contract.FORMATS`) to ``out``.

    ``source``: a model directory or ``(model, tokenizer)`` (copied, never edited). ``quant``:
    quantise a float backbone first (none|int8|int4). ``schedule``: a ``RankSchedule`` or its
    JSON path. ``lr`` overrides the format's default optimiser learning rate (the Core ML head's
    too, which also trains at ``batch_size``). ``answers``
    (coreml): the fixed answer vocabulary of the updatable head (default: the digit names).
    ``seed``: initialisation of the default adapters (when ``source`` has none and no
    ``adapter_dir`` is given). ``xnnpack`` (pte): delegate to XNNPACK; ``pte_options``: every
    switch of the ExecuTorch export (:class:`.pte.PteOptions`, defaults: the shipped export), for
    measuring what each buys; give one or the other.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r} is unknown; expected one of {FORMATS.names()}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1.")
    if pte_options is None:
        pte_options = PteOptions(xnnpack=xnnpack)
    elif not xnnpack:
        raise ConfigError("xnnpack=False and pte_options were both given; set PteOptions(xnnpack=False) instead.")
    exporter = FORMATS[fmt]
    exporter.require()  # fail before any work when the format's optional package is missing
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output directory {out} exists and is not empty; choose a new --out or delete it.")
    start = time.perf_counter()
    model, tokenizer = prepare_model(source, quant, adapter, rank, adapter_dir, seed)
    sched = _schedule(model, schedule)
    out.mkdir(parents=True, exist_ok=True)
    pad_id = special_token_ids(tokenizer, model.config.input_spec)[0]
    optimizer = copy.deepcopy(exporter.default_optimizer)
    if lr is not None:
        optimizer.lr = lr
    job = ExportJob(model, tokenizer, out, batch_size, pad_id, optimizer, answers, pte_options)
    methods, files = exporter.export(job)
    save_tokenizer(tokenizer, out)
    manifest = build_manifest(fmt, model, tokenizer, sched, batch_size, methods, optimizer)
    terms = (exporter.step_terms or adapter_step_terms)(job)
    manifest[Key.MEMORY_BOUND] = memory_bound(job, manifest[Key.BACKBONE][contract.BackboneKey.TOTAL_BYTES], terms, manifest[Key.OPTIMIZER])
    write_manifest(out, manifest, [*files, contract.TOKENIZER_FILE])
    seconds = time.perf_counter() - start
    sizes = {name: size_of(out / name) for name in [*files, contract.TOKENIZER_FILE, contract.MANIFEST_FILE]}
    result = BundleResult(path=out, manifest=manifest, seconds=seconds, sizes=sizes)
    if make_zip:
        result.zip_path = zip_bundle(out)
    logger.info("exported %s bundle to %s in %.1fs (%d bytes)", fmt, out, seconds, result.total_bytes)
    return result


def zip_bundle(bundle: Path, zip_path: Path | None = None) -> Path:
    """One-file copy of a bundle directory (``<bundle>.zip``, paths relative to the bundle)."""
    bundle = Path(bundle)
    zip_path = zip_path or bundle.with_suffix(".zip")
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(bundle.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(bundle).as_posix())
    return zip_path
