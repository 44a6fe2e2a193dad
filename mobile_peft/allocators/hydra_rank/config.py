"""Configuration of the ``hydra-rank`` allocator."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...core.errors import ConfigError

MODELS = ("logrank", "spectral")


@dataclass
class HydraRankConfig:
    """Warm-up, probe runs, the performance model and the dynamic phases of HyDRA."""

    warmup_steps: int = field(
        default=10, metadata={"help": "Steps at uniform rank that collect gradient signals."}
    )
    probes: int = field(
        default=6, metadata={"help": "Probe runs (rank configurations) the performance model is fitted on."}
    )
    probe_steps: int = field(
        default=8, metadata={"help": "Steps of each probe run (from the warm-up state)."}
    )
    probe_batch_size: int = field(default=16, metadata={"help": "Batch size of the warm-up and the probes."})
    probe_val: int = field(default=96, metadata={"help": "Training examples held out to score the probes."})
    lr: float = field(default=3e-3, metadata={"help": "Learning rate of the warm-up and the probes."})
    ridge: float | None = field(
        default=1.0,
        metadata={
            "help": "Ridge strength of the performance model's per-group corrections (relative); None: chosen by "
            "leave-one-out error over the probes (measured no better on the rank benchmark: benchmarks/README.md)."
        },
    )
    model: str = field(
        default="logrank",
        metadata={
            "help": "Performance model: 'logrank' (one gradient signal per slot; the phones' re-allocation reads it) "
            "or 'spectral' (each slot's gradient spectrum, measured again at every re-allocation point)."
        },
    )
    spectrum_batches: int = field(
        default=4, metadata={"help": "Batches whose summed gradient gives each slot's spectrum (model='spectral')."}
    )
    min_rank: int = field(
        default=1, metadata={"help": "Smallest rank of any slot (keeps every slot's signal alive)."}
    )
    reallocate_every: int | None = field(
        default=None,
        metadata={"help": "Re-allocate every K training steps (None: at 1/3 and 2/3 of the run; 0: never)."},
    )
    min_gain: float = field(
        default=0.002,
        metadata={"help": "Re-allocate only if the model predicts this relative loss decrease."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the probe configurations and batches."})

    def __post_init__(self) -> None:
        for name in ("warmup_steps", "probes", "probe_steps", "probe_batch_size", "probe_val", "spectrum_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}; expected an integer >= 1.")
        if self.probes < 3:
            raise ConfigError(f"probes={self.probes}; the performance model needs at least 3 probe runs.")
        if self.ridge is not None and not self.ridge > 0:
            raise ConfigError(
                f"ridge={self.ridge}; expected a positive number, or None to choose it by leave-one-out."
            )
        if self.model not in MODELS:
            raise ConfigError(f"model={self.model!r}; expected one of {', '.join(MODELS)}.")
        if self.model == "spectral" and self.ridge is None:
            raise ConfigError("ridge=None (leave-one-out) is for model='logrank'; give the spectral model a ridge strength.")
        if self.min_rank < 0:
            raise ConfigError(f"min_rank={self.min_rank}; expected >= 0.")
        if self.reallocate_every is not None and self.reallocate_every < 0:
            raise ConfigError(f"reallocate_every={self.reallocate_every}; expected >= 0 or None.")
