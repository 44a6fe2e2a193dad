"""Zipped bundles are untrusted: traversal, links, duplicates and bombs are refused before anything
is written, and extraction goes into a fresh directory."""

import stat
import zipfile
from pathlib import Path

import pytest

from mobile_peft.core.archive import extract_bundle_zip
from mobile_peft.core.errors import BundleError


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]], compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive, __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")  # zipfile warns about the duplicate on purpose
        for info, data in entries:
            archive.writestr(info, data)
    return path


def test_a_clean_archive_extracts_into_a_fresh_directory(tmp_path):
    archive = _zip(tmp_path / "b.zip", [("manifest.json", b"{}"), ("sub/model.pte", b"x" * 10)])
    with extract_bundle_zip(archive) as out:
        assert (Path(out) / "manifest.json").read_bytes() == b"{}"
        assert (Path(out) / "sub" / "model.pte").read_bytes() == b"x" * 10
        assert Path(out).parent != tmp_path


def test_every_hostile_entry_is_refused_at_once(tmp_path):
    link = zipfile.ZipInfo("model.pte")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip(tmp_path / "evil.zip", [
        ("../../escaped.txt", b"x"),
        ("/etc/cron.d/job", b"x"),
        ("dir\\file", b"x"),
        (link, b"/etc/passwd"),
        ("manifest.json", b"{}"),
        ("manifest.json", b"{}"),
    ])
    with pytest.raises(BundleError) as info:
        extract_bundle_zip(archive)
    problems = "\n".join(info.value.problems)
    for what in ("'../../escaped.txt' escapes the bundle", "'/etc/cron.d/job' has an absolute path", "backslash",
                 "'model.pte' is a symbolic link", "'manifest.json' appears more than once"):
        assert what in problems
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()


def test_zip_bombs_are_refused(tmp_path):
    bomb = _zip(tmp_path / "bomb.zip", [("model.pte", b"\0" * (8 << 20))], compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(BundleError, match=r"over 200:1; a zip bomb"):
        extract_bundle_zip(bomb)
    big = _zip(tmp_path / "big.zip", [("a", b"1" * 4096), ("b", b"2" * 4096)])
    with pytest.raises(BundleError, match="declares 8,192 uncompressed bytes, over the limit of 4,096"):
        extract_bundle_zip(big, max_bytes=4096)


def test_an_entry_that_lies_about_its_size_is_refused(tmp_path):
    archive = _zip(tmp_path / "liar.zip", [("model.pte", b"x" * 1000)])
    data = bytearray(archive.read_bytes())
    # shrink the declared size in the central directory (the local header keeps the truth)
    offset = data.rfind(b"PK\x01\x02")
    data[offset + 24 : offset + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    with pytest.raises(BundleError):
        extract_bundle_zip(archive)


def test_inspect_refuses_a_traversal_zip(tmp_path, capsys):
    from mobile_peft.cli import main

    archive = _zip(tmp_path / "evil.zip", [("../../escaped.txt", b"x"), ("manifest.json", b"{}")])
    assert main(["inspect", str(archive)]) == 2
    assert "escapes the bundle" in capsys.readouterr().err
