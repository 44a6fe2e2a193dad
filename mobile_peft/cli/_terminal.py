"""The CLI owns the terminal: native libraries' own stderr lines (ExecuTorch's
``[cpuinfo_utils.cpp:71] Reading file ...``, ONNX Runtime's ``[I:onnxruntime:...]``) are dropped
unless ``-v``.

They arrive two ways, below Python's logging and warnings: C++ writing straight to file descriptor
2 (ONNX Runtime), and C++ streams that the pybind11 bindings redirect into Python's ``sys.stderr``
(ExecuTorch). For the command, fd 2 becomes a pipe read by a thread that forwards every other line,
and ``sys.stderr`` becomes a filter over a duplicate of the original descriptor: rich progress
bars, error messages and tracebacks still reach the real terminal at once (it stays a TTY), and a
write that is a native log line is dropped. Child processes inherit the pipe, so their native
lines are filtered too.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator

__all__ = ["NATIVE_NOISE", "native_stderr_filtered"]

logger = logging.getLogger("mobile_peft.cli")

# "[cpuinfo_utils.cpp:71] ..." (ExecuTorch's runtime log), "... [I:onnxruntime:, ...]" / [V:...] / [W:...].
NATIVE_NOISE = re.compile(r"^\[[\w./-]+\.(?:cpp|cc|c|h):\d+\]|\[[IVW]:onnxruntime:")


class _FilteredRaw(io.RawIOBase):
    """The bytes under the command's ``sys.stderr``. The bindings write a native log line in pieces
    (``"["``, ``"cpuinfo_utils.cpp"``, ``":"``, ...), so a write that starts a line with ``[`` is held
    until its newline and dropped if the line is a native log line; every other write goes straight
    to the terminal."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._pending = b""

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)

    def _emit(self, data: bytes) -> None:
        while data:
            data = data[os.write(self._fd, data) :]

    def write(self, data) -> int:  # noqa: ANN001 - bytes-like
        data = bytes(data)
        if not self._pending and not data.startswith(b"["):
            self._emit(data)
            return len(data)
        self._pending += data
        while b"\n" in self._pending:
            line, _, self._pending = self._pending.partition(b"\n")
            if NATIVE_NOISE.search(line.decode(errors="replace")):
                logger.debug("native: %s", line.decode(errors="replace"))
            else:
                self._emit(line + b"\n")
            if self._pending and not self._pending.startswith(b"["):
                self._emit(self._pending)
                self._pending = b""
        return len(data)

    def close(self) -> None:
        if self._pending and not NATIVE_NOISE.search(self._pending.decode(errors="replace")):
            self._emit(self._pending)
        self._pending = b""
        os.close(self._fd)
        super().close()


def _forward(read_fd: int, out: int) -> None:
    with os.fdopen(read_fd, "rb") as pipe:
        for line in pipe:
            text = line.decode(errors="replace")
            if NATIVE_NOISE.search(text):
                logger.debug("native: %s", text.rstrip())
            else:
                os.write(out, line)


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Filter fd 2 for the block (see the module docstring)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (an embedding host): nothing to filter
        yield
        return
    read_fd, write_fd = os.pipe()
    python_stderr = sys.stderr
    encoding = getattr(python_stderr, "encoding", None) or "utf-8"
    sys.stderr = io.TextIOWrapper(_FilteredRaw(os.dup(saved)), encoding=encoding, errors="backslashreplace",
                                  line_buffering=True, write_through=True)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_forward, args=(read_fd, saved), name="native-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end held by this process: the thread ends
        thread.join(timeout=5)
        sys.stderr.close()
        sys.stderr = python_stderr
        os.close(saved)
