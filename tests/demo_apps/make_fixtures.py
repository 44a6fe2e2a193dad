"""Write the golden fixtures the phone's core reproduces (android_demo/core, its JUnit tests).

    .venv/bin/python tests/demo_apps/make_fixtures.py           # rewrite tests/demo_apps/fixtures
    .venv/bin/python tests/demo_apps/make_fixtures.py --out DIR # write elsewhere (the drift test)

Every value comes from the SDK's torch-free code, never from a copy of it: the core
(:mod:`mobile_peft.core`: manifest, schedule, encoder, data folders, performance model,
re-allocation, adapter files), the tiny preset's word tokenizer (:mod:`mobile_peft.data`) and the
reference runtime's numpy helpers that the phone mirrors (``runtime.adapter.write_adapter``,
``runtime.evaluate.correct_answers``, ``runtime.data.DataStream``). Nothing is exported (that takes
minutes). Inputs are formulas or scikit-learn's bundled digits, never random draws, so the files
are byte-for-byte the same on every machine; ``tests/demo_apps/test_fixtures.py`` regenerates
them and fails on any difference. See ``fixtures/README.md`` for what each file holds.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from mobile_peft.core import contract, perf_model  # noqa: E402
from mobile_peft.core.adapter_files import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME  # noqa: E402
from mobile_peft.core.datasets import load_folder  # noqa: E402
from mobile_peft.core.digits import load_digits_task  # noqa: E402
from mobile_peft.core.encode import Encoder, decode_answer, encode_prompt  # noqa: E402
from mobile_peft.core.errors import BundleError, DataError  # noqa: E402
from mobile_peft.core.manifest import (  # noqa: E402
    Manifest,
    Trainable,
    manifest_problems,
    memory_bound_section,
    sha256_of,
    size_of,
    slot_pairs,
    validate_bundle,
    write_manifest,
)
from mobile_peft.core.perf_model import (  # noqa: E402
    features,
    predict_loss,
    propose_allocation,
    unit_utilities,
)
from mobile_peft.core.realloc import RankSignals, Reallocation, rank_signal  # noqa: E402
from mobile_peft.core.schedule import MaskInput, Phase, RankSchedule  # noqa: E402
from mobile_peft.core.spec import CLIP_MEAN, CLIP_STD, BundleInputSpec, InputSpec, TokenIds  # noqa: E402
from mobile_peft.core.units import split_unit  # noqa: E402
from mobile_peft.data.tokenizer import build_word_tokenizer, load_tokenizer, save_tokenizer  # noqa: E402
from runtime.adapter import write_adapter  # noqa: E402
from runtime.data import DataStream  # noqa: E402
from runtime.evaluate import correct_answers  # noqa: E402
from runtime.realloc import Reallocator  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SDK_VERSION = "fixture"  # not the package version: the fixtures must not change with a release
IMAGE_SIZE = 12  # small, and not a multiple of the 8x8 digits: every resize interpolates
LM = "language_model.model.layers"
Q, V, UP = f"{LM}.0.self_attn.q_proj", f"{LM}.0.self_attn.v_proj", f"{LM}.1.mlp.up_proj"
DIMS = {Q: (16, 16), V: (16, 8), UP: (16, 32)}  # module -> (fan_in, out)
R_MAX = 4
LORA = contract.SLOTS[contract.ADAPTER_LORA][0]
PARALLEL, SEQUENTIAL = contract.SLOTS[contract.ADAPTER_HYDRA]
PLACEHOLDER = b"placeholder, not a model: tests/demo_apps/make_fixtures.py writes it so the manifest lists a real file\n"
FOLDER = "<folder>"  # stands for the data folder's path in recorded messages


def _json(value: Any, level: int = 0) -> str:
    """JSON with one key per line, lists of numbers and strings on one line (compact and diffable)."""
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_json(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        return "[\n" + ",\n".join(inner + _json(v, level + 1) for v in value) + "\n" + pad + "]"
    return json.dumps(value)


def dump(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_json(value) + "\n")


def f32(values: Any) -> list[float]:
    """float32 values as JSON numbers (the repr of each float32's exact double)."""
    return [float(v) for v in np.asarray(values, dtype=np.float32).ravel()]


def grid(shape: tuple[int, ...], salt: int) -> np.ndarray:
    """Deterministic float32 values k/64 in [-1, 1) (exact, short in JSON)."""
    n = int(np.prod(shape))
    k = (np.arange(n) * 37 + salt * 11) % 128 - 64
    return (k / 64).astype(np.float32).reshape(shape)


# -- the bundle --------------------------------------------------------------------------------------
def lora_schedule() -> RankSchedule:
    modules = {
        m: {LORA: {"r_max": R_MAX, "params_per_rank": fan_in + out, "scale": 8.0 / R_MAX}}
        for m, (fan_in, out) in DIMS.items()
    }
    soft = [1.0, 1.0, 0.30000001192092896, 0.0]  # float32(0.3): the products stay float32
    phases = [
        Phase(0, {Q: {LORA: 4}, V: {LORA: 2}, UP: {LORA: 3}}),
        Phase(3, {Q: {LORA: 2}, V: {LORA: 2}, UP: {LORA: 3}}, {Q: {LORA: soft}}),
        Phase(6, {Q: {LORA: 1}, V: {LORA: 4}, UP: {LORA: 0}}),
    ]
    return RankSchedule(
        "uniform",
        contract.ADAPTER_LORA,
        4 * 32 + 2 * 24 + 3 * 48,
        modules,
        phases,
        mask_inputs=[MaskInput(m, LORA, R_MAX) for m in DIMS],
        dropout=0.05,
    ).validate()


def trainable_of(schedule: RankSchedule, dims: dict[str, tuple[int, int]]) -> list[Trainable]:
    out = []
    for module, slots in schedule.modules.items():
        fan_in, fan_out = dims[module]
        for slot, info in slots.items():
            down, up = contract.SLOT_PARAMS[slot]
            r = info["r_max"]
            out += [
                Trainable(
                    f"{contract.TRAINABLE_PREFIX}{module}.{down}",
                    module,
                    slot,
                    contract.ROLE_DOWN,
                    down,
                    (r, fan_in),
                ),
                Trainable(
                    f"{contract.TRAINABLE_PREFIX}{module}.{up}",
                    module,
                    slot,
                    contract.ROLE_UP,
                    up,
                    (fan_out, r),
                ),
            ]
    return out


def write_bundle(out: Path) -> Path:
    bundle = out / "bundle"
    bundle.mkdir(parents=True)
    save_tokenizer(build_word_tokenizer(), bundle)
    onnx_files = [
        contract.ONNX_TRAINING_FILE,
        contract.ONNX_EVAL_FILE,
        contract.ONNX_OPTIMIZER_FILE,
        contract.ONNX_CHECKPOINT_FILE,
    ]
    for name in onnx_files:
        (bundle / name).write_bytes(PLACEHOLDER)
    schedule = lora_schedule()
    trainable = trainable_of(schedule, DIMS)
    tok = load_tokenizer(bundle)
    spec = InputSpec(image_size=IMAGE_SIZE, image_mean=CLIP_MEAN, image_std=CLIP_STD, max_text_len=24)
    ids = TokenIds(*(tok.token_to_id(t) for t in (spec.pad_token, spec.bos_token, spec.eos_token)))
    inputs = BundleInputSpec(spec, 2, 4 + spec.max_text_len, ids, contract.TOKENIZER_FILE)
    K, M = contract.Key, contract.MethodKey
    graph_inputs = [
        contract.INPUT_PIXEL_VALUES,
        contract.INPUT_IDS,
        contract.INPUT_LABELS,
        *(e.input for e in schedule.mask_inputs),
    ]
    manifest = {
        K.SCHEMA: contract.SCHEMA_NAME,
        K.SCHEMA_VERSION: contract.SCHEMA_VERSION,
        K.FORMAT: contract.FORMAT_ONNX,
        K.SDK_VERSION: SDK_VERSION,
        K.MODEL: {
            "name": "tiny-fixture",
            "quant": "int8",
            "parameters": 123456,
            "num_image_tokens": 4,
            "vocab_size": tok.get_vocab_size(),
        },
        K.INPUT_SPEC: inputs.to_dict(),
        K.METHODS: {
            M.TRAIN_INPUTS: graph_inputs,
            M.TRAINING_MODEL: contract.ONNX_TRAINING_FILE,
            M.EVAL_MODEL: contract.ONNX_EVAL_FILE,
            M.OPTIMIZER_MODEL: contract.ONNX_OPTIMIZER_FILE,
            M.CHECKPOINT: contract.ONNX_CHECKPOINT_FILE,
            M.OUTPUTS: [contract.OUTPUT_LOSS, contract.OUTPUT_LOGITS],
        },
        K.TRAINABLE: [t.to_dict() for t in trainable],
        K.RANK_SCHEDULE: schedule.to_dict(performance_model=False),
        K.PERFORMANCE_MODEL: None,
        K.OPTIMIZER: {"name": "adamw", "lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-08, "weight_decay": 0.0},
        K.BACKBONE: {"quant": "int8", "bytes_by_dtype": {"int8": 1000, "float32": 200}, "total_bytes": 1200},
    }
    adapter_bytes = 4 * sum(t.numel for t in trainable)
    manifest[K.MEMORY_BOUND] = memory_bound_section(1200, adapter_bytes, 5000, manifest[K.OPTIMIZER], 2, "fixture")
    write_manifest(bundle, manifest, [contract.TOKENIZER_FILE, *onnx_files])
    validate_bundle(bundle)
    return bundle


def schedule_fixture(bundle: Path) -> dict[str, Any]:
    schedule = validate_bundle(bundle).rank_schedule
    return {
        "phase_index": {str(step): schedule.phase_index(step) for step in range(0, 10)},
        "phases": [
            {
                "ranks": schedule.ranks(i),
                "params": schedule.params(schedule.ranks(i)),
                "masks": [f32(m) for m in schedule.phase_masks(i)],
            }
            for i in range(len(schedule.phases))
        ],
        "units": schedule.units(),
    }


# -- broken manifests and bundles -------------------------------------------------------------------
def _apply(doc: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = op["path"] or [None]
        if not op["path"]:
            doc = copy.deepcopy(op["value"])
            continue
        node = doc
        for key in parents:
            node = node[key]
        if op["op"] == "delete":
            del node[last]
        else:
            node[last] = copy.deepcopy(op["value"])
    return doc


def _set(path: list[Any], value: Any) -> dict[str, Any]:
    return {"op": "set", "path": path, "value": value}


def _delete(path: list[Any]) -> dict[str, Any]:
    return {"op": "delete", "path": path}


def problem_cases() -> list[tuple[str, list[dict[str, Any]]]]:
    RS, P, MB = contract.Key.RANK_SCHEDULE, contract.ScheduleKey.PHASES, contract.Key.MEMORY_BOUND
    slots = [RS, contract.ScheduleKey.MODULES, Q, contract.ScheduleKey.SLOTS, LORA]
    return [
        ("valid", []),
        ("not an object", [_set([], [1, 2])]),
        (
            "top-level keys",
            [
                _delete(["files"]),
                _delete(["model"]),
                _set(["schema_version"], 3),
                _set(["format"], "tflite"),
                _set(["schema"], "x"),
            ],
        ),
        ("schema_version as float and bool", [_set(["schema_version"], 2.0)]),
        ("schema_version true", [_set(["schema_version"], True)]),
        (
            "sections",
            [
                _set(["input_spec", "token_ids"], []),
                _delete(["input_spec", "image_size"]),
                _set(["backbone"], "int8"),
                _delete(["optimizer", "lr"]),
            ],
        ),
        (
            "token ids",
            [
                _delete(["input_spec", "token_ids", "eos"]),
                _delete(["input_spec", "token_ids", "ignore_index"]),
            ],
        ),
        (
            "trainable",
            [
                _set(["trainable", 0, "role"], "a"),
                _delete(["trainable", 1, "shape"]),
                _set(["trainable", 3, "role"], "down"),
                _set(["files", 0], "x"),
            ],
        ),
        ("lists", [_set(["trainable"], {}), _set(["files"], 7)]),
        (
            "methods of pte",
            [
                _set(["format"], contract.FORMAT_PTE),
                _set(["methods"], {"train": {"method": "forward"}, "eval": 3}),
            ],
        ),
        ("methods not an object", [_set(["methods"], [])]),
        (
            "schedule keys",
            [
                _delete([RS, contract.ScheduleKey.MASK_INPUTS]),
                _delete([RS, contract.ScheduleKey.BUDGET_PARAMS]),
            ],
        ),
        ("schedule not an object", [_set([RS], "uniform")]),
        (
            "schedule schema",
            [_set([RS, contract.ScheduleKey.SCHEMA], "x"), _set([RS, contract.ScheduleKey.VERSION], 2)],
        ),
        (
            "ranks",
            [
                _set([RS, P, 1, "ranks", Q, LORA], 9),
                _set([RS, P, 2, "ranks", V, LORA], 2.0),
                _set([RS, P, 0, "ranks", UP, LORA], True),
            ],
        ),
        ("phase order", [_set([RS, P, 2, "start_step"], 1), _set([RS, P, 0, "start_step"], 2)]),
        ("no phases", [_set([RS, P], [])]),
        (
            "unknown and missing modules",
            [_set([RS, P, 0, "ranks", "vision.fc9"], {LORA: 1}), _delete([RS, P, 1, "ranks", V])],
        ),
        ("unknown slot", [_set([RS, P, 0, "ranks", Q, PARALLEL], 1)]),
        ("soft mask length", [_set([RS, P, 1, "masks", Q, LORA], [1.0, 0.5, 0.0])]),
        ("over budget", [_set([*slots, "params_per_rank"], 1000)]),
        (
            "mask inputs",
            [
                _set([RS, contract.ScheduleKey.MASK_INPUTS, 0, "r_max"], 8),
                _set([RS, contract.ScheduleKey.MASK_INPUTS, 1, "module"], "x.y"),
            ],
        ),
        (
            "mask input types",
            [_set([RS, contract.ScheduleKey.MASK_INPUTS, 2], {"module": 1, "slot": LORA, "r_max": 4})],
        ),
        ("roles", [_set(["trainable", 0, "role"], "a"), _set(["trainable", 3, "role"], "down")]),
        (
            "shapes and dtypes",
            [
                _set(["trainable", 1, "shape"], [16, 3]),
                _set(["trainable", 2, "shape"], [4]),
                _set(["trainable", 4, "dtype"], "int8"),
            ],
        ),
        ("tensor of no slot", [_set(["trainable", 5, "slot"], PARALLEL)]),
        (
            "types",
            [
                _set(["input_spec", "image_size"], 0),
                _set(["input_spec", "image_std"], [0.5, 0, 0.5]),
                _set(["input_spec", "prompt_template"], "answer :"),
                _set(["input_spec", "lowercase"], "yes"),
                _set(["input_spec", "token_ids", "pad"], -1),
                _set(["optimizer", "lr"], float("nan")),
                _set(["model", "vocab_size"], 0),
                _set(["sdk_version"], 1),
                _set(["performance_model"], []),
            ],
        ),
        ("long value", [_set(["model", "name"], {"a": list(range(40))})]),
        (
            "paths",
            [
                _set(["files", 0, "path"], "../tokenizer.json"),
                _set(["files", 1, "sha256"], "ABC"),
                _set(["methods", "checkpoint"], "/abs"),
                _set(["input_spec", "tokenizer_file"], "a\\b"),
            ],
        ),
        ("unlisted files", [_delete(["files", 0]), _set(["methods", "eval_model"], "other.onnx")]),
        (
            "slot keys",
            [_delete([*slots, "scale"]), _set([RS, contract.ScheduleKey.MODULES, V], {"slotz": {}})],
        ),
        (
            "schedule structure",
            [
                _set([RS, contract.ScheduleKey.ALLOCATOR], 3),
                _set([RS, contract.ScheduleKey.BUDGET_PARAMS], -1),
                _set([RS, contract.ScheduleKey.DROPOUT], 1.0),
                _set([*slots, "r_max"], 2.5),
                _set([RS, P, 0], "x"),
                _set([RS, P, 1, "masks"], {Q: {LORA: [1, "x"]}}),
            ],
        ),
        ("modules not an object", [_set([RS, contract.ScheduleKey.MODULES], [])]),
        ("phases not a list", [_set([RS, P], {"0": {}})]),
        ("phase masks null", [_set([RS, P, 1, "masks"], None)]),
        ("phase masks empty list", [_set([RS, P, 1, "masks"], [])]),
        ("mask inputs null", [_set([RS, contract.ScheduleKey.MASK_INPUTS], None)]),
        ("memory bound absent (older bundles)", [_delete([MB])]),
        ("memory bound not an object", [_set([MB], 12)]),
        ("memory bound keys", [_delete([MB, "activation_bytes"]), _set([MB, "batch_size"], 0), _set([MB, "counted_by"], 1)]),
        ("memory bound total", [_set([MB, "total_bytes"], 7)]),
    ]


def problems_fixture(bundle: Path) -> list[dict[str, Any]]:
    valid = json.loads((bundle / contract.MANIFEST_FILE).read_text())
    return [
        {"name": name, "ops": ops, "problems": manifest_problems(_apply(valid, ops))}
        for name, ops in problem_cases()
    ]


def tamper_fixture(bundle: Path) -> list[dict[str, Any]]:
    """validate_bundle's answers for a copy of the bundle with its files damaged."""
    cases = [
        ("one byte appended", {contract.ONNX_TRAINING_FILE: "append"}),
        ("one byte changed", {contract.ONNX_EVAL_FILE: "flip"}),
        ("file removed", {contract.ONNX_CHECKPOINT_FILE: "delete"}),
        (
            "all three",
            {
                contract.ONNX_TRAINING_FILE: "append",
                contract.ONNX_EVAL_FILE: "flip",
                contract.ONNX_CHECKPOINT_FILE: "delete",
            },
        ),
    ]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, actions in cases:
            copy_dir = Path(tmp) / name.replace(" ", "-")
            shutil.copytree(bundle, copy_dir)
            for file, action in actions.items():
                path = copy_dir / file
                if action == "append":
                    path.write_bytes(path.read_bytes() + b"!")
                elif action == "flip":
                    data = bytearray(path.read_bytes())
                    data[0] ^= 1
                    path.write_bytes(bytes(data))
                else:
                    path.unlink()
            try:
                validate_bundle(copy_dir)
                problems: list[str] = []
            except BundleError as exc:
                problems = exc.problems
            out.append({"name": name, "actions": actions, "problems": problems})
    return out


# -- checksums ---------------------------------------------------------------------------------------
def checksums_fixture(out: Path) -> dict[str, Any]:
    tree = out / "checksums"
    files = {  # names whose component order differs from their string order ("a/b" vs "a-b", "a.txt")
        "a/b.txt": b"inside a\n",
        "a-b": b"dash\n",
        "a.txt": b"dot\n",
        "a0": b"zero\n",
        "B": b"upper\n",
        "_x": b"underscore\n",
        "nested/deeper/z.bin": bytes(range(256)),
        "empty": b"",
    }
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    return {
        "directory": {"sha256": sha256_of(tree), "size": size_of(tree)},
        "files": {name: {"sha256": sha256_of(tree / name), "size": size_of(tree / name)} for name in files},
    }


# -- encoding ----------------------------------------------------------------------------------------
def png(path: Path, pixels: np.ndarray) -> None:
    """A grey (``[H, W]``) or RGB (``[H, W, 3]``) uint8 PNG with stored (level 0) deflate blocks, so
    its bytes do not depend on the zlib version."""
    h, w = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2
    raw = b"".join(b"\0" + pixels[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 0))
        + chunk(b"IEND", b"")
    )


def rgb_image() -> np.ndarray:
    """A 14 x 20 RGB uint8 image (a wider-than-tall source, so rows and columns scale differently)."""
    y, x = np.mgrid[0:14, 0:20]
    return np.stack([(x * 13 + y * 3) % 256, (y * 19 + 7) % 256, (x * y * 5 + 40) % 256], axis=-1).astype(
        np.uint8
    )


TEXT_CASES = [
    ("what digit is shown ?", "seven"),
    ("What DIGIT is shown?", "Seven"),
    ("is this digit even or odd ?", "odd"),
    ("which digit comes after this one?!", "eight"),
    ("what's this, a zebra?", "a  horse"),
    ("Ça va… «bien» ?", "œuvre"),
    ("snake_case and CamelCase x2 ½", "<eos>"),
    ("tabs\tand\nnewlines  and\u00a0nbsp", "three"),
    ("one two three four five six seven eight nine zero one two three four", "five"),
    ("what digit is shown ?", "   "),
    ("braces {{literal}} ?", "zero"),
]
PIECE_CASES = [
    "What DIGIT is shown?",
    "shown?! ... ok",
    "what's this, a zebra?",
    "Ça va… «bien» ?",
    "snake_case and CamelCase x2 ½ 3.5 e=mc²",
    "tabs\tand\nnewlines  and\u00a0nbsp",
    "emoji 🙂 here!",
    "İstanbul ΣΑΣ",
]


def encode_fixture(out: Path, bundle: Path, data_images: dict[str, np.ndarray]) -> dict[str, Any]:
    manifest = validate_bundle(bundle)
    tok = load_tokenizer(bundle)
    encoder = Encoder(manifest.input_spec, tok)
    images: list[dict[str, Any]] = []
    blobs: list[bytes] = []

    def add(name: str, source: dict[str, Any], image: np.ndarray) -> None:
        pixels = encoder.image(image)
        images.append(
            {"name": name, **source, "shape": list(pixels.shape), "offset": sum(len(b) for b in blobs) // 4}
        )
        blobs.append(pixels.astype("<f4").tobytes())

    digits = load_digits_task("digit-name", "train", limit=2) + load_digits_task("inverted", "train", limit=1)
    for i, ex in enumerate(digits):
        add(
            f"digit{i}",
            {"height": 8, "width": 8, "channels": 1, "dtype": "float32", "values": f32(ex.image)},
            ex.image,
        )
    rgb = rgb_image()
    add(
        "rgb",
        {"height": 14, "width": 20, "channels": 3, "dtype": "uint8", "values": rgb.ravel().tolist()},
        rgb,
    )
    big = np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1)[:17, :23]  # 17 x 23 -> 12: downscaling
    add(
        "rgb_big",
        {"height": 17, "width": 23, "channels": 3, "dtype": "uint8", "values": big.ravel().tolist()},
        big,
    )
    for name in ("d0.png", "rgb.png"):  # the JVM tests decode these PNGs, as the app decodes photos
        add(name, {"file": f"data/images/{name}"}, data_images[name])
    (out / "encode_pixels.f32").write_bytes(b"".join(blobs))

    texts = []
    for question, answer in TEXT_CASES:
        try:
            input_ids, labels = encoder.text(question, answer)
            texts.append(
                {
                    "question": question,
                    "answer": answer,
                    "input_ids": input_ids.tolist(),
                    "labels": labels.tolist(),
                }
            )
        except DataError as exc:
            texts.append({"question": question, "answer": answer, "error": str(exc)})
    prompts = []
    for question, _ in TEXT_CASES[:4]:
        ids, length = encode_prompt(encoder.tokenizer, encoder.spec, encoder.ids, question)
        prompts.append({"question": question, "input_ids": ids.tolist(), "length": length})
    normalise, split = tok.normalizer.normalize_str, tok.pre_tokenizer.pre_tokenize_str
    pieces = [
        {
            "text": t,
            "pieces": [p for p, _ in split(normalise(t))],
            "ids": tok.encode(t, add_special_tokens=False).ids,
        }
        for t in PIECE_CASES
    ]
    added = "<bos>what<pad><image>digit <unk><eos>x<eos"
    pieces.append({"text": added, "pieces": None, "ids": tok.encode(added, add_special_tokens=False).ids})
    ids = manifest.input_spec.token_ids
    decodes = [
        {"ids": seq, "text": decode_answer(tok, ids, seq)}
        for seq in ([20, 2, 7], [0, 31, 0, 9, 2, 2], [1, 3, 4, 12, 13], [-100, 14])
    ]
    return {"images": images, "texts": texts, "prompts": prompts, "pieces": pieces, "decode": decodes}


# -- data folders, the split and the batch order ------------------------------------------------------
def data_fixture(out: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    folder = out / "data"
    digits = load_digits_task("digit-name", "eval", limit=6)
    images = {}
    for i, ex in enumerate(digits):
        pixels = np.round(ex.image * 255).astype(np.uint8)
        images[f"d{i}.png"] = pixels
        png(folder / "images" / f"d{i}.png", pixels)
    rgb = rgb_image()
    images["rgb.png"] = rgb
    png(folder / "images" / "rgb.png", rgb)
    lines = [
        {"image": "d0.png", "question": "what digit is shown ?", "answer": digits[0].answer},
        {"image": "images/d1.png", "question": "which digit is this ?", "answer": digits[1].answer},
        {
            "image": "d2.png",
            "question": "what digit is shown ?",
            "answer": digits[2].answer,
            "note": "extra keys are ignored",
        },
        {"image": "d0.png", "question": "is this digit even or odd ?", "answer": "even or odd"},
        {"image": "d3.png", "question": "what number is in the image ?", "answer": digits[3].answer},
        {"image": "./d4.png", "question": "what digit is shown here ?", "answer": digits[4].answer},
        {"image": "d5.png", "question": "which digit is this one ?", "answer": digits[5].answer},
        {"image": "rgb.png", "question": "what colour is this ?", "answer": "many"},
        {"image": "d3.png", "question": "is the digit odd or even ?", "answer": "either"},
    ]
    text = (
        "\n".join(json.dumps(line) for line in lines[:4])
        + "\n\n  \n"
        + "\n".join(json.dumps(line) for line in lines[4:])
        + "\n"
    )
    (folder / "annotations.jsonl").write_text(text)

    def rows(examples: list[Any]) -> list[list[str]]:
        return [[e.question, e.answer] for e in examples]

    splits = [
        {
            "split": split,
            "seed": seed,
            "eval_fraction": frac,
            "examples": rows(load_folder(folder, split, seed, frac)),
        }
        for seed in (0, 1, 7)
        for frac in (0.2, 0.5)
        for split in ("train", "eval")
    ]
    bad = out / "data_bad"
    bad_lines = [
        '{"image": "d0.png", "question": "q", "answer": "a"}',
        "not json",
        '{"image": "d0.png", "question": "q"',
        "[1, 2]",
        '{"image": 3, "question": "", "answer": null}',
        '{"question": "q", "answer": "a"}',
        '{"image": "missing.png", "question": "q", "answer": "a"}',
        '{"image": "d0.png", "question": "q", "answer": "a"} trailing',
        '{"image": "d0.png", "question": "\\t ", "answer": ["a"]}',
        '{"image": "../d0.png", "question": "q", "answer": "a"}',
        '{"image": "images\\\\d0.png", "question": "q", "answer": "a"}',
        json.dumps({"image": "d0.png", "question": "x" * 1001, "answer": {"a": list(range(30))}}),
        "[" * 2000 + "]" * 2000,
    ]
    (bad / "images").mkdir(parents=True)
    shutil.copy(folder / "images" / "d0.png", bad / "images" / "d0.png")
    text = (
        "\n".join(bad_lines) + "\n"
    ).encode() + b'{"image": "d0.png", "question": "\xff", "answer": "a"}\r\n'
    (bad / "annotations.jsonl").write_bytes(text)
    try:
        load_folder(bad)
        raise AssertionError("data_bad should not load")
    except DataError as exc:
        bad_message = str(exc).replace(str(bad), FOLDER)
    return {
        "all": rows(load_folder(folder)),
        "splits": splits,
        "bad": {"folder": "data_bad", "message": bad_message},
    }, images


def random_fixture() -> dict[str, Any]:
    perms = [
        {"seed": [seed], "n": n, "permutation": np.random.default_rng(seed).permutation(n).tolist()}
        for seed in (0, 1, 7, 12345, 2**33 + 5)
        for n in (1, 2, 5, 10, 100)
    ]
    perms += [
        {"seed": seed, "n": n, "permutation": np.random.default_rng(seed).permutation(n).tolist()}
        for seed in ([0, 0], [0, 1], [3, 5], [1, 2, 3, 4, 5, 6])
        for n in (7, 33)
    ]
    # Examples stand for their index (the encoded "image" is the index), so a batch lists indices.
    examples = [SimpleNamespace(image=i, question="q", answer="a", source="") for i in range(7)]
    encoder = SimpleNamespace(
        batch_size=3, image=lambda i: np.array([i]), text=lambda *_: (np.zeros(1), np.zeros(1))
    )
    stream = DataStream(examples, encoder)
    stream.position = type(stream.position)(seed=5)
    batches = [stream.next_batch()[0].ravel().tolist() for _ in range(6)]
    return {"permutations": perms, "stream": {"size": 7, "batch_size": 3, "seed": 5, "batches": batches}}


# -- performance model and re-allocation --------------------------------------------------------------
REALLOC_UNITS = {
    "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj::lora": {"r_max": 8, "params_per_rank": 128},
    "vision_tower.vision_model.encoder.layers.1.mlp.fc1::lora": {"r_max": 8, "params_per_rank": 192},
    "multi_modal_projector.linear_1::lora": {"r_max": 8, "params_per_rank": 192},
    f"{LM}.0.self_attn.q_proj::lora": {"r_max": 8, "params_per_rank": 256},
    f"{LM}.0.self_attn.v_proj::lora": {"r_max": 8, "params_per_rank": 192},
    f"{LM}.1.mlp.up_proj::lora": {"r_max": 8, "params_per_rank": 384},
    f"{LM}.3.mlp.down_proj::lora": {"r_max": 8, "params_per_rank": 384},
    f"{LM}.3.self_attn.o_proj::lora": {"r_max": 8, "params_per_rank": 256},
}


# Hydra units: a parallel and a sequential slot per module (when propose_allocation drops its floor).
HYDRA_UNITS = {
    f"{module}::{slot}": {"r_max": 8, "params_per_rank": ppr}
    for module, costs in (
        ("vision_tower.vision_model.encoder.layers.0.self_attn.q_proj", (128, 128)),
        ("vision_tower.vision_model.encoder.layers.1.mlp.fc1", (192, 256)),
        ("multi_modal_projector.linear_1", (192, 128)),
        (f"{LM}.0.self_attn.q_proj", (256, 256)),
        (f"{LM}.1.mlp.up_proj", (384, 512)),
        (f"{LM}.3.mlp.down_proj", (384, 256)),
    )
    for slot, ppr in zip(("parallel", "sequential"), costs)
}


# A fitted model's JSON object (the keys fit_performance_model writes), with given weights: a fit
# would go through LAPACK, whose last bits may differ between machines and so make the fixture drift.
REALLOC_MODEL = {
    "kind": "hydra-rank/logrank-ridge",
    "version": 1,
    "feature_names": [
        "vision.attn",
        "vision.mlp",
        "projector.proj",
        "language.attn",
        "language.mlp",
        "depth",
    ],
    "weights": [-0.42, -0.18, -0.31, -0.55, -0.27, 0.12],
    "intercept": 2.05,
    "prior_slope": -0.3,
    "ridge": 1.0,
    "signal": "rms_grad_per_rank",
}


def _r(x: Any) -> Any:
    """Floats to 12 significant digits (libm's last bit may differ between machines; the Kotlin
    tests compare to 1e-6), recursively."""
    if isinstance(x, float):
        return float(f"{x:.12g}")
    if isinstance(x, dict):
        return {k: _r(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_r(v) for v in x]
    return x


def _proposed_slots(model: dict[str, Any]) -> dict[str, Any]:
    """propose_allocation on two slots per module (Hydra): at a LoRA-rank-2 budget, and a third of
    it, a floor on every slot takes more than MAX_FLOOR_SHARE and the search starts from zero; at
    four times it the floor holds."""
    units = HYDRA_UNITS
    signals = {u: 0.04 + 0.011 * ((i * 7) % 12) for i, u in enumerate(units)}
    lora2 = sum(2 * c["params_per_rank"] for u, c in units.items() if split_unit(u)[1] == "parallel")
    return {
        "units": units,
        "signals": signals,
        "cases": [
            {"budget": b, "min_rank": m, "ranks": propose_allocation(signals, model, units, b, min_rank=m)}
            for b in (lora2, lora2 // 3, 4 * lora2)
            for m in (0, 1)
        ],
    }


def realloc_fixture() -> dict[str, Any]:
    units = REALLOC_UNITS
    names = list(units)
    signals = {u: 0.05 + 0.013 * ((i * 5) % 8) for i, u in enumerate(names)}
    uniform = dict.fromkeys(names, 4)
    budget = sum(4 * u["params_per_rank"] for u in units.values())
    configs = [
        uniform,
        dict.fromkeys(names, 2),
        {u: (8 if "vision" in u else 2) for u in names},
        {u: (6 if "language" in u else 1) for u in names},
        {u: (1 + i % 8) for i, u in enumerate(names)},
    ]
    model = REALLOC_MODEL
    realloc = Reallocation(model, units, budget, every=5, total_steps=20)
    decision = realloc.decide(10, uniform, signals)
    kept = Reallocation(model, units, budget, every=5, total_steps=20, min_gain=0.5).decide(
        15, uniform, signals
    )
    assert decision.applied and not kept.applied, "the fixture should show one applied and one kept decision"

    shapes = [((4, 6), (5, 4)), ((3, 2), (2, 3))]
    signal_cases = []
    for k, (down_shape, up_shape) in enumerate(shapes):
        g_down = grid(down_shape, 2 * k + 1) * np.float32(0.37)
        g_up = grid(up_shape, 2 * k + 2) * np.float32(1.3)
        for active in (
            [True] * down_shape[0],
            [i % 2 == 0 for i in range(down_shape[0])],
            [False] * down_shape[0],
        ):
            signal_cases.append(
                {
                    "down": f32(g_down),
                    "down_shape": list(down_shape),
                    "up": f32(g_up),
                    "up_shape": list(up_shape),
                    "active": active,
                    "signal": rank_signal(g_down, g_up, np.asarray(active)),
                }
            )
    ema = RankSignals()
    for value in (0.5, 0.25, 1.0, 0.125):
        ema.observe(names[0], value)
    ema.observe(names[1], 2.0)
    return _r(
        {
            "units": units,
            "signals": signals,
            "budget": budget,
            "model": model,
            "features": {"ranks": uniform, "values": features(uniform, signals, units).tolist()},
            "utilities": unit_utilities(model, signals, units),
            "predicted": [{"ranks": c, "loss": predict_loss(model, c, signals, units)} for c in configs],
            "proposed": [
                {
                    "budget": b,
                    "min_rank": m,
                    "ranks": propose_allocation(signals, model, units, b, min_rank=m),
                }
                for b in (budget, budget // 2, budget // 3)
                for m in (0, 1, 3)
            ],
            "proposed_slots": _proposed_slots(model),
            "due": {"every": 5, "total_steps": 20, "steps": [s for s in range(0, 21) if realloc.due(s)]},
            "decision": {
                "step": 10,
                "ranks": uniform,
                "event": decision.event(budget),
                "ranks_after": decision.ranks,
            },
            "kept": {"step": 15, "min_gain": 0.5, "event": kept.event(budget)},
            # The app evaluates logrank v1 models only: a newer version, or the spectral kind (which
            # the SDK reads but the app does not mirror yet), is refused when re-allocation starts.
            "refused": [
                {"model": {**model, "version": 9}, "message": "performance model kind 'hydra-rank/logrank-ridge' version 9"},
                {
                    "model": {**model, "kind": perf_model.SPECTRAL_KIND, "version": perf_model.SPECTRAL_VERSION, "feature_names": list(perf_model.GROUPS),
                              "weights": model["weights"][:-1]},
                    "message": f"performance model kind '{perf_model.SPECTRAL_KIND}' version {perf_model.SPECTRAL_VERSION}",
                },
            ],
            "rank_signal": signal_cases,
            "ema": {
                "observed": [[names[0], v] for v in (0.5, 0.25, 1.0, 0.125)] + [[names[1], 2.0]],
                "signals": ema.signals(),
            },
        }
    )


# -- adapters and eval --------------------------------------------------------------------------------
def hydra_schedule() -> tuple[RankSchedule, dict[str, tuple[int, int]]]:
    fc1 = "vision_tower.vision_model.encoder.layers.0.mlp.fc1"
    dims = {fc1: (8, 12), Q: (16, 16), V: (16, 8)}
    modules = {
        fc1: {
            PARALLEL: {"r_max": 4, "params_per_rank": 20, "scale": 4.0},
            SEQUENTIAL: {"r_max": 4, "params_per_rank": 24, "scale": 4.0},
        },
        Q: {
            PARALLEL: {"r_max": 4, "params_per_rank": 32, "scale": 4.0},
            SEQUENTIAL: {"r_max": 4, "params_per_rank": 32, "scale": 2.0},
        },
        V: {
            PARALLEL: {"r_max": 4, "params_per_rank": 24, "scale": 4.0},
            SEQUENTIAL: {"r_max": 4, "params_per_rank": 16, "scale": 4.0},
        },
    }
    ranks = {
        fc1: {PARALLEL: 2, SEQUENTIAL: 0},
        Q: {PARALLEL: 2, SEQUENTIAL: 3},
        V: {PARALLEL: 2, SEQUENTIAL: 0},
    }
    schedule = RankSchedule(
        "hydra-rank",
        contract.ADAPTER_HYDRA,
        1000,
        modules,
        [Phase(0, ranks)],
        mask_inputs=[MaskInput(m, s, 4) for m in modules for s in (PARALLEL, SEQUENTIAL)],
    ).validate()
    return schedule, dims


def write_adapter_case(
    out: Path,
    name: str,
    schedule: RankSchedule,
    trainable: list[Trainable],
    masks: list[np.ndarray],
    tensors: str,
) -> dict[str, Any]:
    bundle = SimpleNamespace(
        schedule=schedule,
        trainable=trainable,
        manifest=SimpleNamespace(slot_pairs=lambda: slot_pairs(trainable), sdk_version=SDK_VERSION),
    )
    write_adapter(bundle, _params(trainable), masks, out / "adapters" / name)
    return {
        "name": name,
        "tensors": tensors,
        "masks": [f32(m) for m in masks],
        "files": [f"adapters/{name}/{ADAPTER_CONFIG_NAME}", f"adapters/{name}/{ADAPTER_WEIGHTS_NAME}"],
    }


def _params(trainable: list[Trainable]) -> dict[str, np.ndarray]:
    """Each tensor's values: ``grid(shape, its index)``."""
    return {t.name: grid(t.shape, i) for i, t in enumerate(trainable)}


def adapter_fixture(out: Path, bundle: Path) -> dict[str, Any]:
    """The LoRA cases use the bundle's schedule and tensors; Hydra has its own, written here."""
    manifest: Manifest = validate_bundle(bundle)
    lora = manifest.rank_schedule
    hydra, dims = hydra_schedule()
    hydra_trainable = trainable_of(hydra, dims)
    return {
        "sdk_version": SDK_VERSION,
        "tensors": {
            "lora": {
                "manifest": f"bundle/{contract.MANIFEST_FILE}",
                "params": {k: f32(v) for k, v in _params(manifest.trainable).items()},
            },
            "hydra": {
                "schedule": hydra.to_dict(performance_model=False),
                "trainable": [t.to_dict() for t in hydra_trainable],
                "params": {k: f32(v) for k, v in _params(hydra_trainable).items()},
            },
        },
        "cases": [
            write_adapter_case(out, "lora_phase1", lora, manifest.trainable, lora.phase_masks(1), "lora"),
            write_adapter_case(out, "lora_phase2", lora, manifest.trainable, lora.phase_masks(2), "lora"),
            write_adapter_case(out, "hydra", hydra, hydra_trainable, hydra.phase_masks(0), "hydra"),
        ],
    }


# The loop's re-allocation: gradient of tensor i at step s is grid(shape, 3 i + s) * GRAD_FACTORS[i % 6].
GRAD_FACTORS = [0.5, 0.25, 1.0, 2.0, 0.75, 1.5]


def realloc_loop_fixture() -> dict[str, Any]:
    """``runtime.realloc.Reallocator`` driven as ``runtime/trainer.py`` drives it (decide and grow
    before a due step, observe each step's gradients, then an SGD step ``p -= lr * g``), on the
    Hydra tensors of :func:`hydra_schedule` with a budget equal to its initial ranks' parameters."""
    base, dims = hydra_schedule()
    ranks = base.ranks(0)
    schedule = RankSchedule(
        "hydra-rank",
        contract.ADAPTER_HYDRA,
        base.params(ranks),
        base.modules,
        [Phase(0, ranks)],
        performance_model=REALLOC_MODEL,
        mask_inputs=base.mask_inputs,
    ).validate()
    trainable = trainable_of(schedule, dims)
    steps, every, seed, lr = 9, 3, 5, np.float32(0.125)
    params = _params(trainable)
    realloc = Reallocator(schedule, REALLOC_MODEL, trainable, every, steps, seed=seed)
    events, masks, grown, signals = [], [], [], []
    for step in range(steps):
        if realloc.due(step):
            decision = realloc.decide(step, ranks)
            if decision.applied:
                ranks = realloc.grow(params, decision)
                grown.append(
                    {
                        "step": step,
                        "down_rows": {
                            unit: f32(params[realloc.pairs[unit][contract.ROLE_DOWN].name][a:b])
                            for unit, (a, b) in decision.changed().items()
                            if b > a
                        },
                    }
                )
            events.append({"step": step, **decision.event(schedule.budget_params)})
        masks.append([float(m.sum()) for m in schedule.input_masks(ranks)])
        grads = {
            t.name: grid(t.shape, 3 * i + step) * np.float32(GRAD_FACTORS[i % len(GRAD_FACTORS)])
            for i, t in enumerate(trainable)
        }
        realloc.observe(grads, ranks)
        signals.append(dict(realloc.state()["sq"]))
        for name, g in grads.items():
            params[name] -= lr * g
    assert any(e["applied"] for e in events) and not all(e["applied"] for e in events), events
    return {
        "schedule": schedule.to_dict(),
        "trainable": [t.to_dict() for t in trainable],
        "params": "grid(shape, i) of tensor i",
        "gradients": "grid(shape, 3 i + step) * grad_factors[i % 6] of tensor i",
        "grad_factors": GRAD_FACTORS,
        "steps": steps,
        "every": every,
        "seed": seed,
        "lr": float(lr),
        "events": _r(events),
        "masks": masks,
        "grown": grown,
        "ema_sq": _r(signals),
        "final_ranks": ranks,
        # Bit for bit, compactly: sha256 of each tensor's little-endian float32 bytes.
        "final_params_sha256": {k: hashlib.sha256(v.astype("<f4").tobytes()).hexdigest() for k, v in params.items()},
    }


def eval_fixture() -> dict[str, Any]:
    b, t, v = 4, 5, 6
    logits = ((np.arange(b * t * v) * 7919) % 23 / 4.0 - 2.0).astype(np.float32).reshape(b, t, v)
    pred = logits[:, :-1].argmax(-1)
    labels = np.full((b, t), contract.IGNORE_INDEX, dtype=np.int64)
    labels[0, 2:] = pred[0, 1:]  # all right
    labels[1, 2:] = pred[1, 1:]
    labels[1, 4] = (pred[1, 3] + 1) % v  # last token wrong
    labels[2, :] = contract.IGNORE_INDEX  # nothing labelled: right
    labels[3, 1] = pred[3, 0]
    logits[3, 2, 0] = np.nan  # a NaN wins numpy's argmax
    labels[3, 3] = 0
    return {
        "shape": [b, t, v],
        "logits": f32(logits),
        "labels": labels.ravel().tolist(),
        "correct": correct_answers(logits, labels).tolist(),
    }


README = """\
# Golden fixtures of the phone's core

Written by `tests/demo_apps/make_fixtures.py` from the SDK's own code; do not edit. Regenerate
with `.venv/bin/python tests/demo_apps/make_fixtures.py`; `tests/demo_apps/test_fixtures.py`
fails when these files differ from a fresh run, and `bash android_demo/core/run_tests.sh` checks
that the Kotlin core reproduces every one of them (floats to 1e-6, files byte for byte).

| File | What the SDK computed |
|---|---|
| `bundle/` | A schema-2 `onnx` LoRA bundle written by `write_manifest` (three adapted modules, three phases, one with a soft mask; the tiny preset's word tokenizer as `tokenizer.json`; the ONNX files are placeholders). |
| `schedule.json` | The phase at steps 0..9, each phase's ranks, trainable parameters and graph-input masks, the allocation units. |
| `manifest_problems.json` | `manifest_problems` of the bundle's manifest after each list of edits (`set` / `delete` at a JSON path); `validate_bundle` of copies whose files were damaged. |
| `checksums/`, `checksums.json` | `sha256_of` / `size_of` of a directory whose sorted-path order differs from its string order, and of each file. |
| `data/`, `data_bad/`, `data.json` | A data folder (`annotations.jsonl`, PNG images) read by `load_folder`: every example, the train/eval split for several seeds and fractions; the one `DataError` of a folder with every kind of bad line (its path written `<folder>`); numpy `default_rng(seed).permutation(n)`; the runtime `DataStream`'s batches. |
| `encode.json`, `encode_pixels.f32` | `Encoder.image` of digits (float), RGB uint8 images and the data folder's PNGs (little-endian float32 `[3, 12, 12]` each, at `offset` floats); `Encoder.text` / `encode_prompt` of questions and answers (or the `DataError`); the tokenizer's pieces and ids of tricky strings; `decode_answer`. |
| `realloc.json` | A given performance model (a fitted model's keys, set weights); its features, utilities, predictions, `propose_allocation` (also on two slots per module, `proposed_slots`); `Reallocation.due` / `decide` events (one applied, one kept); `rank_signal` and `RankSignals` (floats to 12 digits). |
| `realloc_loop.json` | On-device re-allocation as `runtime/trainer.py` runs it (`runtime.realloc.Reallocator`): given gradients each step, the `realloc` events, the masks at each step, the grown down rows (numpy `default_rng([seed, step]).uniform`), the EMA after each step, the final ranks and the sha256 of each final tensor's little-endian float32 bytes. |
| `adapters/`, `adapters.json` | `runtime.adapter.write_adapter` of given tensors at given masks: LoRA at a soft-mask phase and at a phase with a module switched off; Hydra with one slot off and per-module alphas. |
| `eval.json` | `correct_answers` of given logits (ties, a NaN) and labels. |
| `pyformat.json` | What Python prints for the values in messages and files: `repr` of floats and strings, `f"{n:,}"`, `json.dumps` (default, indented + sorted, compact), `json.loads` errors (message, line, column). |
"""


# -- the Python behaviours the core's messages and files depend on ------------------------------------
FLOATS = [
    0.1,
    0.2,
    0.30000000000000004,
    1 / 3,
    2 / 3,
    1.0,
    2.0,
    -0.0,
    0.0,
    100.0,
    1e15,
    1e16,
    1.5e16,
    1e22,
    1e23,
    1e-4,
    1e-5,
    1.5e-5,
    123456789012345678.0,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    2.0**-1022,
    2.0**-44,
    2.0**63,
    2.0**64 + 2048,
    9007199254740993.0,
    0.30000001192092896,
    4.35,
    0.1 + 0.7,
    1e100,
    -1.25e-7,
    8.0 / 3,
]
STRINGS = [
    "plain",
    "it's",
    'say "hi"',
    "both ' and \"",
    "tab\tnew\nline\r",
    "back\\slash",
    "\x00\x1f\x7f\x80\xa0",
    "é ü ß",
    "\u2028\u200b",
    "🙂",
    "\ud800",
]
BAD_JSON = [
    "",
    " ",
    "nul",
    "[1,]",
    '{"a": 1,}',
    '{"a" 1}',
    '{"a": 1 "b": 2}',
    "[1 2]",
    '"abc',
    '"a\x01b"',
    '"\\x"',
    '"\\u12"',
    "01",
    "1.",
    "-",
    "[1] x",
    "{1: 2}",
    '{\n  "a": tru\n}',
]


def pyformat_fixture() -> dict[str, Any]:
    bad = []
    for text in BAD_JSON:
        try:
            json.loads(text)
            bad.append({"text": text, "error": None})
        except json.JSONDecodeError as exc:
            bad.append(
                {"text": text, "error": exc.msg, "line": exc.lineno, "column": exc.colno, "position": exc.pos}
            )
    doc = {
        "b": [1, 2.5, None, True, "x\u00e9\U0001f642"],
        "a": {"z": [], "y": {}, "nested": [[1], {"k": -0.0}]},
        "n": 1e-7,
    }
    good = [
        '{"a": NaN, "b": Infinity, "c": -Infinity}',
        '{"a": 1, "a": 2, "b": 3}',
        '"\\ud83d\\ude42 \\u00e9 \\/"',
        " [ 1 , -0 , 1E3 , 1.5e-3 , 12345678901234567 ] ",
    ]
    return {
        "floats": [{"value": v, "repr": repr(v)} for v in FLOATS],
        "strings": [{"value": v, "repr": repr(v)} for v in STRINGS],
        "grouped": [{"value": n, "text": f"{n:,}"} for n in (0, 999, 1000, 1234567, -9876543210)],
        "dumps": {
            "value": doc,
            "default": json.dumps(doc),
            "indent_sorted": json.dumps(doc, indent=2, sort_keys=True),
            "compact": json.dumps(doc, separators=(",", ":")),
        },
        "bad_json": bad,
        "good_json": [{"text": t, "dumps": json.dumps(json.loads(t))} for t in good],
    }


# -- main ---------------------------------------------------------------------------------------------
def write_fixtures(out: Path) -> Path:
    """Write every fixture into ``out`` (created; must not exist or be empty)."""
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit(f"{out} is not empty; remove it first (or pass --out to an empty directory)")
    bundle = write_bundle(out)
    dump(out / "schedule.json", schedule_fixture(bundle))
    dump(
        out / "manifest_problems.json",
        {
            "manifest": f"bundle/{contract.MANIFEST_FILE}",
            "cases": problems_fixture(bundle),
            "tampered": tamper_fixture(bundle),
        },
    )
    dump(out / "checksums.json", checksums_fixture(out))
    data, data_images = data_fixture(out)
    dump(out / "data.json", {**data, **random_fixture()})
    dump(out / "encode.json", encode_fixture(out, bundle, data_images))
    dump(out / "realloc.json", realloc_fixture())
    dump(out / "adapters.json", adapter_fixture(out, bundle))
    dump(out / "realloc_loop.json", realloc_loop_fixture())
    dump(out / "eval.json", eval_fixture())
    dump(out / "pyformat.json", pyformat_fixture())
    (out / "README.md").write_text(README)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output directory (default: replace {FIXTURES})"
    )
    args = parser.parse_args(argv)
    if args.out is not None:
        write_fixtures(args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = write_fixtures(Path(tmp) / "fixtures")
        if FIXTURES.exists():
            shutil.rmtree(FIXTURES)
        shutil.copytree(fresh, FIXTURES)
    print(f"wrote {FIXTURES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
