"""The package's layers, read from the source with ``ast`` (:mod:`import_graph`): imports only
point down (loss library -> data, models, eval -> training -> experiments -> report -> CLI),
no import circle exists, module-level or inside functions, the training loop imports nothing of
the experiments, the report or the command, no module takes another package's private names;
and, over src/frlr and the ``benchmarks`` package, no module takes another module's private
names, no benchmark imports another by a bare name, and no function is over 80 lines."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

import import_graph as graph

FOUND = graph.imports()


def test_every_module_has_a_layer():
    for module in graph.module_files():
        graph.layer_of(module)


def test_no_import_points_up_a_layer():
    upward = [
        f"{i.importer}:{i.line} ({graph.LAYERS[graph.layer_of(i.importer)][0]}) imports "
        f"{i.target} ({graph.LAYERS[graph.layer_of(i.target)][0]})"
        for i in graph.upward(FOUND)
    ]
    assert upward == []


def test_no_import_circle():
    assert graph.circles(FOUND) == []


def test_the_training_loop_imports_nothing_above_it():
    above = ("frlr.experiments", "frlr.report", "frlr.cli")
    training = [
        m for m in graph.module_files() if graph.layer_of(m) <= graph.layer_of("frlr.train")
    ]
    bad = [
        f"{i.importer}:{i.line} -> {i.target}"
        for i in FOUND
        if i.importer in training and any(i.target.startswith(a) for a in above)
    ]
    assert bad == []


def test_no_module_imports_another_packages_private_names():
    bad = [f"{i.importer}:{i.line} -> {i.target} {i.names}" for i in graph.private_imports(FOUND)]
    assert bad == []


def test_no_lazy_module_getattr():
    """Imports are not deferred by a module-level ``__getattr__`` (PEP 562)."""
    lazy = [
        module
        for module, path in graph.module_files().items()
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
    ]
    assert lazy == []


def test_no_function_is_over_80_lines():
    """Every function of src/frlr and the benchmarks fits a screen: at most 80 lines from its
    ``def`` to its last line (decorators not counted), with no exception. A failure lists each
    offender with its length."""
    long = sorted(graph.long_functions(80), key=lambda pair: -pair[1])
    assert not long, "over 80 lines:\n" + "\n".join(f"{n}: {length}" for n, length in long)


def test_no_benchmark_imports_another_by_bare_name():
    """``python -m benchmarks.x`` puts the repository root on ``sys.path``, not benchmarks/:
    a benchmark takes another's names as ``from benchmarks.huge_k import ...``."""
    bare = graph.bare_benchmark_imports()
    assert not bare, "imported by a bare name:\n" + "\n".join(bare)


def test_no_private_name_is_taken_from_another_module():
    """A private name (``_x``) of an frlr module is used by that module alone, in src/frlr and
    in the benchmarks: what another module needs is made public, with a docstring."""
    taken = [f"{u.user}:{u.line} takes {u.owner}.{u.name}" for u in graph.private_names_taken()]
    assert not taken, "private names taken from another module:\n" + "\n".join(taken)


def test_the_linear_package_is_layered_inside():
    """frlr.torch.linear: one concept a module, each importing only those before it (see
    ``import_graph.PACKAGE_ORDERS``), no circle among them."""
    package = "frlr.torch.linear"
    upward = [
        f"{i.importer}:{i.line} -> {i.target}" for i in graph.upward_in_package(FOUND, package)
    ]
    assert upward == []
    inside = [i for i in FOUND if i.importer.startswith(package) and i.target.startswith(package)]
    assert graph.circles(inside) == []


def test_the_linear_package_has_short_files_and_functions():
    lengths = graph.file_lengths("frlr.torch.linear")
    assert len(lengths) >= 10
    assert {m: n for m, n in lengths.items() if n > 400} == {}
    assert graph.longest_functions("frlr.torch.linear", 80) == []


def test_the_heads_package_is_layered_inside():
    """frlr.heads: the loss options, the head interface, then each head, each module importing
    only those before it (``import_graph.PACKAGE_ORDERS``)."""
    upward = [
        f"{i.importer}:{i.line} -> {i.target}" for i in graph.upward_in_package(FOUND, "frlr.heads")
    ]
    assert upward == []


HEAD_NAMES = frozenset({"class_parallel", "classifier", "shard"})
"""What a branch on the classifier head reads: ``--class-parallel``, ``--classifier``, a shard."""


def head_branches(source: str) -> list[str]:
    """The conditions in ``source`` (``if``, ``elif``, ``x if c else y``, ``while``, a
    comprehension's ``if``, ``assert``, ``match``) that read one of :data:`HEAD_NAMES`, as
    "line: condition"."""
    tests = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.If, ast.IfExp, ast.While, ast.Assert)):
            tests.append(node.test)
        elif isinstance(node, ast.comprehension):
            tests.extend(node.ifs)
        elif isinstance(node, ast.Match):
            tests.append(node.subject)
    return [
        f"{test.lineno}: {ast.unparse(test)}"
        for test in tests
        if any(
            (isinstance(n, ast.Name) and n.id in HEAD_NAMES)
            or (isinstance(n, ast.Attribute) and n.attr in HEAD_NAMES)
            for n in ast.walk(test)
        )
    ]


def test_the_training_loop_never_branches_on_its_classifier_head():
    """``frlr.train`` calls its head (:mod:`frlr.heads`, chosen once from the config) and never
    asks which head it is: no condition reads ``class_parallel``, ``classifier`` or a shard."""
    source = graph.module_files()["frlr.train"].read_text(encoding="utf-8")
    assert head_branches(source) == []


def test_the_head_branch_rule_fires_on_each_kind_of_condition():
    source = (
        "if config.class_parallel:\n    pass\n"
        "x = a if session.shard is None else b\n"
        "y = [p for p in ps if classifier]\n"
        "if config.epochs:\n    pass\n"
    )
    assert head_branches(source) == [
        "1: config.class_parallel",
        "3: session.shard is None",
        "4: classifier",
    ]


# The checker itself, on made-up modules: each rule fires when it should.


@pytest.fixture
def fake_tree(tmp_path, monkeypatch):
    """Writes made-up modules: ``benchmarks/...`` as the benchmarks package, the others under
    ``frlr/``; returns their imports."""

    def write(files: dict[str, str]):
        for name, text in files.items():
            path = tmp_path / (name if name.startswith("benchmarks/") else f"frlr/{name}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        monkeypatch.setattr(graph, "SRC", tmp_path)
        monkeypatch.setattr(graph, "BENCHMARKS", tmp_path / "benchmarks")
        return graph.imports()

    return write


def test_the_checker_finds_an_upward_import_in_a_function(fake_tree):
    found = fake_tree(
        {
            "__init__.py": "",
            "train.py": "def main():\n    from frlr.cli import run\n",
            "cli.py": "import frlr.train\n",
        }
    )
    (item,) = graph.upward(found)
    assert (item.importer, item.target, item.in_function) == ("frlr.train", "frlr.cli", True)
    assert graph.circles(found) == [["frlr.cli", "frlr.train"]]


def test_the_checker_allows_siblings_private_modules_only(fake_tree):
    found = fake_tree(
        {
            "__init__.py": "",
            "torch/__init__.py": "",
            "torch/_kernels.py": "",
            "torch/losses.py": "from frlr.torch import _kernels\nfrom frlr._hyper import x\n",
            "torch/linear/__init__.py": "",
            "torch/linear/sweep.py": "from frlr.torch import _kernels\n",
            "_hyper.py": "",
            "report/__init__.py": "",
            "report/tables.py": "from frlr.experiments.compare import _label, run_row\n",
            "experiments/__init__.py": "",
            "experiments/compare.py": "",
            "experiments/sweep.py": "from frlr.experiments.compare import _label\n",
        }
    )
    bad = {(i.importer, i.target) for i in graph.private_imports(found)}
    assert bad == {
        ("frlr.torch.losses", "frlr._hyper"),
        ("frlr.report.tables", "frlr.experiments.compare"),
    }


def test_import_frlr_train_loads_no_experiment_report_or_cli_module():
    code = (
        "import sys, frlr.train\n"
        "print(sorted(m for m in sys.modules if m.startswith(('frlr.experiments', "
        "'frlr.report', 'frlr.cli'))))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


def test_the_checker_finds_an_upward_import_inside_a_layered_package(fake_tree, monkeypatch):
    found = fake_tree(
        {
            "__init__.py": "",
            "pkg/__init__.py": "from frlr.pkg.high import f\n",
            "pkg/low.py": "from frlr.pkg.high import f\n",
            "pkg/high.py": "from frlr.pkg import low\n",
            "pkg/stray.py": "",
        }
    )
    monkeypatch.setitem(graph.PACKAGE_ORDERS, "frlr.pkg", ("low", "high"))
    bad = {(i.importer, i.target) for i in graph.upward_in_package(found, "frlr.pkg")}
    assert bad == {("frlr.pkg.low", "frlr.pkg.high"), ("frlr.pkg.stray", "frlr.pkg.stray")}
    assert graph.circles(found) == [["frlr.pkg.high", "frlr.pkg.low"]]


def test_the_checker_finds_private_names_taken_from_another_module(fake_tree):
    fake_tree(
        {
            "__init__.py": "",
            "torch/__init__.py": "",
            "torch/_kernels.py": "def _rowsum(): ...\ndef rowsum(): ...\n",
            "torch/losses.py": "def _check(): ...\n_check()\n",
            "torch/fused.py": (
                "from frlr.torch import _kernels as kernels, losses\n"
                "from frlr.torch._kernels import _rowsum\n"
                "kernels.rowsum()\n"
                "losses._check()\n"
            ),
            "benchmarks/__init__.py": "",
            "benchmarks/bench.py": (
                "import frlr.torch as frlr\nfrom frlr.torch import losses\n"
                "losses.public\nfrlr._kernels.rowsum()\n"
            ),
        }
    )
    taken = {(u.user, u.line, u.owner, u.name) for u in graph.private_names_taken()}
    assert taken == {
        ("frlr.torch.fused", 2, "frlr.torch._kernels", "_rowsum"),
        ("frlr.torch.fused", 4, "frlr.torch.losses", "_check"),
        ("benchmarks.bench", 4, "frlr.torch", "_kernels"),
    }


def test_the_checker_finds_a_benchmark_imported_by_bare_name(fake_tree):
    fake_tree(
        {
            "__init__.py": "",
            "benchmarks/__init__.py": "",
            "benchmarks/huge_k.py": "",
            "benchmarks/_machine.py": "",
            "benchmarks/floor.py": (
                "from huge_k import shape_inputs\nimport _machine\n"
                "from benchmarks.huge_k import shape_inputs\nfrom . import _machine\n"
                "import numpy\n"
            ),
        }
    )
    assert graph.bare_benchmark_imports() == [
        "benchmarks.floor:1 huge_k",
        "benchmarks.floor:2 _machine",
    ]


def test_the_checker_counts_a_function_from_def_to_last_line(fake_tree):
    """80 lines pass, 81 do not; decorators above the ``def`` do not count."""
    decorated = "@a\n@b\n@c\ndef fits():\n" + "    x = 1\n" * 79
    fake_tree(
        {
            "__init__.py": "",
            "long.py": decorated + "\n\ndef too_long():\n" + "    x = 1\n" * 80,
            "benchmarks/__init__.py": "",
            "benchmarks/bench.py": "def main():\n" + "    x = 1\n" * 81,
        }
    )
    assert sorted(graph.long_functions(80)) == [
        ("benchmarks.bench:main", 82),
        ("frlr.long:too_long", 81),
    ]
