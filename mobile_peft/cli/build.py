"""``mobile-peft build``: write a model directory from a preset or a local checkpoint."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..core import contract
from ._ui import console, human_bytes, print_json, table


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="Build a model directory from a preset (random weights) or a local checkpoint.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="Architecture preset (random init).")
    src.add_argument(
        "--from-pretrained",
        metavar="PATH",
        type=Path,
        help="Local LLaVA- or MobileVLM-style checkpoint directory, or a Llama-family GGUF file (or a directory holding "
        "exactly one), composed with a vision tower (--vision).",
    )
    p.add_argument(
        "--vision",
        default=None,
        help="Vision tower + projector (random init) to compose with a GGUF language model: clip-tiny (default) or clip-small.",
    )
    p.add_argument(
        "--align",
        action="store_true",
        help="Presets on a pretrained language model (smollm2-vlm): run the alignment stages (vision tower pre-trained as a "
        "digit classifier, then the projector on digit captions, language model frozen), cached in --cache and reused.",
    )
    p.add_argument("--align-steps", type=int, default=None, help="Alignment (projector) steps (default 150).")
    p.add_argument("--cache", default="benchmarks/.cache", help="Alignment cache (shared with `bench ranks --preset`).")
    p.add_argument("--quant", choices=contract.QUANT_MODES, default="none", help="Store the frozen linear weights quantised.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="Output model directory.")
    p.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..models import build_model, count_parameters, load_model, save_model
    from ..models.gguf import DEFAULT_VISION_TOWER, is_gguf_source, load_gguf
    from ..quant import backbone_bytes

    start = time.perf_counter()
    alignment = None
    gguf = args.from_pretrained is not None and is_gguf_source(args.from_pretrained)
    if args.vision and not gguf:
        raise ConfigError("--vision chooses the vision tower composed with a GGUF language model; give --from-pretrained FILE.gguf.")
    if args.align:
        alignment = _aligned(args)
        model, tokenizer = alignment.pop("model"), alignment.pop("tokenizer")
    elif args.preset:
        model, tokenizer = build_model(args.preset, quant=args.quant, seed=args.seed)
    elif gguf:
        model, tokenizer = load_gguf(args.from_pretrained, vision_tower=args.vision or DEFAULT_VISION_TOWER, seed=args.seed)
    else:
        model, tokenizer = load_model(args.from_pretrained, quant=args.quant)
    if model.config.quant != args.quant:
        from ..quant import quantize_model

        model.config.quant = args.quant
        quantize_model(model, args.quant, model.config.quant_group_size)
    save_model(model, tokenizer, args.out)
    sizes = backbone_bytes(model)
    summary = {
        "model": model.config.name,
        "out": str(args.out),
        "parameters": count_parameters(model),
        "quant": model.config.quant,
        "image_tokens": model.num_image_tokens,
        "linear_weight_bytes": sizes.linear,
        "backbone_bytes": sizes.total,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if alignment:
        summary.update(alignment)
    if args.json:
        print_json(summary)
    else:
        console.print(table("built", ["field", "value"], [(k, human_bytes(v) if k.endswith("bytes") else v) for k, v in summary.items()]))
    return 0


def _aligned(args: argparse.Namespace) -> dict:
    """The aligned model of ``--preset`` (or a GGUF path), from the cache when it is there."""
    from ..train.align import AlignConfig, aligned_base
    from ._ui import StepProgress

    source = args.preset or str(args.from_pretrained)
    config = AlignConfig(seed=args.seed, **({"steps": args.align_steps} if args.align_steps is not None else {}))
    with StepProgress(f"aligning {source}", total=config.steps, enabled=not args.json) as bar:
        model, tokenizer, record, cached = aligned_base(source, config, args.cache, progress=lambda step, loss: bar.on_step_end(step, loss, None))
    return {
        "model": model,
        "tokenizer": tokenizer,
        "alignment_cached": cached,
        "alignment_steps": record["steps"],
        "alignment_seconds": record["seconds"],
        "caption_accuracy_before": f"{100 * record['accuracy_before']:.1f} %",
        "caption_accuracy_after": f"{100 * record['accuracy_after']:.1f} %",
    }
