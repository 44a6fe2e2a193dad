"""The torch-free core: the bundle format as code, and everything a phone must do the same way.

Imports only the standard library and numpy (``tokenizers``, ``safetensors``, PIL and
scikit-learn lazily, inside the functions that read those files), so the on-device runtime and the
phone apps' mirrors (``android_demo/core``, ``ios_demo/PersonalizationCore``) stand on it alone.
The authoring layer (torch) and the exporters call the very same functions.

=====================  ==============================================================
module                 what it owns
=====================  ==============================================================
:mod:`.contract`       file, key and sub-key, method and input names; tensor roles
:mod:`.manifest`       the typed manifest (:class:`Manifest`, :class:`Trainable`), its validator
:mod:`.schedule`       :class:`RankSchedule`: phases, masks, budget, JSON
:mod:`.spec`           :class:`InputSpec` and the bundle's :class:`BundleInputSpec`
:mod:`.encode`         image + prompt encoding (numpy), the batch :class:`Encoder`
:mod:`.examples`       :class:`VQAExample`
:mod:`.digits`         the embedded digits tasks and their split
:mod:`.datasets`       the data-folder reader (every bad line reported) and ``load_dataset``
:mod:`.perf_model`     HyDRA's performance model and its budgeted allocation search
:mod:`.realloc`        gradient signals and the re-allocation decision (HyDRA's dynamic phase)
:mod:`.adapter_files`  the PEFT adapter file writer/reader
:mod:`.units`          allocation-unit keys and where a module sits in the VLM
:mod:`.registry`       the name registry every plug-in table uses
:mod:`.errors`         the SDK's exceptions
=====================  ==============================================================
"""

from __future__ import annotations

from .errors import (
    BundleError,
    CheckpointError,
    ConfigError,
    DataError,
    MissingExtraError,
    MobilePeftError,
    RegistryError,
)
from .examples import VQAExample
from .manifest import Manifest, Trainable
from .schedule import Phase, RankSchedule
from .spec import BundleInputSpec, InputSpec

__all__ = [
    "BundleError",
    "BundleInputSpec",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "InputSpec",
    "Manifest",
    "MissingExtraError",
    "MobilePeftError",
    "Phase",
    "RankSchedule",
    "RegistryError",
    "Trainable",
    "VQAExample",
]
