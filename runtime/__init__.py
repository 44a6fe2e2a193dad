"""The reference on-device trainer and memory profiler. Installed as mobile_peft.runtime."""

__all__: list[str] = []
