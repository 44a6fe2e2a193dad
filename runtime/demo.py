"""``runtime_demo``: the last act of ``mobile-peft demo`` -- train the exported bundle the way a
phone does, evaluate it, and profile its training memory against the device table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .evaluate import evaluate_bundle
from .profile import profile_bundle
from .trainer import TrainOptions, train_bundle

__all__ = ["runtime_demo"]


def runtime_demo(
    bundle_dir: str | Path,
    out_dir: str | Path,
    steps: int = 30,
    data: str = "digits:next-digit",
    devices: tuple[str, ...] = ("host", "galaxy-a14", "pixel-7", "iphone-12"),
    eval_limit: int = 64,
) -> dict[str, Any]:
    """Train ``steps`` on-device steps into ``out_dir``, evaluate before/after, profile per device.

    Returns ``{"train": ..., "accuracy_before": ..., "accuracy_after": ..., "profile": {device: report}}``;
    the profile of each device re-uses one measurement's numbers but its own budget and core count.
    """
    out_dir = Path(out_dir)
    before = evaluate_bundle(bundle_dir, data, limit=eval_limit)
    report = train_bundle(
        bundle_dir, out_dir, TrainOptions(steps=steps, data=data, checkpoint_every=max(1, steps // 3))
    )
    after = evaluate_bundle(bundle_dir, data, adapter=out_dir, limit=eval_limit)
    profiles = {device: profile_bundle(bundle_dir, device, steps=3) for device in devices}
    return {
        "train": report.as_dict(),
        "losses": report.losses,
        "events": report.events,
        "accuracy_before": before.accuracy,
        "accuracy_after": after.accuracy,
        "eval_loss_before": before.loss,
        "eval_loss_after": after.loss,
        "adapter_dir": str(out_dir),
        "profile": profiles,
        "profile_table": [
            {
                "device": d,
                "budget_bytes": p["app_budget_bytes"],
                "peak_growth_bytes": p["peak_growth_bytes"],
                "planned_total_bytes": p["planned_total_bytes"],
                "step_ms": round(1000 * p["step_seconds_median"], 1),
                "threads": p["threads"],
                "fits": p["fits"],
                "max_batch_size": p["max_batch_size"],
            }
            for d, p in profiles.items()
        ],
    }
