"""The bundle manifest (``manifest.json``) as typed objects, with one validator.

:func:`manifest_problems` lists *every* structural problem of a manifest with its JSON path
(missing keys and sub-keys, unknown schema version or format, bad trainable roles, an invalid rank
schedule); :func:`validate_bundle` adds every file's size and sha256, and raises one
:class:`~.errors.BundleError` naming all of them. :meth:`Manifest.from_dict` parses a valid
manifest into :class:`Manifest` (with :class:`Trainable` rows and the bundle's
:class:`~.schedule.RankSchedule`); :func:`write_manifest` is what every exporter calls.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from . import contract
from .contract import Key, MethodKey, TrainableKey
from .errors import BundleError, ConfigError
from .fields import FIELD_TYPES
from .schedule import RankSchedule
from .spec import BundleInputSpec

__all__ = [
    "Manifest",
    "Trainable",
    "file_entry",
    "manifest_problems",
    "memory_bound_section",
    "optimizer_states",
    "read_manifest",
    "sha256_of",
    "size_of",
    "validate_bundle",
    "write_manifest",
]

_CHUNK = 1 << 20
TRAINABLE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class Trainable:
    """One trainable tensor: its graph name, adapter module path, rank slot, role (``down``
    ``[r_max, fan_in]`` / ``up`` ``[out, r_max]``), parameter name in the module, shape, dtype."""

    name: str
    module: str
    slot: str
    role: str
    param: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= int(d)
        return n

    def to_dict(self) -> dict[str, Any]:
        K = TrainableKey
        return {
            K.NAME: self.name,
            K.MODULE: self.module,
            K.SLOT: self.slot,
            K.ROLE: self.role,
            K.PARAM: self.param,
            K.SHAPE: list(self.shape),
            K.DTYPE: self.dtype,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        K = TrainableKey
        return cls(
            d[K.NAME],
            d[K.MODULE],
            d[K.SLOT],
            d[K.ROLE],
            d[K.PARAM],
            tuple(int(v) for v in d[K.SHAPE]),
            d[K.DTYPE],
        )


def slot_pairs(trainable: list[Trainable]) -> dict[tuple[str, str], dict[str, Trainable]]:
    """``(module, slot) -> {"down": tensor, "up": tensor}`` from the recorded roles."""
    out: dict[tuple[str, str], dict[str, Trainable]] = {}
    for t in trainable:
        out.setdefault((t.module, t.slot), {})[t.role] = t
    return out


@dataclass
class Manifest:
    """A parsed, valid manifest. Sections a phone needs are typed; the rest stay JSON objects."""

    format: str
    sdk_version: str
    model: dict[str, Any]
    input_spec: BundleInputSpec
    methods: dict[str, Any]
    trainable: list[Trainable]
    rank_schedule: RankSchedule
    performance_model: dict[str, Any] | None
    optimizer: dict[str, Any]
    backbone: dict[str, Any]
    files: list[dict[str, Any]]
    raw: dict[str, Any]
    memory_bound: dict[str, Any] | None = None  # optional section (contract.MemoryBoundKey)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | Path = "manifest") -> Self:
        problems = manifest_problems(d)
        if problems:
            raise BundleError(source, problems)
        return cls._from_valid(d, source)

    @classmethod
    def _from_valid(cls, d: dict[str, Any], source: str | Path) -> Self:
        """Build from a manifest :func:`manifest_problems` already passed (no second validation)."""
        schedule = RankSchedule.from_dict(d[Key.RANK_SCHEDULE], where=f"{source} rank_schedule")
        schedule.performance_model = d[Key.PERFORMANCE_MODEL]
        return cls(
            format=d[Key.FORMAT],
            sdk_version=d[Key.SDK_VERSION],
            model=d[Key.MODEL],
            input_spec=BundleInputSpec.from_dict(d[Key.INPUT_SPEC]),
            methods=d[Key.METHODS],
            trainable=[Trainable.from_dict(t) for t in d[Key.TRAINABLE]],
            rank_schedule=schedule,
            performance_model=d[Key.PERFORMANCE_MODEL],
            optimizer=d[Key.OPTIMIZER],
            backbone=d[Key.BACKBONE],
            files=d[Key.FILES],
            raw=d,
            memory_bound=d.get(Key.MEMORY_BOUND),
        )

    def slot_pairs(self) -> dict[tuple[str, str], dict[str, Trainable]]:
        return slot_pairs(self.trainable)


# -- memory lower bound ----------------------------------------------------------------------------
def optimizer_states(optimizer: dict[str, Any]) -> int:
    """State tensors the optimiser keeps per trainable tensor: AdamW 2 (first and second moments),
    SGD with momentum 1, plain SGD 0."""
    if optimizer[contract.OptimizerKey.NAME] == "adamw":
        return 2
    return 1 if float(optimizer.get(contract.OptimizerKey.MOMENTUM) or 0) else 0


def memory_bound_section(
    backbone_bytes: int, trainable_bytes: int, activation_bytes: int, optimizer: dict[str, Any], batch_size: int,
    counted_by: str,
) -> dict[str, Any]:
    """The manifest's ``memory_bound`` (:class:`~.contract.MemoryBoundKey`): frozen backbone as
    stored + trainable tensors x (weights + gradients + optimiser states) + saved activations."""
    K = contract.MemoryBoundKey
    states = optimizer_states(optimizer)
    terms = {K.BACKBONE_BYTES: int(backbone_bytes), K.TRAINABLE_BYTES: int(trainable_bytes),
             K.GRADIENT_BYTES: int(trainable_bytes), K.OPTIMIZER_STATE_BYTES: states * int(trainable_bytes),
             K.ACTIVATION_BYTES: int(activation_bytes)}
    return {K.TOTAL_BYTES: sum(terms.values()), **terms, K.OPTIMIZER_STATES: states, K.BATCH_SIZE: int(batch_size),
            K.COUNTED_BY: counted_by}


def _memory_bound_problems(manifest: dict[str, Any]) -> list[str]:
    section = manifest.get(Key.MEMORY_BOUND)
    if not isinstance(section, dict):
        return []  # absent (older bundles), or reported with the top-level types
    K = contract.MemoryBoundKey
    problems = _missing(section, contract.MEMORY_BOUND_KEYS, Key.MEMORY_BOUND)
    if problems:
        return problems
    terms = (K.BACKBONE_BYTES, K.TRAINABLE_BYTES, K.GRADIENT_BYTES, K.OPTIMIZER_STATE_BYTES, K.ACTIVATION_BYTES)
    total = sum(section[k] for k in terms)
    if section[K.TOTAL_BYTES] != total:
        problems.append(f"{Key.MEMORY_BOUND}.{K.TOTAL_BYTES} is {section[K.TOTAL_BYTES]}; expected the sum of its terms, {total}")
    return problems


# -- files -----------------------------------------------------------------------------------------
def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory (an ``.mlpackage``): its files' relative paths and
    bytes, in sorted order."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    return (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )


def file_entry(bundle: Path, name: str) -> dict[str, Any]:
    path = bundle / name
    return {
        contract.FileKey.PATH: name,
        contract.FileKey.SHA256: sha256_of(path),
        contract.FileKey.SIZE: size_of(path),
    }


def write_manifest(bundle: Path, manifest: dict[str, Any], files: list[str]) -> Path:
    """Add the ``files`` section (sha256 + size of each of ``files``), validate, write."""
    manifest = dict(manifest)
    manifest[Key.FILES] = [file_entry(bundle, name) for name in files]
    problems = manifest_problems(manifest)
    if problems:
        raise BundleError(bundle, problems)
    path = bundle / contract.MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The manifest's JSON object (not validated)."""
    path = Path(bundle) / contract.MANIFEST_FILE
    if not path.is_file():
        raise BundleError(
            bundle, [f"no {contract.MANIFEST_FILE}; is this a bundle written by `mobile-peft export`?"]
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(bundle, [f"{contract.MANIFEST_FILE} is not valid JSON ({exc})"]) from None
    if not isinstance(data, dict):
        raise BundleError(bundle, [f"{contract.MANIFEST_FILE} holds a {type(data).__name__}, not an object"])
    return data


# -- validation ------------------------------------------------------------------------------------
def _missing(section: Any, keys: tuple[str, ...], where: str, types: str | None = None) -> list[str]:
    """Missing keys of ``section`` and values of the wrong type (``FIELD_TYPES[types]``, default ``where``)."""
    if not isinstance(section, dict):
        return [f"{where} is a {type(section).__name__}, expected an object"]
    problems = [f"missing key {where}.{k}" for k in keys if k not in section]
    for key, field in FIELD_TYPES.get(where if types is None else types, {}).items():
        if key in section and not field.check(section[key]):
            problems.append(f"{where}.{key} is {str(section[key])[:60]!r}; expected {field.describe()}")
    return problems


def _list_of_objects(manifest: dict[str, Any], key: str, keys: tuple[str, ...]) -> list[str]:
    entries = manifest.get(key, [])
    if not isinstance(entries, list):
        return []  # reported with the top-level types
    problems = []
    for i, entry in enumerate(entries):
        problems += _missing(entry, keys, f"{key}[{i}]", types=key)
    return problems


def _trainable_problems(manifest: dict[str, Any]) -> list[str]:
    entries = manifest.get(Key.TRAINABLE)
    if not isinstance(entries, list):
        return []
    problems = []
    for i, entry in enumerate(entries):
        if (
            isinstance(entry, dict)
            and TrainableKey.ROLE in entry
            and entry[TrainableKey.ROLE] not in contract.ROLES
        ):
            problems.append(
                f"{Key.TRAINABLE}[{i}].{TrainableKey.ROLE} is {entry[TrainableKey.ROLE]!r}; expected one of {list(contract.ROLES)}"
            )
    pairs: dict[tuple[Any, Any], list[Any]] = {}
    for entry in entries:
        if isinstance(entry, dict):
            pairs.setdefault((entry.get(TrainableKey.MODULE), entry.get(TrainableKey.SLOT)), []).append(
                entry.get(TrainableKey.ROLE)
            )
    modules = manifest.get(Key.RANK_SCHEDULE, {}).get(contract.ScheduleKey.MODULES) if isinstance(manifest.get(Key.RANK_SCHEDULE), dict) else None
    for i, entry in enumerate(entries):  # shapes against the schedule: down [r_max, fan_in], up [out, r_max]
        if not isinstance(entry, dict) or not isinstance(modules, dict):
            continue
        info = (modules.get(entry.get(TrainableKey.MODULE)) or {}).get(contract.ScheduleKey.SLOTS, {}).get(entry.get(TrainableKey.SLOT))
        shape, role = entry.get(TrainableKey.SHAPE), entry.get(TrainableKey.ROLE)
        if info is None:
            problems.append(f"{Key.TRAINABLE}[{i}] ({entry.get(TrainableKey.NAME)}) belongs to no slot of the rank schedule")
        elif not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(d, int) and d >= 0 for d in shape)):
            problems.append(f"{Key.TRAINABLE}[{i}].{TrainableKey.SHAPE} is {shape!r}; expected two sizes")
        elif role in contract.ROLES and shape[0 if role == contract.ROLE_DOWN else 1] != info.get(contract.SlotKey.R_MAX):
            problems.append(f"{Key.TRAINABLE}[{i}] ({entry.get(TrainableKey.NAME)}, {role}) has shape {shape}; "
                            f"its rank dimension must be the slot's r_max {info.get(contract.SlotKey.R_MAX)}")
        if entry.get(TrainableKey.DTYPE) not in TRAINABLE_DTYPES:
            problems.append(f"{Key.TRAINABLE}[{i}].{TrainableKey.DTYPE} is {entry.get(TrainableKey.DTYPE)!r}; expected one of {list(TRAINABLE_DTYPES)}")
    for (module, slot), roles in pairs.items():
        if None not in roles and sorted(map(str, roles)) != sorted(contract.ROLES):
            problems.append(
                f"{Key.TRAINABLE}: {module}.{slot} has roles {roles}; expected one {contract.ROLE_DOWN!r} and one {contract.ROLE_UP!r}"
            )
    return problems


def _reference_problems(manifest: dict[str, Any]) -> list[str]:
    """Every file the manifest names must be one it checksums (so nothing unverified is opened)."""
    listed = {f[contract.FileKey.PATH] for f in manifest[Key.FILES]}
    named = [manifest[Key.INPUT_SPEC][contract.InputSpecKey.TOKENIZER_FILE]]
    methods = manifest[Key.METHODS]
    named += [methods[k] for k in (MethodKey.PROGRAM, MethodKey.TRAINABLE_DATA, MethodKey.TRAINING_MODEL,
                                   MethodKey.EVAL_MODEL, MethodKey.OPTIMIZER_MODEL, MethodKey.CHECKPOINT) if k in methods]
    return [f"{name!r} is used by the manifest but not listed (with its sha256) in files" for name in named if name not in listed]


def _methods_problems(manifest: dict[str, Any]) -> list[str]:
    fmt, methods = manifest.get(Key.FORMAT), manifest.get(Key.METHODS)
    if not isinstance(fmt, str) or fmt not in contract.METHOD_KEYS or not isinstance(methods, dict):
        return []
    problems = _missing(methods, contract.METHOD_KEYS[fmt], Key.METHODS)
    if fmt == contract.FORMAT_PTE and isinstance(methods, dict):
        for key, keys in (
            (MethodKey.TRAIN, contract.PTE_TRAIN_METHOD_KEYS),
            (MethodKey.EVAL, contract.PTE_EVAL_METHOD_KEYS),
        ):
            if isinstance(methods.get(key), dict):
                problems += _missing(methods[key], keys, f"{Key.METHODS}.{key}", types="pte_method")
    return problems


def _schedule_problems(manifest: dict[str, Any]) -> list[str]:
    section = manifest.get(Key.RANK_SCHEDULE)
    if not isinstance(section, dict):
        return (
            []
            if Key.RANK_SCHEDULE not in manifest
            else [f"{Key.RANK_SCHEDULE} is a {type(section).__name__}, expected an object"]
        )
    problems = _missing(section, contract.BUNDLE_RANK_SCHEDULE_KEYS, Key.RANK_SCHEDULE)
    modules = section.get(contract.ScheduleKey.MODULES)
    for module, entry in modules.items() if isinstance(modules, dict) else []:
        slots = entry.get(contract.ScheduleKey.SLOTS) if isinstance(entry, dict) else None
        if not isinstance(slots, dict):
            problems.append(f"{Key.RANK_SCHEDULE}.modules[{module!r}] has no slots object")
            continue
        for slot, info in slots.items():  # a bundle's slots carry their scale (the personal adapter needs it)
            problems += _missing(info, contract.SLOT_KEYS, f"{Key.RANK_SCHEDULE}.modules[{module!r}].slots[{slot!r}]")
    if problems:
        return problems
    try:
        RankSchedule.from_dict(section, where=Key.RANK_SCHEDULE)
    except ConfigError as exc:
        return [str(exc)]
    return []


def manifest_problems(manifest: dict[str, Any]) -> list[str]:
    """Every structural problem of ``manifest`` (empty list when valid); files are not read."""
    if not isinstance(manifest, dict):
        return [f"the manifest is a {type(manifest).__name__}, expected an object"]
    problems = [f"missing key {k!r}" for k in contract.REQUIRED_KEYS if k not in manifest]
    if Key.SCHEMA in manifest and manifest[Key.SCHEMA] != contract.SCHEMA_NAME:
        problems.append(f"schema is {manifest[Key.SCHEMA]!r}; expected {contract.SCHEMA_NAME!r}")
    version = manifest.get(Key.SCHEMA_VERSION)
    if Key.SCHEMA_VERSION in manifest and version not in contract.SUPPORTED_SCHEMA_VERSIONS:
        problems.append(
            f"schema_version is {version!r}; this mobile-peft reads {list(contract.SUPPORTED_SCHEMA_VERSIONS)} "
            "(upgrade mobile-peft for a newer bundle, or re-export an older one)"
        )
    if Key.FORMAT in manifest and manifest[Key.FORMAT] not in contract.FORMATS:
        problems.append(
            f"format {manifest[Key.FORMAT]!r} is unknown; expected one of {list(contract.FORMATS)}"
        )
    problems += _missing(manifest, (), "", types="")
    sections = (
        (Key.MODEL, contract.MODEL_KEYS),
        (Key.INPUT_SPEC, contract.INPUT_SPEC_KEYS),
        (Key.OPTIMIZER, contract.OPTIMIZER_KEYS),
        (Key.BACKBONE, contract.BACKBONE_KEYS),
    )
    for key, keys in sections:
        if isinstance(manifest.get(key), dict):
            problems += _missing(manifest[key], keys, key)
    spec = manifest.get(Key.INPUT_SPEC)
    if isinstance(spec, dict) and isinstance(spec.get(contract.InputSpecKey.TOKEN_IDS), dict):
        problems += _missing(spec[contract.InputSpecKey.TOKEN_IDS], contract.TOKEN_ID_KEYS,
                             f"{Key.INPUT_SPEC}.{contract.InputSpecKey.TOKEN_IDS}")
    problems += _list_of_objects(manifest, Key.TRAINABLE, contract.TRAINABLE_KEYS)
    problems += _list_of_objects(manifest, Key.FILES, contract.FILE_KEYS)
    problems += _methods_problems(manifest)
    problems += _memory_bound_problems(manifest)
    if problems:  # the semantic checks below read these sections as typed
        return problems
    problems += _schedule_problems(manifest)
    if problems:  # trainable shapes are checked against a well-formed schedule
        return problems
    problems += _trainable_problems(manifest)
    problems += _reference_problems(manifest)
    return problems


def validate_bundle(bundle: str | Path) -> Manifest:
    """Read and check a bundle directory: manifest structure, then every file's size and sha256.
    Returns the parsed manifest; raises :class:`BundleError` naming every problem."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(bundle, ["not a directory (unzip a .zip bundle first, or pass the directory)"])
    manifest = read_manifest(bundle)
    problems = manifest_problems(manifest)
    files = manifest.get(Key.FILES)
    for entry in files if isinstance(files, list) else []:
        if not isinstance(entry, dict) or not all(k in entry for k in contract.FILE_KEYS):
            continue  # already reported
        if not all(FIELD_TYPES[Key.FILES][k].check(entry[k]) for k in contract.FILE_KEYS):
            continue  # already reported; a path leaving the bundle is never opened
        path = bundle / entry[contract.FileKey.PATH]
        if not path.exists():
            problems.append(f"file {entry['path']!r} listed in the manifest is missing")
            continue
        size = size_of(path)
        if size != entry[contract.FileKey.SIZE]:
            problems.append(
                f"file {entry['path']!r} has {size} bytes; the manifest says {entry['size']} (tampered or truncated)"
            )
        elif sha256_of(path) != entry[contract.FileKey.SHA256]:
            problems.append(f"file {entry['path']!r} fails its sha256 checksum (tampered or corrupted)")
    if problems:
        raise BundleError(bundle, problems)
    return Manifest._from_valid(manifest, bundle)
