"""The SDK's exceptions.

Every error the SDK raises on purpose derives from :class:`MobilePeftError`; each subclass also
derives from the built-in exception it refines, so ``except ValueError`` keeps working for
callers that do not know this package. Messages say what was given, what was expected and what
to do about it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BundleError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DivergedError",
    "MissingExtraError",
    "MobilePeftError",
    "RegistryError",
]


class MobilePeftError(Exception):
    """Base class of every error raised by mobile-peft."""


class ConfigError(MobilePeftError, ValueError):
    """A configuration field has a value that cannot work."""


class DataError(MobilePeftError, ValueError):
    """A data set (embedded or user folder) is malformed."""


class DivergedError(MobilePeftError, FloatingPointError):
    """Training produced non-finite losses, gradients or weights too often to go on."""


class CheckpointError(MobilePeftError, FileNotFoundError):
    """A model or adapter directory is missing files or has an unknown layout."""


class RegistryError(MobilePeftError, KeyError):
    """An unknown or duplicate name in one of the SDK's registries."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class MissingExtraError(MobilePeftError, ImportError):
    """An optional backend is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package {package!r}, which is not installed. "
            f"Install it with: pip install 'mobile-peft[{extra}]'"
        )


class BundleError(MobilePeftError, ValueError):
    """A bundle or its manifest fails validation; the message lists every problem."""

    def __init__(self, source: str | Path, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"bundle {source} is invalid:\n  - " + "\n  - ".join(self.problems))
