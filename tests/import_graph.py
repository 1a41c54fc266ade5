"""The import graph of ``src/frlr``, read with ``ast`` (nothing is imported): who imports whom,
at module level or inside functions, each module's layer, the circles, the imports that point
up a layer or reach into another package's private names; and, over ``src/frlr`` and the
``benchmarks`` package, the private names taken from another module, the benchmarks imported by
a bare name, and the longest functions.

Run it for the numbers: ``python tests/import_graph.py`` prints the circles, the upward
imports, the private imports and names, the bare benchmark imports and every function longer
than 80 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

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


def benchmark_files() -> dict[str, Path]:
    """Every module of the ``benchmarks`` package, by dotted name (the package by its own)."""
    return {
        "benchmarks" if path.stem == "__init__" else f"benchmarks.{path.stem}": path
        for path in sorted(BENCHMARKS.glob("*.py"))
    }


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
        "products",
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


def long_functions(
    limit: int = 80, files: dict[str, Path] | None = None
) -> Iterator[tuple[str, int]]:
    """(module:function, lines) for every function of ``files`` (default: src/frlr and the
    benchmarks) longer than ``limit`` lines, from its ``def`` line to its last: decorators do
    not count."""
    files = {**module_files(), **benchmark_files()} if files is None else files
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    yield f"{module}:{node.name}", length


def bare_benchmark_imports(files: dict[str, Path] | None = None) -> list[str]:
    """``module:line name`` for each import, in a benchmark, of another benchmark by its bare
    name (``from huge_k import shape_inputs``): that resolves only while the script's own folder
    is on ``sys.path``, never for ``python -m benchmarks.x``."""
    files = benchmark_files() if files is None else files
    stems = {name.rpartition(".")[2] for name in files if name != "benchmarks"}
    bad = []
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            bad += [f"{module}:{node.lineno} {n}" for n in names if n.split(".")[0] in stems]
    return bad


@dataclass(frozen=True)
class PrivateUse:
    user: str  # the module (of src/frlr or the benchmarks) that takes the name
    line: int
    owner: str  # the module the private name belongs to, or the private module's package
    name: str  # the private name or private module


class _PrivateNames:
    """The private frlr names one module takes (see [`private_names_taken`][])."""

    def __init__(self, user: str, path: Path, modules: dict[str, Path]) -> None:
        self.user, self.modules = user, modules
        self.package = user if path.name == "__init__.py" else user.rpartition(".")[0]
        self.bound: dict[str, str] = {}  # a local name -> the frlr module bound to it
        self.found: set[PrivateUse] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                self._import(node)
            elif isinstance(node, ast.ImportFrom):
                self._import_from(node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                owner = self._module_of(node.value)
                if owner is not None:
                    self._take(owner, node.attr, node.lineno)

    def _take(self, owner: str, name: str, line: int) -> None:
        """``name`` taken from module ``owner``: a private module may be taken within its
        package (by frlr modules only), a private name only by its own module."""
        if not _private(name):
            return
        if f"{owner}.{name}" in self.modules:
            allowed = self.user.startswith("frlr") and _shares_privates(self.package, owner)
        else:
            allowed = owner == self.user
        if not allowed:
            self.found.add(PrivateUse(self.user, line, owner, name))

    def _take_path(self, target: str, line: int) -> None:
        parts = target.split(".")
        for i in range(1, len(parts)):
            self._take(".".join(parts[:i]), parts[i], line)

    def _import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == "frlr":
                self._take_path(alias.name, node.lineno)
                self.bound[alias.asname or "frlr"] = alias.name if alias.asname else "frlr"

    def _import_from(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            stem = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join([*stem, *([base] if base else [])])
        if base.split(".")[0] != "frlr":
            return
        self._take_path(base, node.lineno)
        for alias in node.names:
            self._take(base, alias.name, node.lineno)
            if f"{base}.{alias.name}" in self.modules:
                self.bound[alias.asname or alias.name] = f"{base}.{alias.name}"

    def _module_of(self, expr: ast.expr) -> str | None:
        """The frlr module an expression names (``losses``, ``frlr.torch``), if it names one."""
        if isinstance(expr, ast.Name):
            return self.bound.get(expr.id)
        if isinstance(expr, ast.Attribute):
            owner = self._module_of(expr.value)
            if owner is not None and f"{owner}.{expr.attr}" in self.modules:
                return f"{owner}.{expr.attr}"
        return None


def private_names_taken(
    users: dict[str, Path] | None = None, modules: dict[str, Path] | None = None
) -> list[PrivateUse]:
    """Private frlr names that a module takes from another module: by ``from m import _x``,
    or as an attribute of an imported module (``losses._check_hyper``). A private module
    (``frlr.torch._kernels``) may still be imported within its package, as
    [`private_imports`][] allows, but from outside frlr (a benchmark) never.

    ``users``: the modules whose uses are read (default: src/frlr's and the benchmarks);
    ``modules``: the frlr modules that names resolve to (default: src/frlr's)."""
    modules = module_files() if modules is None else modules
    users = {**modules, **benchmark_files()} if users is None else users
    found: set[PrivateUse] = set()
    for user, path in users.items():
        found |= _PrivateNames(user, path, modules).found
    return sorted(found, key=lambda use: (use.user, use.line, use.name))


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
    for use in private_names_taken():
        print(f"private name: {use.user}:{use.line} takes {use.owner}.{use.name}")
    for bare in bare_benchmark_imports():
        print(f"bare benchmark import: {bare}")
    lengths = sorted(long_functions(), key=lambda pair: -pair[1])
    for name, length in lengths:
        print(f"{length:4d} lines: {name}")
