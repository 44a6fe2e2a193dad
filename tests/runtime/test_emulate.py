"""``mobile-peft profile --emulate DEVICE``: the tiny bundle trains in a child held to a budget; a
generous budget fits, an absurdly small one does not and the parent reports it."""

from __future__ import annotations

import json
import os

import pytest

from mobile_peft.cli import main
from mobile_peft.core.errors import ConfigError
from mobile_peft.runtime import emulate
from mobile_peft.runtime.emulate import emulate_bundle

TINY_BUDGET = 4 << 20  # far below what loading the bundle takes


def _no_group_left() -> bool:
    """No cgroup of this process is left (other processes may be emulating at the same time)."""
    parents = {emulate._own_cgroup(), emulate.CGROUP_ROOT}
    return not any(p.is_dir() and list(p.glob(f"mobile-peft-emulate-{os.getpid()}-*")) for p in parents)


def test_a_tiny_bundle_fits_a_generous_budget(onnx_bundle, capsys):
    assert main(["profile", str(onnx_bundle), "--emulate", "galaxy-a14", "--steps", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["fits"] and r["completed_steps"] == 2 and r["exit_code"] == 0 and r["killed_by"] is None
    assert r["limiter"] in emulate.LIMITERS and r["threads"] >= 1 and r["budget_bytes"] == 1288490189
    assert 0 < r["peak_growth_bytes"] < r["budget_bytes"] and len(r["losses"]) == 2
    assert r["ratio_to_bound"] == round(r["peak_growth_bytes"] / r["lower_bound_bytes"], 3)
    assert _no_group_left()


@pytest.mark.parametrize("limiter", ["auto", "rlimit-as"])
def test_an_absurdly_small_budget_does_not_fit_and_the_parent_reports_it(onnx_bundle, limiter):
    r = emulate_bundle(onnx_bundle, "galaxy-a14", steps=2, budget_bytes=TINY_BUDGET, limiter=limiter)
    assert not r["fits"] and r["completed_steps"] < 2 and r["exit_code"] != 0
    assert r["failure"] and r["ratio_to_bound"] is None
    if r["limiter"] == "cgroup-v1":  # the kernel's OOM killer ended it at the limit
        assert r["killed_by"] == "SIGKILL" and (r["cgroup_oom_kills"] or r["cgroup_failcnt"])
        assert 0 < r["peak_growth_bytes"] <= TINY_BUDGET
    else:  # an allocation failed under RLIMIT_AS
        assert r["limit_bytes"] > TINY_BUDGET and any("RLIMIT_AS" in n for n in r["notes"])
    assert _no_group_left()


def test_bad_arguments_are_refused(onnx_bundle):
    with pytest.raises(ConfigError, match="limiter"):
        emulate_bundle(onnx_bundle, "galaxy-a14", limiter="swap")
    with pytest.raises(ConfigError, match="steps"):
        emulate_bundle(onnx_bundle, "galaxy-a14", steps=0)
    with pytest.raises(ConfigError, match="budget_bytes"):
        emulate_bundle(onnx_bundle, "galaxy-a14", budget_bytes=0)
    with pytest.raises(ConfigError, match="unknown device"):
        emulate_bundle(onnx_bundle, "nokia-3310")


def test_the_cli_table_says_it_does_not_fit(onnx_bundle, capsys):
    argv = ["profile", str(onnx_bundle), "--emulate", "iphone-12", "--budget", str(TINY_BUDGET), "--steps", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "0 of 1" in out and "stopped early" in out


def _resident_pages(path) -> int:
    """How many of ``path``'s pages are in the page cache (``mincore`` on a fresh mapping, which
    faults nothing in)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    with path.open("rb") as f:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        try:
            vec = (ctypes.c_ubyte * pages)()
            assert libc.mincore(addr, size, vec) == 0, ctypes.get_errno()
            return sum(v & 1 for v in vec)
        finally:
            libc.munmap(addr, size)


def test_the_bundle_files_leave_the_page_cache_before_the_child_is_held(tmp_path):
    """A page read in before the child is held stays charged to whoever read it: the files are
    dropped from the cache, so the child's own reads of them count against its budget."""
    big = tmp_path / "model.pte"
    big.write_bytes(os.urandom(8 << 20))
    os.sync()  # clean pages only can be dropped
    big.read_bytes()
    if _resident_pages(big) == 0:
        pytest.skip("this filesystem keeps no page cache for the file")
    assert emulate._drop_from_page_cache([big]) == 8 << 20
    assert _resident_pages(big) == 0


def test_the_report_says_how_many_bundle_bytes_were_uncached(onnx_bundle):
    r = emulate_bundle(onnx_bundle, "galaxy-a14", steps=1)
    files = [p for p in onnx_bundle.rglob("*") if p.is_file()]
    assert r["fits"] and r["uncached_bytes"] == sum(p.stat().st_size for p in files)
