"""The house rules, checked on the source: contracts <- worker -> engine, training -> engine, no cycles.

Every `import` statement counts, function-level ones included, so a lazy import cannot hide a
wrong-way dependency. The serving path is also checked at run time: importing the worker app
loads nothing of the training wing.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("contracts", "engine", "worker", "training")

# Which of our packages each package may import.
ALLOWED = {
    "contracts": {"contracts"},
    "engine": {"engine"},
    "worker": {"contracts", "engine", "worker", "training"},
    "training": {"contracts", "engine", "worker", "training"},
}
# The one worker module that may import the training wing: the demo's synthetic traffic.
WORKER_MODULES_USING_TRAINING = {"worker.demo"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Our modules this file imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        # "from worker import embedded" names a module; "from worker.keys import done_key" does not.
        graph[name] = {imp for imp in _imports(path) if imp in modules and imp != name}
    return graph


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _graph()


def test_each_package_imports_only_what_it_may(graph: dict[str, set[str]]) -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if target.split(".")[0] not in ALLOWED[module.split(".")[0]]
    ]
    assert wrong == []


def test_only_the_demo_reaches_into_training(graph: dict[str, set[str]]) -> None:
    users = {m for m, targets in graph.items()
             if m.startswith("worker.") and any(t.startswith("training") for t in targets)}
    assert users <= WORKER_MODULES_USING_TRAINING


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle found by a depth-first walk, as the path that closes it."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    # Package __init__ modules are containers, not participants: "from worker import x" names x.
    edges = {m: {t for t in ts if t not in PACKAGES} for m, ts in graph.items() if m not in PACKAGES}
    assert _cycles(edges) == []


def test_the_serving_path_loads_no_training_code() -> None:
    code = (
        "import sys, worker.app, worker.runtime, worker.client, worker.transport, worker.cli\n"
        "print(sorted(m for m in sys.modules if m == 'training' or m.startswith('training.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_class_is_a_house_of_its_own() -> None:
    # A class over about 250 lines hides more than one job; split it.
    long = [
        f"{path.relative_to(ROOT)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for pkg in ("contracts", "engine", "worker")
        for path in sorted((ROOT / pkg).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and (node.end_lineno or 0) - node.lineno + 1 > 250
    ]
    assert long == []


def test_engine_holds_no_generators_or_training_scripts() -> None:
    names = {p.stem for p in (ROOT / "engine").glob("*.py")}
    assert not names & {"triage_data", "fraud_sim", "train_triage", "train_fraud", "samples"}
