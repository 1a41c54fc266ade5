"""Class-parallel: the classifier sharded by class over 2 and 3 gloo processes equals one process.

Each rank holds a contiguous, unequal share of the classes and its own, unequal share of the
batch (one rank's share of a 3-way split is a single row). The loss must equal the
materialised loss of the global batch against the whole classifier, and each rank's
gradients the matching rows of the single-process gradients; for "none" each rank gets its
own rows and weights them itself. Sparse soft targets (class lists with ``target_weights``,
with and without ``label_smoothing``) equal the materialised loss on their dense target. A
backbone under DDP with ``sum_allreduce_hook`` gets the single-process gradient.

Errors: inconsistent layouts raise on every rank, a layout consistent across the ranks may
change from call to call on one group, and a bad input on one rank only raises there and, naming
that rank, on every other rank -- never a hang: each rank's collectives time out after
``COLLECTIVE_TIMEOUT`` and the test stops waiting for the ranks after ``JOIN_TIMEOUT``. The group
then still serves a good call.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import frlr.torch as frlr
from frlr.torch.class_sharding import sum_allreduce_hook

LINEAR = {
    "lr": frlr.linear_lr_loss,
    "ss-lr": frlr.linear_ss_lr_loss,
    "hs-lr": frlr.linear_hs_lr_loss,
    "sr": frlr.linear_sr_loss,
}
MATERIALISED = {"lr": frlr.lr_loss, "ss-lr": frlr.ss_lr_loss, "hs-lr": frlr.hs_lr_loss}
MATERIALISED["sr"] = frlr.sr_loss
CASES = [
    (name, kind, reduction)
    for name in LINEAR
    for kind in (("index", "soft") if name == "sr" else ("index", "lists", "soft", "weighted"))
    for reduction in ("mean", "none")
]
"""Every loss reduced and unreduced (recomputing backward), index targets and positive lists,
soft targets smoothed (every class an HS-LR candidate) and not (a weight of 1 is none)."""
SMOOTHING = {"soft": 0.1, "weighted": 0.0}
COLLECTIVE_TIMEOUT = timedelta(seconds=60)
"""A rank waiting longer than this in a collective raises (a regression to a hang fails)."""
JOIN_TIMEOUT = 240.0
"""Seconds the test waits for its ranks before killing them and failing."""
LAYOUTS = {  # world size: (rows per rank, classes per rank)
    2: ([5, 8], [140, 117]),
    3: ([4, 1, 6], [90, 77, 90]),
}


def _data(rows: list[int], classes: list[int]):
    g = torch.Generator().manual_seed(11)
    n, k, d = sum(rows), sum(classes), 6
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(k, d, generator=g, dtype=torch.float64)
    b = torch.randn(k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    y[2] = -100
    lists = torch.randint(0, k, (n, 3), generator=g)
    lists[:, 1] = (lists[:, 0] + 1) % k  # distinct within a row
    lists[:, 2] = -100
    lists[1, 0] = -100
    upstream = torch.rand(n, generator=g, dtype=torch.float64)
    weights = torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.5
    weights[0, 0] = 1.0
    soft_lists = lists.clone()
    soft_lists[3, 2] = soft_lists[3, 0]  # listed twice: the weights are summed
    return x, w, b, y, lists, upstream, (soft_lists, weights)


def _dense(lists: torch.Tensor, k: int, weights=None, eps: float = 0.0) -> torch.Tensor:
    dense = torch.zeros(lists.shape[0], k, dtype=torch.float64)
    r, c = (lists >= 0).nonzero(as_tuple=True)
    mass = torch.ones(r.numel(), dtype=torch.float64) if weights is None else weights[r, c]
    dense.index_put_((r, lists[r, c]), mass, accumulate=True)
    return dense * (1 - eps) + eps / k


def _reference(name, x, w, b, target, dense, reduction, upstream):
    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    loss = MATERIALISED[name](x @ w.T + b, target if dense is None else dense, reduction=reduction)
    total = loss.sum() if reduction != "none" else (loss * upstream).sum()
    return loss.detach(), torch.autograd.grad(total, (x, w, b))


def _check(failures: list[str], label: str, got: torch.Tensor, want: torch.Tensor) -> None:
    try:
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    except AssertionError as error:
        failures.append(f"{label}: {error}")


def _init(rank: int, world: int, init: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT
    )


def _worker(rank: int, world: int, init: str, out: str) -> None:
    _init(rank, world, init)
    failures: list[str] = []
    try:
        rows, classes = LAYOUTS[world]
        x, w, b, y, lists, upstream, (soft_lists, weights) = _data(rows, classes)
        k = sum(classes)
        r0, c0 = sum(rows[:rank]), sum(classes[:rank])
        mine_r, mine_c = slice(r0, r0 + rows[rank]), slice(c0, c0 + classes[rank])
        group = dist.group.WORLD
        for name, kind, reduction in CASES:
            fn = LINEAR[name]
            target, dense, soft = (
                (y, None, {}) if kind == "index" else (lists, _dense(lists, k), {})
            )
            if kind in SMOOTHING:
                eps = SMOOTHING[kind]
                target, dense = soft_lists, _dense(soft_lists, k, weights, eps)
                soft = {"target_weights": weights[mine_r], "label_smoothing": eps}
            label = f"rank {rank} {name} {kind} {reduction}"
            want, (gx, gw, gb) = _reference(name, x, w, b, target, dense, reduction, upstream)
            xl, wl, bl = (
                t[s].clone().requires_grad_() for t, s in ((x, mine_r), (w, mine_c), (b, mine_c))
            )
            loss = fn(
                xl, wl, target[mine_r], bias=bl, reduction=reduction, chunk_size=23,
                process_group=group, class_offset=c0, num_classes=k, **soft,
            )  # fmt: skip
            if reduction == "none":
                (loss * upstream[mine_r]).sum().backward()
                want = want[mine_r]
            else:
                loss.backward()
            _check(failures, label + " loss", loss.detach(), want)
            _check(failures, label + " features", xl.grad, gx[mine_r])
            _check(failures, label + " weight", wl.grad, gw[mine_c])
            _check(failures, label + " bias", bl.grad, gb[mine_c])
        _ddp_backbone(rank, world, failures)
    except Exception:  # a worker's failure is reported by the parent, not lost in a traceback
        failures.append(traceback.format_exc())
    finally:
        Path(out, f"{rank}.txt").write_text("\n".join(failures))
        dist.destroy_process_group()


def _ddp_backbone(rank: int, world: int, failures: list[str]) -> None:
    """A DDP backbone summing its gradient: equal to one process's backbone gradient."""
    rows, classes = LAYOUTS[world]
    x, w, b, y, *_ = _data(rows, classes)
    k = sum(classes)
    torch.manual_seed(0)
    backbone = nn.Linear(6, 5).double()
    single = nn.Linear(6, 5).double()
    single.load_state_dict(backbone.state_dict())
    head = w[:, :5].contiguous()
    frlr.ss_lr_loss(single(x) @ head.T + b, y).backward()
    ddp = nn.parallel.DistributedDataParallel(backbone)
    ddp.register_comm_hook(None, sum_allreduce_hook)
    r0, c0 = sum(rows[:rank]), sum(classes[:rank])
    features = ddp(x[r0 : r0 + rows[rank]])
    shard = slice(c0, c0 + classes[rank])
    loss = frlr.linear_ss_lr_loss(
        features, head[shard], y[r0 : r0 + rows[rank]], bias=b[shard],
        process_group=dist.group.WORLD, class_offset=c0, num_classes=k,
    )  # fmt: skip
    loss.backward()
    _check(failures, f"rank {rank} ddp weight", backbone.weight.grad, single.weight.grad)
    _check(failures, f"rank {rank} ddp bias", backbone.bias.grad, single.bias.grad)


def _start(fn, args: tuple, processes: int) -> None:
    """The ranks from a fork server: a plain fork of this process can deadlock, since an earlier
    test may have left threads holding locks (torch.compile's workers, gloo's); the server is a
    fresh single-threaded interpreter that imports torch once, so each rank is still a cheap
    fork of it. Ranks still running after ``JOIN_TIMEOUT`` are killed and the test fails."""
    multiprocessing.set_forkserver_preload(["torch", "torch._dynamo", "torch.distributed"])
    context = mp.start_processes(
        fn, args=args, nprocs=processes, join=False, start_method="forkserver"
    )
    deadline = time.monotonic() + JOIN_TIMEOUT
    while not context.join(timeout=max(deadline - time.monotonic(), 0.0)):
        if time.monotonic() >= deadline:
            for process in context.processes:
                process.kill()
                process.join()
            pytest.fail(f"the ranks were still running after {JOIN_TIMEOUT:.0f} s: a hang")


def _run_ranks(tmp_path: Path, fn, world: int) -> None:
    """Run ``fn(rank, world, init, out)`` on ``world`` ranks; fail with what any rank reported."""
    os.environ.update({"OMP_NUM_THREADS": "1"})
    _start(fn, (world, f"file://{tmp_path / 'store'}", str(tmp_path)), world)
    reports = [(tmp_path / f"{rank}.txt").read_text() for rank in range(world)]
    failures = [report for report in reports if report]
    assert not failures, "\n".join(failures)[:4000]


@pytest.mark.parametrize("world", [2, 3])
def test_class_parallel_equals_one_process(tmp_path, world):
    _run_ranks(tmp_path, _worker, world)


def _half_worker(rank: int, world: int, init: str, out: str) -> None:
    """bf16 shards, the products in bf16 (forced): every loss, reduced and not, equals the
    one-process call on the same bf16 values within the half-precision contract's tolerance
    (tests/test_torch_linear_half.py; the ranks' chunks differ from one process's)."""
    from frlr.torch.linear import products

    products.HALF_PRODUCTS = True
    _init(rank, world, init)
    failures: list[str] = []
    rtol = 2 * torch.finfo(torch.bfloat16).eps
    try:
        rows, classes = LAYOUTS[world]
        x, w, b, y, _, upstream, _ = _data(rows, classes)
        x, w, b = (t.to(torch.bfloat16) for t in (x, w, b))
        upstream = upstream.float()
        k, r0, c0 = sum(classes), sum(rows[:rank]), sum(classes[:rank])
        mine_r, mine_c = slice(r0, r0 + rows[rank]), slice(c0, c0 + classes[rank])
        everything = slice(None)
        sharded = {"process_group": dist.group.WORLD, "class_offset": c0, "num_classes": k}
        for name, reduction in [(name, r) for name in LINEAR for r in ("mean", "none")]:
            results = []
            for r, c, options in ((everything, everything, {}), (mine_r, mine_c, sharded)):
                xl, wl, bl = (t.clone().requires_grad_() for t in (x[r], w[c], b[c]))
                loss = LINEAR[name](
                    xl, wl, y[r], bias=bl, reduction=reduction, chunk_size=23, **options
                )
                (loss if reduction == "mean" else loss * upstream[r]).sum().backward()
                results.append((loss.detach(), xl.grad, wl.grad, bl.grad))
            (one, gx, gw, gb), mine = results
            want = (one if reduction == "mean" else one[mine_r], gx[mine_r], gw[mine_c], gb[mine_c])
            for what, got, expected in zip(
                ("loss", "features", "weight", "bias"), mine, want, strict=True
            ):
                try:
                    torch.testing.assert_close(
                        got.double(), expected.double(), rtol=rtol,
                        atol=rtol * float(expected.double().abs().max()),
                    )  # fmt: skip
                except AssertionError as error:
                    failures.append(f"rank {rank} bf16 {name} {reduction} {what}: {error}")
    except Exception:
        failures.append(traceback.format_exc())
    finally:
        Path(out, f"{rank}.txt").write_text("\n".join(failures))
        dist.destroy_process_group()


def test_class_parallel_half_precision_products_equal_one_process(tmp_path):
    _run_ranks(tmp_path, _half_worker, 3)


# ---------------------------------------------------------------------------------------------
# Errors: on every rank, and the group still works after them
# ---------------------------------------------------------------------------------------------

PER_RANK = 4
"""Classes per rank of the error tests (two rows a rank, d = 3)."""


def _small(world: int, rank: int, per_rank: int = PER_RANK):
    """The whole problem (x, W, y) of the error tests, float64, and this rank's share."""
    g = torch.Generator().manual_seed(5)
    k = per_rank * world
    x = torch.randn(2 * world, 3, generator=g, dtype=torch.float64)
    w = torch.randn(k, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (2 * world,), generator=g)
    y[0] = -100
    rows, classes = slice(2 * rank, 2 * rank + 2), slice(per_rank * rank, per_rank * (rank + 1))
    return (x, w, y), (x[rows], w[classes], y[rows])


def _good_call(rank: int, world: int, group, failures: list[str], per_rank: int) -> None:
    """A call every rank makes alike equals one process's loss: the group still works."""
    (x, w, y), (xl, wl, yl) = _small(world, rank, per_rank)
    loss = frlr.linear_hs_lr_loss(
        xl, wl, yl, process_group=group, class_offset=per_rank * rank,
        num_classes=per_rank * world, chunk_size=3,
    )  # fmt: skip
    want = frlr.hs_lr_loss(x @ w.T, y)
    _check(failures, f"rank {rank} a good call of {per_rank} classes a rank", loss, want)


def _expect(failures: list[str], label: str, call, error: type, pattern: str) -> None:
    try:
        call()
    except Exception as raised:
        if not isinstance(raised, error) or not re.search(pattern, str(raised)):
            failures.append(
                f"{label}: expected {error.__name__} matching {pattern!r}, got "
                f"{type(raised).__name__}: {raised}"
            )
        return
    failures.append(f"{label}: no error, expected {pattern!r}")


def _bad_layout(rank: int, world: int, group, failures: list[str]) -> None:
    """Inconsistent layouts and inputs raise the same error on every rank: offsets that do not
    tile the classes (a shard of another size on one rank among them), num_classes that
    differs by rank, a class outside the whole classifier's on every rank, index targets on
    one rank and positive lists on another. A layout consistent across the ranks may change
    between calls on one group."""
    _, (x, w, y) = _small(world, rank)
    k, offset = PER_RANK * world, PER_RANK * rank
    layout = {"num_classes": k, "class_offset": offset}
    cases = [
        ("class_offset must tile", (x, w, y), {**layout, "class_offset": offset + (rank == 0)}),
        ("class_offset must tile", (x, w[:3] if rank == 0 else w, y), layout),
        ("num_classes differs across ranks", (x, w, y), {**layout, "num_classes": k + (rank == 0)}),
        (
            f"target holds class {k} outside \\[0, num_classes={k}\\)",
            (x, w, torch.tensor([0, k])),
            layout,
        ),
        (
            "target must be class indices \\(N,\\) on every rank or positive lists",
            (x, w, y if rank else y[:, None]),
            layout,
        ),
    ]
    for message, args, options in cases:
        call = partial(frlr.linear_lr_loss, *args, process_group=group, **options)
        _expect(failures, f"rank {rank}", call, ValueError, message)
    for per_rank in (PER_RANK, 3, PER_RANK):  # another layout, then back: each valid
        _good_call(rank, world, group, failures, per_rank)


@dataclass
class _Refusal:
    """A bad input given on some ranks only, and the good input of the others."""

    bad: tuple  # the bad ranks' features, weight, target
    bad_options: dict
    error: type  # the bad ranks' own error and its message
    message: str
    target: torch.Tensor | None = None  # the good ranks' (None: the class indices)
    options: dict = field(default_factory=dict)


def _refusals(x, w, y, k: int) -> dict[str, _Refusal]:
    lists = torch.stack([y.clamp(min=0), (y.clamp(min=0) + 1) % k], 1)
    half = {"target_weights": torch.full((2, 2), 0.5, dtype=torch.float64)}
    return {
        "a class out of range": _Refusal(
            (x, w, torch.tensor([0, k])), {}, ValueError,
            f"target holds class {k} outside [0, num_classes={k}) (ignore_index=-100)",
        ),
        "a weight of another d": _Refusal(
            (x, w[:, :2], y), {}, ValueError,
            "weight must have shape (K, d) with d = features.shape[1] = 3, got weight of shape "
            "(4, 2)",
        ),
        "chunk_size 0": _Refusal(
            (x, w, y), {"chunk_size": 0}, ValueError, "chunk_size must be >= 1, got 0"
        ),
        "target_weights above 1": _Refusal(
            (x, w, lists), {"target_weights": half["target_weights"] * 3}, ValueError,
            "target_weights must lie in [0, 1], got 1.5", lists, half,
        ),
        "a float target": _Refusal(
            (x, w, y.double()), {}, TypeError,
            "target must be int64 class indices (N,) or positive lists (N, P), got dtype "
            "torch.float64; a dense multi-hot target would itself be N x K",
        ),
        "features that are no tensor": _Refusal(
            (x.tolist(), w, y), {}, TypeError, "features must be a torch.Tensor, got list"
        ),
        "a bad hyper-parameter": _Refusal(
            (x, w, y), {"beta": -1.0}, ValueError, "beta must be >= 0, got -1.0"
        ),
        "no num_classes": _Refusal(
            (x, w, y), {"num_classes": None}, ValueError,
            "num_classes is required with a process_group (all ranks' classes)",
        ),
    }  # fmt: skip


def _one_rank_refuses(rank: int, world: int, group, failures: list[str]) -> None:
    """A bad input on one rank (rank 1, the last rank; with 3 ranks a class out of range on
    both): the bad ranks raise their own error, every other rank a ValueError naming them and
    their message; after each, a good call on the same group equals one process's loss."""
    _, (x, w, y) = _small(world, rank)
    k = PER_RANK * world
    alone = sorted({(1,), (world - 1,)})
    for label, case in _refusals(x, w, y, k).items():
        both = [tuple(range(1, world))] if label == "a class out of range" and world > 2 else []
        for bad_ranks in alone + both:
            if rank in bad_ranks:
                args, options, error, want = case.bad, case.bad_options, case.error, case.message
            else:
                target = y if case.target is None else case.target
                args, options, error = (x, w, target), case.options, ValueError
                want = "; ".join(f"rank {r} refused its input: {case.message}" for r in bad_ranks)
            call = partial(
                frlr.linear_hs_lr_loss, *args, process_group=group, class_offset=PER_RANK * rank,
                **{"num_classes": k, **options},
            )  # fmt: skip
            pattern = f"^{re.escape(want)}$"
            _expect(failures, f"rank {rank}, {label} on ranks {bad_ranks}", call, error, pattern)
            _good_call(rank, world, group, failures, PER_RANK)


def _errors_worker(rank: int, world: int, init: str, out: str) -> None:
    _init(rank, world, init)
    failures: list[str] = []
    try:
        group = dist.new_group(list(range(world)))
        _bad_layout(rank, world, group, failures)
        _one_rank_refuses(rank, world, group, failures)
    except Exception:
        failures.append(traceback.format_exc())
    finally:
        Path(out, f"{rank}.txt").write_text("\n".join(failures))
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_class_parallel_errors_raise_on_every_rank_and_the_group_still_works(tmp_path, world):
    _run_ranks(tmp_path, _errors_worker, world)
