"""Build, write, read and validate bundle manifests (``manifest.json``).

Every key comes from :mod:`.contract`. :func:`validate_bundle` collects *all* problems of a bundle
(missing keys, unknown schema version, missing files, wrong sizes or sha256) into one
:class:`BundleError`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mobile_peft.errors import MobilePeftError

from . import contract
from .contract import Key

__all__ = [
    "BundleError",
    "file_entry",
    "read_manifest",
    "sha256_of",
    "validate_bundle",
    "validate_manifest",
    "write_manifest",
]

_CHUNK = 1 << 20


class BundleError(MobilePeftError, ValueError):
    """A bundle or its manifest fails validation; the message lists every problem."""

    def __init__(self, source: str | Path, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"bundle {source} is invalid:\n  - " + "\n  - ".join(self.problems))


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
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def file_entry(bundle: Path, name: str) -> dict[str, Any]:
    path = bundle / name
    return {"path": name, "sha256": sha256_of(path), "size": size_of(path)}


def write_manifest(bundle: Path, manifest: dict[str, Any], files: list[str]) -> Path:
    """Add the ``files`` section (sha256 + size of each of ``files``), validate, write."""
    manifest = dict(manifest)
    manifest[Key.FILES] = [file_entry(bundle, name) for name in files]
    problems = validate_manifest(manifest)
    if problems:
        raise BundleError(bundle, problems)
    path = bundle / contract.MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def read_manifest(bundle: Path) -> dict[str, Any]:
    path = Path(bundle) / contract.MANIFEST_FILE
    if not path.is_file():
        raise BundleError(bundle, [f"no {contract.MANIFEST_FILE}; is this a bundle written by `mobile-peft export`?"])
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(bundle, [f"{contract.MANIFEST_FILE} is not valid JSON ({exc})"]) from None
    if not isinstance(data, dict):
        raise BundleError(bundle, [f"{contract.MANIFEST_FILE} holds a {type(data).__name__}, not an object"])
    return data


def _missing(section: Any, keys: tuple[str, ...], where: str) -> list[str]:
    if not isinstance(section, dict):
        return [f"{where} is a {type(section).__name__}, expected an object"]
    return [f"missing key {where}.{k!r}" for k in keys if k not in section]


def validate_manifest(manifest: dict[str, Any]) -> list[str]:
    """Every structural problem of ``manifest`` (empty list when valid); files are not read."""
    problems = [f"missing key {k!r}" for k in contract.REQUIRED_KEYS if k not in manifest]
    if Key.SCHEMA in manifest and manifest[Key.SCHEMA] != contract.SCHEMA_NAME:
        problems.append(f"schema is {manifest[Key.SCHEMA]!r}; expected {contract.SCHEMA_NAME!r}")
    version = manifest.get(Key.SCHEMA_VERSION)
    if Key.SCHEMA_VERSION in manifest and version not in contract.SUPPORTED_SCHEMA_VERSIONS:
        problems.append(
            f"unknown schema_version {version!r}; this mobile-peft reads {list(contract.SUPPORTED_SCHEMA_VERSIONS)} "
            "(upgrade mobile-peft, or re-export the bundle)"
        )
    if Key.FORMAT in manifest and manifest[Key.FORMAT] not in contract.FORMATS:
        problems.append(f"format {manifest[Key.FORMAT]!r} is unknown; expected one of {list(contract.FORMATS)}")
    sections = (
        (Key.MODEL, contract.MODEL_KEYS),
        (Key.INPUT_SPEC, contract.INPUT_SPEC_KEYS),
        (Key.OPTIMIZER, contract.OPTIMIZER_KEYS),
        (Key.BACKBONE, contract.BACKBONE_KEYS),
        (Key.RANK_SCHEDULE, contract.RANK_SCHEDULE_KEYS),
    )
    for key, keys in sections:
        if key in manifest and not (key == Key.RANK_SCHEDULE and manifest[key] is None):
            problems += _missing(manifest[key], keys, key)
    for key, keys in ((Key.TRAINABLE, contract.TRAINABLE_KEYS), (Key.FILES, contract.FILE_KEYS)):
        entries = manifest.get(key, [])
        if not isinstance(entries, list):
            problems.append(f"{key} is a {type(entries).__name__}, expected a list")
            continue
        for i, entry in enumerate(entries):
            problems += _missing(entry, keys, f"{key}[{i}]")
    return problems


def validate_bundle(bundle: str | Path) -> dict[str, Any]:
    """Read and check a bundle directory: manifest structure, then every file's size and sha256.
    Returns the manifest; raises :class:`BundleError` naming every problem."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(bundle, ["not a directory (unzip a .zip bundle first, or pass the directory)"])
    manifest = read_manifest(bundle)
    problems = validate_manifest(manifest)
    for entry in manifest.get(Key.FILES, []) if isinstance(manifest.get(Key.FILES), list) else []:
        if not isinstance(entry, dict) or not all(k in entry for k in contract.FILE_KEYS):
            continue  # already reported
        path = bundle / entry["path"]
        if not path.exists():
            problems.append(f"file {entry['path']!r} listed in the manifest is missing")
            continue
        size = size_of(path)
        if size != entry["size"]:
            problems.append(f"file {entry['path']!r} has {size} bytes; the manifest says {entry['size']} (tampered or truncated)")
        elif sha256_of(path) != entry["sha256"]:
            problems.append(f"file {entry['path']!r} fails its sha256 checksum (tampered or corrupted)")
    if problems:
        raise BundleError(bundle, problems)
    return manifest
