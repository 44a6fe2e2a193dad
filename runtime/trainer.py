"""The on-device training loop: bundle + data -> trained adapter, resumable after a crash.

Per step: take the next batch of the :class:`~.data.DataStream`, feed it with the rank masks of
the current phase to the engine's joint graph, update the trainable tensors with the optimiser.
At a phase boundary of the manifest's rank schedule the masks change; with on-device
re-allocation (hydra-rank bundles) the shipped performance model may change them too. Every change
is logged and recorded. Every ``checkpoint_every`` steps (and at the end) a checkpoint is written
atomically (:mod:`.checkpoint`); ``resume=True`` continues from the newest one, and because the
data position, the optimiser state, the ranks and the re-allocation signals are all in it, the
resumed run ends with the same tensors as an uninterrupted one.

At the end: the personal adapter (``adapter_config.json`` + ``adapter_model.safetensors``) and
``train_log.json`` in the run directory.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mobile_peft.core.datasets import load_dataset
from mobile_peft.core.errors import ConfigError, DivergedError
from mobile_peft.core.schedule import Ranks
from mobile_peft.core.units import unit_key

from .adapter import write_adapter
from .bundle import Bundle
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .data import DataStream, StreamPosition
from .engine import Engine, make_engine
from .realloc import Reallocator

__all__ = ["TrainOptions", "TrainReport", "train_bundle"]

logger = logging.getLogger(__name__)
TRAIN_LOG = "train_log.json"


@dataclass
class TrainOptions:
    steps: int = 30
    data: str = "digits"
    checkpoint_every: int = 10
    lr: float | None = None
    optimizer: str | None = None  # default: the manifest's
    seed: int = 0
    train_limit: int | None = None
    on_device_realloc: bool = False
    realloc_every: int | None = None  # default: a third of the run
    keep_checkpoints: int = 2
    skip_bad: bool = False  # leave bad data-folder lines out (listed in the report) instead of failing
    max_bad_steps: int = 5  # steps with a non-finite loss or gradient tolerated (not applied) before stopping

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps={self.steps}; expected >= 1.")
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every={self.checkpoint_every}; expected >= 1.")
        if self.max_bad_steps < 0:
            raise ConfigError(f"max_bad_steps={self.max_bad_steps}; expected >= 0.")


@dataclass
class TrainReport:
    run_dir: Path
    steps: int
    losses: list[float]
    events: list[dict[str, Any]]
    resumed_from: int | None
    seconds: float
    step_seconds: list[float] = field(default_factory=list)
    adapter_dir: Path | None = None
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "steps": self.steps,
            "resumed_from": self.resumed_from,
            "first_loss": self.losses[0] if self.losses else None,
            "final_loss": self.losses[-1] if self.losses else None,
            "rank_changes": sum(1 for e in self.events if e["kind"] in ("phase", "realloc") and e.get("applied", True)),
            "bad_steps": sum(1 for e in self.events if e["kind"] == "bad_step"),
            "skipped": self.skipped,
            "seconds": round(self.seconds, 2),
            "mean_step_ms": round(1000 * float(np.mean(self.step_seconds)), 2) if self.step_seconds else None,
            "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None,
        }


class _Run:
    """The mutable state of one run (everything a checkpoint holds)."""

    def __init__(self, bundle: Bundle, engine: Engine, opts: TrainOptions, run_dir: Path) -> None:
        self.bundle, self.engine, self.opts, self.run_dir = bundle, engine, opts, run_dir
        self.schedule = bundle.schedule
        self.skipped: list[str] = []
        examples = load_dataset(opts.data, "train", seed=opts.seed, limit=opts.train_limit, skip_bad=opts.skip_bad,
                                skipped=self.skipped)
        self.stream = DataStream(examples, bundle.encoder(), StreamPosition(seed=opts.seed))
        self.step = 0
        self.phase = 0
        self.ranks = self.schedule.ranks(0)
        self.masks = self.schedule.phase_masks(0)
        self.losses: list[float] = []
        self.events: list[dict[str, Any]] = []
        self.realloc: Reallocator | None = None
        if opts.on_device_realloc:
            every = opts.realloc_every if opts.realloc_every is not None else max(1, opts.steps // 3)
            self.realloc = Reallocator(
                self.schedule, bundle.performance_model, bundle.trainable, every, opts.steps, seed=opts.seed
            )

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self) -> Path:
        state = self.engine.state()
        bad = sorted(k for k, v in state.tensors.items() if not np.isfinite(v).all())
        if bad:  # never replace the last good checkpoint with a broken state
            last = latest_checkpoint(self.run_dir)
            raise DivergedError(
                f"at step {self.step} the trained tensors are not finite ({bad[:3]}); the checkpoint was not written, "
                f"the last good one is {last}. Lower the learning rate (--lr) and resume or restart."
            )
        meta = {
            "format": self.bundle.format,
            "optimizer_step": state.optimizer_step,
            "phase": self.phase,
            "ranks": self.ranks,
            "masks": [m.tolist() for m in self.masks],
            "position": self.stream.position.as_dict(),
            "losses": self.losses,
            "events": self.events,
            "realloc": self.realloc.state() if self.realloc else None,
            "options": {"data": self.opts.data, "seed": self.opts.seed, "steps": self.opts.steps},
            # Every random draw is a pure function of (seed, position): nothing else to store.
            "rng": {
                "data_order": "numpy default_rng([seed, epoch]).permutation",
                "realloc_init": "numpy default_rng([seed, step]).uniform",
            },
        }
        return save_checkpoint(
            self.run_dir, self.step, state.tensors, meta, state.write_files, keep=self.opts.keep_checkpoints
        )

    def restore(self, path: Path) -> None:
        tensors, meta = load_checkpoint(path)
        if meta.get("format") != self.bundle.format:
            raise ConfigError(
                f"checkpoint {path} was written by a {meta.get('format')!r} run; this bundle is {self.bundle.format!r}."
            )
        if meta["options"]["data"] != self.opts.data or meta["options"]["seed"] != self.opts.seed:
            raise ConfigError(
                f"checkpoint {path} trained on --data {meta['options']['data']} --seed {meta['options']['seed']}; "
                "resume with the same --data and --seed (or start a new --out)."
            )
        self.step, self.phase, self.ranks = int(meta["step"]), int(meta["phase"]), meta["ranks"]
        self.masks = [np.asarray(m, dtype=np.float32) for m in meta["masks"]]
        self.stream.position = StreamPosition(**meta["position"])
        self.losses, self.events = list(meta["losses"]), list(meta["events"])
        self.engine.restore(path, tensors, int(meta["optimizer_step"]))
        if self.realloc and meta.get("realloc"):
            self.realloc.load_state(meta["realloc"])

    # -- steps -------------------------------------------------------------------------------------
    def _log(self, event: dict[str, Any]) -> None:
        event = {"step": self.step, **event}
        self.events.append(event)
        logger.info("step %d: %s", self.step, json.dumps(event, sort_keys=True))

    def _set_ranks(self, ranks: Ranks, masks: list[np.ndarray]) -> None:
        self.ranks, self.masks = ranks, masks

    def before_step(self) -> None:
        phase = self.schedule.phase_index(self.step)
        if phase != self.phase:
            old = self.ranks
            self._set_ranks(self.schedule.ranks(phase), self.schedule.phase_masks(phase))
            self.phase = phase
            self._log(
                {
                    "kind": "phase",
                    "phase": phase,
                    "params": self.schedule.params(self.ranks),
                    "changed": _changes(old, self.ranks),
                }
            )
        if self.realloc is not None and self.realloc.due(self.step):
            decision = self.realloc.decide(self.step, self.ranks)
            if decision.applied:
                params = self.engine.parameters()
                new = self.realloc.grow(params, decision)
                self.engine.set_parameters(params)  # a no-op copy for pte (live views), a write-back for onnx
                self._set_ranks(new, self.schedule.input_masks(new))
            self._log(decision.event(self.schedule.budget_params))

    def one_step(self) -> float:
        pixels, ids, labels = self.stream.next_batch()
        loss = self.engine.forward_backward([pixels, ids, labels, *self.masks])
        grads = self.engine.gradients()
        broken = [n for n, g in grads.items() if not np.isfinite(g).all()]
        if not np.isfinite(loss) or broken:
            # Not applied: the weights stay those of the last good step (and so do checkpoints).
            self.engine.discard()
            self._log({"kind": "bad_step", "applied": False, "loss": loss if np.isfinite(loss) else str(loss),
                       "non_finite_gradients": broken[:5]})
            bad_steps = sum(1 for e in self.events if e["kind"] == "bad_step")
            if bad_steps > self.opts.max_bad_steps:
                raise DivergedError(
                    f"{bad_steps} training steps had a non-finite loss or gradient (the last at step {self.step + 1}; "
                    f"--max-bad-steps is {self.opts.max_bad_steps}); none was applied and the last good checkpoint "
                    f"{latest_checkpoint(self.run_dir)} is intact. Lower the learning rate (--lr) or check the data."
                )
        else:
            if self.realloc is not None:
                self.realloc.observe(grads, self.ranks)
            self.engine.step()
        self.step += 1
        self.losses.append(loss)
        return loss


def _changes(old: Ranks, new: Ranks) -> dict[str, list[int]]:
    return {
        unit_key(m, s): [old[m][s], r] for m, slots in new.items() for s, r in slots.items() if old[m][s] != r
    }


def train_bundle(
    bundle: str | Path | Bundle,
    run_dir: str | Path,
    options: TrainOptions,
    resume: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Train ``bundle`` for ``options.steps`` steps (in total, counting resumed ones) into ``run_dir``."""
    start = time.perf_counter()
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(bundle, make_engine(bundle, options.lr, options.optimizer), options, run_dir)
    resumed_from = None
    if resume:
        last = latest_checkpoint(run_dir)
        if last is not None:
            run.restore(last)
            resumed_from = run.step
            logger.info("resumed from %s (step %d)", last, run.step)
    elif latest_checkpoint(run_dir) is not None:
        raise ConfigError(
            f"{run_dir} already holds checkpoints; pass --resume to continue, or choose a new --out."
        )
    step_seconds = []
    while run.step < options.steps:
        run.before_step()
        t = time.perf_counter()
        loss = run.one_step()
        step_seconds.append(time.perf_counter() - t)
        if on_step is not None:
            on_step(run.step, loss)
        if run.step % options.checkpoint_every == 0 or run.step == options.steps:
            run.save()
    if run.step and latest_checkpoint(run_dir) is None:
        run.save()
    adapter_dir = write_adapter(bundle, run.engine.parameters(), run.masks, run_dir)
    report = TrainReport(
        run_dir,
        run.step,
        run.losses,
        run.events,
        resumed_from,
        time.perf_counter() - start,
        step_seconds,
        adapter_dir,
        run.skipped,
    )
    (run_dir / TRAIN_LOG).write_text(
        json.dumps(
            {
                **report.as_dict(),
                "losses": run.losses,
                "events": run.events,
                "final_ranks": run.ranks,
                "bundle": str(bundle.path),
            },
            indent=1,
        )
        + "\n"
    )
    return report
