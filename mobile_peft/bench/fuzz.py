"""Property-based fuzzing of every reader of untrusted input (hypothesis): the manifest parser, the
rank-schedule loader, the data-folder reader, the zip reader and the PEFT adapter loader. Each
property feeds generated inputs -- mostly small mutations of a valid input, so the search reaches
deep into the parser, plus raw garbage -- and allows no exception but the SDK's own
(:class:`~mobile_peft.core.errors.MobilePeftError`).

The suite runs each target with a few hundred examples (``tests/core/test_fuzz.py``);
``mobile-peft bench reliability`` runs thousands and reports how many were tried.
"""

from __future__ import annotations

import copy
import io
import json
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..core.errors import MobilePeftError

__all__ = ["TARGETS", "run_target"]

_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
                          st.text(max_size=12))
_json = st.recursive(_json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=12)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: Callable, base: Any, max_edits: int = 4) -> Any:
    """``base`` with a few random edits: a value replaced by random JSON, a key deleted, a list
    element dropped or duplicated."""
    value = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_edits))):
        paths = _paths(value)[1:]
        if not paths:
            return draw(_json)
        path = draw(st.sampled_from(paths))
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if action == "replace":
            parent[key] = draw(_json)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        else:
            parent[key + "_"] = copy.deepcopy(parent[key])
    return value


def _only_ours(call: Callable[[], Any]) -> None:
    try:
        call()
    except MobilePeftError:
        pass


# -- targets ---------------------------------------------------------------------------------------
def _manifest_target() -> Callable:
    from ..core.manifest import Manifest, manifest_problems
    from ..core.samples import sample_manifest

    bases = [sample_manifest(f) for f in ("onnx", "pte")]

    @given(st.one_of(st.sampled_from(bases).flatmap(mutated), _json))
    def prop(manifest: Any) -> None:
        problems = manifest_problems(manifest)
        assert isinstance(problems, list)
        _only_ours(lambda: Manifest.from_dict(manifest))

    return prop


def _schedule_target() -> Callable:
    from ..core.contract import Key
    from ..core.samples import sample_manifest
    from ..core.schedule import RankSchedule

    base = sample_manifest()[Key.RANK_SCHEDULE]

    @given(st.one_of(mutated(base), _json))
    def prop(data: Any) -> None:
        _only_ours(lambda: RankSchedule.from_dict(data))

    return prop


def _png_bytes() -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format="PNG")
    return buf.getvalue()


def _folder_target() -> Callable:
    from ..core.datasets import load_folder

    png = _png_bytes()
    good = {"image": "a.png", "question": "what digit is shown ?", "answer": "one"}
    lines = st.one_of(
        mutated(good, 2).map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=60),
        st.sampled_from([b"", b"{", b"[]", b'{"image": "../../etc/passwd", "question": "q", "answer": "a"}',
                         b'{"image": "/etc/passwd", "question": "q", "answer": "a"}']),
    )
    images = st.one_of(st.just(png), st.integers(0, len(png)).map(lambda n: png[:n]), st.binary(max_size=80))

    @given(st.lists(lines, min_size=0, max_size=6), images, st.booleans())
    def prop(annotation_lines: list[bytes], image: bytes, skip_bad: bool) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "a.png").write_bytes(image)
            (folder / "annotations.jsonl").write_bytes(b"\n".join(annotation_lines))
            _only_ours(lambda: load_folder(folder, skip_bad=skip_bad))
            _only_ours(lambda: load_folder(folder, split="train", skip_bad=skip_bad))

    return prop


def _zip_target() -> Callable:
    from ..core.archive import extract_bundle_zip

    names = st.one_of(st.sampled_from(["manifest.json", "model.pte", "../x", "/abs", "a\\b", "d/", "d/e", ""]),
                      st.text(min_size=1, max_size=10))
    entries = st.lists(st.tuples(names, st.binary(max_size=50)), max_size=5)

    @given(entries, st.integers(0, 3), st.binary(max_size=40))
    def prop(members: list[tuple[str, bytes]], damage: int, noise: bytes) -> None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate names generated on purpose
            for name, data in members:
                try:
                    archive.writestr(name, data)
                except (ValueError, UnicodeEncodeError, IndexError):  # zipfile itself refuses some names
                    pass
        data = buf.getvalue()
        if damage == 1 and data:
            data = data[: len(data) // 2]
        elif damage == 2:
            data = noise
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "b.zip"
            path.write_bytes(data)

            def extract() -> None:
                out = extract_bundle_zip(path)
                root = Path(out.name).resolve()
                assert all(p.resolve().is_relative_to(root) for p in root.rglob("*"))
                out.cleanup()

            _only_ours(extract)

    return prop


def _adapter_target() -> Callable:
    import numpy as np

    from ..core.adapter_files import effective_config, read_adapter_files, safetensors_bytes, slot_scale

    config = effective_config("lora", {"q_proj": {"lora": (2, 4.0)}}, 0.0)
    weights = safetensors_bytes({"base_model.model.q_proj.lora_A.weight": np.ones((2, 3), np.float32)}, {"format": "pt"})

    @given(st.one_of(mutated(config), _json), st.one_of(st.just(weights), st.integers(0, len(weights)).map(lambda n: weights[:n]),
                                                      st.binary(max_size=64)))
    def prop(cfg: Any, blob: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "adapter_config.json").write_text(json.dumps(cfg))
            (folder / "adapter_model.safetensors").write_bytes(blob)

            def read() -> None:
                cfg_read, _, _ = read_adapter_files(folder)
                try:
                    slot_scale(cfg_read, "q_proj", "lora", 2)
                except Exception as exc:
                    if isinstance(exc, MobilePeftError):
                        raise
                    raise AssertionError(f"slot_scale raised {type(exc).__name__}: {exc} on {cfg_read!r}") from exc

            _only_ours(read)

    return prop


TARGETS: dict[str, Callable[[], Callable]] = {
    "manifest": _manifest_target,
    "rank_schedule": _schedule_target,
    "data_folder": _folder_target,
    "zip": _zip_target,
    "peft_adapter": _adapter_target,
}


def run_target(name: str, examples: int, seed: int = 0) -> int:
    """Run one target for ``examples`` generated inputs; returns how many were tried. Raises the
    first escaping exception (hypothesis shrinks it to a minimal input first)."""
    tried = {"n": 0}
    prop = TARGETS[name]()
    inner = prop.hypothesis.inner_test

    def counted(*args: Any, **kwargs: Any) -> None:
        tried["n"] += 1
        inner(*args, **kwargs)

    prop.hypothesis.inner_test = counted
    settings(max_examples=examples, deadline=None, database=None, derandomize=seed == 0,
             suppress_health_check=list(HealthCheck))(prop)()
    return tried["n"]
