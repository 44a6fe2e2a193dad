"""The child process of ``mobile-peft profile``: load a bundle, run training steps, report memory.

Run as ``python -m mobile_peft.runtime._profile_worker BUNDLE --steps N --threads K --out JSON``.
Everything the app needs before the bundle (interpreter, numpy, the runtime library, the encoded
batch) is loaded first; then the baseline RSS is read and the peak-RSS counter reset
(``/proc/self/clear_refs`` <- 5), so ``peak - baseline`` is what loading and training the bundle
costs. The process is pinned to ``K`` cores (``sched_setaffinity``) and the runtime's thread pool
is sized to ``K``.

With ``--hold`` (``mobile-peft profile --emulate``, :mod:`.emulate`) it talks to its parent on
stdin/stdout: once everything before the bundle is loaded it prints ``ready`` and waits for a line
on stdin (the parent then holds it to the device's budget), and it prints ``step N`` after each
step, so a parent whose child was killed knows how far it got.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from mobile_peft.core import contract


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("bundle", type=Path)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--hold", action="store_true", help="Print 'ready', wait for a line on stdin; print 'step N'.")
    args = p.parse_args(argv)

    cores = sorted(os.sched_getaffinity(0))[: max(1, args.threads)]
    os.sched_setaffinity(0, cores)
    from mobile_peft.core.datasets import load_dataset

    from .bundle import Bundle
    from .engine import make_engine

    bundle = Bundle.open(args.bundle)
    if bundle.format == contract.FORMAT_PTE:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(len(cores))
    else:
        import onnxruntime  # noqa: F401  (libraries count as the app's, not the bundle's)
    encoder = bundle.encoder()
    examples = load_dataset("digits", "train", limit=encoder.batch_size)
    batch = encoder.batch(examples)
    masks = bundle.schedule.phase_masks(0)
    if args.hold:
        print("ready", flush=True)
        if not sys.stdin.readline():  # the parent is gone: nobody holds this process to a budget
            return 1

    baseline = _status_bytes("VmRSS")
    peak_reset = _reset_peak()
    t0 = time.perf_counter()
    engine = make_engine(bundle)
    load_s = time.perf_counter() - t0
    after_load = _status_bytes("VmRSS")
    rss, times, losses = [], [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        losses.append(engine.forward_backward([*batch, *masks]))
        engine.step()
        times.append(time.perf_counter() - t)
        rss.append(_status_bytes("VmRSS"))
        if args.hold:
            print(f"step {len(times)}", flush=True)
    result = {
        "baseline_rss_bytes": baseline,
        "after_load_rss_bytes": after_load,
        "peak_rss_bytes": _status_bytes("VmHWM") if peak_reset else max(rss),
        "peak_source": "VmHWM after clear_refs" if peak_reset else "max sampled VmRSS",
        "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_per_step_bytes": rss,
        "step_seconds": times,
        "load_seconds": load_s,
        "losses": losses,
        "cores": cores,
    }
    args.out.write_text(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
