"""The layout rules of the brief, checked: stages import only from earlier stages; small modules and functions."""
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ZOO = Path(__file__).resolve().parent.parent / "zoo"
# The layers of docs/flow.md, lowest first: a package may import from its own rank or lower ranks only. The
# runner sits above measure and report because it drives them (a matrix ends by measuring and writing its board);
# sweeps build on the runner's plan.
RANK = {"config": 0, "models": 1, "data": 1, "tracking": 1, "training": 2, "results": 3, "measure": 4,
        "report": 5, "runner": 6, "sweeps": 7}
ENTRY_RANK = 8  # the top-level `python -m` modules
# The edge validates a config by asking the stages what they accept (model names, data options, backend names):
# the one deliberate upward import, always inside the validating function.
EDGE_CHECKS = {("config", "models"), ("config", "data"), ("config", "measure")}


def _package(path: Path) -> str:
    rel = path.relative_to(ZOO)
    return rel.parts[0] if len(rel.parts) > 1 else "<entry>"


def _imported_packages(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "zoo" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_imports_point_down_the_flow():
    wrong = []
    for path in sorted(ZOO.rglob("*.py")):
        package = _package(path)
        own = RANK.get(package, ENTRY_RANK)
        for target in _imported_packages(ast.parse(path.read_text())):
            rank = RANK.get(target, ENTRY_RANK)
            if rank > own and (package, target) not in EDGE_CHECKS:
                wrong.append(f"{path.relative_to(ZOO.parent)} imports zoo.{target}")
    assert not wrong, "imports against the flow:\n" + "\n".join(wrong)


def test_at_most_six_top_level_modules_and_every_package_has_a_rank():
    top = sorted(p.name for p in ZOO.glob("*.py"))
    assert len(top) <= 6, top
    packages = sorted(p.name for p in ZOO.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert set(packages) <= set(RANK), set(packages) - set(RANK)


def test_modules_under_400_lines_and_functions_under_80():
    long_modules, long_functions = [], []
    for path in sorted(ZOO.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400:
            long_modules.append(f"{path.relative_to(ZOO.parent)} ({text.count(chr(10))})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long_functions.append(f"{path.relative_to(ZOO.parent)}:{node.name}")
    assert not long_modules and not long_functions, (long_modules, long_functions)


def test_docs_flow_table_names_every_module():
    """Every module of zoo/ (every package, subpackages included, and the entry points) appears in the row of its
    package in docs/flow.md's "Modules" table, by file name; and every file a row names is a module of that package
    (no stale names). README's "The flow" links there."""
    flow = (ZOO.parent / "docs" / "flow.md").read_text()
    section = flow[flow.index("## Modules"):]
    rows = {line.split("|")[1].strip().strip("`"): line.split("|", 2)[2] for line in section.splitlines()
            if line.startswith("| `zoo/")}
    packages = {"zoo/"} | {f"zoo/{p.parent.relative_to(ZOO).as_posix()}/" for p in ZOO.rglob("__init__.py")
                           if p.parent != ZOO}
    missing, stale = [], []
    for package in sorted(packages):
        folder = ZOO.parent / package
        modules = {p.name for p in folder.glob("*.py") if p.name != "__init__.py"}
        row = rows.get(package)
        if row is None:
            missing.append(f"{package} (no row)")
            continue
        missing += [package + name for name in sorted(modules) if f"`{name}`" not in row]
        stale += [package + name for name in sorted(set(re.findall(r"`([a-z_0-9]+\.py)`", row)) - modules)]
    stale += [f"{row} (no such package)" for row in sorted(set(rows) - packages)]
    assert not missing and not stale, (f"docs/flow.md: modules missing from the flow table: {', '.join(missing)}; "
                                       f"named there but not modules: {', '.join(stale)}")
    assert "docs/flow.md" in (ZOO.parent / "README.md").read_text(), "README.md must link docs/flow.md"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ZOO.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """zoo's module graph: module -> the zoo modules it imports, at module top or inside a function alike (an import
    run late still needs its target, and a cycle through it still ties the two modules together). An edge goes to the
    module named: `from zoo.a import b` to `zoo.a.b` when that is a module, else to `zoo.a` (the package itself);
    a submodule's implicit import of its parent package is not an edge (every package would then be a cycle)."""
    paths = {_module_name(path): path for path in ZOO.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, one level up per dot after the first
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base)
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: every import cycle lies
    inside one of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycles_including_imports_inside_functions():
    cycles = _cycles(_import_graph())
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_sees_a_cycle_hidden_in_a_function():
    graph = {"zoo.a": {"zoo.b"}, "zoo.b": {"zoo.c"}, "zoo.c": {"zoo.a"}, "zoo.d": {"zoo.a"}}
    assert _cycles(graph) == [["zoo.a", "zoo.b", "zoo.c"]]
    assert "zoo.models" in _import_graph()["zoo.config.tasks"]  # its import sits inside check_matrix_tasks


@pytest.mark.slow  # 4-7 s: out of make test-fast's edit-test loop
def test_zoo_run_imports_neither_the_model_zoo_nor_torchmetrics_until_a_cell_trains():
    """`zoo.run`'s parent plans, claims and dispatches; the workers import what training needs. Importing the zoo
    and torchmetrics at plan time cost every --dry-run and every worker pool's parent 2.5 s more (6.1 s vs 3.6 s)."""
    code = "import sys, zoo.run; print(sorted(m for m in ('torchmetrics', 'zoo.models', 'zoo.training.engine') " \
           "if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ZOO.parent, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
