"""Opening a zipped bundle safely: it travels to phones and comes back from them, so it is
untrusted input.

:func:`extract_bundle_zip` refuses, all problems in one :class:`~.errors.BundleError`:

* entries whose name escapes the bundle (``../``, an absolute path, a drive letter, a backslash);
* symbolic links (a zip can carry them as entries with ``S_IFLNK`` mode bits);
* duplicate names (which one would win is up to the extractor);
* archives whose declared uncompressed size exceeds ``max_bytes``, entries compressed more than
  ``max_ratio`` to one (zip bombs), and entries that inflate past their declared size while being
  read (a lying header);

and extracts into a fresh directory that it creates, never into an existing one.
"""

from __future__ import annotations

import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .errors import BundleError

__all__ = ["MAX_BUNDLE_BYTES", "MAX_COMPRESSION_RATIO", "extract_bundle_zip", "zip_problems"]

MAX_BUNDLE_BYTES = 8 << 30  # the largest bundle of record (smolvlm-256m) is ~0.4 GB
MAX_COMPRESSION_RATIO = 200  # model weights compress ~1.1:1, JSON ~10:1; a bomb is 1000:1 and more
_RATIO_FLOOR = 1 << 20  # small entries (JSON, tokeniser) may compress as they like
_CHUNK = 1 << 20


def _name_problem(name: str) -> str | None:
    if "\\" in name:
        return f"entry {name!r} has a backslash in its path"
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return f"entry {name!r} has an absolute path"
    if ".." in path.parts:
        return f"entry {name!r} escapes the bundle (..)"
    if not name or name in (".", "./"):
        return f"entry {name!r} has an empty name"
    return None


def zip_problems(archive: zipfile.ZipFile, max_bytes: int = MAX_BUNDLE_BYTES, max_ratio: float = MAX_COMPRESSION_RATIO) -> list[str]:
    """Every reason not to extract ``archive`` (read from its central directory only)."""
    problems, seen, total = [], set(), 0
    for info in archive.infolist():
        problem = _name_problem(info.filename)
        if problem:
            problems.append(problem)
        if stat.S_ISLNK(info.external_attr >> 16):
            problems.append(f"entry {info.filename!r} is a symbolic link")
        key = info.filename.rstrip("/")
        if key in seen:
            problems.append(f"entry {info.filename!r} appears more than once")
        seen.add(key)
        total += info.file_size
        if info.file_size > _RATIO_FLOOR and info.file_size > max_ratio * max(info.compress_size, 1):
            problems.append(
                f"entry {info.filename!r} inflates {info.file_size:,} bytes from {info.compress_size:,} "
                f"(over {max_ratio:g}:1; a zip bomb?)"
            )
    if total > max_bytes:
        problems.append(f"the archive declares {total:,} uncompressed bytes, over the limit of {max_bytes:,}")
    return problems


def _copy_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    written = 0
    with archive.open(info) as src, target.open("wb") as dst:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise BundleError(target.name, [f"entry {info.filename!r} inflates past its declared {info.file_size:,} bytes"])
            dst.write(chunk)


def extract_bundle_zip(path: str | Path, max_bytes: int = MAX_BUNDLE_BYTES, max_ratio: float = MAX_COMPRESSION_RATIO
                       ) -> tempfile.TemporaryDirectory:
    """Extract a zipped bundle into a fresh temporary directory (returned; its ``name`` is the
    bundle directory, removed when the object is cleaned up) after checking every entry."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(path, [f"not a readable zip archive ({exc})"]) from None
    with archive:
        problems = zip_problems(archive, max_bytes, max_ratio)
        if problems:
            raise BundleError(path, problems)
        tmp = tempfile.TemporaryDirectory(prefix="mobile-peft-bundle-")
        root = Path(tmp.name)
        try:
            for info in archive.infolist():
                target = root / info.filename
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_bounded(archive, info, target)
        except BundleError as exc:
            tmp.cleanup()
            raise BundleError(path, exc.problems) from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:  # a damaged member
            tmp.cleanup()
            raise BundleError(path, [f"the archive is damaged ({type(exc).__name__}: {exc})"]) from None
    return tmp
