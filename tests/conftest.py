"""What every test module shares: the real datasets, decoded once per session, and the rule that
CI may not skip what it is there to run.

Real data lives in ``../shared/data`` beside the repository. Decoding it (30,000 Tiny ImageNet
JPEGs, 2,720 Omniglot drawings) is the slowest thing the suite does, so :func:`real_dataset`
decodes each (dataset, split, options) once per session into a session cache folder, never the
user's ``~/.cache/frlr``, and hands every test the same read-only arrays.

Under ``CI=true`` a skip that means "this machine lacks what the test needs" fails instead: a
test marked ``shared_data`` that skips (the data is absent), or a skip whose reason says a module
is not installed (a Keras backend). CI installs everything, so such a skip is a broken CI
machine, not a reason to pass green. Other skips (no CUDA device) stay skips. Hypothesis runs
derandomised under CI (the ``ci`` profile).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from frlr.data import ImageArrays, dataset_info, load_dataset

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

MISSING_MODULE_REASONS = ("is not installed", "could not import")
"""Skip reasons that mean a package is missing (``pytest.importorskip`` and the Keras tests)."""


def in_ci() -> bool:
    """Read at each report, not at import, so a test can run the suite with and without CI."""
    return os.environ.get("CI") == "true"


settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
"""Under ``CI=true`` Hypothesis draws the same examples on every run: a green commit stays
green, and a failure reproduces (its blob is printed)."""
if in_ci():
    settings.load_profile("ci")


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail_in_ci(report: pytest.TestReport | pytest.CollectReport, reason: str) -> None:
    report.outcome = "failed"
    report.longrepr = f"CI=true forbids this skip (install or mount what it needs): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and in_ci()) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    needs_data = item.get_closest_marker("shared_data") is not None
    if needs_data or any(words in reason for words in MISSING_MODULE_REASONS):
        _fail_in_ci(report, reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """A whole module skipped at import (``pytest.importorskip("keras")``) counts too."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci():
        reason = _skip_reason(report)
        if any(words in reason for words in MISSING_MODULE_REASONS):
            _fail_in_ci(report, reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """/work/shared/data, found as ../shared/data from the repository root."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def data_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's decoded-array cache: shared by the tests, never the user's own."""
    return tmp_path_factory.mktemp("frlr-cache")


@pytest.fixture(scope="session")
def real_dataset(shared_data: Path, data_cache_dir: Path) -> Callable[..., ImageArrays]:
    """``real_dataset(name, split, **options)``: a real dataset's split, decoded once a session.

    Skips when the dataset is not in the shared data. The arrays are read-only, since every
    caller gets the same ones.
    """
    loaded: dict[tuple[Any, ...], ImageArrays] = {}

    def load(name: str, split: str, **options: Any) -> ImageArrays:
        if not any((shared_data / folder).exists() for folder in dataset_info(name).folders):
            pytest.skip(f"{name} is absent from the shared data folder {shared_data}")
        key = (name, split, *sorted(options.items()))
        if key not in loaded:
            arrays = load_dataset(name, split, shared_data, cache_dir=data_cache_dir, **options)
            for array in (arrays.images, arrays.labels, arrays.cams):
                if array is not None:
                    array.flags.writeable = False
            loaded[key] = arrays
        return loaded[key]

    return load
