"""The demo apps mirror export/contract.py by hand; these tests prove the mirrors agree with it.

Mapping (documented in both Contract files):

* top-level constant ``PTE_FILE``            -> Kotlin ``PTE_FILE``            -> Swift ``pteFile``
* manifest key ``Key.SCHEMA``                -> Kotlin ``KEY_SCHEMA``          -> Swift ``keySchema``
* section tuple ``INPUT_SPEC_KEYS`` entry ``"image_size"``
                                             -> Kotlin ``INPUT_SPEC_IMAGE_SIZE`` -> Swift ``inputSpecImageSize``

The contract module is loaded from its file (it is torch-free by design), so these tests stay fast
and do not depend on the rest of the exporter importing.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_PY = ROOT / "export" / "contract.py"
KOTLIN_DIR = ROOT / "android_demo" / "app" / "src" / "main" / "java" / "org" / "mobilepeft" / "demo"
SWIFT_DIR = ROOT / "ios_demo" / "MobilePeftDemo"
CONTRACT_KT = KOTLIN_DIR / "Contract.kt"
CONTRACT_SWIFT = SWIFT_DIR / "Contract.swift"

# Constants only the exporter uses (the phone never sees an opset or an IR version).
EXPORT_ONLY = {"ONNX_IR_VERSION", "ONNX_OPSET"}
# Name patterns of what the apps need: file names, formats, methods, ExecuTorch index-method
# prefixes, graph inputs/outputs, Core ML feature names, the mask suffix and the schema identity.
NEEDED = re.compile(
    r"^(.*_FILE|FORMAT_.*|METHOD_.*|ET_.*_PREFIX|INPUT_.*|OUTPUT_.*|COREML_.*|ONNX_LOSS_OUTPUT|MASK_SUFFIX|SCHEMA_NAME|SCHEMA_VERSION|KEY_.*)$"
)

_STRING = r'"((?:[^"\\]|\\.)*)"'
_KT_CONST = re.compile(
    rf"^\s*(?:private )?const val ([A-Z][A-Z0-9_]*)\s*=\s*(?:{_STRING}|(-?\d+)L?)\s*(?://.*)?$", re.MULTILINE
)
_SWIFT_CONST = re.compile(
    rf"^\s*(?:private )?static let ([a-z][A-Za-z0-9]*)(?:\s*:\s*\w+)?\s*=\s*(?:{_STRING}|(-?\d+))\s*(?://.*)?$",
    re.MULTILINE,
)


def _load_contract() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_contract_under_test", CONTRACT_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _camel(upper_snake: str) -> str:
    head, *rest = upper_snake.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


def expected_constants(contract: ModuleType) -> dict[str, str | int]:
    """Every contract name the apps may mirror, under its app (Kotlin) name."""
    out: dict[str, str | int] = {}
    for name, value in vars(contract).items():
        if (
            name.isupper()
            and isinstance(value, (str, int))
            and not isinstance(value, bool)
            and name not in EXPORT_ONLY
        ):
            out[name] = value
        elif name.endswith("_KEYS") and name != "REQUIRED_KEYS" and isinstance(value, tuple):
            section = name.removesuffix("_KEYS")
            for key in value:
                out[f"{section}_{key.upper()}"] = key
    for name, value in vars(contract.Key).items():
        if name.isupper() and isinstance(value, str):
            out[f"KEY_{name}"] = value
    return out


def needed_constants(contract: ModuleType) -> dict[str, str | int]:
    """What both apps must carry: NEEDED names plus every section key the phone parses."""
    expected = expected_constants(contract)
    sections = ("INPUT_SPEC_", "TRAINABLE_", "RANK_SCHEDULE_", "FILE_", "OPTIMIZER_")
    return {k: v for k, v in expected.items() if NEEDED.match(k) or k.startswith(sections)}


def _decode(groups: tuple[str, str | None, str | None]) -> str | int:
    _, text, number = groups
    return int(number) if number is not None else text.encode().decode("unicode_escape")


def kotlin_constants(path: Path = CONTRACT_KT) -> dict[str, str | int]:
    return {m.group(1): _decode(m.groups()) for m in _KT_CONST.finditer(path.read_text())}


def swift_constants(path: Path = CONTRACT_SWIFT) -> dict[str, str | int]:
    return {m.group(1): _decode(m.groups()) for m in _SWIFT_CONST.finditer(path.read_text())}


@pytest.fixture(scope="module")
def contract() -> ModuleType:
    return _load_contract()


def test_parsers_see_the_mirrors():
    # Guards the regexes: a parse that finds nothing would make every other test vacuous.
    assert len(kotlin_constants()) > 40
    assert len(swift_constants()) > 40


@pytest.mark.parametrize("app", ["kotlin", "swift"])
def test_every_needed_contract_name_is_mirrored_with_the_same_value(contract, app):
    found = kotlin_constants() if app == "kotlin" else swift_constants()
    problems = []
    for name, value in needed_constants(contract).items():
        app_name = name if app == "kotlin" else _camel(name)
        if app_name not in found:
            problems.append(f"{app_name} missing (export/contract.py: {name} = {value!r})")
        elif found[app_name] != value:
            problems.append(f"{app_name} = {found[app_name]!r} but export/contract.py has {value!r}")
    assert not problems, f"{app} Contract drifted from export/contract.py:\n" + "\n".join(problems)


@pytest.mark.parametrize("app", ["kotlin", "swift"])
def test_apps_use_no_name_missing_from_the_contract(contract, app):
    expected = expected_constants(contract)
    if app == "swift":
        expected = {_camel(k): v for k, v in expected.items()}
    found = kotlin_constants() if app == "kotlin" else swift_constants()
    extra = {k: v for k, v in found.items() if k not in expected}
    wrong = {k: (v, expected[k]) for k, v in found.items() if k in expected and expected[k] != v}
    assert not extra, f"{app} Contract has names export/contract.py does not define: {extra}"
    assert not wrong, f"{app} Contract values differ from export/contract.py: {wrong}"


def test_the_two_apps_mirror_the_same_set():
    kotlin = {_camel(k): v for k, v in kotlin_constants().items()}
    assert kotlin == swift_constants()


def test_supported_versions_and_required_keys_match(contract):
    kt = CONTRACT_KT.read_text()
    swift = CONTRACT_SWIFT.read_text()
    kt_versions = re.search(r"SUPPORTED_SCHEMA_VERSIONS\s*=\s*intArrayOf\(([^)]*)\)", kt).group(1)
    swift_versions = re.search(r"supportedSchemaVersions\s*=\s*\[([^\]]*)\]", swift).group(1)
    expected = list(contract.SUPPORTED_SCHEMA_VERSIONS)
    assert [int(v) for v in kt_versions.split(",") if v.strip()] == expected
    assert [int(v) for v in swift_versions.split(",") if v.strip()] == expected

    by_value = {v: k for k, v in vars(contract.Key).items() if k.isupper()}
    kt_keys = re.search(r"REQUIRED_KEYS\s*=\s*listOf\(([^)]*)\)", kt).group(1)
    swift_keys = re.search(r"requiredKeys\s*=\s*\[([^\]]*)\]", swift).group(1)
    expected_kt = [f"KEY_{by_value[k]}" for k in contract.REQUIRED_KEYS]
    assert [k.strip() for k in kt_keys.split(",") if k.strip()] == expected_kt
    assert [k.strip() for k in swift_keys.split(",") if k.strip()] == [_camel(k) for k in expected_kt]


def _substitute(template: str, values: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)|\\\((\w+)\)", lambda m: values[next(g for g in m.groups() if g)], template
    )


@pytest.mark.parametrize(
    "module,slot",
    [("language_model.model.layers.0.self_attn.q_proj", "lora"), ("vision.mlp.fc1", "parallel")],
)
def test_mask_input_name_rule_matches(contract, module, slot):
    expected = contract.mask_input_name(module, slot)
    kt = re.search(
        r'fun maskInputName\(module: String, slot: String\): String = "([^"]*)"', CONTRACT_KT.read_text()
    ).group(1)
    swift = re.search(
        r'static func maskInputName\(module: String, slot: String\) -> String \{ "([^"]*)" \}',
        CONTRACT_SWIFT.read_text(),
    ).group(1)
    assert _substitute(kt, {"module": module, "slot": slot, "MASK_SUFFIX": contract.MASK_SUFFIX}) == expected
    assert (
        _substitute(swift, {"module": module, "slot": slot, "maskSuffix": contract.MASK_SUFFIX}) == expected
    )


def test_mirror_check_fails_on_drift(contract, tmp_path):
    # The check must be able to fail: a changed value and an invented name are both caught.
    text = CONTRACT_KT.read_text().replace('"manifest.json"', '"manifest.v2.json"')
    text = text.replace("object Contract {", 'object Contract {\n    const val INVENTED_FILE = "x.bin"')
    drifted = tmp_path / "Contract.kt"
    drifted.write_text(text)
    found = kotlin_constants(drifted)
    expected = expected_constants(contract)
    assert found["MANIFEST_FILE"] != expected["MANIFEST_FILE"]
    assert "INVENTED_FILE" not in expected


# -- preprocessing constants against mobile_peft/data ---------------------------------------------


def _kotlin_preprocess() -> dict[str, str | int]:
    return kotlin_constants(KOTLIN_DIR / "Preprocess.kt")


def _swift_preprocess() -> dict[str, str | int]:
    return swift_constants(SWIFT_DIR / "Preprocess.swift")


def test_preprocessing_constants_match_the_sdk():
    from dataclasses import fields

    from mobile_peft.data import folder, spec

    defaults = {f.name: f.default for f in fields(spec.InputSpec)}
    want = {
        "IGNORE_INDEX": spec.IGNORE_INDEX,
        "PAD_TOKEN": defaults["pad_token"],
        "BOS_TOKEN": defaults["bos_token"],
        "EOS_TOKEN": defaults["eos_token"],
        "QUESTION_PLACEHOLDER": "{question}",
        "ANNOTATIONS_FILE": folder.ANNOTATIONS_FILE,
        "IMAGES_DIR": folder.IMAGES_DIR,
    }
    assert "{question}" in defaults["prompt_template"]
    kt, swift = _kotlin_preprocess(), _swift_preprocess()
    for name, value in want.items():
        assert kt.get(name) == value, f"Preprocess.kt {name} = {kt.get(name)!r}; the SDK has {value!r}"
        assert swift.get(_camel(name)) == value, (
            f"Preprocess.swift {_camel(name)} = {swift.get(_camel(name))!r}; the SDK has {value!r}"
        )


def test_rank_schedule_layout_the_apps_parse_matches_the_sdk():
    # The phase/slot keys inside rank_schedule come from RankSchedule.to_dict(), not from the contract.
    from mobile_peft.allocators.schedule import Phase, RankSchedule

    schedule = RankSchedule(
        "uniform",
        "lora",
        4,
        {"m": {"lora": {"r_max": 2, "params_per_rank": 2}}},
        [Phase(0, {"m": {"lora": 2}}, {"m": {"lora": [1.0, 0.5]}})],
    )
    d = schedule.to_dict()
    module = d["modules"]["m"]
    phase = d["phases"][0]
    kt = kotlin_constants(KOTLIN_DIR / "Manifest.kt")
    swift = swift_constants(SWIFT_DIR / "Manifest.swift")
    want = {
        "SCHEDULE_SLOTS": next(iter(module)),
        "SCHEDULE_R_MAX": "r_max",
        "PHASE_START_STEP": "start_step",
        "PHASE_RANKS": "ranks",
        "PHASE_MASKS": "masks",
    }
    assert want["SCHEDULE_SLOTS"] in module and "r_max" in module[want["SCHEDULE_SLOTS"]]["lora"]
    assert {"start_step", "ranks", "masks"} <= set(phase)
    for name, value in want.items():
        assert kt.get(name) == value, f"Manifest.kt {name}"
        assert swift.get(_camel(name)) == value, f"Manifest.swift {_camel(name)}"
