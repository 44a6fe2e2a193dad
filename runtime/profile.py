"""Memory and time profile of a bundle against a device's app budget.

* **planned** (``pte``): ExecuTorch plans memory ahead of time; the program records, per method,
  the sizes of its planned arenas (``execution_plan[i].non_const_buffer_sizes``; buffer 0 is
  reserved) and the constants (``constant_buffer`` tensors, delegate blobs, named data).
* **measured**: training steps in a separate process (:mod:`._profile_worker`), pinned to the
  device profile's big-core count: RSS before the bundle is loaded (the interpreter, numpy and the
  runtime library are already there, so they do not count), the peak after the steps (``VmHWM``
  reset just before loading; ``getrusage`` too), per-step RSS and time.
* **breakdown**: backbone (frozen bytes), adapters, gradients (one per adapter tensor), optimizer
  state, activations (``pte``: planned training arena minus adapters, gradients and inputs;
  ``onnx``: measured growth minus the rest, as ONNX Runtime plans nothing ahead -- so it also holds
  what ORT materialises for the backward, e.g. the fp32 dequantised copies of int8 weights).
* **lower bound** (``memory_bound`` in the manifest, written at export time; absent from bundles
  exported before it was recorded): quantised backbone + trainable tensors x (weights + gradients +
  optimiser states) + the activations the backward must keep (``export/memory_bound.py`` says how
  they are counted); ``ratio_to_bound`` = measured peak growth / the bound. A bundle this runtime
  cannot train (``coreml``: its head trains with ``MLUpdateTask`` on iOS) gets the bound only.
* **verdict**: measured peak growth against ``app_budget_bytes``; the largest batch size and text
  length that fit, extrapolating the activation bytes linearly (per example, per token; attention's
  quadratic terms make the sequence estimate optimistic for long sequences).

Why measured growth exceeds planned + constant bytes: the runtime's own allocations (the method's
value and instruction tables, XNNPACK's packed copies of delegated weights and its workspace,
kernel scratch), the gradient copies the Python loop takes, allocator slack and page granularity.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mobile_peft.core import contract
from mobile_peft.core.contract import BackboneKey, MemoryBoundKey, MethodKey, ModelKey
from mobile_peft.core.errors import MobilePeftError
from mobile_peft.core.manifest import optimizer_states

from .bundle import Bundle
from .devices import get_device

__all__ = ["TRAINED_FORMATS", "bound_report", "planned_memory", "profile_bundle", "ratio_to_bound"]

TRAINED_FORMATS = (contract.FORMAT_PTE, contract.FORMAT_ONNX)  # what this runtime trains (engine.py)

_INPUT_DTYPE_BYTES = {"float32": 4, "int64": 8, "float16": 2, "int32": 4}


def planned_memory(bundle: Bundle) -> dict[str, Any] | None:
    """Constant bytes and planned arena bytes per method of a ``pte`` bundle (None for others)."""
    if bundle.format != contract.FORMAT_PTE:
        return None
    from executorch.exir._serialize._program import deserialize_pte_binary

    pte = deserialize_pte_binary(bundle.file(bundle.methods[MethodKey.PROGRAM]).read_bytes())
    program = pte.program
    constant = sum(len(b.storage) for b in program.constant_buffer)
    delegate = sum(len(d.data) for d in program.backend_delegate_data)
    named = sum(len(b) for b in pte.named_data.buffers) if pte.named_data is not None else 0
    methods = {
        plan.name: [int(x) for x in plan.non_const_buffer_sizes[1:]] for plan in program.execution_plan
    }
    return {
        "constant_bytes": constant + delegate + named,
        "constant_tensor_bytes": constant,
        "delegate_blob_bytes": delegate + named,
        "trainable_data_bytes": bundle.file(bundle.methods[MethodKey.TRAINABLE_DATA]).stat().st_size,
        "arena_bytes_by_method": methods,
        "train_arena_bytes": sum(methods.get(bundle.methods[MethodKey.TRAIN][MethodKey.METHOD], [])),
    }


def _measure(bundle: Bundle, steps: int, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mobile-peft-profile-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            sys.executable,
            "-m",
            "mobile_peft.runtime._profile_worker",
            str(bundle.path),
            "--steps",
            str(steps),
            "--threads",
            str(threads),
            "--out",
            str(out),
        ]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)}
        )
        if proc.returncode != 0 or not out.is_file():
            raise MobilePeftError(
                f"the profiling process failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
            )
        return json.loads(out.read_text())


def _input_bytes(bundle: Bundle) -> int:
    inputs = bundle.input_spec
    b, s, t = inputs.batch_size, inputs.spec.image_size, inputs.spec.max_text_len
    masks = sum(e.r_max for e in bundle.schedule.mask_inputs)
    return b * 3 * s * s * 4 + 2 * b * t * 8 + 4 * masks


def _what_fits(fixed: float, activations: float, budget: float, batch: int, seq: int) -> tuple[int | None, int | None]:
    """(largest batch, largest sequence length) that fit ``budget`` when activations grow
    linearly in both and ``fixed`` does not; None when there are no activations to scale."""
    per_example = activations / batch if batch else 0
    per_token = per_example / seq if seq else 0
    room = max(budget - fixed, 0)  # nothing fits when the fixed part alone exceeds the budget
    max_batch = int(room // per_example) if per_example else None
    max_seq = int(room // (per_token * batch)) if per_token else None
    return max_batch, max_seq


def memory_estimate(bundle: Bundle, device: str = "host") -> dict[str, Any] | None:
    """The planned training memory of a ``pte`` bundle (arena + constants, no run needed) against
    ``device``'s app budget, with the batch size / sequence length that would fit; None for formats
    whose memory is not planned ahead (measure those with :func:`profile_bundle`)."""
    plan = planned_memory(bundle)
    if plan is None:
        return None
    budget = get_device(device).app_budget_bytes
    planned = plan["train_arena_bytes"] + plan["constant_bytes"]
    activations = max(plan["train_arena_bytes"] - 8 * sum(t.numel for t in bundle.trainable) - _input_bytes(bundle), 0)
    batch, seq = bundle.input_spec.batch_size, bundle.input_spec.sequence_length
    max_batch, max_seq = _what_fits(planned - activations, activations, budget, batch, seq)
    if max_batch:
        advice = f"re-export with --batch-size {min(max_batch, batch)} (or a sequence of at most {max_seq} tokens) to fit."
    else:
        advice = "even batch 1 does not fit: adapt fewer modules, quantise the backbone (int4), or use a larger device."
    return {"planned_bytes": planned, "budget_bytes": budget, "fits": planned <= budget, "batch_size": batch,
            "max_batch_size": max_batch, "max_sequence_length": max_seq, "advice": advice}


def ratio_to_bound(peak_growth_bytes: int | None, bound: dict[str, Any] | None) -> float | None:
    """Measured peak growth over the manifest's lower bound (None without either)."""
    if peak_growth_bytes is None or not bound or not bound[MemoryBoundKey.TOTAL_BYTES]:
        return None
    return round(peak_growth_bytes / bound[MemoryBoundKey.TOTAL_BYTES], 3)


def bound_report(bundle: Bundle) -> dict[str, Any]:
    """The bundle's identity and its recorded lower bound (what every profile report starts from)."""
    bound = bundle.manifest.memory_bound
    return {
        "bundle": str(bundle.path),
        "format": bundle.format,
        "model": bundle.manifest.model[ModelKey.NAME],
        "quant": bundle.manifest.backbone[BackboneKey.QUANT],
        "batch_size": bundle.input_spec.batch_size,
        "sequence_length": bundle.input_spec.sequence_length,
        "lower_bound": bound,
        "lower_bound_bytes": bound[MemoryBoundKey.TOTAL_BYTES] if bound else None,
    }


def profile_bundle(bundle: str | Path | Bundle, device: str = "host", steps: int = 5) -> dict[str, Any]:
    """Everything ``mobile-peft profile`` prints (see the module docstring); sizes in bytes."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    profile = get_device(device)
    if bundle.format not in TRAINED_FORMATS:
        return {**bound_report(bundle), "device": profile.name, "device_display_name": profile.display_name,
                "app_budget_bytes": profile.app_budget_bytes, "measured": False, "peak_growth_bytes": None,
                "ratio_to_bound": None,
                "notes": f"a {bundle.format} bundle does not train in this runtime (its head trains with MLUpdateTask "
                         "on iOS): the lower bound only, nothing measured."}
    host_cores = len(os.sched_getaffinity(0))
    threads = max(1, min(profile.training_threads, host_cores))
    plan = planned_memory(bundle)
    measured = _measure(bundle, steps, threads)
    growth = measured["peak_rss_bytes"] - measured["baseline_rss_bytes"]

    adapters = 4 * sum(t.numel for t in bundle.trainable)
    optimizer = optimizer_states(bundle.optimizer) * adapters
    backbone = int(bundle.manifest.backbone[BackboneKey.TOTAL_BYTES])
    inputs = _input_bytes(bundle)
    if plan is not None:
        activations = max(plan["train_arena_bytes"] - 2 * adapters - inputs, 0)
        planned_total = plan["train_arena_bytes"] + plan["constant_bytes"]
    else:
        activations = max(growth - backbone - 2 * adapters - optimizer - inputs, 0)
        planned_total = None
    breakdown = {
        "backbone_bytes": backbone,
        "adapter_bytes": adapters,
        "gradient_bytes": adapters,
        "optimizer_state_bytes": optimizer,
        "activation_bytes": activations,
        "input_bytes": inputs,
    }

    batch, text_len = bundle.input_spec.batch_size, bundle.input_spec.spec.max_text_len
    seq = bundle.input_spec.sequence_length
    budget = profile.app_budget_bytes
    max_batch, max_seq = _what_fits(max(growth - activations, 0), activations, budget, batch, seq)
    image_tokens = seq - text_len
    step_s = sorted(measured["step_seconds"][1:] or measured["step_seconds"])
    bounds = bound_report(bundle)
    return {
        **bounds,
        "device": profile.name,
        "device_display_name": profile.display_name,
        "app_budget_bytes": budget,
        "measured": True,
        "planned": plan,
        "planned_total_bytes": planned_total,
        "baseline_rss_bytes": measured["baseline_rss_bytes"],
        "peak_rss_bytes": measured["peak_rss_bytes"],
        "peak_source": measured["peak_source"],
        "ru_maxrss_bytes": measured["ru_maxrss_bytes"],
        "peak_growth_bytes": growth,
        "growth_over_planned": round(growth / planned_total, 3) if planned_total else None,
        "ratio_to_bound": ratio_to_bound(growth, bounds["lower_bound"]),
        "breakdown": breakdown,
        "threads": threads,
        "step_seconds_median": step_s[len(step_s) // 2],
        "load_seconds": measured["load_seconds"],
        "steps": steps,
        "rss_per_step_bytes": measured["rss_per_step_bytes"],
        "losses": measured["losses"],
        "fits": growth <= budget,
        "headroom_bytes": budget - growth,
        "max_batch_size": max_batch,
        "max_sequence_length": max_seq,
        "max_text_len": max(max_seq - image_tokens, 0) if max_seq is not None else None,
        "notes": (
            "step time measured on this host pinned to the device's big-core count; the phone's "
            "clock and kernels differ. Max batch/sequence: linear extrapolation of activation bytes."
        ),
    }
