"""The suite's CI rule (tests/conftest.py): under ``CI=true`` a skip for missing shared data or a
missing package fails the run; without CI, and for other reasons (no CUDA device), it skips."""

from __future__ import annotations

from pathlib import Path

import pytest

SKIPPING_MODULE = """
import pytest

@pytest.mark.shared_data
def test_needs_shared_data():
    pytest.skip("shared data folder /nowhere is absent")

def test_needs_a_keras_backend():
    pytest.skip('jax is not installed (pip install "frlr[jax]")')

@pytest.mark.skipif(True, reason="needs a CUDA device")
def test_needs_cuda():
    pass

@pytest.mark.xfail(reason="shared data folder is absent, expectedly", strict=True)
def test_expected_failure():
    assert False
"""

IMPORT_SKIPPED_MODULE = """
import pytest

pytest.importorskip("frlr_no_such_backend")

def test_never_collected():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    shared_data: needs ../shared/data\n")
    pytester.makepyfile(test_skipping=SKIPPING_MODULE, test_import_skipped=IMPORT_SKIPPED_MODULE)
    return pytester


def test_outside_ci_missing_data_and_packages_skip(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(skipped=4, xfailed=1)


def test_under_ci_missing_data_and_packages_fail(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "test_skipping.py")
    result.assert_outcomes(failed=2, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines(
        [
            "*CI=true forbids this skip*shared data folder /nowhere is absent*",
            "*CI=true forbids this skip*jax is not installed*",
        ]
    )
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "test_import_skipped.py")
    result.assert_outcomes(errors=1)  # a collection error: the whole run stops, red
    result.stdout.fnmatch_lines(["*CI=true forbids this skip*frlr_no_such_backend*"])
