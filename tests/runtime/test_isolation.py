"""The runtime is what a phone does: it never imports the authoring layer (torch autograd training)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
FORBIDDEN = ("mobile_peft.models", "mobile_peft.adapters", "mobile_peft.train", "mobile_peft.data", "mobile_peft.quant")
RUNTIME_MODULES = ["adapter", "bundle", "checkpoint", "data", "engine", "evaluate", "optim", "profile", "realloc", "trainer", "ort", "emulator", "demo"]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level >= 2:
            names.add("mobile_peft." + (node.module or ""))  # from ..x import (outside runtime)
    return names


def test_no_runtime_file_imports_the_authoring_layer():
    for path in RUNTIME.glob("*.py"):
        bad = {n for n in _imports(path) if n.startswith(FORBIDDEN) or n.startswith("mobile_peft.allocators")}
        assert not bad, f"{path.name} imports {bad}"


def test_importing_the_runtime_loads_no_authoring_module():
    """One subprocess imports every runtime module and the hydra-rank performance model (from its
    file) and lists what got loaded."""
    modules = [m for m in RUNTIME_MODULES if (RUNTIME / f"{m}.py").is_file()]
    code = (
        "import sys, json\n"
        + "".join(f"import mobile_peft.runtime.{m}\n" for m in modules)
        + "perf = mobile_peft.runtime.realloc.load_perf_model()\n"
        + "print(json.dumps([hasattr(perf, 'propose_allocation'), sorted(m for m in sys.modules if m.startswith('mobile_peft'))]))"
    )
    has_model, loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert has_model and "mobile_peft.allocators.hydra_rank" not in loaded
    bad = [m for m in loaded if m.startswith(FORBIDDEN)]
    assert not bad, f"importing mobile_peft.runtime loaded {bad}"
