"""The manifest's optional ``memory_bound`` section: built by one function, validated when present."""

from mobile_peft.core import contract
from mobile_peft.core.manifest import memory_bound_section, optimizer_states

K = contract.MemoryBoundKey


def test_section_terms_and_optimizer_states():
    assert optimizer_states({"name": "adamw", "lr": 1e-3}) == 2
    assert optimizer_states({"name": "sgd", "lr": 0.1, "momentum": 0.9}) == 1
    assert optimizer_states({"name": "sgd", "lr": 0.1, "momentum": 0.0}) == 0
    s = memory_bound_section(1000, 40, 300, {"name": "adamw", "lr": 1e-3}, 4, "test")
    assert s[K.TOTAL_BYTES] == 1000 + 40 * (1 + 1 + 2) + 300 and s[K.OPTIMIZER_STATE_BYTES] == 80
    assert set(s) == set(contract.MEMORY_BOUND_KEYS) and contract.Key.MEMORY_BOUND not in contract.REQUIRED_KEYS


def test_section_problems_are_reported():
    import json
    from pathlib import Path

    from mobile_peft.core.manifest import manifest_problems

    fixture = Path(__file__).resolve().parents[1] / "demo_apps" / "fixtures" / "bundle" / contract.MANIFEST_FILE
    manifest = json.loads(fixture.read_text())
    assert manifest_problems(manifest) == []
    manifest[contract.Key.MEMORY_BOUND][K.TOTAL_BYTES] += 1
    (problem,) = manifest_problems(manifest)
    assert "memory_bound.total_bytes" in problem and "sum of its terms" in problem
    manifest[contract.Key.MEMORY_BOUND] = {K.TOTAL_BYTES: "a lot"}
    problems = manifest_problems(manifest)
    assert "missing key memory_bound.activation_bytes" in problems
    assert any(p.startswith("memory_bound.total_bytes is 'a lot'") for p in problems)
