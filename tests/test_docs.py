"""The API reference keeps its promise: every public name is in it, with its arguments and an
example, and the examples run.

The public names are each package's ``__all__`` (``frlr.data.augment`` has none: its top-level
functions). The docstrings are read statically with griffe, as mkdocstrings reads them to build
the site, so what is checked here is what the site shows.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import griffe
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGES = (
    "frlr.torch",
    "frlr.keras",
    "frlr.eval",
    "frlr.data",
    "frlr.data.augment",
    "frlr.data.mixing",
)
# Examples are run for all of them. frlr.keras's run in this process on the backend Keras picks
# (KERAS_BACKEND, else ~/.keras/keras.json), as test_keras_properties does; they print plain
# Python numbers, so they read the same on every backend.
RUN_EXAMPLES = PACKAGES
# Frameworks the docs build must not import (griffe reads the source as text).
NOT_IMPORTED = ("torch", "keras", "tensorflow", "jax", "numpy", "sklearn", "PIL")

_LOADED = griffe.load(
    "frlr",
    search_paths=[str(SRC)],
    docstring_parser="google",
    docstring_options={"warn_unknown_params": False, "warn_missing_types": False},
    allow_inspection=False,
    resolve_aliases=True,
    resolve_external=False,
)


def _public(package: str) -> dict[str, griffe.Object]:
    """name -> the documented object (aliases followed) for the package's public names."""
    module = _LOADED[package.removeprefix("frlr.")]
    if module.exports is not None:
        names = [n if isinstance(n, str) else n.name for n in module.exports]
    else:
        names = [n for n, m in module.members.items() if not n.startswith("_") and not m.is_alias]
    return {
        name: module[name].final_target if module[name].is_alias else module[name] for name in names
    }


def _sections(obj: griffe.Object, kind: str) -> list:
    parsed = obj.docstring.parsed if obj.docstring is not None else []
    return [section for section in parsed if section.kind.value == kind]


def _gaps(obj: griffe.Object) -> dict[str, str]:
    """What the docstring of a public function or class lacks, by kind: {} when nothing."""
    gaps = {}
    if not _sections(obj, "examples"):
        gaps["example"] = "no Examples section"
    signature = [p.name for p in obj.parameters if p.name not in ("self", "cls")]
    documented: set[str] = set()
    for kind in ("parameters", "attributes", "other parameters"):
        for section in _sections(obj, kind):
            for item in section.value:
                # "**options" documents the parameter griffe calls "options"
                documented.update(name.strip().lstrip("*") for name in item.name.split(","))
    undocumented = [name for name in signature if name not in documented]
    if undocumented:
        gaps["args"] = "undocumented: " + ", ".join(undocumented)
    unknown = sorted(documented - set(signature)) if obj.kind.value == "function" else []
    if unknown:
        gaps["unknown args"] = "documented but not in the signature: " + ", ".join(unknown)
    return gaps


def _callables(packages: tuple[str, ...]) -> list[tuple[str, griffe.Object]]:
    return [
        (f"{package}.{name}", obj)
        for package in packages
        for name, obj in _public(package).items()
        if obj.kind.value in ("function", "class")
    ]


def test_every_public_function_and_class_has_its_arguments_and_an_example():
    gaps = {name: gap for name, obj in _callables(PACKAGES) if (gap := _gaps(obj))}
    assert not gaps, f"public names whose docstring lacks an example or arguments: {gaps}"


def _examples() -> list[tuple[str, str, int]]:
    """(qualified name, example source, line) of every Examples section that is run."""
    found = []
    for package in RUN_EXAMPLES:
        for name, obj in _public(package).items():
            for section in _sections(obj, "examples"):
                code = "\n\n".join(text for kind, text in section.value if kind.value == "examples")
                found.append((f"{package}.{name}", code, obj.docstring.lineno or 0))
    return found


@pytest.mark.parametrize(
    ("name", "source", "line"), _examples(), ids=[name for name, _, _ in _examples()]
)
def test_docstring_example_runs(name: str, source: str, line: int, monkeypatch, tmp_path):
    if name.startswith("frlr.keras."):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported
        pytest.importorskip("keras")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FRLR_CACHE", str(tmp_path / "cache"))
    test = doctest.DocTestParser().get_doctest(source, {}, name, name, line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def _blocker(tmp_path: Path) -> Path:
    """A folder of stand-in packages that raise on import, to put first on PYTHONPATH."""
    for module in NOT_IMPORTED:
        (tmp_path / "blocked" / module).mkdir(parents=True)
        (tmp_path / "blocked" / module / "__init__.py").write_text(
            f"raise ImportError('the docs build imported {module}')\n"
        )
    return tmp_path / "blocked"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The reference built as CI builds it (strict), with the frameworks blocked from import."""
    tmp_path = tmp_path_factory.mktemp("docs")
    site = tmp_path / "site"
    env = {**os.environ, "PYTHONPATH": str(_blocker(tmp_path)), "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    return site


@pytest.mark.slow
def test_site_builds_strictly_without_importing_frameworks_and_shows_every_public_name(site):
    missing = []
    for package in PACKAGES:
        page = site / "api" / package.split(".")[1] / "index.html"
        html = page.read_text(encoding="utf-8")
        missing += [
            f"{package}.{name}" for name in _public(package) if f'id="{package}.{name}"' not in html
        ]
    assert not missing, f"public names absent from the built reference: {missing}"


# What a docstring written for Sphinx leaves in the HTML: a role (``:func:`lr_loss``` shows as
# ":func:" before the code), a literal block's "::" ending a paragraph, and a doctest outside an
# Examples section, which Markdown reads as quotes nested three deep (">>>").
UNRENDERED = {
    "a Sphinx role": re.compile(r":(?:func|class|data|meth|mod|attr|exc|obj):(?:<code>|`)"),
    'a reST literal block ("::")': re.compile(r"::\s*</p>"),
    "a doctest outside Examples": re.compile(r"<blockquote>\s*<blockquote>"),
}
# Source files whose docstrings still hold Sphinx markup, being rewritten elsewhere. An entry
# whose file no longer shows any must go, so the list only shrinks.
PENDING: tuple[str, ...] = ()
_ANCHOR = re.compile(r'id="(frlr(?:\.\w+)+)"')


def _source(identifier: str) -> str:
    """The source file (relative to src/) of the documented object an anchor names."""
    obj = _LOADED[identifier.removeprefix("frlr.")]
    obj = obj.final_target if obj.is_alias else obj
    return Path(obj.filepath).relative_to(SRC).as_posix()


@pytest.mark.slow
def test_site_shows_no_sphinx_markup(site):
    """Every cross-reference is a link, every example a code block: nothing reads as raw reST."""
    found: dict[str, list[str]] = {}
    for page in sorted((site / "api").glob("*/index.html")):
        html = page.read_text(encoding="utf-8")
        anchors = [(m.start(), m.group(1)) for m in _ANCHOR.finditer(html)]
        for what, pattern in UNRENDERED.items():
            for match in pattern.finditer(html):
                # the object whose documentation holds it: the last anchor before it (the page's
                # module before the first one)
                owner = f"frlr.{page.parent.name}"
                owner = next((a for at, a in reversed(anchors) if at < match.start()), owner)
                source = _source(owner)
                snippet = html[max(0, match.start() - 60) : match.end() + 40].replace("\n", " ")
                found.setdefault(source, []).append(f"{what} in {owner}: ...{snippet}...")
    pending = {source for source in found if source.startswith(PENDING)}
    unrendered = {source: items for source, items in found.items() if source not in pending}
    assert not unrendered, (
        "docstrings the reference shows as raw reST (write a cross-reference as [`name`][], an "
        "example as a fenced code block):\n"
        + "\n".join(item for items in unrendered.values() for item in items)
    )
    stale = [entry for entry in PENDING if not any(s.startswith(entry) for s in pending)]
    assert not stale, f"no raw reST is left from {stale}: remove them from PENDING"
