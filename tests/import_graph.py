"""The import graph of ``src/frlr``, read with ``ast`` (nothing is imported): who imports whom,
at module level or inside functions, each module's layer, the circles, the imports that point
up a layer or reach into another package's private names, and the longest functions.

Run it for the numbers: ``python tests/import_graph.py`` prints the circles, the upward
imports, the private imports and every function longer than 80 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "loss library",
        ("frlr", "frlr.catalogue", "frlr.style", "frlr.ncd", "frlr.torch", "frlr.keras"),
    ),
    (
        "data, models, eval",
        ("frlr.io", "frlr.provenance", "frlr.presets", "frlr.data", "frlr.models", "frlr.eval"),
    ),
    ("training", ("frlr.tasks", "frlr.config", "frlr.rundir", "frlr.heads", "frlr.train")),
    ("experiments", ("frlr.experiments",)),
    ("report", ("frlr.report",)),
    ("cli", ("frlr.cli",)),
)
"""The layers, lowest first: a module may import its own layer and the layers below it. A module
belongs to the layer with the longest prefix that names it or its package."""


@dataclass(frozen=True)
class Import:
    importer: str  # the module that imports
    target: str  # the frlr module it loads (a module, or a package's __init__)
    names: tuple[str, ...]  # the names taken from it (``from target import names``)
    line: int
    in_function: bool


def module_files() -> dict[str, Path]:
    """Every module under src/frlr, by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted((SRC / "frlr").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _package_of(name: str, modules: dict[str, Path]) -> str:
    """The package a module lives in (a package's own package is itself)."""
    return name if is_package(name, modules) else name.rpartition(".")[0]


def _in_function(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside a function body."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            nodes = ast.walk(node)
            inside.update(id(n) for n in nodes if isinstance(n, ast.Import | ast.ImportFrom))
    return inside


def imports(modules: dict[str, Path] | None = None) -> list[Import]:
    """Every import of an frlr module by an frlr module, resolved to the module it loads.

    ``from frlr.a import b`` loads ``frlr.a.b`` when that is a module, else takes the name ``b``
    from ``frlr.a``. Importing ``frlr.a.b`` also runs ``frlr.a``'s ``__init__``: that counts as
    an import of ``frlr.a`` unless ``frlr.a`` is the importer's own package or one above it.
    """
    modules = module_files() if modules is None else modules
    found = []
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inside = _in_function(tree)
        package = _package_of(importer, modules)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                pairs = [(alias.name, ()) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    stem = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*stem, *([base] if base else [])])
                names = [alias.name for alias in node.names]
                submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
                taken = tuple(n for n in names if f"{base}.{n}" not in modules)
                pairs = [(full, ()) for full in submodules] + ([(base, taken)] if taken else [])
            else:
                continue
            for target, names in pairs:
                if target.split(".")[0] != "frlr":
                    continue
                parts = target.split(".")
                loaded = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
                for module in loaded:
                    is_own_ancestor = importer == module or importer.startswith(module + ".")
                    if module in modules and (module == target or not is_own_ancestor):
                        found.append(
                            Import(
                                importer,
                                module,
                                names if module == target else (),
                                node.lineno,
                                id(node) in inside,
                            )
                        )
    return found


def layer_of(module: str) -> int:
    best, level = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), index
    if level < 0:
        raise LookupError(f"{module} belongs to no layer: add it to LAYERS")
    return level


def upward(found: list[Import]) -> list[Import]:
    """Imports of a module in a higher layer than the importer's."""
    return [i for i in found if layer_of(i.target) > layer_of(i.importer)]


def circles(found: list[Import]) -> list[list[str]]:
    """The import circles: strongly connected groups of two or more modules (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for item in found:
        if item.importer != item.target:
            graph.setdefault(item.importer, set()).add(item.target)
            graph.setdefault(item.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(found: list[Import], modules: dict[str, Path] | None = None) -> list[Import]:
    """Imports that take a private name from another package.

    A private name is one that starts with an underscore (not a dunder): a module such as
    ``frlr.torch._kernels``, or a name such as ``_label`` taken with ``from ... import``. Its
    home package is the package holding that module or name (``frlr.torch`` for
    ``frlr.torch._kernels``; ``frlr.experiments`` for ``_label`` of
    ``frlr.experiments.compare``). Only modules of the home package itself may import it:
    ``frlr.torch.losses`` may import ``frlr.torch._kernels``, ``frlr.report.tables`` may not
    import ``frlr.experiments.compare._label``, and no subpackage may import ``frlr._x``.
    A package's own subpackages share its private modules (``frlr.torch.linear.sweep`` may
    import ``frlr.torch._kernels``: the package split a module, not a boundary), except the
    root's: every package is below ``frlr``.
    """
    modules = module_files() if modules is None else modules
    bad = []
    for item in found:
        package = _package_of(item.importer, modules)
        parts = item.target.split(".")
        homes = [".".join(parts[:i]) for i in range(1, len(parts)) if _private(parts[i])]
        if any(_private(n) for n in item.names):
            homes.append(_package_of(item.target, modules))
        if any(not _shares_privates(package, home) for home in homes):
            bad.append(item)
    return bad


def _shares_privates(package: str, home: str) -> bool:
    """Whether modules of ``package`` may take private names of ``home``."""
    return package == home or (home != "frlr" and package.startswith(home + "."))


PACKAGE_ORDERS: dict[str, tuple[str, ...]] = {
    "frlr.torch.linear": (
        "inputs",
        "exchange",
        "problem",
        "sweep",
        "sigmoid",
        "softmax",
        "selection",
        "held_rows",
        "hs_lr",
        "functional",
        "argmax",
        "modules",
    ),
    "frlr.heads": ("options", "base", "materialised", "chunked", "class_parallel"),
}
"""Packages layered inside, lowest module first: a module imports only modules before it (the
package's ``__init__`` is above them all)."""


def upward_in_package(found: list[Import], package: str) -> list[Import]:
    """Imports between a layered package's modules that point up its order (or at its
    ``__init__``), and modules missing from the order (reported as importing themselves)."""
    order = PACKAGE_ORDERS[package]
    rank = {f"{package}.{name}": place for place, name in enumerate(order)}
    rank[package] = len(order)
    inside = [m for m in module_files() if m.startswith(package + ".")]
    missing = [Import(m, m, (), 0, False) for m in inside if m not in rank]
    bad = [
        i
        for i in found
        if i.importer in rank
        and i.target in rank
        and rank[i.target] >= rank[i.importer]
        and i.importer != package
    ]
    return missing + bad


def file_lengths(package: str) -> dict[str, int]:
    """Lines of every module of ``package`` (its ``__init__`` included)."""
    return {
        module: len(path.read_text(encoding="utf-8").splitlines())
        for module, path in module_files().items()
        if module == package or module.startswith(package + ".")
    }


def longest_functions(package: str, limit: int) -> list[tuple[str, int]]:
    """Functions of ``package`` longer than ``limit`` lines."""
    inside = (package, package + ".")
    return [(name, n) for name, n in long_functions(limit) if name.startswith(inside)]


def long_functions(limit: int = 80, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, int]]:
    """(module:function, lines) for every function of more than ``limit`` lines."""
    for module, path in module_files().items():
        if any(module == s or module.startswith(s + ".") for s in skip):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - first + 1
                if length > limit:
                    yield f"{module}:{node.name}", length


def has_length_reason(module: str, function: str) -> bool:
    """Whether a long function's docstring says why it is long (a sentence with "long")."""
    tree = ast.parse(module_files()[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            return "long" in (ast.get_docstring(node) or "").lower()
    return False


if __name__ == "__main__":
    found = imports()
    print(f"imports between frlr modules: {len(found)}")
    for group in circles(found):
        print(f"circle of {len(group)}: {', '.join(group)}")
    for item in upward(found):
        where = "in a function" if item.in_function else "at module level"
        print(f"upward: {item.importer}:{item.line} -> {item.target} ({where})")
    for item in private_imports(found):
        print(f"private: {item.importer}:{item.line} -> {item.target} {item.names or ''}")
    lengths = sorted(long_functions(), key=lambda pair: -pair[1])
    for name, length in lengths:
        print(f"{length:4d} lines: {name}")
