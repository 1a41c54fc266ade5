"""The chunk sweep and the autograd Function: one pass over the classes in chunks, each
chunk's logits computed once, handed to the loss, and its gradient consumed at once.

A loss is a ``ChunkedLoss``: it says what it needs of the sweep through its hooks and
attributes (``prepare``, ``start_sweep``, ``after_sweep``, ``sweeps_for_rows``), never by the
sweep testing its type."""

from __future__ import annotations

import torch
from torch import Tensor

from frlr.torch import _kernels as kernels
from frlr.torch._conventions import no_autocast
from frlr.torch.linear.problem import Grads, Problem


class ChunkedLoss:
    """prepare(): whatever must be known of whole rows first (collectives included);
    block(): a chunk's partial row losses and d rows / dz; after_sweep(): what is decided only
    once every chunk is seen; finish(): the rows over all classes."""

    single_label = False
    """Takes class indices only (softmax): positive lists are refused."""
    float32_logits = False
    """Needs logits in float32: half-precision operands only where their product comes out
    in float32 (see ``frlr.torch.linear.products``)."""
    sweeps_for_rows = True
    """Whether a sweep without gradients gives the rows (False: ``prepare`` already has them)."""

    def prepare(self, problem: Problem) -> None:
        del problem

    def start_sweep(self, problem: Problem) -> None:
        """Called before every sweep (per-sweep buffers)."""
        del problem

    def block(
        self, problem: Problem, z: Tensor, start: int, stop: int, need_grad: bool
    ) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def scaled_block(
        self, problem: Problem, z: Tensor, start: int, stop: int, scale: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """block() with its gradient times the per-row weights ``scale`` (None: no gradient)."""
        rows, grad = self.block(problem, z, start, stop, scale is not None)
        if grad is not None:
            assert scale is not None
            grad.mul_(scale[:, None])
        return rows, grad

    def after_sweep(
        self, problem: Problem, rows: Tensor, scale: Tensor | None, grads: Grads | None
    ) -> bool:
        """Contributions decided only once every chunk is seen; False asks for the sweep
        again (the loss changed its plan, see HS-LR's held rows)."""
        del problem, rows, scale, grads
        return True

    def finish(self, problem: Problem, rows: Tensor) -> Tensor:
        return problem.exchange.reduce_sum(rows)


def sweep(loss: ChunkedLoss, problem: Problem, scale: Tensor | None, grads: Grads | None) -> Tensor:
    """One pass over the chunks: partial rows, and (with ``grads``) the gradients for per-row
    weights ``scale``. Returns this rank's partial rows (before ``finish``). A loss whose
    ``after_sweep`` asks for it gets the pass again, from fresh rows and gradients."""
    while True:
        rows = problem.x.new_zeros(problem.x.shape[0])
        if grads is None and not loss.sweeps_for_rows:
            return rows
        loss.start_sweep(problem)
        for start, stop in problem.chunks():
            w = problem.classifier(start, stop)
            z = problem.logits(start, stop, w)
            part, g = loss.scaled_block(problem, z, start, stop, None if grads is None else scale)
            rows += part
            if grads is not None:
                assert g is not None
                problem.consume(g, start, stop, w, grads)
        if loss.after_sweep(problem, rows, scale, grads):
            return rows
        if grads is not None and grads.features is not None:
            grads.features.zero_()  # W and b are overwritten chunk by chunk


class LinearLossFn(torch.autograd.Function):
    """Features, weight, bias -> the loss; the gradients are built in the forward pass when the
    loss is a scalar (only scaled in the backward), recomputed in the backward for "none"."""

    @staticmethod
    def forward(ctx, features, weight, bias, loss, problem):  # type: ignore[override]
        need = tuple(ctx.needs_input_grad[:3])
        ctx.problem, ctx.loss, ctx.need = problem, loss, need
        ctx.dtypes = (features.dtype, weight.dtype)
        loss.prepare(problem)
        if problem.reduction == "none" or not any(need):
            ctx.grads = None
            return problem.output(loss.finish(problem, sweep(loss, problem, None, None)))
        grads = problem.new_grads(need)
        rows = sweep(loss, problem, problem.row_weight, grads)
        if grads.features is not None:
            grads.features = problem.features_grad(grads.features)
        ctx.grads = grads
        return problem.output(loss.finish(problem, rows))

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        if torch.is_grad_enabled():  # create_graph=True: the gradients here are not a graph
            raise RuntimeError(
                "the linear losses compute their gradients analytically and have no second "
                "derivative; call backward / autograd.grad without create_graph=True"
            )
        problem, grads = ctx.problem, ctx.grads
        if grads is None:  # reduction "none": per-row weights, one recomputing sweep
            scale = problem.exchange.gather_rows(grad_out.to(problem.dtype))
            scale = torch.where(problem.counted, scale, 0.0)
            grads = problem.new_grads(ctx.need)
            with no_autocast(problem.device):  # the products' dtypes were the forward's
                sweep(ctx.loss, problem, scale, grads)
            if grads.features is not None:
                grads.features = problem.features_grad(grads.features)
        elif kernels.graph_is_kept():  # the saved gradients may be needed again
            grads = Grads(
                *(None if t is None else t * grad_out.to(t.dtype) for t in grads.fields())
            )
        else:  # hand the saved gradients over (autograd can adopt them without a copy)
            ctx.grads = None
            if not bool(grad_out == 1):
                for t in grads.fields():
                    if t is not None:
                        t.mul_(grad_out.to(t.dtype))
        features = None if grads.features is None else grads.features.to(ctx.dtypes[0])
        return features, grads.weight, grads.bias, None, None
