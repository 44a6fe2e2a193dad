"""The package layout: export/ and runtime/ install as mobile_peft.export / mobile_peft.runtime,
and pyproject's explicit package list names every package folder."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = {"mobile_peft": ROOT / "mobile_peft", "mobile_peft.export": ROOT / "export", "mobile_peft.runtime": ROOT / "runtime"}


def _package_dirs() -> set[str]:
    found = set()
    for name, folder in TOP.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    return found


def test_pyproject_lists_every_package():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _package_dirs()
    assert config["package-dir"] == {"mobile_peft": "mobile_peft", "mobile_peft.export": "export", "mobile_peft.runtime": "runtime"}


def test_one_namespace():
    import mobile_peft.export
    import mobile_peft.runtime

    assert Path(mobile_peft.export.__file__).parent == ROOT / "export"
    assert Path(mobile_peft.runtime.__file__).parent == ROOT / "runtime"


def test_public_api_is_lazy_and_complete():
    import mobile_peft

    assert mobile_peft.__all__ == sorted(mobile_peft.__all__)
    assert set(mobile_peft.__all__) == set(mobile_peft._LAZY) | {"__version__"}
    for name in mobile_peft.__all__:
        assert getattr(mobile_peft, name) is not None
