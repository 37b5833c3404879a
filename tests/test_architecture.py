"""The library's shape (docs/architecture.md): every module sits on a floor, imports point down (or sideways within a
floor), nothing imports in a circle, each file says its concept in its docstring, and no method file is long."""

import ast
from functools import cache
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "workshop_lib"
# Floor of each top-level module or package of workshop_lib, from the bottom up; the same table as
# docs/architecture.md. A module may import from its own floor and the floors below it, never from above.
FLOORS = {
    "errors": 0, "device": 0, "io": 0, "seeding": 0, "metrics": 0, "maps": 0, "thresholds": 0,
    "data": 1, "backbones": 1, "training": 1, "predictions": 1,
    "models": 2,
    "evaluation": 3, "inference": 3, "plotting": 3, "speed": 3,
    "exports": 3, "presets": 3, "checks": 3, "widgets": 3, "teaching": 3,
    "runs": 4,
    "studies": 5,
    "cli": 6,
    "tasks": 7, "__main__": 7,
}
LONGEST_METHOD_FILE = 520  # lines: a method's algorithm fits in one file a newcomer can read


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every workshop_lib module ``path`` imports, at the top or inside a function, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("workshop_lib")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("workshop_lib"):
                found.add(target)
                found |= {f"{target}.{alias.name}" for alias in node.names if modules().get(f"{target}.{alias.name}")}
    return {m for m in found if m in modules()} - {name}


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return FLOORS[top]


def test_every_module_has_a_floor():
    tops = {name.split(".")[1] for name in modules() if "." in name}
    assert tops <= set(FLOORS), f"put {sorted(tops - set(FLOORS))} on a floor (here and in docs/architecture.md)"


def test_imports_point_down():
    upward = [f"{name} (floor {floor(name)}) imports {target} (floor {floor(target)})"
              for name, path in modules().items() if name != "workshop_lib"
              for target in imported_modules(path) if target != "workshop_lib" and floor(target) > floor(name)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = {name: imported_modules(path) for name, path in modules().items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return trail + [node, target]
            if target not in state and (cycle := visit(target, trail + [node])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            raise AssertionError("import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]):]))


def test_each_file_says_its_concept_and_method_files_stay_short():
    for path in modules().values():
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no docstring saying what it is for"
    for path in (PACKAGE / "models").glob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= LONGEST_METHOD_FILE, f"{path} has {lines} lines; move pieces to models/components/"
