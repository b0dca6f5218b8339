"""The house's floors: a floor of ``src/dgm`` imports only the floors below it, and imports hidden
inside functions are few and say why.

The graph counts every ``import dgm.x`` / ``from dgm.x import ...`` of every file, at any depth
(function-local imports included), by the top-level unit it comes from and goes to.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dgm"

#: lowest first; a unit may import itself and the units before it
FLOORS = ["core", "nn", "samplers", "data", "models", "train", "eval", "plots", "api", "compare"]
#: the top of the house: the CLI and the package's own entry points may import any floor
TOP = {"cli", "__init__", "__main__"}
#: function-local dgm imports allowed, each for a reason that a top-level import cannot meet
#: (keyed by file relative to src/dgm; the reason lives beside the import in the file)
LOCAL_IMPORTS_ALLOWED = {
    "__init__.py",  # lazy attributes: `import dgm` and `dgm --help` stay fast
    "cli/main.py",  # each command's modules load on use: `dgm --help` stays fast
}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(module, line, inside_a_function)`` for every dgm import in ``path``."""
    rel = path.relative_to(SRC.parent).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    tree = ast.parse(path.read_text())
    local = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for sub in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                names = [".".join(base + ([node.module] if node.module else []))]
                if not node.module:  # from . import x
                    names = [f"{names[0]}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            if name == "dgm" or name.startswith("dgm."):
                found.append((name, node.lineno, id(node) in local))
    return found


def _edges() -> list[tuple[str, str, str, int, bool]]:
    edges = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        unit = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 else rel.stem
        for module, line, local in _imports(path):
            target = _unit(module)
            # `from dgm import __version__`: the package root is always loaded first
            if target not in (unit, "__init__"):
                edges.append((unit, target, str(rel), line, local))
    return edges


def test_every_unit_has_a_floor():
    units = {p.name.removesuffix(".py") for p in SRC.iterdir() if not p.name.startswith("_")}
    units -= {"py.typed"}
    homeless = sorted(units - set(FLOORS) - TOP)
    assert not homeless, f"units without a floor in tests/test_layers.py: {homeless}"


@pytest.mark.parametrize("floor", FLOORS)
def test_a_floor_imports_only_the_floors_below(floor):
    allowed = set(FLOORS[: FLOORS.index(floor)])
    bad = [
        f"{file}:{line} imports dgm.{target}"
        for unit, target, file, line, _ in _edges()
        if unit == floor and target not in allowed
    ]
    assert not bad, f"{floor} may import only {sorted(allowed)}: " + "; ".join(bad)


def test_no_cycles_between_units():
    graph: dict[str, set[str]] = {}
    for unit, target, *_ in _edges():
        graph.setdefault(unit, set()).add(target)

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt == b:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted({(a, b) for a, targets in graph.items() for b in targets if reaches(b, a)})
    assert not cycles, f"import cycles between units: {cycles}"


def test_function_local_imports_are_few_and_explained():
    local = [(file, line) for _, _, file, line, is_local in _edges() if is_local]
    unexplained = [f"{f}:{n}" for f, n in local if f not in LOCAL_IMPORTS_ALLOWED]
    assert not unexplained, "function-local dgm imports (move them to the top): " + ", ".join(
        unexplained
    )
