"""The import graph (docs/architecture.md): layers one way, no cycle between any two modules,
Flask only in the server and pandas only where written down, checked on the code by
import-linter's contracts (setup.cfg) and grimp's graph, and at run time in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_no_module_imports_itself_round_about() -> None:
    """No cycle: Tarjan's strongly connected components of the direct-import graph are single
    modules (a package's ``__init__`` importing its own submodules is not a cycle)."""
    graph = grimp.build_graph("recommender", exclude_type_checking_imports=True)
    edges = {
        module: {
            imported
            for imported in graph.find_modules_directly_imported_by(module)
            if not module.startswith(imported + ".")
        }
        for module in graph.modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in edges.get(module, ()):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert cycles == []


def test_serving_and_training_load_no_flask_and_serving_no_pandas() -> None:
    script = """
import json, sys
import recommender.serving.service, recommender.serving.batch
serving = {"flask": "flask" in sys.modules, "pandas": "pandas" in sys.modules}
import recommender.training, recommender.runner, recommender.nightly, recommender.export, recommender.alerts
print(json.dumps({"serving": serving, "training_flask": "flask" in sys.modules}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert loaded == {"serving": {"flask": False, "pandas": False}, "training_flask": False}


def test_no_class_over_250_lines_and_no_long_function_without_a_reason() -> None:
    """A newcomer reads a class in one sitting: at most 250 lines; a function over 80 lines
    says in its docstring why it is long ("Long because ...")."""
    import ast

    too_long = []
    for path in sorted((ROOT / "recommender").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if isinstance(node, ast.ClassDef) and lines > 250:
                    too_long.append(f"{path.name}: class {node.name} ({lines} lines)")
                elif not isinstance(node, ast.ClassDef) and lines > 80:
                    if "Long because" not in (ast.get_docstring(node) or ""):
                        too_long.append(
                            f"{path.name}: {node.name} ({lines} lines, no reason given)"
                        )
    assert too_long == []
