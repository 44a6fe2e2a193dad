"""The golden fixtures the phone's core reproduces cannot drift from the SDK: a fresh run of
``make_fixtures.py`` must give exactly the committed files (same names, same bytes).

When the SDK changes what a phone must do the same way (a message, an encoding, a file format),
this test fails first; regenerate with ``.venv/bin/python tests/demo_apps/make_fixtures.py`` and
run ``bash android_demo/core/run_tests.sh`` to see what the Kotlin core must follow.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"


def _make_fixtures():
    spec = importlib.util.spec_from_file_location("make_fixtures", HERE / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_committed_fixtures_equal_a_fresh_run(tmp_path):
    fresh = _files(_make_fixtures().write_fixtures(tmp_path / "fixtures"))
    committed = _files(FIXTURES)
    assert sorted(committed) == sorted(fresh), (
        f"fixture files differ: only committed {sorted(set(committed) - set(fresh))}, "
        f"only fresh {sorted(set(fresh) - set(committed))}; run tests/demo_apps/make_fixtures.py"
    )
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale fixtures {stale}: run .venv/bin/python tests/demo_apps/make_fixtures.py"


def test_fixtures_are_small():
    sizes = {name: len(data) for name, data in _files(FIXTURES).items()}
    assert sum(sizes.values()) < 200_000, sizes
    assert max(sizes.values()) < 32_000, max(sizes.items(), key=lambda kv: kv[1])


def test_the_golden_manifest_passes_the_published_json_schema():
    """The apps' golden bundle is checked against the published schema (the one
    `mobile-peft inspect --schema` prints), as well as by both validators."""
    import json

    import jsonschema

    from mobile_peft.core.schema import SCHEMA_FILE

    manifest = json.loads((FIXTURES / "bundle" / "manifest.json").read_text())
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    assert [e.message for e in validator.iter_errors(manifest)] == []
