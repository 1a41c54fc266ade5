"""The linear losses on the classifiers real training makes and the inputs users pass by
mistake: zero, repeated and near-repeated heads, ties beyond a chunk and a histogram bucket,
1e-30 and 1e15 scales, NaN and inf -- equal to the materialised losses (ties compared summed
over the tied classes, see :mod:`degenerate`), never "did not converge", never an IndexError.
Each of issue 24's reproducers is a test here; then property tests over drawn degenerate
classifiers, all four losses, index targets, positive lists and smoothed targets; then the
errors for bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import degenerate
import frlr.torch as fr


def _rows(fn, *args, **options):
    return fn(*args, reduction="none", **options)


# -- issue 24's reproducers ----------------------------------------------------------------------


def test_a_zero_initialised_head_gives_the_materialised_loss():
    torch.manual_seed(0)
    x, w, y = torch.randn(8, 32), torch.zeros(100_000, 32), torch.randint(0, 100_000, (8,))
    torch.testing.assert_close(fr.linear_hs_lr_loss(x, w, y), fr.hs_lr_loss(x @ w.T, y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(6))
def test_near_identical_rows_give_the_materialised_loss(seed, dtype):
    torch.manual_seed(seed)
    x = torch.randn(4, 64, dtype=dtype)
    w = torch.randn(1, 64, dtype=dtype) + 1e-7 * torch.randn(5000, 64, dtype=dtype)
    y = torch.randint(0, 5000, (4,))
    got = _rows(fr.linear_hs_lr_loss, x, w, y)
    torch.testing.assert_close(got, _rows(fr.hs_lr_loss, x @ w.T, y), rtol=1e-4, atol=1e-4)


def test_near_identical_rows_give_the_materialised_features_gradient():
    torch.manual_seed(1)
    x = torch.randn(4, 64).requires_grad_()
    w = torch.randn(1, 64) + 1e-7 * torch.randn(5000, 64)
    y = torch.randint(0, 5000, (4,))
    (got,) = torch.autograd.grad(fr.linear_hs_lr_loss(x, w, y), x)
    (want,) = torch.autograd.grad(fr.hs_lr_loss(x @ w.T, y), x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", [2, 4])
def test_exact_ties_beyond_a_bucket_give_the_materialised_loss(seed):
    torch.manual_seed(seed)
    x, y = torch.randn(2, 8), torch.randint(0, 1100, (2,))
    w = torch.randn(1, 8).repeat(1100, 1)
    w[:10] *= 50
    want = _rows(fr.hs_lr_loss, x @ w.T, y)
    torch.testing.assert_close(_rows(fr.linear_hs_lr_loss, x, w, y), want, rtol=1e-4, atol=1e-4)


def test_a_near_identical_k200_head_collects_what_it_counted():
    torch.manual_seed(0)
    x, y = torch.randn(4, 16), torch.randint(0, 200, (4,))
    w = torch.randn(1, 16) + 1e-7 * torch.randn(200, 16)
    torch.testing.assert_close(fr.linear_hs_lr_loss(x, w, y), fr.hs_lr_loss(x @ w.T, y))


@pytest.mark.parametrize("where", ["x", "w", "b"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", list(degenerate.LINEAR))
def test_nan_and_inf_give_the_materialised_rows(name, value, where):
    torch.manual_seed(3)
    x, w, b, y = (
        torch.randn(5, 16),
        torch.randn(300, 16),
        torch.randn(300),
        torch.randint(0, 300, (5,)),
    )
    {"x": x[1], "w": w[7], "b": b[7:8]}[where][0] = value
    got = _rows(degenerate.LINEAR[name], x, w, y, bias=b)
    want = _rows(degenerate.MATERIALISED[name], x @ w.T + b, y)
    torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-4, atol=1e-4)


def test_features_whose_squared_norm_overflows_float32():
    torch.manual_seed(5)
    x, w, y = torch.randn(4, 16) * 1e20, torch.randn(300, 16) * 1e-20, torch.randint(0, 300, (4,))
    assert not bool(torch.isfinite((x * x).sum(1)).all())
    want = _rows(fr.hs_lr_loss, x @ w.T, y)
    torch.testing.assert_close(_rows(fr.linear_hs_lr_loss, x, w, y), want, rtol=1e-4, atol=1e-4)


def test_linear_argmax_follows_torch_argmax_on_nan_whatever_the_chunk():
    x = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([[0.0, 0.0], [5.0, 0.0], [float("nan"), 0.0], [1.0, 0.0]])
    for chunk in (None, 1, 2, 3, 4):
        assert fr.linear_argmax(x, w, chunk_size=chunk).tolist() == [2]
    w[3, 0] = float("nan")  # two NaNs: the first, as torch.argmax
    for chunk in (None, 1, 2, 3):
        assert fr.linear_argmax(x, w, chunk_size=chunk).tolist() == (x @ w.T).argmax(1).tolist()


# -- bad input -------------------------------------------------------------------------------------


def test_an_integer_one_hot_target_points_to_positive_lists():
    x, w = torch.randn(3, 4), torch.randn(5, 4)
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 3, 4]), 5)
    with pytest.raises(ValueError, match=r"one-hot or multi-hot.*positive_lists"):
        fr.linear_lr_loss(x, w, one_hot)


def test_an_integer_n_by_2_target_at_k_2_is_ambiguous():
    x, w = torch.randn(3, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"ambiguous.*argmax\(1\).*positive_lists"):
        fr.linear_hs_lr_loss(x, w, torch.tensor([[0, 1], [1, 0], [0, 1]]))
    lists = torch.tensor([[0, 1], [1, -100], [0, -100]])  # padded: lists, unambiguously
    fr.linear_hs_lr_loss(x, w, lists)


def test_a_one_class_weight_names_the_classifier():
    with pytest.raises(ValueError, match=r"the classifier has 1 class; the losses need K >= 2"):
        fr.linear_ss_lr_loss(torch.randn(3, 4), torch.randn(1, 4), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_a_complex_target_is_refused(dtype):
    with pytest.raises(TypeError, match="target must be int64"):
        fr.linear_lr_loss(torch.randn(3, 4), torch.randn(5, 4), torch.zeros(3, dtype=dtype))


# -- properties ------------------------------------------------------------------------------------


def run_case(name: str, case: degenerate.Case, target_kind: str):
    """The linear loss's rows and gradients (of sum(rows * upstream)) for one case."""
    x, w = case.x.clone().requires_grad_(), case.w.clone().requires_grad_()
    b = None if case.b is None else case.b.clone().requires_grad_()
    target, smoothing = degenerate.linear_target(case, target_kind)
    rows = degenerate.LINEAR[name](
        x, w, target, bias=b, reduction="none", chunk_size=case.chunk_size,
        **degenerate.options(name, case), **smoothing,
    )  # fmt: skip
    upstream = torch.linspace(0.5, 1.5, x.shape[0], dtype=x.dtype)
    grads = None
    if case.finite:
        inputs = (x, w) if b is None else (x, w, b)
        grads = torch.autograd.grad((rows * upstream).sum(), inputs)
    return (rows.detach(), grads), upstream


def _target_kinds(name: str) -> tuple[str, ...]:
    return ("index", "smoothed") if name == "sr" else degenerate.TARGETS


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=degenerate.cases(), name=st.sampled_from(list(degenerate.LINEAR)), data=st.data())
def test_degenerate_classifiers_give_the_materialised_losses(case, name, data):
    target_kind = data.draw(st.sampled_from(_target_kinds(name)))
    got, upstream = run_case(name, case, target_kind)
    want = degenerate.reference(name, case, target_kind, upstream)
    assert degenerate.check(name, case, target_kind, got, want) == []


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=degenerate.cases(kinds=("zero", "repeated", "near", "big_tie")), data=st.data())
def test_hs_lr_on_ties_whatever_the_target(case, data):
    """HS-LR, the loss that selects, gets the tie-heavy kinds more often."""
    target_kind = data.draw(st.sampled_from(degenerate.TARGETS))
    got, upstream = run_case("hs-lr", case, target_kind)
    want = degenerate.reference("hs-lr", case, target_kind, upstream)
    assert degenerate.check("hs-lr", case, target_kind, got, want) == []


@settings(max_examples=30, deadline=None)
@given(case=degenerate.cases(), chunk=st.integers(1, 400))
def test_linear_argmax_is_torch_argmax_for_any_chunk(case, chunk):
    got = fr.linear_argmax(case.x, case.w, case.b, chunk_size=chunk)
    assert degenerate.same_argmax(case, got), got


def test_ci_draws_hypothesis_examples_derandomised():
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = "import conftest, hypothesis; print(hypothesis.settings().derandomize)"
    tests = Path(__file__).parent
    plain = {k: v for k, v in os.environ.items() if k != "CI"}
    for env, expected in (({**plain, "CI": "true"}, "True"), (plain, "False")):
        run = subprocess.run([sys.executable, "-c", code], cwd=tests, env=env, text=True,
                             capture_output=True, check=True)  # fmt: skip
        assert run.stdout.strip() == expected
