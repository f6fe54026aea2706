"""The package's import graph: floors, arrows that run back up, cycles and the largest modules.

Every ``import amodalkit...`` / ``from amodalkit... import`` in a module counts, also those
inside functions (a lazy import is still a dependency). Two views:

* modules: the longest import chain (``floors``, after merging modules that import each
  other) and the module sizes;
* parts: the top-level subpackages and modules (``io``, ``ops``, ``models``, ``cli``, ...).
  An arrow that runs back up is an import from a part to one that stands higher in
  :data:`LAYERS`, the order in which the data flows; parts missing from it are reported.

    python tools/import_graph.py [PACKAGE_DIR]        # default: ./amodalkit
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

#: the parts from the bottom floor up: a part may import only parts listed before it
LAYERS = ("errors", "device", "execution", "io", "ops", "viz", "preprocess", "datasets", "data", "models",
          "engine", "evaluation", "zoo", "tables", "cli", "__main__")


def module_name(path: Path, root: Path) -> str:
    """Dotted name of a module file under the package folder `root`."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks (annotations only, not run)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports_of(path: Path, package: str, name: str, modules: set[str]) -> set[str]:
    """The package modules a file imports at run time (absolute or relative, at any depth of the code).

    ``from pkg import sub`` counts as an import of ``pkg.sub`` when that is a module.
    """
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] != package:
                continue
            subs = {f"{base}.{a.name}" for a in node.names} & modules
            found |= subs if len(subs) == len(node.names) else subs | {base}
    return found


def build_graph(root: Path) -> tuple[dict[str, set[str]], dict[str, int]]:
    """Module -> the package modules it imports, and module -> line count."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph, sizes = {}, {}
    for name, path in files.items():
        targets = {t for t in imports_of(path, root.name, name, set(files)) if t in files}
        graph[name] = targets - {name}
        sizes[name] = len(path.read_text().splitlines())
    return graph, sizes


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components (each a set of nodes that reach each other)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in graph:
        if v not in index:
            visit(v)
    return out


def floors(graph: dict[str, set[str]]) -> int:
    """Length of the longest import chain, counting each group of mutually importing modules once."""
    comps = strongly_connected(graph)
    comp_of = {v: i for i, c in enumerate(comps) for v in c}
    dag = defaultdict(set)
    for v, targets in graph.items():
        dag[comp_of[v]] |= {comp_of[t] for t in targets if comp_of[t] != comp_of[v]}
    depth: dict[int, int] = {}

    def height(c: int) -> int:
        if c not in depth:
            depth[c] = 1 + max((height(d) for d in dag[c]), default=0)
        return depth[c]

    return max((height(c) for c in range(len(comps))), default=0)


def part_of(module: str) -> str:
    """The top-level part a module belongs to (``amodalkit.io.shards`` -> ``io``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def part_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(importing part, imported part) -> the module imports behind that arrow."""
    edges = defaultdict(list)
    for v, targets in graph.items():
        for t in targets:
            a, b = part_of(v), part_of(t)
            if a != b and a != "__init__":
                edges[(a, b)].append((v, t))
    return edges


def report(root: Path) -> dict:
    """Everything the script prints, as data (used by the layout test too)."""
    graph, sizes = build_graph(root)
    edges = part_edges(graph)
    part_graph = defaultdict(set)
    for a, b in edges:
        part_graph[a].add(b)
    cycles = [sorted(c) for c in strongly_connected(dict(part_graph)) if len(c) > 1]
    rank = {p: i for i, p in enumerate(LAYERS)}
    unknown = sorted({p for edge in edges for p in edge} - set(rank) - {"__init__"})
    upward = {e: mods for e, mods in edges.items()
              if e[0] in rank and e[1] in rank and rank[e[0]] < rank[e[1]]}
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    return {"modules": len(graph), "floors": floors(graph), "part_cycles": cycles, "upward": upward,
            "unlisted_parts": unknown, "largest": largest,
            "module_cycles": [sorted(c) for c in strongly_connected(graph) if len(c) > 1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", default="amodalkit", type=Path)
    root = parser.parse_args().package.resolve()
    r = report(root)
    print(f"modules: {r['modules']}, floors (longest import chain): {r['floors']}")
    print(f"largest modules: {', '.join(f'{m} ({n} lines)' for m, n in r['largest'])}")
    print(f"parts importing each other (cycles): {r['part_cycles'] or 'none'}")
    print(f"modules importing each other: {r['module_cycles'] or 'none'}")
    print(f"parts not in LAYERS: {r['unlisted_parts'] or 'none'}")
    print(f"arrows that run back up (against LAYERS): {len(r['upward'])}")
    for (a, b), mods in sorted(r["upward"].items()):
        print(f"  {a} -> {b}: {', '.join(f'{v} -> {t}' for v, t in mods)}")


if __name__ == "__main__":
    main()
