"""Class-parallel: the classifier sharded by class over 2 and 3 gloo processes equals one process.

Each rank holds a contiguous, unequal share of the classes and its own, unequal share of the
batch (one rank's share of a 3-way split is a single row). The loss must equal the
materialised loss of the global batch against the whole classifier, and each rank's
gradients the matching rows of the single-process gradients; for "none" each rank gets its
own rows and weights them itself. Sparse soft targets (class lists with ``target_weights``,
with and without ``label_smoothing``) equal the materialised loss on their dense target. A
backbone under DDP with ``sum_allreduce_hook`` gets the single-process gradient. Inconsistent
layouts and inputs raise on every rank; a group's layout is fixed while the group lives, and
forgotten with it (a later group may reuse its id).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import frlr.torch as frlr
from frlr.torch.distributed import _CHECKED_LAYOUTS, ClassShards, sum_allreduce_hook

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


def _worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
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
        _bad_layout(rank, world, failures)
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


def _bad_layout(rank: int, world: int, failures: list[str]) -> None:
    """Inconsistent layouts and inputs raise on every rank (the layout checked once per group):
    offsets that do not tile the classes, num_classes that differs by rank, a layout changed
    after a group's first call, a class index outside the whole classifier's, index targets on
    one rank and positive lists on another."""
    x = torch.randn(2, 3)
    w = torch.randn(4, 3)
    y = torch.tensor([0, 1])
    fixed = {"process_group": dist.new_group(list(range(world))), "num_classes": 4 * world}
    frlr.linear_lr_loss(x, w, y, class_offset=4 * rank, **fixed)  # fixes this group's layout
    cases = {
        "class_offset must tile": (
            (x, w, y),
            {"process_group": dist.new_group(list(range(world))), "num_classes": 4 * world,
             "class_offset": 4 * rank + (rank == 0)},
        ),
        "num_classes differs across ranks": (
            (x, w, y),
            {"process_group": dist.new_group(list(range(world))),
             "num_classes": 4 * world + (rank == 0), "class_offset": 4 * rank},
        ),
        "differ from the first call on this process group": (
            (x, w[:3], y), {**fixed, "num_classes": 3 * world, "class_offset": 3 * rank}
        ),
        f"target holds class {4 * world} outside \\[0, num_classes={4 * world}\\)": (
            (x, w, torch.tensor([0, 4 * world])), {**fixed, "class_offset": 4 * rank}
        ),
        "target must be class indices \\(N,\\) on every rank or positive lists": (
            (x, w, y if rank else y[:, None]), {**fixed, "class_offset": 4 * rank}
        ),
    }  # fmt: skip
    for message, (args, options) in cases.items():
        try:
            frlr.linear_lr_loss(*args, **options)
            failures.append(f"rank {rank}: no error, expected {message!r}")
        except ValueError as error:
            if not re.search(message, str(error)):
                failures.append(f"rank {rank}: expected {message!r}, got {error}")


def _start(fn, args: tuple, processes: int) -> None:
    """The ranks from a fork server: a plain fork of this process can deadlock, since an earlier
    test may have left threads holding locks (torch.compile's workers, gloo's); the server is a
    fresh single-threaded interpreter that imports torch once, so each rank is still a cheap
    fork of it."""
    multiprocessing.set_forkserver_preload(["torch", "torch._dynamo", "torch.distributed"])
    mp.start_processes(fn, args=args, nprocs=processes, join=True, start_method="forkserver")


@pytest.mark.parametrize("world", [2, 3])
def test_class_parallel_equals_one_process(tmp_path, world):
    init = f"file://{tmp_path / 'store'}"
    env = {"OMP_NUM_THREADS": "1"}
    os.environ.update(env)
    _start(_worker, (world, init, str(tmp_path)), world)
    reports = [(tmp_path / f"{rank}.txt").read_text() for rank in range(world)]
    failures = [report for report in reports if report]
    assert not failures, "\n".join(failures)[:4000]


def _layouts_worker(rank: int, tmp: str) -> None:
    """One process: a group's layout is fixed while it lives and forgotten once destroyed, and
    the default group (None or WORLD, one group) is checked afresh after a new init."""
    failures: list[str] = []
    dist.init_process_group("gloo", init_method=f"file://{tmp}/first", rank=0, world_size=1)
    try:
        group = dist.new_group([0])
        ClassShards(group, 0, 5, 5)
        _expect_fixed(failures, group, "a live group")
        before = len(_CHECKED_LAYOUTS)
        dist.destroy_process_group(group)
        del group
        gc.collect()
        if len(_CHECKED_LAYOUTS) != before - 1:  # its id is free for the next group
            failures.append("a destroyed group's layout is still held")
        ClassShards(None, 0, 5, 5)
        _expect_fixed(failures, dist.group.WORLD, "WORLD after None")
        dist.destroy_process_group()
        dist.init_process_group("gloo", init_method=f"file://{tmp}/second", rank=0, world_size=1)
        ClassShards(None, 0, 4, 4)  # a new default group: another layout is its first
    except Exception:
        failures.append(traceback.format_exc())
    finally:
        Path(tmp, "layouts.txt").write_text("\n".join(failures))
        if dist.is_initialized():
            dist.destroy_process_group()


def _expect_fixed(failures: list[str], group: object, label: str) -> None:
    try:
        ClassShards(group, 0, 4, 4)
        failures.append(f"{label}: another layout on the same group did not raise")
    except ValueError as error:
        if "the class layout is fixed" not in str(error):
            failures.append(f"{label}: wrong error {error}")


def test_the_layout_check_is_per_live_group(tmp_path):
    _start(_layouts_worker, (str(tmp_path),), 1)
    report = (tmp_path / "layouts.txt").read_text()
    assert not report, report[:4000]
