"""Class-parallel on degenerate classifiers (:mod:`degenerate`): 2 gloo ranks, each with some of
the rows and a contiguous share of the classes, equal the materialised loss of the whole batch
against the whole classifier -- ties spanning the ranks, held rows, NaN and inf included. The
ranks write their rows and gradients; this process assembles and compares them."""

from __future__ import annotations

import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import degenerate
import frlr.torch as fr
from test_torch_linear_parallel import _init, _start

WORLD = 2


def _split(size: int) -> list[int]:
    """Where rank 1's share starts: about a third in, at least one each side."""
    return [0, max(1, size // 3), size]


def _rank_call(rank: int, case: degenerate.Case, name: str, target_kind: str):
    rows_at, classes_at = _split(case.x.shape[0]), _split(case.w.shape[0])
    mine = slice(rows_at[rank], rows_at[rank + 1])
    own = slice(classes_at[rank], classes_at[rank + 1])
    x = case.x[mine].clone().requires_grad_()
    w = case.w[own].clone().requires_grad_()
    b = None if case.b is None else case.b[own].clone().requires_grad_()
    target, smoothing = degenerate.linear_target(case, target_kind)
    rows = degenerate.LINEAR[name](
        x, w, target[mine], bias=b, reduction="none", chunk_size=case.chunk_size,
        process_group=dist.group.WORLD, class_offset=classes_at[rank],
        num_classes=case.w.shape[0], **degenerate.options(name, case), **smoothing,
    )  # fmt: skip
    upstream = torch.linspace(0.5, 1.5, case.x.shape[0], dtype=case.x.dtype)[mine]
    grads = None
    if case.finite:
        inputs = (x, w) if b is None else (x, w, b)
        grads = torch.autograd.grad((rows * upstream).sum(), inputs)
    top = fr.linear_argmax(
        case.x[mine], case.w[own], None if case.b is None else case.b[own],
        chunk_size=case.chunk_size, process_group=dist.group.WORLD,
    )  # fmt: skip
    return rows.detach(), grads, top


def _worker(rank: int, world: int, init: str, out: str) -> None:
    _init(rank, world, init)
    results: list[object] = []
    try:
        for case, name, target_kind in torch.load(Path(out) / "cases.pt", weights_only=False):
            results.append(_rank_call(rank, case, name, target_kind))
    except Exception:
        results.append(traceback.format_exc())
    finally:
        torch.save(results, Path(out) / f"{rank}.pt")
        dist.destroy_process_group()


def _assembled(parts):
    """The ranks' (rows, grads) as one process's: rows and dX stacked by rows, dW and db by
    classes."""
    (rows0, grads0, _), (rows1, grads1, _) = parts
    rows = torch.cat([rows0, rows1])
    if grads0 is None:
        return rows, None
    return rows, tuple(torch.cat([a, b]) for a, b in zip(grads0, grads1, strict=True))


NAMES_AND_TARGETS = st.sampled_from(
    [
        (n, t)
        for n in degenerate.LINEAR
        for t in degenerate.TARGETS
        if not (n == "sr" and t == "lists")
    ]
)


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(degenerate.cases(min_rows=2), NAMES_AND_TARGETS), min_size=8, max_size=8))
def test_two_ranks_on_degenerate_classifiers_give_the_materialised_losses(tmp_path_factory, drawn):
    folder = tmp_path_factory.mktemp("ranks")
    items = [(case, name, target_kind) for case, (name, target_kind) in drawn]
    torch.save(items, folder / "cases.pt")
    _start(_worker, (WORLD, f"file://{folder / 'store'}", str(folder)), WORLD)
    ranks = [torch.load(folder / f"{rank}.pt", weights_only=False) for rank in range(WORLD)]
    errors = [r for results in ranks for r in results if isinstance(r, str)]
    assert errors == []
    failures = []
    for (case, name, target_kind), *parts in zip(items, *ranks, strict=True):
        got = _assembled(parts)
        upstream = torch.linspace(0.5, 1.5, case.x.shape[0], dtype=case.x.dtype)
        want = degenerate.reference(name, case, target_kind, upstream)
        failures += degenerate.check(name, case, target_kind, got, want)
        top = torch.cat([part[2] for part in parts])
        if not degenerate.same_argmax(case, top):
            failures.append(f"linear_argmax over 2 ranks: {top.tolist()}")
    assert failures == []
