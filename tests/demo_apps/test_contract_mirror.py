"""The demo apps' ``Contract.kt`` / ``Contract.swift`` are generated from mobile_peft/core/contract.py
(``python -m mobile_peft.core.codegen``); these tests prove that they are current and complete, and
that the rest of the apps spell no contract name themselves.

* **Up to date**: each file equals what :mod:`mobile_peft.core.codegen` renders now, and ``--check``
  fails (naming the file) on a stale one.
* **Complete**: the two files are read back here, independently of codegen, and every module-level
  constant, tuple and dict, every member of every key class and every required-key list (``*_KEYS``,
  with its references resolved) has the contract's value; nothing else is in them. A key or sub-key
  added to the contract therefore fails these tests until the files are regenerated.
* **One source**: no other app source (``.kt``, ``.swift``, ``.mm``, ``.h``, the Kotlin core's tests
  excepted: they read fixture JSON; comments stripped) holds a
  string literal equal to a contract string: a manifest key or sub-key, a file, method, input,
  format, adapter, slot, role or parameter name, or a parameter-name suffix (``_A``, ``_down``: a role
  read from a name). Single words are not skipped wholesale: the few the apps use as keys of *other*
  JSON (tokenizer.json, annotations.jsonl, the app's own checkpoint files) are listed in
  :data:`ALLOWED`, per file and with the reason, and an entry that no longer occurs fails too. Every
  ``Contract.<name>`` an app refers to must exist (the iOS app and the Android app module cannot be
  compiled here; the Kotlin core is, by android_demo/core/run_tests.sh).
* **Schema 2**: both manifest parsers (the Kotlin core's four files, ``Manifest.swift``) validate with
  every required-key list (or check each of its keys by name) and read ``mask_inputs``, each slot's
  keys, the phases and the trainable ``role`` through the Contract; the golden fixture manifest
  (``fixtures/bundle``, written by ``make_fixtures.py`` with the SDK's own classes) passes the SDK's
  validator and uses, at every level, exactly the keys the contract names.
* The preprocessing constants of the apps and the mask-input name rule match the SDK.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from mobile_peft.core import codegen, contract

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_KT = ROOT / codegen.KOTLIN_FILE
CONTRACT_SWIFT = ROOT / codegen.SWIFT_FILE
KOTLIN_DIR = CONTRACT_KT.parent  # android_demo/core: the phone's logic, in package org.mobilepeft.core
SWIFT_DIR = ROOT / "ios_demo" / "PersonalizationCore" / "Sources" / "PersonalizationCore"  # the iOS core


def _is_app_source(p: Path) -> bool:
    """Production sources of both apps; the cores' unit tests (Kotlin ``src/test``, Swift ``Tests``)
    read fixture JSON, not bundles; build outputs are not sources; a link (PersonalizationCore's
    ``Contract.swift``) is the file it points to."""
    parts = p.relative_to(ROOT).parts
    return (
        p.suffix in {".kt", ".swift", ".mm", ".h"}
        and not p.is_symlink()
        and "build" not in parts
        and ".build" not in parts
        and ("src", "test") not in zip(parts, parts[1:])
        and "Tests" not in parts
    )


APP_SOURCES = sorted(
    p
    for folder in (ROOT / "android_demo", ROOT / "ios_demo")
    for p in folder.rglob("*")
    if _is_app_source(p) and p not in (CONTRACT_KT, CONTRACT_SWIFT)
)

# Contract strings an app file may hold, because there they key other JSON than the manifest.
_SAFETENSORS = {"shape": "the safetensors header", "dtype": "the safetensors header"}
_TOKENIZER = {"model": "tokenizer.json's model section"}
_DATASETS = {
    "answer": "an annotations.jsonl field",
    "train": "a split name of load_folder",
    "eval": "a split name of load_folder",
}
_REALLOC = {"budget_params": "a field of the re-allocation event (Decision.event), not the manifest's"}
ALLOWED = {
    "Safetensors.kt": _SAFETENSORS,
    "Safetensors.swift": _SAFETENSORS,
    "Tokenizer.kt": _TOKENIZER,
    "Tokenizer.swift": _TOKENIZER,
    "Datasets.kt": _DATASETS,
    "Datasets.swift": _DATASETS,
    "Realloc.swift": _REALLOC,
    "AdapterFiles.kt": {
        "format": "the safetensors header's format entry (PEFT's 'pt')",
        "method": "the adapter's own metadata (adapter_files.adapter_metadata)",
        "dropout": "a field of the Hydra adapter_config.json",
        "none": "the value of PEFT LoraConfig's bias field",
    },
    "Realloc.kt": _REALLOC,
    "PerfModel.kt": {"version": "a key of the performance model's own JSON (perf_model.fit_performance_model)"},
}
ALLOWED["AdapterFiles.swift"] = ALLOWED["AdapterFiles.kt"]


def _camel(upper_snake: str) -> str:
    """The Swift naming rule: lowerCamelCase of the Python name."""
    head, *rest = upper_snake.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


def _key_classes() -> dict[str, type]:
    return {
        n: v for n, v in vars(contract).items() if isinstance(v, type) and v.__module__ == contract.__name__
    }


def _members(cls: type) -> dict[str, str]:
    return {n: v for n, v in vars(cls).items() if n.isupper()}


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively, as the apps' lists and maps read back."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def expected(app: str) -> dict[str, Any]:
    """Every name the generated file must define, under its app name (``TrainableKey.ROLE`` /
    ``TrainableKey.role``), with the contract's value."""
    name = (lambda n: n) if app == "kotlin" else _camel
    out = {
        name(n): _plain(v)
        for n, v in vars(contract).items()
        if n.isupper() and not n.startswith("_") and isinstance(v, (str, int, tuple, dict))
    }
    for cls_name, cls in _key_classes().items():
        out.update({f"{cls_name}.{name(n)}": v for n, v in _members(cls).items()})
    return out


# -- reading the generated files back -------------------------------------------------------------
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+|[A-Za-z_][\w.]*|[()\[\]:,]')
_KT_OBJECT = re.compile(r"^\s*object (\w+) \{$")
_KT_DEF = re.compile(r"^\s*(?:const )?val (\w+)(?::[^=]+)? = (.*?)(?:\s+//.*)?$")
_SWIFT_OBJECT = re.compile(r"^\s*enum (\w+) \{$")
_SWIFT_DEF = re.compile(r"^\s*static let `?(\w+)`?(?::[^=]+)? = (.*?)(?:\s+//.*)?$")


def _atom(token: str, scope: dict[str, Any]) -> Any:
    if token.startswith('"'):
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if token not in scope:
        raise KeyError(f"{token} is not defined in the generated file")
    return scope[token]


def _parse(tokens: list[str], i: int, scope: dict[str, Any]) -> tuple[Any, int]:
    """One Kotlin (``listOf``/``mapOf``/``to``) or Swift (``[...]``/``[k: v]``) expression."""
    kotlin = tokens[i] in ("listOf", "mapOf")
    if not kotlin and tokens[i] != "[":
        return _atom(tokens[i], scope), i + 1
    is_map, close, sep = tokens[i] == "mapOf", ")" if kotlin else "]", "to" if kotlin else ":"
    i += 2 if kotlin else 1
    items = []
    while tokens[i] != close:
        item, i = _parse(tokens, i, scope)
        if tokens[i] == sep:
            value, i = _parse(tokens, i + 1, scope)
            item, is_map = (item, value), True
        items.append(item)
        i += tokens[i] == ","
    return (dict(items) if is_map else items), i + 1


def definitions(path: Path) -> dict[str, str]:
    """The expression text of every constant of a generated Contract file, by qualified name
    (``ModelKey.NAME``); only the line layout the generator writes is understood."""
    obj = _KT_OBJECT if path.suffix == ".kt" else _SWIFT_OBJECT
    define = _KT_DEF if path.suffix == ".kt" else _SWIFT_DEF
    out: dict[str, str] = {}
    nested: str | None = None
    lines = iter(path.read_text().splitlines())
    for line in lines:
        if m := obj.match(line):
            nested = None if m.group(1) == "Contract" else m.group(1)
        elif line.strip() == "}":
            nested = None
        elif m := define.match(line):
            name, text = m.groups()
            while text.count("(") + text.count("[") > text.count(")") + text.count("]"):
                text += " " + next(lines).strip()
            out[f"{nested}.{name}" if nested else name] = text
    return out


def read_generated(path: Path) -> dict[str, Any]:
    """Every constant of a generated Contract file, parsed, with references resolved."""
    scope: dict[str, Any] = {}
    for name, text in definitions(path).items():
        scope[name], _ = _parse(_TOKEN.findall(text), 0, scope)
    return scope


def _code(path: Path) -> str:
    """Source text without comments (line positions kept)."""
    text = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group()), path.read_text(), flags=re.S)
    return re.sub(r"(^|[ \t])//.*$", r"\1", text, flags=re.M)


# -- up to date -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path,render", [(CONTRACT_KT, codegen.kotlin), (CONTRACT_SWIFT, codegen.swift)])
def test_generated_files_are_up_to_date(path, render):
    assert path.read_text() == render(), (
        f"{path.relative_to(ROOT)} is stale: run `python -m mobile_peft.core.codegen`"
    )


def test_rendering_is_deterministic_and_headed():
    for text in (codegen.kotlin(), codegen.swift()):
        assert text.splitlines()[0] == f"// {codegen.GENERATED}"
    assert codegen.kotlin() == codegen.kotlin() and codegen.swift() == codegen.swift()


def test_check_names_a_stale_file_and_writing_fixes_it(tmp_path, capsys):
    for rel, text in codegen.outputs().items():
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_text(text)
    assert codegen.main(["--check", "--root", str(tmp_path)]) == 0
    stale = tmp_path / codegen.SWIFT_FILE
    stale.write_text(stale.read_text().replace('"manifest.json"', '"manifest.v3.json"'))
    capsys.readouterr()
    assert codegen.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert codegen.SWIFT_FILE in err and codegen.KOTLIN_FILE not in err
    assert codegen.main(["--root", str(tmp_path)]) == 0
    assert codegen.main(["--check", "--root", str(tmp_path)]) == 0


def test_codegen_refuses_what_it_cannot_render(monkeypatch):
    # A value of a new type, or a member added outside the source, must stop the generator rather
    # than be left out of the apps.
    monkeypatch.setattr(contract, "ONNX_OPSET", 1.5)
    with pytest.raises(TypeError, match="ONNX_OPSET"):
        codegen.kotlin()
    monkeypatch.undo()
    monkeypatch.setattr(contract.TrainableKey, "EXTRA", "extra", raising=False)
    with pytest.raises(ValueError, match="EXTRA"):
        codegen.swift()


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level packages imported absolutely, names imported relatively) by a module."""
    absolute, relative = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            absolute |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level:
            relative |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            absolute.add(node.module.split(".")[0])
    return absolute, relative


def test_codegen_and_the_contract_import_only_the_standard_library():
    absolute, relative = _imports(Path(codegen.__file__))
    assert absolute <= set(sys.stdlib_module_names)
    assert relative == {"contract"}
    assert _imports(Path(contract.__file__)) == ({"__future__"}, set())


# -- complete -------------------------------------------------------------------------------------
@pytest.mark.parametrize("app,path", [("kotlin", CONTRACT_KT), ("swift", CONTRACT_SWIFT)])
def test_every_contract_name_and_required_key_list_is_generated(app, path):
    found, want = read_generated(path), expected(app)
    missing = sorted(set(want) - set(found))
    extra = sorted(set(found) - set(want))
    wrong = {k: (found[k], want[k]) for k in set(want) & set(found) if found[k] != want[k]}
    assert not missing, f"{path.name} lacks {missing}; run `python -m mobile_peft.core.codegen`"
    assert not extra, f"{path.name} defines names the contract does not have: {extra}"
    assert not wrong, f"{path.name} values differ from the contract (found, contract): {wrong}"
    assert len(found) > 150  # guards the reader: a parse that finds little would make this vacuous


@pytest.mark.parametrize("path", [CONTRACT_KT, CONTRACT_SWIFT])
def test_required_key_lists_are_references_not_literals(path):
    # The lists name key-class members, so a renamed key changes them with the key.
    found = definitions(path)
    for name in (n for n in vars(contract) if n.endswith("_KEYS")):
        text = found[name if path.suffix == ".kt" else _camel(name)]
        keys_side = re.sub(r'"\w+"(?: to|:) ', "", text)  # a per-format map keeps its format names
        assert '"' not in keys_side, f"{path.name} {name} spells keys as literals: {text}"


@pytest.mark.parametrize(
    "module,slot",
    [("language_model.model.layers.0.self_attn.q_proj", "lora"), ("vision.mlp.fc1", "parallel")],
)
def test_mask_input_name_rule_matches(module, slot):
    want = contract.mask_input_name(module, slot)
    kt = re.search(
        r'fun maskInputName\(module: String, slot: String\): String = "([^"]*)"', CONTRACT_KT.read_text()
    )
    swift = re.search(
        r'static func maskInputName\(module: String, slot: String\) -> String \{ "([^"]*)" \}',
        CONTRACT_SWIFT.read_text(),
    )
    values = {
        "module": module,
        "slot": slot,
        "MASK_SUFFIX": contract.MASK_SUFFIX,
        "maskSuffix": contract.MASK_SUFFIX,
    }
    for template in (kt.group(1), swift.group(1)):
        got = re.sub(r"\$\{(\w+)\}|\\\((\w+)\)", lambda m: values[m.group(1) or m.group(2)], template)
        assert got == want


# -- one source -----------------------------------------------------------------------------------
def contract_strings() -> dict[str, str]:
    """Every string the contract defines -> where (for the message)."""
    out: dict[str, str] = {}

    def add(value: Any, where: str) -> None:
        if isinstance(value, str):
            out.setdefault(value, where)
        elif isinstance(value, (tuple, list)):
            for v in value:
                add(v, where)
        elif isinstance(value, dict):
            for k, v in value.items():
                add(k, where)
                add(v, where)

    for name, value in vars(contract).items():
        if name.isupper() and not name.startswith("_"):
            add(value, f"Contract.{name}")
    for cls_name, cls in _key_classes().items():
        for name, value in _members(cls).items():
            out[value] = f"Contract.{cls_name}.{name}"  # key classes win: they are what a parser uses
    for params in contract.SLOT_PARAMS.values():
        for param in params:
            out.setdefault("_" + param.rsplit("_", 1)[1], "Contract.TrainableKey.ROLE, never a name suffix")
    return out


def test_the_scan_sees_the_apps():
    names = {p.name for p in APP_SOURCES}
    assert {
        "Manifest.kt",
        "Encode.kt",
        "Training.kt",
        "EtTrainer.kt",
        "MainActivity.kt",
    } <= names  # core + app
    assert {"Manifest.swift", "Checkpoints.swift", "TrainingLoop.swift", "OrtTrainer.swift", "EtTrainer.mm"} <= names
    assert set(ALLOWED) <= names
    assert not any("src/test" in p.as_posix() or "/Tests/" in p.as_posix() for p in APP_SOURCES)


def spelled_contract_strings(path: Path, allowed: dict[str, str]) -> tuple[list[str], list[str]]:
    """(``file:line: "value" -> use Contract...`` for each contract string the file spells,
    the ``allowed`` literals it does not hold)."""
    code, problems, unused = _code(path), [], []
    for value, where in contract_strings().items():
        hits = [code.count("\n", 0, m.start()) + 1 for m in re.finditer(re.escape(f'"{value}"'), code)]
        if value in allowed:
            unused += [] if hits else [f"{path.name}: '{value}'"]
        elif hits:
            problems.append(f'{path.name}:{hits[0]}: "{value}" -> use {where}')
    if re.search(r"(?<![\w.])" + re.escape(str(contract.IGNORE_INDEX)) + r"\b", code):
        problems.append(f"{path.name}: {contract.IGNORE_INDEX} -> use Contract.IGNORE_INDEX")
    return problems, unused


def test_no_app_file_spells_a_contract_string():
    problems, unused = [], []
    for path in APP_SOURCES:
        found, stale = spelled_contract_strings(path, ALLOWED.get(path.name, {}))
        problems, unused = problems + found, unused + stale
    assert not problems, "app files spell contract names; use the generated Contract:\n" + "\n".join(problems)
    assert not unused, f"ALLOWED lists literals the files no longer hold; drop them: {unused}"


def test_the_scan_catches_key_literals_and_name_suffixes(tmp_path):
    bad = tmp_path / "Bad.kt"
    bad.write_text(
        'val m = o.optJSONArray("mask_inputs") // "role" in a comment is fine\n'
        'val isDown = name.endsWith("_down")\n'
        '/* a block comment with "slots" */ val ignore = -100\n'
    )
    problems, _ = spelled_contract_strings(bad, {})
    assert problems == [
        'Bad.kt:1: "mask_inputs" -> use Contract.ScheduleKey.MASK_INPUTS',
        'Bad.kt:2: "_down" -> use Contract.TrainableKey.ROLE, never a name suffix',
        "Bad.kt: -100 -> use Contract.IGNORE_INDEX",
    ]


def test_every_contract_reference_in_the_apps_exists():
    kotlin, swift = read_generated(CONTRACT_KT), read_generated(CONTRACT_SWIFT)
    classes = set(_key_classes())
    problems = []
    for path in APP_SOURCES:
        if path.suffix not in (".kt", ".swift"):
            continue
        defined = kotlin if path.suffix == ".kt" else swift
        for m in re.finditer(r"\bContract\.(\w+)(?:\.(\w+))?", _code(path)):
            first, second = m.groups()
            name = f"{first}.{second}" if first in classes else first
            if name not in defined and first != "maskInputName":
                problems.append(f"{path.name}: Contract.{name}")
    assert not problems, f"the apps use names the generated Contract does not define: {problems}"


# -- schema 2 -------------------------------------------------------------------------------------
# The Kotlin core parses a manifest in four files (checks, typed reading, schedule, input spec).
MANIFEST_KT = [KOTLIN_DIR / n for n in ("Manifest.kt", "ManifestReader.kt", "Schedule.kt", "Spec.kt")]
MANIFEST_SWIFT = [SWIFT_DIR / n for n in ("Manifest.swift", "ManifestChecks.swift", "ManifestReader.swift", "Schedule.swift", "Spec.swift")]


def _refs(paths: list[Path]) -> set[str]:
    """``X`` and ``X.Y`` of every ``Contract.X.Y`` in the files."""
    out = set()
    for path in paths:
        for m in re.finditer(r"\bContract\.(\w+)(?:\.(\w+))?", _code(path)):
            out |= {m.group(1), f"{m.group(1)}.{m.group(2)}"}
    return out


@pytest.mark.parametrize("app,path", [("kotlin", MANIFEST_KT), ("swift", MANIFEST_SWIFT)])
def test_the_manifest_parsers_validate_with_every_required_key_list(app, path):
    name = (lambda n: n) if app == "kotlin" else _camel
    refs = _refs(path)
    lists = {n: v for n, v in vars(contract).items() if n.endswith("_KEYS")}
    used = {n for n in lists if name(n) in refs}
    members = {  # key value -> the Contract names that spell it (TrainableKey.ROLE, ...)
        value: {
            f"{cls_name}.{name(m)}"
            for cls_name, cls in _key_classes().items()
            for m, v in _members(cls).items()
            if v == value
        }
        for value in {v for cls in _key_classes().values() for v in _members(cls).values()}
    }
    for n, keys in lists.items():
        # A list need not be used when a used one holds all its keys (a plan's RANK_SCHEDULE_KEYS),
        # or when the parser checks each of its keys by name (the core checks a mask input's
        # module, slot and r_max types one by one, and its input against the naming rule).
        covered = (
            n in used
            or any(
                isinstance(keys, tuple) and isinstance(lists[u], tuple) and set(keys) <= set(lists[u])
                for u in used
            )
            or (isinstance(keys, tuple) and all(members.get(k, set()) & refs for k in keys))
        )
        assert covered, f"{[p.name for p in path]} do not check Contract.{name(n)}"


@pytest.mark.parametrize("app,path", [("kotlin", MANIFEST_KT), ("swift", MANIFEST_SWIFT)])
def test_the_manifest_parsers_read_the_schema_2_layout_through_the_contract(app, path):
    name = (lambda n: n) if app == "kotlin" else _camel
    wanted = [f"ScheduleKey.{name(n)}" for n in ("MODULES", "SLOTS", "PHASES", "MASK_INPUTS")]
    # Every member of the per-entry key classes: each is read or checked for every entry.
    for cls in (
        contract.TrainableKey,
        contract.SlotKey,
        contract.PhaseKey,
        contract.MaskInputKey,
        contract.FileKey,
    ):
        wanted += [f"{cls.__name__}.{name(n)}" for n in _members(cls)]
    wanted += [name(n) for n in ("ROLE_DOWN", "ROLE_UP", "ROLES", "SUPPORTED_SCHEMA_VERSIONS", "SCHEMA_NAME")]
    missing = [w for w in wanted if w not in _refs(path)]
    assert not missing, f"{[p.name for p in path]} do not read {missing} through the Contract"


FIXTURE_MANIFEST = ROOT / "tests" / "demo_apps" / "fixtures" / "bundle" / contract.MANIFEST_FILE


def _schema_2_manifest() -> dict[str, Any]:
    """A valid manifest written by the SDK's own classes and ``write_manifest``: the golden fixture
    of ``make_fixtures.py``, which the Kotlin core also reads."""
    return json.loads(FIXTURE_MANIFEST.read_text())


def test_the_sdk_writes_exactly_the_keys_the_contract_names():
    from mobile_peft.core.manifest import manifest_problems

    m = _schema_2_manifest()
    assert manifest_problems(m) == []
    K = contract
    values = lambda cls: set(_members(cls).values())  # noqa: E731
    schedule = m[K.Key.RANK_SCHEDULE]
    assert set(K.BUNDLE_RANK_SCHEDULE_KEYS) <= set(schedule) <= values(K.ScheduleKey)
    for module in schedule[K.ScheduleKey.MODULES].values():
        assert set(module) == {K.ScheduleKey.SLOTS}
        for info in module[K.ScheduleKey.SLOTS].values():
            assert set(info) == set(K.SLOT_KEYS) == values(K.SlotKey)
    for phase in schedule[K.ScheduleKey.PHASES]:
        assert {K.PhaseKey.START_STEP, K.PhaseKey.RANKS} <= set(phase) <= values(K.PhaseKey)
    assert K.PhaseKey.MASKS in schedule[K.ScheduleKey.PHASES][1]
    for entry in schedule[K.ScheduleKey.MASK_INPUTS]:
        assert set(entry) == set(K.MASK_INPUT_KEYS)
        assert entry[K.MaskInputKey.INPUT] == K.mask_input_name(
            entry[K.MaskInputKey.MODULE], entry[K.MaskInputKey.SLOT]
        )
    for entry in m[K.Key.TRAINABLE]:
        assert set(entry) == set(K.TRAINABLE_KEYS) and entry[K.TrainableKey.ROLE] in K.ROLES
    spec = m[K.Key.INPUT_SPEC]
    assert set(K.INPUT_SPEC_KEYS) <= set(spec) <= values(K.InputSpecKey)
    assert set(spec[K.InputSpecKey.TOKEN_IDS]) == set(K.TOKEN_ID_KEYS)
    assert set(m) == set(K.REQUIRED_KEYS) | set(K.OPTIONAL_SECTIONS)
    assert set(m[K.Key.MEMORY_BOUND]) == set(K.MEMORY_BOUND_KEYS) == values(K.MemoryBoundKey)


# -- preprocessing constants ------------------------------------------------------------------------
_KT_CONST = re.compile(r'^\s*const val ([A-Z][A-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"', re.M)
_SWIFT_CONST = re.compile(r'^\s*(?:public )?static let ([a-z][A-Za-z0-9]*)\s*=\s*"((?:[^"\\]|\\.)*)"', re.M)


def test_preprocessing_constants_match_the_sdk():
    from mobile_peft.core import datasets, spec

    defaults = {f.name: f.default for f in fields(spec.InputSpec)}
    want = {
        "PAD_TOKEN": defaults["pad_token"],
        "BOS_TOKEN": defaults["bos_token"],
        "EOS_TOKEN": defaults["eos_token"],
        "QUESTION_PLACEHOLDER": "{question}",
        "ANNOTATIONS_FILE": datasets.ANNOTATIONS_FILE,
        "IMAGES_DIR": datasets.IMAGES_DIR,
    }
    assert want["QUESTION_PLACEHOLDER"] in defaults["prompt_template"]
    kt = dict(
        _KT_CONST.findall((KOTLIN_DIR / "Spec.kt").read_text() + (KOTLIN_DIR / "Datasets.kt").read_text())
    )
    swift = dict(_SWIFT_CONST.findall((SWIFT_DIR / "Spec.swift").read_text() + (SWIFT_DIR / "Datasets.swift").read_text()))
    for name, value in want.items():
        assert kt.get(name) == value, f"the Kotlin core's {name} = {kt.get(name)!r}; the SDK has {value!r}"
        assert swift.get(_camel(name)) == value, (
            f"Spec.swift / Datasets.swift {_camel(name)} = {swift.get(_camel(name))!r}"
        )
    assert kt["DEFAULT_PROMPT_TEMPLATE"] == defaults["prompt_template"]
    # The label value that carries no loss is the contract's, not a copy.
    assert "Contract.IGNORE_INDEX" in _code(KOTLIN_DIR / "Spec.kt")
    assert "Contract.ignoreIndex" in _code(SWIFT_DIR / "Spec.swift")
