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
from mobile_peft.data import IGNORE_INDEX, save_tokenizer, special_token_ids
from mobile_peft.errors import ConfigError
from mobile_peft.models import load_model
from mobile_peft.quant import QuantLinear, check_quant_mode, quantize_model
from mobile_peft.train.job import make_adapter_config

from . import contract
from .contract import Key
from .manifest import write_manifest
from .wrappers import EvalWrapper, TrainingWrapper, mask_slots

__all__ = ["BundleResult", "OptimizerDefaults", "export_bundle", "prepare_model", "zip_bundle"]

logger = logging.getLogger(__name__)


@dataclass
class OptimizerDefaults:
    """What the phone's optimiser starts from (SGD for ``pte``: the only one on device; AdamW
    for ``onnx``; the Core ML head's SGD)."""

    name: str
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        if self.name == "sgd":
            return {"name": "sgd", "lr": self.lr, "momentum": self.momentum}
        return {"name": self.name, "lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}


DEFAULT_OPTIMIZERS = {
    contract.FORMAT_PTE: OptimizerDefaults("sgd", 5e-2),
    contract.FORMAT_ONNX: OptimizerDefaults("adamw", 3e-3),  # torch.optim.AdamW semantics (onnx.py)
    contract.FORMAT_COREML: OptimizerDefaults("sgd", 1e-2),
}


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
                raise ConfigError(f"the model is stored {model.config.quant}; it cannot be re-quantised to {quant}.")
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


def example_inputs(model: nn.Module, batch_size: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    spec = model.config.input_spec
    pixels = torch.zeros(batch_size, 3, spec.image_size, spec.image_size)
    ids = torch.full((batch_size, spec.max_text_len), pad_id, dtype=torch.long)
    labels = torch.full((batch_size, spec.max_text_len), IGNORE_INDEX, dtype=torch.long)
    labels[:, -1] = pad_id  # one labelled token so tracing sees a finite loss
    return pixels, ids, labels


def _tensor_spec(name: str, t: torch.Tensor) -> dict[str, Any]:
    return {"name": name, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}


def _trainable(model: nn.Module, prefix: str) -> list[dict[str, Any]]:
    rows = []
    for path, layer in adapter_layers(model).items():
        slot_of = {}
        for name, slot in layer.rank_slots().items():
            slot_of[slot.down], slot_of[slot.up] = name, name
        for param_name, p in layer.adapter_params().items():
            rows.append({"name": f"{prefix}{path}.{param_name}", "module": path, "slot": slot_of[param_name], "param": param_name,
                         "shape": list(p.shape), "dtype": str(p.dtype).removeprefix("torch.")})
    return rows


def _backbone(model: nn.Module) -> dict[str, Any]:
    """Bytes of the frozen weights by dtype (persistent state, adapter tensors and masks left out)."""
    skip = set(adapter_parameters(model))
    skip |= {f"{path}.{name}" for path, layer in adapter_layers(model).items() for name, _ in layer.named_buffers(recurse=False)}
    by_dtype: Counter[str] = Counter()
    for name, t in model.state_dict().items():
        if name not in skip:
            by_dtype[str(t.dtype).removeprefix("torch.")] += t.numel() * t.element_size()
    return {"quant": model.config.quant, "bytes_by_dtype": dict(sorted(by_dtype.items())), "total_bytes": sum(by_dtype.values())}


def _backbone_parameters(model: nn.Module) -> int:
    """Frozen numbers of the model (a quantised weight counts its logical ``out * in``)."""
    skip = {id(p) for p in adapter_parameters(model).values()}
    total = 0
    for module in model.modules():
        if isinstance(module, QuantLinear):
            total += module.in_features * module.out_features + (module.bias.numel() if module.bias is not None else 0)
            continue
        for t in [*module.parameters(recurse=False), *(b for n, b in module.named_buffers(recurse=False) if n not in module._non_persistent_buffers_set)]:
            if id(t) not in skip and not isinstance(module, AdapterLayer):
                total += t.numel()
    return total


def _rank_schedule(schedule: RankSchedule, model: nn.Module) -> dict[str, Any]:
    d = schedule.to_dict()
    d.pop("performance_model", None)
    layers = adapter_layers(model)
    for module, info in d["modules"].items():  # the branch scale (alpha / r_max) a runtime needs to save adapters
        for slot, slot_info in info["slots"].items():
            slot_info["scale"] = layers[module].rank_slots()[slot].scale
    d["masks"] = [{"module": s.module, "slot": s.slot, "r_max": s.r_max, "input": s.input_name,
                   "applied_as": "graph input [r_max] f32 multiplying the rank dimension"} for s in mask_slots(model)]
    return d


def build_manifest(fmt: str, model: nn.Module, tokenizer: Any, schedule: RankSchedule, batch_size: int, methods: dict[str, Any],
                   trainable_prefix: str, optimizer: OptimizerDefaults) -> dict[str, Any]:
    spec = model.config.input_spec
    pad, bos, eos = special_token_ids(tokenizer, spec)
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
        Key.INPUT_SPEC: {
            **spec.to_dict(),
            "sequence_length": model.num_image_tokens + spec.max_text_len,
            "batch_size": batch_size,
            "token_ids": {"pad": pad, "bos": bos, "eos": eos, "ignore_index": IGNORE_INDEX},
            "tokenizer_file": contract.TOKENIZER_FILE,
        },
        Key.METHODS: methods,
        Key.TRAINABLE: _trainable(model, trainable_prefix),
        Key.RANK_SCHEDULE: _rank_schedule(schedule, model),
        Key.PERFORMANCE_MODEL: schedule.performance_model,
        Key.OPTIMIZER: optimizer.to_dict(),
        Key.BACKBONE: _backbone(model),
    }


def _io(model: nn.Module, batch_size: int, pad_id: int, with_weights: bool) -> tuple[tuple, tuple, dict[str, Any]]:
    train = TrainingWrapper(model)
    inputs = (*example_inputs(model, batch_size, pad_id), *train.example_masks())
    names = [contract.INPUT_PIXEL_VALUES, contract.INPUT_IDS, contract.INPUT_LABELS, *(s.input_name for s in train.slots)]
    specs = [_tensor_spec(n, t) for n, t in zip(names, inputs)]
    eval_inputs = inputs
    eval_specs = list(specs)
    if with_weights:
        weights = tuple(p.detach().clone() for p in adapter_parameters(model).values())
        eval_inputs = (*inputs, *weights)
        eval_specs += [_tensor_spec("model." + n, t) for n, t in zip(train.trainable_names, weights)]
    return inputs, eval_inputs, {"train_inputs": specs, "eval_inputs": eval_specs}


def _export_pte(model: nn.Module, out: Path, batch_size: int, pad_id: int, xnnpack: bool) -> tuple[dict[str, Any], list[str]]:
    from .pte import export_pte

    inputs, eval_inputs, io = _io(model, batch_size, pad_id, with_weights=True)
    info = export_pte(TrainingWrapper(model), EvalWrapper(model, weights_as_inputs=True), inputs, eval_inputs, out, xnnpack=xnnpack)
    methods = {
        "train": {"method": contract.METHOD_TRAIN, "inputs": io["train_inputs"], "outputs": [contract.OUTPUT_LOSS],
                  "gradients_index_method": contract.ET_GRADIENTS_INDEX_PREFIX + contract.METHOD_TRAIN,
                  "parameters_index_method": contract.ET_PARAMETERS_INDEX_PREFIX + contract.METHOD_TRAIN,
                  "fqn_method": contract.ET_FQN_PREFIX + contract.METHOD_TRAIN},
        "eval": {"method": contract.METHOD_EVAL, "inputs": io["eval_inputs"], "outputs": [contract.OUTPUT_LOSS, contract.OUTPUT_LOGITS]},
        "program": contract.PTE_FILE,
        "trainable_data": contract.PTD_FILE,
        "xnnpack": info["xnnpack"],
        "executorch_version": _version("executorch"),
    }
    return methods, info["files"]


def _export_onnx(model: nn.Module, out: Path, batch_size: int, pad_id: int, optimizer: OptimizerDefaults) -> tuple[dict[str, Any], list[str]]:
    from .onnx import export_onnx

    inputs, _, io = _io(model, batch_size, pad_id, with_weights=False)
    info = export_onnx(model, inputs, [d["name"] for d in io["train_inputs"]], out, optimizer)
    methods = {"train_inputs": io["train_inputs"], **info["methods"]}
    return methods, info["files"]


def _export_coreml(model: nn.Module, tokenizer: Any, out: Path, batch_size: int, answers: list[str] | None) -> tuple[dict[str, Any], list[str]]:
    from .coreml import export_coreml

    info = export_coreml(model, tokenizer, out, answers=answers)
    return info["methods"], info["files"]


def _require_backend(fmt: str) -> None:
    if fmt == contract.FORMAT_PTE:
        from .pte import _require_executorch as require
    elif fmt == contract.FORMAT_ONNX:
        from .onnx import _require_ort_training as require
    else:
        from .coreml import _require_coremltools as require
    require()


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


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
) -> BundleResult:
    """Export a trainable bundle of format ``fmt`` (:data:`~.contract.FORMATS`) to ``out``.

    ``source``: a model directory or ``(model, tokenizer)`` (copied, never edited). ``quant``:
    quantise a float backbone first (none|int8|int4). ``schedule``: a ``RankSchedule`` or its
    JSON path. ``lr`` overrides the format's default optimiser learning rate. ``answers``
    (coreml): the fixed answer vocabulary of the updatable head (default: the digit names).
    ``seed``: initialisation of the default adapters (when ``source`` has none and no
    ``adapter_dir`` is given).
    """
    if fmt not in contract.FORMATS:
        raise ConfigError(f"format={fmt!r} is unknown; expected one of {contract.FORMATS}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1.")
    _require_backend(fmt)  # fail before any work when the format's optional package is missing
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"output directory {out} exists and is not empty; choose a new --out or delete it.")
    start = time.perf_counter()
    model, tokenizer = prepare_model(source, quant, adapter, rank, adapter_dir, seed)
    sched = _schedule(model, schedule)
    out.mkdir(parents=True, exist_ok=True)
    pad_id = special_token_ids(tokenizer, model.config.input_spec)[0]
    optimizer = copy.deepcopy(DEFAULT_OPTIMIZERS[fmt])
    if lr is not None:
        optimizer.lr = lr
    prefix = "model."  # trainable tensor names in the graphs: the wrappers hold the model as `model`
    if fmt == contract.FORMAT_PTE:
        methods, files = _export_pte(model, out, batch_size, pad_id, xnnpack)
    elif fmt == contract.FORMAT_ONNX:
        methods, files = _export_onnx(model, out, batch_size, pad_id, optimizer)
    else:
        methods, files = _export_coreml(model, tokenizer, out, batch_size, answers)
    save_tokenizer(tokenizer, out)
    manifest = build_manifest(fmt, model, tokenizer, sched, batch_size, methods, prefix, optimizer)
    write_manifest(out, manifest, [*files, contract.TOKENIZER_FILE])
    seconds = time.perf_counter() - start
    from .manifest import size_of

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


def unzip_bundle(zip_path: Path, out: Path) -> Path:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(out)
    return out

