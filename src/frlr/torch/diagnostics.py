"""Negative class distraction (NCD) diagnostics: the paper's Fig. 2 quantities, for any loop.

Dong, Zhu and Gong (AAAI 2019) explain why plain logistic regression (LR) loses to softmax
regression (SR) as the class count K grows: each sample has one positive class and K - 1
negatives, LR sums a binary cross-entropy over all of them, and at K = 200 the negative part
starts near 140 against a positive part of 0.4, so the early gradient almost ignores the
positive class (Fig. 2). [`ncd_stats`][] measures this on a batch: the loss split into its
positive and negative parts, the absolute gradient reaching the positive and the negative
logits, their ratio, and the probabilities involved. [`NCDMonitor`][] records it during
training in one line, keeps a bounded history and writes JSON lines; [`ncd_verdict`][] and
[`plot_ncd`][] (from ``frlr.ncd``, re-exported here) judge and draw it.

Everything is analytic from detached logits under ``torch.no_grad``: no backward pass, no graph
kept. Notation: z the logits of one sample, P its positive classes, N its negatives, w_k the
optional class weight, s = sigmoid, q = softmax(z).

======  ==============================  ==============================================
loss    positive part (per sample)      negative part (per sample)
======  ==============================  ==============================================
lr      sum_P w_k softplus(-z_k)        sum_N w_k softplus(z_k)                 (Eq. 3)
hs-lr   mean_P w_k softplus(-z_k)       alpha sum_{top n of N} w_k softplus(z_k)  (Eq. 5)
ss-lr   mean_P w_k softplus(-z_k)       alpha sum_N w_k s_k^r softplus(z_k)     (Eq. 6)
sr      sum_P c_k (-log q_k)            sum_N c_k (-log q_k)                    (Eq. 4)
hs-sr   w_y (-log q_y)                  alpha sum_{top n of N} w_k (-log(1 - q_k))
======  ==============================  ==============================================

SR's split follows Eq. 4 literally: the loss is sum_k c_k (-log q_k) with c the (smoothed,
weighted) target distribution, so a class's term belongs to it. With a one-hot target the
negative terms are all zero: SR *is* its positive term, -log q_y, and the negatives act only
through the normalisation of q. This is also HS-SR with alpha = 0, so the two softmax losses
share one split. The gradients are split by position, not by term, as the paper's panel (d)
asks ("gradient ratio of positive to negative classes"): grad_positive sums |dL/dz_k| over the
positive logits, grad_negative over the negative ones. For SR with a one-hot target the
positive logit gets q_y - 1 and the negatives q_k, which sum to 1 - q_y: the ratio is exactly 1
at every step, the balance the softmax's competition enforces, and the reference line against
which Fig. 2 shows LR's near-zero ratio. (Label smoothing moves SR's ratio below 1.)
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frlr.catalogue import canonical_loss_name, check_option_names, num_hard_negatives
from frlr.ncd import (
    NCD_THRESHOLD,
    NCDRecorder,
    NCDStats,
    NCDVerdict,
    gradient_ratio,
    ncd_verdict,
    plot_ncd,
    read_history,
)
from frlr.torch import losses as _losses
from frlr.torch._conventions import float32_under_autocast

__all__ = [
    "NCD_THRESHOLD",
    "NCDMonitor",
    "NCDStats",
    "NCDVerdict",
    "ncd_stats",
    "ncd_verdict",
    "plot_ncd",
    "read_history",
]

_LR_FAMILY = ("lr", "hs-lr", "ss-lr")


def _loss_name(loss: Any) -> str:
    key = canonical_loss_name(loss)
    if key is not None:
        return key
    raise ValueError(f"loss must be one of {', '.join(_losses.LOSSES)}, got {loss!r}")


def _resolve_loss(loss: Any, loss_kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A loss name or frlr loss module -> (name, options), options checked against its function.

    A module contributes its constructor options and class weight; ``loss_kwargs`` override
    them. ``reduction`` is always "mean" here (the statistics are per-sample means).
    """
    if isinstance(loss, nn.Module):
        names = [k for k, cls in _losses.LOSSES.items() if type(loss) is cls]
        if not names:
            raise TypeError(
                f"loss must be a name or an frlr.torch loss module, got {type(loss).__name__}"
            )
        options = dict(loss.options)
        if getattr(loss, "weight", None) is not None:
            options["weight"] = loss.weight
        options.pop("reduction", None)
        options.update(loss_kwargs)
        name = names[0]
    else:
        name, options = _loss_name(loss), dict(loss_kwargs)
    accepted = ["weight", *_losses.LOSSES[name].defaults]
    check_option_names(f"loss {name!r}", options, accepted)
    if options.get("reduction", "mean") != "mean":
        raise ValueError(
            f"ncd_stats reports per-sample means; reduction must be 'mean', got "
            f"{options['reduction']!r}"
        )
    options.pop("reduction", None)
    checked = {k: options[k] for k in ("beta", "m", "r", "alpha", "normalization") if k in options}
    _losses.check_loss_options(**checked)
    smoothing = options.get("label_smoothing", 0.0)
    if not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {smoothing!r}")
    return name, options


# ---------------------------------------------------------------------------------------------
# Per-loss parts: (positive rows, negative rows, row gradient, row scale) on valid rows only.
# Row scale s_i makes the batch loss sum_i s_i (pos_i + neg_i) and its gradient s_i * grad_i.
# ---------------------------------------------------------------------------------------------


def _hard_negatives(z: Tensor, pos: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Indices of the n highest-logit negatives per row (HS-SR's selection), and a mask
    keeping them. Probability is monotonic in the logit, so "most probable" is "highest
    logit" for softmax as for sigmoid."""
    _, indices = z.masked_fill(pos, float("-inf")).topk(n, dim=1, sorted=True)
    return indices, ~pos.gather(1, indices)


def _lr_family(name: str, z: Tensor, target: Tensor, dense: bool, w: Tensor | None, o):
    """Eq. (3), (5), (6) with the paper's per-sample normalisation ("mean" over samples): the
    loss's own block function and per-row constants, run once with the negative part switched
    off and once with the positive part switched off (a 0.0 scale)."""
    block, (pos_scale, neg_scale, *extra) = _losses.sigmoid_block(
        name,
        target,
        dense,
        beta=o.get("beta", 10.0),
        m=float(o.get("m", 25.0)),
        r=float(o.get("r", 2.0)),
        alpha=o.get("alpha"),
        num_classes=z.shape[1],
    )
    pos_rows, grad = block(z, target, None, w, pos_scale, 0.0, *extra, need_grad=True)
    neg_rows, neg_grad = block(z, target, None, w, 0.0, neg_scale, *extra, need_grad=True)
    return pos_rows, neg_rows, grad.add_(neg_grad), torch.full_like(pos_rows, 1 / max(len(z), 1))


def _lr_family_reference(name: str, z: Tensor, t: Tensor, w: Tensor | None, o: dict[str, Any]):
    """``normalization="reference"``: the authors' batch pooling, by the same block calls as
    the loss (``frlr.torch.losses.reference_blocks``); a part computed on gathered logits
    (HS-LR's selected negatives) has its gradient scattered back."""
    hyper = {key: o[key] for key in ("beta", "m", "r", "alpha") if o.get(key) is not None}
    parts = []
    for block, indices, args in _losses.reference_blocks(name, z, t, w, **hyper):
        operand = z if indices is None else z.gather(1, indices)
        rows, grad = block(operand, *args, need_grad=True)
        if indices is not None:
            grad = torch.zeros_like(z).scatter_add_(1, indices, grad)
        parts.append((rows, grad))
    (pos_rows, pos_grad), (neg_rows, neg_grad) = parts
    return pos_rows, neg_rows, pos_grad + neg_grad, torch.ones_like(pos_rows)


def _sr(z: Tensor, t: Tensor, w: Tensor, o: dict[str, Any], index_target: bool, w_y: Tensor):
    """Eq. (4) as ``F.cross_entropy``: sum_k c_k (-log q_k), c = w * smoothed target.

    dL/dz_j = (sum_k c_k) q_j - c_j. "mean" divides by sum_i w_{y_i} for index targets (by the
    sample count for probability targets), as ``F.cross_entropy`` does.
    """
    eps = float(o.get("label_smoothing", 0.0))
    c = (t * (1 - eps) + eps / z.shape[1]) * w
    log_q = torch.log_softmax(z, dim=1)
    terms = -c * log_q
    pos = t >= 0.5  # as ncd_stats splits the gradient
    pos_rows = torch.where(pos, terms, 0.0).sum(1)
    neg_rows = torch.where(pos, 0.0, terms).sum(1)
    grad = c.sum(1, keepdim=True) * log_q.exp() - c
    if index_target:
        scale = torch.full_like(pos_rows, 1.0) / w_y.sum().clamp(min=torch.finfo(z.dtype).tiny)
    else:
        scale = torch.full_like(pos_rows, 1.0 / max(len(z), 1))
    return pos_rows, neg_rows, grad, scale


def _log1m_softmax(z: Tensor, log_q: Tensor) -> Tensor:
    """log(1 - q_k) for every class, exact when q_k -> 1: log1p(-q) where q <= 1/2, else
    logsumexp over the other classes minus logsumexp over all (only the arg-max can exceed 1/2).
    """
    q = log_q.exp()
    top = z.argmax(1, keepdim=True)
    others = torch.logsumexp(z.scatter(1, top, float("-inf")), dim=1, keepdim=True)
    big = (others - torch.logsumexp(z, dim=1, keepdim=True)).expand_as(q)
    return torch.where(q > 0.5, big, torch.log1p(-torch.where(q > 0.5, 0.0, q)))


def _hs_sr(z: Tensor, t: Tensor, w: Tensor, o: dict[str, Any]):
    """Hard selection on softmax: -log q_y + alpha sum_{S} w_k (-log(1 - q_k)).

    d(-log q_y)/dz_j = q_j - [j = y];  d(-log(1 - q_k))/dz_j = odds_k ([j = k] - q_j), with
    odds_k = q_k / (1 - q_k).
    """
    num_classes = z.shape[1]
    m = float(o.get("m", 25.0))
    n = num_hard_negatives(num_classes - 1, m)
    alpha = o.get("alpha")
    a = o.get("beta", 10.0) / n if alpha is None else alpha
    pos = t > 0
    log_q = torch.log_softmax(z, dim=1)
    q = log_q.exp()
    w_y = (w * t).sum(1)
    pos_rows = -(log_q * t).sum(1) * w_y
    indices, keep = _hard_negatives(z, pos, n)
    selected = torch.zeros_like(z).scatter_(1, indices, keep.to(z.dtype)) * w * a
    log1m = _log1m_softmax(z, log_q)
    neg_rows = -(selected * log1m).sum(1)
    # The negative term's gradient, sum_{k in S} c_k odds_k ([j = k] - q_j), rewritten so no
    # odds overflows: the own term is c_j q_j; of the cross terms q_j odds_k, only one class
    # (q > 1/2, at most one per row) can have odds > 1, and its q_j odds_k is computed in logs.
    big = (q > 0.5) & (selected != 0)
    odds_small = torch.where(big | (selected == 0), 0.0, selected * torch.exp(log_q - log1m))
    c_big = torch.where(big, selected, 0.0).sum(1, keepdim=True)
    log_odds_big = torch.where(big, log_q - log1m, 0.0).sum(1, keepdim=True)
    cross_big = torch.where(
        big, 0.0, c_big * torch.exp(torch.where(big, 0.0, log_q + log_odds_big))
    )
    grad_negative_term = (
        selected * q - q * (odds_small.sum(1, keepdim=True) - odds_small) - cross_big
    )
    grad = w_y.unsqueeze(1) * (q - t) + grad_negative_term
    return pos_rows, neg_rows, grad, torch.full_like(pos_rows, 1.0 / max(len(z), 1))


@torch.no_grad()
@float32_under_autocast  # float32 maths, as the losses
def ncd_stats(logits: Tensor, target: Tensor, loss: Any = "ss-lr", **loss_kwargs: Any) -> NCDStats:
    """Negative-class-distraction statistics of one batch, computed analytically.

    Returns the loss (``total``, "mean" reduction, equal to the value ``get_loss(loss)`` gives
    up to rounding), its ``positive`` and ``negative`` parts (``positive + negative = total``;
    the per-loss definitions are in the module docstring: SR's negative part is 0 for one-hot
    targets, by Eq. 4), the summed |dL/dz| over positive and over negative logits and their
    ratio, and the mean positive / mean and max negative probability. No graph is built: the
    gradient is the analytic one, and equals autograd's on the same loss.

    Args:
        logits: (N, K) or (N, K, d1, ...) float logits (detached here; any float dtype,
            computed in float32, or float64 for float64 input).
        target: int64 class indices (N, d1, ...) or a multi-hot or soft tensor of the logits'
            shape, values in [0, 1] (not for "hs-sr"). A soft class k splits its terms by mass:
            t_k of it is positive, 1 - t_k negative (as the losses define them); the gradient
            and probability statistics count it as a positive class where t_k >= 1/2.
        loss: a name ("sr", "lr", "hs-lr", "ss-lr", "hs-sr") or an ``frlr.torch`` loss module,
            whose options and class weight are then used.
        loss_kwargs: the loss's options (beta, m, r, alpha, weight, ignore_index,
            normalization, label_smoothing for SR), as for ``frlr.torch.get_loss``;
            ``reduction`` may only be "mean".

    Returns:
        The batch's ``NCDStats`` (plain Python floats).

    Examples:
        At initialisation (logits 0, every p = 1/2) LR's 199 negatives of K = 200 outweigh
        the positive 199 to 1, the paper's Fig. 2; the rectified losses start near 1 / beta:

        >>> import torch
        >>> import frlr.torch as frlr
        >>> logits, target = torch.zeros(4, 200), torch.arange(4)
        >>> stats = frlr.ncd_stats(logits, target, "lr")
        >>> round(stats.positive, 4), round(stats.negative, 4), round(stats.gradient_ratio, 4)
        (0.6931, 137.9363, 0.005)
        >>> round(frlr.ncd_stats(logits, target, frlr.HSLRLoss()).gradient_ratio, 4)
        0.1
    """
    name, options = _resolve_loss(loss, loss_kwargs)
    if isinstance(logits, Tensor):
        logits = logits.detach()
    batch = _losses.Batch(logits, target, options.get("weight"), options.get("ignore_index", -100))
    if batch.dense and name == "hs-sr":
        raise ValueError("hs-sr takes class-index targets only: softmax is single-label")
    z, t, target_rows, w = _valid_rows(batch)
    weight = None if batch.weight is None else w[0]  # the sigmoid losses' (K,) or None
    if name in _LR_FAMILY and options.get("normalization", "paper") == "reference":
        parts = _lr_family_reference(name, z, t, weight, options)
    elif name in _LR_FAMILY:
        parts = _lr_family(name, z, target_rows, batch.dense, weight, options)
    elif name == "sr":
        parts = _sr(z, t, w, options, not batch.dense, (w * t).sum(1))
    else:
        parts = _hs_sr(z, t, w, options)
    return _statistics(name, z, t, *parts)


def _valid_rows(batch: _losses.Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The batch's counted rows: logits (M, K), dense targets (M, K), the targets as given
    (class indices, or the dense ones) and the class weight as a (1, K) row (1 when None)."""
    z, num_classes = batch.z, batch.num_classes
    if batch.dense:
        t = target_rows = batch.y
    else:
        target_rows = batch.y if batch.valid is None else batch.y[batch.valid]
        z = z if batch.valid is None else z[batch.valid]
        t = F.one_hot(target_rows, num_classes).to(z.dtype)
    w = batch.weight if batch.weight is not None else torch.ones(num_classes, dtype=z.dtype)
    return z, t, target_rows, w.to(device=z.device, dtype=z.dtype).unsqueeze(0)


def _statistics(
    name: str, z: Tensor, t: Tensor, pos_rows: Tensor, neg_rows: Tensor, grad: Tensor, scale: Tensor
) -> NCDStats:
    """The batch's ``NCDStats`` from a loss's parts: its rows, summed with the row scale; the
    gradient split by position; the probabilities (softmax for SR and HS-SR, else sigmoid)."""
    pos = t >= 0.5  # soft targets: a class is positive where most of its mass is
    abs_grad = (grad * scale.unsqueeze(1)).abs()
    probs = torch.softmax(z, dim=1) if name in ("sr", "hs-sr") else torch.sigmoid(z)
    num_pos, num_neg = pos.sum(), (~pos).sum()
    nan = torch.tensor(math.nan, dtype=z.dtype, device=z.device)
    neg_max = torch.where(pos, -math.inf, probs).amax() if z.numel() else nan
    values = torch.stack(
        [
            (pos_rows * scale).sum(),
            (neg_rows * scale).sum(),
            torch.where(pos, abs_grad, 0.0).sum(),
            torch.where(pos, 0.0, abs_grad).sum(),
            torch.where(num_pos > 0, torch.where(pos, probs, 0).sum() / num_pos.clamp(min=1), nan),
            torch.where(num_neg > 0, torch.where(pos, 0, probs).sum() / num_neg.clamp(min=1), nan),
            torch.where(num_neg > 0, neg_max, nan),
        ]
    ).tolist()
    positive, negative, grad_positive, grad_negative, p_pos, p_neg_mean, p_neg_max = values
    return NCDStats(
        loss=name,
        num_classes=z.shape[1],
        num_samples=len(z),
        total=positive + negative,
        positive=positive,
        negative=negative,
        grad_positive=grad_positive,
        grad_negative=grad_negative,
        gradient_ratio=gradient_ratio(grad_positive, grad_negative),
        prob_positive=p_pos,
        prob_negative_mean=p_neg_mean,
        prob_negative_max=p_neg_max,
    )


# ---------------------------------------------------------------------------------------------
# The monitor
# ---------------------------------------------------------------------------------------------


class NCDMonitor(NCDRecorder):
    """Record [`ncd_stats`][] during training: every ``every`` steps, bounded, as JSON lines.

    One line in any loop, with the logits the loss saw (before ``optimizer.step()``):

    ```python
    monitor = NCDMonitor("ss-lr", every=10, path="runs/ncd-ss-lr.jsonl")
    for step, (x, y) in enumerate(loader):
        logits = model(x)
        loss = criterion(logits, y)
        monitor.update(logits, y, step)
        ...
    print(monitor.verdict().summary)
    monitor.plot("ncd.png")
    ```

    or with a forward hook on the classifier, given the targets before each forward:

    ```python
    monitor.attach(model.classifier)        # records in training mode only
    monitor.set_target(y); logits = model(x)
    ```

    Each recorded step is one JSON line (flushed) in ``path`` and one record in ``history``,
    which keeps at most ``capacity`` records evenly spread over the whole run
    (``frlr.ncd.HalvingHistory``): the file is complete, memory is bounded.
    Record every step (``every=1``) through the first hundred or so steps if you want a verdict:
    the distracted phase lasts tens of steps at the paper's learning rate. Under DDP, monitor
    on one rank (each rank sees its own shard of the batch).

    Args:
        loss: a loss name or an ``frlr.torch`` loss module (its options are used).
        every: record steps that are multiples of ``every``.
        capacity: the most records kept in memory (>= 2).
        path: a JSON-lines file to write; None writes nothing.
        append: append to ``path`` instead of truncating it.
        label: the name of this run in plots and verdicts (default: the loss name).
        loss_kwargs: the loss's options, as for [`ncd_stats`][].

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> _ = torch.manual_seed(0)
        >>> monitor = frlr.NCDMonitor("lr", every=2)
        >>> for step in range(6):  # in a training loop: the logits the loss saw
        ...     _ = monitor.update(torch.randn(8, 200), torch.randint(0, 200, (8,)), step)
        >>> [record["step"] for record in monitor.history]
        [0, 2, 4]
        >>> monitor.verdict().present  # LR at K = 200: gradient ratio about 1 / 199
        True
    """

    def __init__(
        self,
        loss: Any = "ss-lr",
        *,
        every: int = 1,
        capacity: int = 2048,
        path: str | os.PathLike | None = None,
        append: bool = False,
        label: str | None = None,
        **loss_kwargs: Any,
    ) -> None:
        name, self.options = _resolve_loss(loss, loss_kwargs)
        super().__init__(
            name, every=every, capacity=capacity, path=path, append=append, label=label
        )
        self._calls = 0
        self._target: Tensor | None = None
        self._handle = None
        self._warned_no_target = False

    def update(self, logits: Tensor, target: Tensor, step: int | None = None) -> NCDStats | None:
        """Record this batch if ``step`` (default: the count of earlier calls) is due.

        Returns the statistics when they were computed, else None. Nothing is computed for a
        step that is neither written to ``path`` nor kept in memory.
        """
        if step is None:
            step = self._calls
        elif isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        self._calls += 1
        if step % self.every:
            return None
        return self._record(step, lambda: ncd_stats(logits, target, self.loss, **self.options))

    def set_target(self, target: Tensor) -> None:
        """The targets of the next forward pass through the attached module."""
        if not isinstance(target, Tensor):
            raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
        self._target = target

    def attach(self, module: nn.Module, train_only: bool = True) -> NCDMonitor:
        """Record the output of ``module`` (the logits) on every forward, via a forward hook.

        The targets come from [`set_target`][] and are used once. With ``train_only`` the
        hook skips passes where the module is in eval mode (validation). Returns self.
        """
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.detach()

        def hook(mod: nn.Module, inputs: Any, output: Any) -> None:
            if train_only and not mod.training:
                return
            if self._target is None:
                if not self._warned_no_target:
                    warnings.warn(
                        "NCDMonitor: forward pass without a target; call "
                        "monitor.set_target(target) before it (pass skipped)",
                        stacklevel=2,
                    )
                    self._warned_no_target = True
                return
            if not isinstance(output, Tensor):
                raise TypeError(
                    f"the attached module must output a logits tensor, got {type(output).__name__}"
                )
            target, self._target = self._target, None
            self.update(output, target)

        self._handle = module.register_forward_hook(hook)
        return self

    def detach(self) -> None:
        """Remove the forward hook, if attached."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def close(self) -> None:
        """Detach and close the JSON-lines file (records already written stay)."""
        self.detach()
        self._close_file()

    def __enter__(self) -> NCDMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"NCDMonitor(loss={self.loss!r}, label={self.label!r}, every={self.every}, "
            f"records={len(self._history)}, stride={self._history.stride}, path={self.path})"
        )
