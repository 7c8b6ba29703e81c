"""The layers of ARCHITECTURE.md hold: imports go downwards only, without cycles; every public function and
class says what it does; no function runs a whole pipeline; boards load without torch."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "bench"
APP = "app"
LONGEST_FUNCTION = 45  # lines: a function a reader sees on one screen


def allowed_imports() -> dict[str, set[str]]:
    """``layer -> layers it may import``, read from the table in ARCHITECTURE.md."""
    rules = {}
    for line in (REPO / "ARCHITECTURE.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`bench/") and cells[0] != APP:
            rules[cells[0]] = {cells[0], *(x.strip() for x in cells[3].split(","))}
    return rules


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) else APP


def imports(path: Path) -> set[str]:
    """Every ``bench`` module that ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name == "bench" or name.startswith("bench."):
                found.add(resolve(name))
    return found


def resolve(name: str) -> str:
    """The module a dotted name points to (``bench.data.splits.Split`` -> ``bench.data.splits``)."""
    parts = name.split(".")
    while parts:
        base = REPO.joinpath(*parts)
        if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
            return ".".join(parts)
        parts.pop()
    return name


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_table_names_every_layer_folder():
    rules = allowed_imports()
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert set(rules) == folders, "ARCHITECTURE.md's table and the folders of bench/ disagree"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_own_and_lower_layers(module):
    rules = allowed_imports()
    mine = layer(module)
    if mine == APP:
        return
    upward = sorted(m for m in imports(MODULES[module]) if layer(m) not in rules[mine])
    assert not upward, f"{module} (layer {mine}) imports from a layer above or beside it: {upward}"


def test_imports_form_no_cycle():
    graph = {m: {i for i in imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n] if n in path else [m, n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_layer_rules_catch_an_upward_import(tmp_path):
    """The check above can fail: a data module that imports the runner is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from bench.run.runner import run\nimport bench.core.errors\n")
    found = imports(bad)
    assert found == {"bench.run.runner", "bench.core.errors"}
    assert {layer(m) for m in found} - allowed_imports()["data"] == {"run"}


def public_objects():
    for name in sorted(MODULES):
        module = importlib.import_module(name)
        yield name, module
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isfunction(obj):
                yield f"{name}.{attr}", obj
            elif inspect.isclass(obj):
                yield f"{name}.{attr}", obj
                for m, member in vars(obj).items():
                    if not m.startswith("_") and inspect.isfunction(member):
                        yield f"{name}.{attr}.{m}", getattr(obj, m)


def test_every_module_and_public_definition_has_a_docstring():
    missing = [name for name, obj in public_objects() if not (inspect.getdoc(obj) or "").strip()]
    assert not missing, f"{len(missing)} without a docstring: {missing}"


def test_no_function_runs_a_whole_pipeline():
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > LONGEST_FUNCTION:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions longer than {LONGEST_FUNCTION} lines: {long}"


def test_boards_load_without_torch_or_the_run_layer():
    code = ("import sys, bench.boards.leaderboard, bench.boards.report; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('bench.run', 'bench.data', "
            "'pytorch_lightning'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing the boards loaded {out.strip()}"


def test_folder_listing_names_each_layer():
    listing = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__"))
    assert listing == sorted(allowed_imports())
    assert re.search(r"\| boards \| `bench/boards/`", (REPO / "ARCHITECTURE.md").read_text())
