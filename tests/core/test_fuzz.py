"""Fuzzing every reader of untrusted input (a few hundred inputs each; `make reliability` runs
thousands): no exception escapes but the SDK's own."""

import pytest

from mobile_peft.bench.fuzz import TARGETS, run_target


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_no_exception_escapes_but_the_sdks(target):
    assert run_target(target, examples=300) >= 200
