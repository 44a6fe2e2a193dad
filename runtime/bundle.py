"""A bundle as the runtime sees it: a directory (a ``.zip`` is checked and extracted to a fresh
temporary directory first, :func:`~mobile_peft.core.archive.extract_bundle_zip`) and its validated, typed manifest (:class:`mobile_peft.core.manifest.Manifest`,
with the rank schedule and the trainable tensors' roles).

Validation (every key and sub-key, schema version, every file's size and sha256, all problems in
one error) is the core's :func:`~mobile_peft.core.manifest.validate_bundle`.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mobile_peft.core import contract
from mobile_peft.core.archive import extract_bundle_zip
from mobile_peft.core.encode import Encoder
from mobile_peft.core.manifest import Manifest, Trainable, read_manifest, validate_bundle
from mobile_peft.core.schedule import RankSchedule
from mobile_peft.core.spec import BundleInputSpec

__all__ = ["Bundle"]


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    _tmp: Any = None

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> Bundle:
        """``verify=False`` skips the file checksums (the manifest is still validated)."""
        path = Path(path)
        tmp = None
        if path.is_file() and zipfile.is_zipfile(path):
            tmp = extract_bundle_zip(path)  # traversal, links, duplicates and bombs refused first
            path = Path(tmp.name)
        manifest = validate_bundle(path) if verify else Manifest.from_dict(read_manifest(path), path)
        return cls(path, manifest, tmp)

    # -- sections --------------------------------------------------------------------------------
    @property
    def format(self) -> str:
        return self.manifest.format

    @property
    def input_spec(self) -> BundleInputSpec:
        return self.manifest.input_spec

    @property
    def batch_size(self) -> int:
        return self.manifest.input_spec.batch_size

    @property
    def optimizer(self) -> dict[str, Any]:
        return self.manifest.optimizer

    @property
    def methods(self) -> dict[str, Any]:
        return self.manifest.methods

    @property
    def performance_model(self) -> dict[str, Any] | None:
        return self.manifest.performance_model

    @property
    def trainable(self) -> list[Trainable]:
        return self.manifest.trainable

    @property
    def schedule(self) -> RankSchedule:
        return self.manifest.rank_schedule

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def tokenizer_path(self) -> Path:
        return self.file(self.input_spec.tokenizer_file or contract.TOKENIZER_FILE)

    def encoder(self) -> Encoder:
        """The core's batch encoder with the bundled tokeniser."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return Encoder(self.input_spec, tokenizer)
