"""The project's import graph, read from the source with `ast` (module-level and function-level imports alike).

`python -m tests.import_graph` prints the layers of modules and of packages, and any circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lfpc", "experiments", "analysis", "benchmarks")
SCRIPTS = ("train", "eval")
# Composition roots: modules whose job is to build the application from the composed config (or to be a command
# that does), so they sit above every package they compose, whichever folder their command name puts them in.
COMPOSITION_ROOTS = {
    "lfpc.config": "turns a composed Hydra config into the objects a run needs",
    "lfpc.training.run": "train.py's run: the trainer, the policy module and the data, built from the config",
    "lfpc.resolution.select": "the command `python -m lfpc.resolution.select`",
    "lfpc.model.mini": "the command `python -m lfpc.model.mini`: pre-trains the mini model with the agent's episodes",
}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file of every project module (packages by their `__init__`, plus train.py and eval.py)."""
    modules = {name: root / f"{name}.py" for name in SCRIPTS}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: Iterable[str]) -> str | None:
    """The longest project module that `name` is or lies in (`lfpc.boxes.clip` -> `lfpc.boxes`)."""
    known = set(modules)
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: Iterable[str]) -> set[str]:
    """Project modules imported anywhere in `path` (inside functions too), `from pkg import sub` counted as `pkg.sub`."""
    known = set(modules)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, known)
            if resolved and resolved != module:
                found.add(resolved)
    return found


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = project_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def package_of(module: str) -> str:
    """The unit a module belongs to in the package graph: `lfpc.<name>` for the library (a subpackage or a top-level
    module such as `lfpc.boxes`), the top-level package or script otherwise (`experiments`, `train`); a composition
    root is a unit of its own."""
    if module in COMPOSITION_ROOTS:
        return module
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "lfpc" else parts[0]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph collapsed onto packages (`lfpc.data.patterns` -> `lfpc.data`); top-level modules stay."""
    unit = {name: package_of(name) for name in graph}
    collapsed: dict[str, set[str]] = {u: set() for u in unit.values()}
    for name, targets in graph.items():
        collapsed[unit[name]].update(unit[t] for t in targets if unit[t] != unit[name])
    return collapsed


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted; empty when the graph is a DAG."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layers(graph: dict[str, set[str]]) -> dict[str, int]:
    """Layer of each node in an acyclic graph: 0 for a node that imports nothing, else 1 + its deepest import's."""
    layer: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in layer:
            layer[node] = 1 + max((depth(t) for t in graph.get(node, ())), default=-1)
        return layer[node]

    for node in graph:
        depth(node)
    return layer


def main() -> None:
    graph = module_graph()
    for title, g in (("modules", graph), ("packages", package_graph(graph))):
        circles = cycles(g)
        if circles:
            print(f"{title}: {len(g)}, {len(circles)} circle(s):")
            for circle in circles:
                print("  " + " <-> ".join(circle))
            continue
        layer = layers(g)
        print(f"{title}: {len(g)} in {max(layer.values()) + 1} layers, no circle")
        if title == "packages":
            for level in range(max(layer.values()) + 1):
                print(f"  {level}: " + ", ".join(sorted(n for n, l in layer.items() if l == level)))


if __name__ == "__main__":
    main()
