"""The house's layout: a torch-free core at the bottom, the runtime standing on it alone, no import
cycles, small files."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"mobile_peft": ROOT / "mobile_peft", "mobile_peft.export": ROOT / "export", "mobile_peft.runtime": ROOT / "runtime"}
CORE = ROOT / "mobile_peft" / "core"
# Third-party packages the core may import inside the function that reads their file format.
CORE_LAZY = {"tokenizers", "safetensors", "PIL", "sklearn"}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three installed packages."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if not (package == "mobile_peft" and parts[:1] in (["export"], ["runtime"])):
                out[name] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _top_level_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the SDK imported at module level (not inside functions or TYPE_CHECKING)."""
    package = name if _is_package(path) else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    body = [n for n in tree.body if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
    for node in body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules}


def test_core_and_runtime_import_without_torch():
    code = (
        "import sys, json, pkgutil, importlib\n"
        "import mobile_peft.runtime, mobile_peft.core\n"
        "core = [m.name for m in pkgutil.iter_modules(mobile_peft.core.__path__) if not m.name.startswith('_')]\n"
        "for m in core: importlib.import_module('mobile_peft.core.' + m)\n"
        "print(json.dumps({'core': core, 'heavy': sorted(m for m in ('torch', 'executorch', 'onnxruntime', 'transformers') if m in sys.modules)}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert {"contract", "manifest", "schedule", "encode", "datasets", "perf_model", "realloc", "adapter_files"} <= set(out["core"])
    assert out["heavy"] == []


def test_the_runtime_imports_only_the_core_from_the_sdk():
    modules = _modules()
    for name, path in modules.items():
        if not name.startswith("mobile_peft.runtime"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mobile_peft"):
                assert node.module.startswith(("mobile_peft.core", "mobile_peft.runtime")), f"{path.name} imports {node.module}"
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                raise AssertionError(f"{path.name} imports {'.' * node.level}{node.module} from outside the runtime")


def test_the_core_imports_only_the_standard_library_and_numpy_at_module_level():
    allowed = set(sys.stdlib_module_names) | {"numpy"}
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for n in names:
                assert n.split(".")[0] in allowed, f"{path.name} imports {n} at module level"
        for node in ast.walk(tree):  # inside functions: only the file-format readers
            if isinstance(node, ast.Import | ast.ImportFrom) and not (isinstance(node, ast.ImportFrom) and node.level):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                for n in names:
                    assert n.split(".")[0] in allowed | CORE_LAZY, f"{path.name} imports {n}"


def test_the_import_graph_has_no_cycles():
    modules = _modules()
    graph = {name: _top_level_imports(name, path, modules) - {name} for name, path in modules.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_no_file_is_past_600_lines():
    long = [f"{p.relative_to(ROOT)} ({n})" for folder in PACKAGES.values() for p in folder.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, long


def test_no_loader_can_execute_code_from_a_file():
    """Bundles, checkpoints and adapters are untrusted: nothing unpickles or runs remote code
    (tensors go through safetensors or the runtimes' own formats)."""
    import re

    forbidden = re.compile(r"torch\.load\(|import pickle|pickle\.load|trust_remote_code\s*=\s*True|allow_pickle\s*=\s*True|import joblib")
    hits = [f"{p.relative_to(ROOT)}:{n}" for folder in PACKAGES.values() for p in folder.rglob("*.py")
            for n, line in enumerate(p.read_text().splitlines(), 1) if forbidden.search(line)]
    assert not hits, hits
