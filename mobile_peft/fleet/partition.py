"""Non-IID clients from the embedded digits data and their device ranks, deterministic in a seed.

Client ``i`` of a fleet (``seed``):

* task: ``tasks[i % len(tasks)]`` (e.g. ``next-digit``, ``parity``, ``rotated``, ``inverted``:
  new label mappings and shifted visual domains; the question names the task, so one global
  adapter can serve them all);
* classes: ``classes_per_client`` digits drawn from ``default_rng([seed, i])`` -- its label skew;
* data: up to ``train_examples`` images of those digits from the task's ``train`` split and
  ``eval_examples`` from its ``eval`` split (the shared stratified split of ``split_seed``), drawn
  without replacement by the same generator (clients of one task may share images, as phones of
  one population photograph similar things; a client's train and eval images never overlap);
* device tier: ``i % len(tier_ranks)``; its per-module ranks are ``tier_rank + d_m`` with a
  zero-sum pattern ``d_m`` in ``{-1, 0, +1}`` shuffled per client (HyDRA-style: modules differ
  in rank inside one phone, the phone's total stays its tier's), clipped to ``1..r_max``.

Held-out clients are the indices ``n_clients .. n_clients + n_heldout - 1`` of the same generator:
never sampled for training, used for global and personalised accuracy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from mobile_peft.core.digits import DIGIT_NAMES, DIGIT_TASKS, load_digits_task
from mobile_peft.core.errors import ConfigError
from mobile_peft.core.examples import VQAExample
from mobile_peft.core.schedule import Ranks

from .updates import Layout

__all__ = ["ClientData", "PartitionConfig", "client_data", "client_ranks"]


@dataclass(frozen=True)
class PartitionConfig:
    tasks: tuple[str, ...] = ("next-digit", "parity", "rotated", "inverted")
    classes_per_client: int = 4
    train_examples: int = 32
    eval_examples: int = 24
    tier_ranks: tuple[int, ...] = (2, 4, 6)
    seed: int = 0
    split_seed: int = 0

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in DIGIT_TASKS]
        if not self.tasks or unknown:
            raise ConfigError(f"tasks {list(self.tasks)}: unknown {unknown}; expected some of {DIGIT_TASKS.names()}.")
        if not 1 <= self.classes_per_client <= 10:
            raise ConfigError(f"classes_per_client={self.classes_per_client}; expected 1..10.")
        if self.train_examples < 1 or self.eval_examples < 1:
            raise ConfigError("train_examples and eval_examples must be >= 1.")
        if not self.tier_ranks or any(r < 0 for r in self.tier_ranks):
            raise ConfigError(f"tier_ranks={self.tier_ranks}; expected ranks >= 0, e.g. (2, 4, 6).")


@dataclass(frozen=True)
class ClientData:
    index: int
    task: str
    classes: tuple[int, ...]
    tier: int
    train: list[VQAExample]
    eval: list[VQAExample]


@functools.lru_cache(maxsize=16)
def _labelled(task: str, split: str, split_seed: int) -> tuple[list[VQAExample], np.ndarray]:
    """A task's split and each example's digit (the split's order is the same for every task)."""
    examples = load_digits_task(task, split, seed=split_seed)
    digits = np.asarray([DIGIT_NAMES.index(e.answer) for e in load_digits_task("digit-name", split, seed=split_seed)])
    return examples, digits


def client_data(index: int, config: PartitionConfig) -> ClientData:
    if index < 0:
        raise ConfigError(f"client index {index}; expected >= 0.")
    rng = np.random.default_rng([config.seed, index])
    task = config.tasks[index % len(config.tasks)]
    classes = tuple(sorted(int(c) for c in rng.choice(10, size=config.classes_per_client, replace=False)))
    picked = []
    for split, count in (("train", config.train_examples), ("eval", config.eval_examples)):
        examples, digits = _labelled(task, split, config.split_seed)
        pool = np.flatnonzero(np.isin(digits, classes))
        chosen = rng.choice(pool, size=min(count, pool.size), replace=False)
        picked.append([examples[i] for i in chosen])
    return ClientData(index, task, classes, index % len(config.tier_ranks), picked[0], picked[1])


def client_ranks(layout: Layout, index: int, config: PartitionConfig, uniform: int | None = None) -> Ranks:
    """The per-module ranks of client ``index`` (its tier's, see the module docstring), or
    ``uniform`` on every slot (the equal-rank FedAvg baseline)."""
    if uniform is not None:
        return layout.uniform_ranks(uniform)
    base = config.tier_ranks[index % len(config.tier_ranks)]
    n = len(layout.slots)
    pattern = np.resize(np.asarray([1, -1] if base else [0]), n)
    if n % 2:
        pattern[-1] = 0
    pattern = np.random.default_rng([config.seed, index, 1]).permutation(pattern)
    out: Ranks = {}
    for (m, s), d in zip(layout.slots, pattern):
        r_max = layout.r_max((m, s))
        out.setdefault(m, {})[s] = int(np.clip(base + d, 1 if base else 0, r_max))
    return out
