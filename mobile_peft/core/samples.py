"""A small valid bundle manifest built from the core's own types -- the layout an exporter writes --
for tests, fuzzing, documentation and the phone apps' golden fixtures (no export needed)."""

from __future__ import annotations

from typing import Any

from . import contract
from .manifest import Trainable
from .schedule import MaskInput, Phase, RankSchedule
from .spec import BundleInputSpec, InputSpec, TokenIds

__all__ = ["SAMPLE_MODULE", "sample_manifest"]

SAMPLE_MODULE = "language_model.model.layers.0.self_attn.q_proj"


def sample_manifest(fmt: str = contract.FORMAT_ONNX) -> dict[str, Any]:
    """One LoRA slot (r_max 4 on a 16 -> 32 projection), two phases (the second with soft masks)."""
    K, S = contract.Key, contract.SlotKey
    module, slot = SAMPLE_MODULE, contract.SLOTS[contract.ADAPTER_LORA][0]
    down, up = contract.SLOT_PARAMS[slot]
    info = {S.R_MAX: 4, S.PARAMS_PER_RANK: 16 + 32, S.SCALE: 2.0}
    schedule = RankSchedule(
        "uniform",
        contract.ADAPTER_LORA,
        4 * 48,
        {module: {slot: info}},
        [Phase(0, {module: {slot: 4}}), Phase(6, {module: {slot: 2}}, {module: {slot: [1.0, 1.0, 0.5, 0.0]}})],
        mask_inputs=[MaskInput(module, slot, 4)],
    )
    trainable = [
        Trainable(f"{contract.TRAINABLE_PREFIX}{module}.{down}", module, slot, contract.ROLE_DOWN, down, (4, 16)),
        Trainable(f"{contract.TRAINABLE_PREFIX}{module}.{up}", module, slot, contract.ROLE_UP, up, (32, 4)),
    ]
    spec = BundleInputSpec(InputSpec(image_size=16), 2, 28, TokenIds(0, 1, 2), contract.TOKENIZER_FILE)
    M = contract.MethodKey
    files = {contract.FORMAT_PTE: [contract.PTE_FILE, contract.PTD_FILE],
             contract.FORMAT_ONNX: [contract.ONNX_TRAINING_FILE, contract.ONNX_EVAL_FILE, contract.ONNX_OPTIMIZER_FILE,
                                    contract.ONNX_CHECKPOINT_FILE],
             contract.FORMAT_COREML: [contract.COREML_BACKBONE_FILE, contract.COREML_HEAD_FILE]}[fmt]
    methods: dict[str, Any] = {
        contract.FORMAT_PTE: {
            M.TRAIN: {M.METHOD: contract.METHOD_TRAIN, M.INPUTS: [], M.OUTPUTS: [contract.OUTPUT_LOSS],
                      M.GRADIENTS_INDEX_METHOD: contract.ET_GRADIENTS_INDEX_PREFIX + contract.METHOD_TRAIN,
                      M.PARAMETERS_INDEX_METHOD: contract.ET_PARAMETERS_INDEX_PREFIX + contract.METHOD_TRAIN,
                      M.FQN_METHOD: contract.ET_FQN_PREFIX + contract.METHOD_TRAIN},
            M.EVAL: {M.METHOD: contract.METHOD_EVAL, M.INPUTS: [], M.OUTPUTS: [contract.OUTPUT_LOSS, contract.OUTPUT_LOGITS]},
            M.PROGRAM: contract.PTE_FILE, M.TRAINABLE_DATA: contract.PTD_FILE},
        contract.FORMAT_ONNX: {
            M.TRAIN_INPUTS: [], M.TRAINING_MODEL: contract.ONNX_TRAINING_FILE, M.EVAL_MODEL: contract.ONNX_EVAL_FILE,
            M.OPTIMIZER_MODEL: contract.ONNX_OPTIMIZER_FILE, M.CHECKPOINT: contract.ONNX_CHECKPOINT_FILE,
            M.OUTPUTS: [contract.OUTPUT_LOSS, contract.OUTPUT_LOGITS]},
        contract.FORMAT_COREML: {M.BACKBONE: {M.FILE: contract.COREML_BACKBONE_FILE}, M.HEAD: {M.FILE: contract.COREML_HEAD_FILE}},
    }[fmt]
    F, Opt = contract.FileKey, contract.OptimizerKey
    return {
        K.SCHEMA: contract.SCHEMA_NAME,
        K.SCHEMA_VERSION: contract.SCHEMA_VERSION,
        K.FORMAT: fmt,
        K.SDK_VERSION: "0",
        K.MODEL: {contract.ModelKey.NAME: "tiny", contract.ModelKey.QUANT: "int8", contract.ModelKey.PARAMETERS: 700_000,
                  contract.ModelKey.NUM_IMAGE_TOKENS: 4, contract.ModelKey.VOCAB_SIZE: 64},
        K.INPUT_SPEC: spec.to_dict(),
        K.METHODS: methods,
        K.TRAINABLE: [t.to_dict() for t in trainable],
        K.RANK_SCHEDULE: schedule.to_dict(performance_model=False),
        K.PERFORMANCE_MODEL: None,
        K.OPTIMIZER: {Opt.NAME: "adamw", Opt.LR: 1e-3},
        K.BACKBONE: {contract.BackboneKey.QUANT: "int8", contract.BackboneKey.BYTES_BY_DTYPE: {"int8": 1000},
                     contract.BackboneKey.TOTAL_BYTES: 1000},
        K.FILES: [{F.PATH: name, F.SHA256: "0" * 64, F.SIZE: 1} for name in [*files, contract.TOKENIZER_FILE]],
    }
