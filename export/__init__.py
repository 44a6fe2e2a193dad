"""Exporters: ExecuTorch .pte (+ .ptd), ONNX Runtime training artifacts, Core ML. Installed as mobile_peft.export."""

__all__: list[str] = []
