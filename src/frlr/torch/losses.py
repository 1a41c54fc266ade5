"""Softmax and (focus-rectified) logistic-regression losses, drop-in for ``F.cross_entropy``.

Dong, Zhu and Gong, "Single-Label Multi-Class Image Classification by Deep Logistic
Regression", AAAI 2019. For sample i with positive classes P_i and negative classes N_i
(single-label: P_i = {y_i}, |N_i| = K - 1) and p = sigmoid(z):

* LR (Eq. 3):    sum_{k in P_i} -log p_k + sum_{k in N_i} -log(1 - p_k)
* HS-LR (Eq. 5): mean_{k in P_i} -log p_k + (beta / n_i) sum_{k in top n_i of N_i} -log(1 - p_k),
                 n_i = max(1, floor(m/100 |N_i|)), "top" = most probable
* SS-LR (Eq. 6): mean_{k in P_i} -log p_k + (beta / |N_i|) sum_{k in N_i} p_k^r (-log(1 - p_k))
* SR (Eq. 4):    -log softmax(z)_y, the baseline
* HS-SR:         Eq. 5 on softmax probabilities, the paper's ablation

LR sums over classes rather than averaging: that is what makes its negative term about 140
against a positive term of 0.4 at K = 200 — the negative class distraction the paper fixes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from frlr.catalogue import (
    LOSS_NAMES,
    Normalization,
    canonical_loss_name,
    check_hyperparameters,
    check_normalization,
    check_option_names,
    num_hard_negatives,
    option_parameters,
    sign_constructor,
)
from frlr.torch import _kernels as kernels
from frlr.torch._conventions import Reduction, check_reduction, float32_under_autocast

# ---------------------------------------------------------------------------------------------
# Argument checks: at the boundary, naming the argument and the value.
# ---------------------------------------------------------------------------------------------


def check_loss_options(
    *,
    beta: float | None = None,
    m: float | None = None,
    r: float | None = None,
    alpha: float | None = None,
    reduction: str | None = None,
    normalization: str | None = None,
) -> None:
    """Raise TypeError or ValueError naming the first bad option of a loss (None: not given):
    the one check of the functions, the modules, ``fused`` and the NCD statistics."""
    check_hyperparameters(beta=beta, m=m, r=r, alpha=alpha)
    if reduction is not None:
        check_reduction(reduction)
    if normalization is not None:
        check_normalization(normalization)


def _validating() -> bool:
    """Value checks read tensor data; skip them inside a compiled graph (shapes still checked)."""
    return not torch.compiler.is_compiling()


class Batch:
    """Logits flattened to (M, K) in the compute dtype, with index or dense targets, checked:
    what every loss of this module, ``fused`` and the NCD statistics read their inputs as.

    Dense targets may be soft: every value in [0, 1] (NaN rejected).
    """

    __slots__ = ("dense", "out_shape", "valid", "weight", "y", "z")

    def __init__(
        self,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None,
        ignore_index: int,
    ) -> None:
        if not isinstance(logits, Tensor):
            raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
        if not isinstance(target, Tensor):
            raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
        if not logits.is_floating_point():
            raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
        if logits.dim() < 2:
            raise ValueError(
                f"logits must have shape (N, K) or (N, K, d1, ...), got shape {tuple(logits.shape)}"
            )
        num_classes = logits.shape[1]
        if num_classes < 2:
            raise ValueError(f"logits must have K >= 2 classes in dim 1, got K = {num_classes}")
        compute = torch.float64 if logits.dtype == torch.float64 else torch.float32
        z = logits if logits.dim() == 2 else logits.movedim(1, -1)
        self.z = z.reshape(-1, num_classes).to(compute).contiguous()

        if target.dtype == torch.bool or target.is_floating_point():
            if target.shape != logits.shape:
                raise ValueError(
                    f"a float (multi-hot) target must have the logits' shape {tuple(logits.shape)}"
                    f", got {tuple(target.shape)}"
                )
            t = target if target.dim() == 2 else target.movedim(1, -1)
            self.y = t.reshape(-1, num_classes).to(compute)
            self.dense = True
            self.valid = None
            self.out_shape = logits.shape[:1] + logits.shape[2:]
            if _validating():
                bad = (self.y < 0) | (self.y > 1) | torch.isnan(self.y)
                if bool(bad.any()):
                    raise ValueError(
                        f"target values must lie in [0, 1], got {self.y[bad][0].item()}"
                    )
        elif target.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            expected = logits.shape[:1] + logits.shape[2:]
            if target.shape != expected:
                raise ValueError(
                    f"class-index target must have shape {tuple(expected)} for logits of shape "
                    f"{tuple(logits.shape)}, got {tuple(target.shape)}"
                )
            y = target.reshape(-1).long()
            self.dense = False
            self.out_shape = expected
            if _validating() and y.numel():
                # One reduction and one host sync decide the common case: every index in range
                # and none ignored, which needs no mask at all (the mask costs more than the
                # loss at small K).
                low, high = torch.stack(torch.aminmax(y)).tolist()
                if low >= 0 and high < num_classes and not low <= ignore_index <= high:
                    self.y, self.valid = y, None
                    self._weight(weight, num_classes, compute)
                    return
            valid = y != ignore_index
            if _validating():
                bad = valid & ((y < 0) | (y >= num_classes))
                if bool(bad.any()):
                    raise ValueError(
                        f"target holds class index {y[bad][0].item()} outside [0, {num_classes})"
                        f" (ignore_index={ignore_index})"
                    )
            self.y = torch.where(valid, y, 0)
            self.valid = valid
        else:
            raise TypeError(
                "target must be int64 class indices or a float multi-hot tensor, got dtype "
                f"{target.dtype}"
            )

        self._weight(weight, num_classes, compute)

    def _weight(self, weight: Tensor | None, num_classes: int, compute: torch.dtype) -> None:
        if weight is not None:
            if not isinstance(weight, Tensor) or weight.shape != (num_classes,):
                shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight)
                raise ValueError(f"weight must be a tensor of shape ({num_classes},), got {shape}")
            weight = weight.to(device=self.z.device, dtype=compute)
            if _validating():
                # a negative weight rewards a class's error, a NaN or inf poisons every loss
                bad = ~torch.isfinite(weight) | (weight < 0)
                if bool(bad.any()):
                    k = int(bad.nonzero()[0, 0])
                    raise ValueError(
                        f"weight must be finite and >= 0, got weight[{k}] = {weight[k].item()}"
                    )
        self.weight = weight

    @property
    def num_classes(self) -> int:
        return self.z.shape[1]

    def loss(self, block, reduction: str, *args) -> Tensor:
        """``block(z, target, None, weight, *args)``'s row losses, reduced. With nothing
        ignored, "mean" and "sum" are folded into the kernel's autograd node (one node and a
        scalar gradient instead of three)."""
        operands = (self.z, self.y, None, self.weight, *args)
        if reduction != "none" and self.valid is None and self.z.shape[0] > 0:
            divisor = self.z.shape[0] if reduction == "mean" else 1
            return kernels.row_losses(block, *operands, divisor=divisor)
        rows = kernels.row_losses(block, *operands)
        return self.reduce(rows, reduction)

    def reduce(self, rows: Tensor, reduction: str) -> Tensor:
        """Mean over non-ignored samples; an all-ignored batch gives 0 with a zero gradient."""
        if self.valid is not None:
            rows = torch.where(self.valid, rows, torch.zeros_like(rows))
        if reduction == "none":
            return rows.reshape(self.out_shape)
        total = rows.sum()
        if reduction == "sum":
            return total
        count = max(rows.numel(), 1) if self.valid is None else self.valid.sum().clamp(min=1)
        return total / count


def _inverse(mass: Tensor) -> Tensor:
    """1 / mass per row, 0 where the mass is 0: a row without positive (negative) mass has no
    positive (negative) term."""
    return torch.where(mass > 0, 1.0 / mass.clamp(min=torch.finfo(mass.dtype).tiny), 0.0)


def sigmoid_block(
    name: str,
    target: Tensor,
    dense: bool,
    *,
    beta: float = 10.0,
    m: float = 25.0,
    r: float = 2.0,
    alpha: float | None = None,
    num_classes: int | None = None,
) -> tuple[Callable[..., tuple[Tensor, Tensor | None]], tuple]:
    """A sigmoid loss's block function and its per-row constants (pos_scale, neg_scale, *extra)
    for the paper's per-sample normalisation: the losses and the NCD diagnostics call it alike.

    Index targets: pos_scale 1, neg_scale beta / (K - 1) (SS-LR) or beta / n with
    n = max(1, floor(m (K - 1) / 100)) (HS-LR), as Python floats. Dense targets: per row,
    pos_scale = 1 / sum_k t_k and the negative mass M = sum_k (1 - t_k) in place of |N_i|.
    ``num_classes`` is K, needed for index targets only.
    """
    if name == "lr":
        return kernels.lr_block, (1.0, 1.0)
    if dense:
        num_classes = target.shape[1]
        num_pos = target.sum(1)
        pos_scale: Tensor | float = _inverse(num_pos)
        num_neg: Tensor | float = num_classes - num_pos
    else:
        if num_classes is None:
            raise ValueError("num_classes (K) is required with index targets, got None")
        pos_scale, num_neg = 1.0, float(num_classes - 1)
    if name == "ss-lr":
        if alpha is not None:
            neg_scale = torch.full_like(num_pos, alpha) if dense else float(alpha)
        else:
            neg_scale = beta * _inverse(num_neg) if dense else beta / num_neg
        return kernels.ss_lr_block, (pos_scale, neg_scale, float(r))
    if dense:
        n = kernels.num_hard_negatives_rows(num_neg, m)
        bound = min(num_classes, num_hard_negatives(num_classes, m))
        neg_scale = beta / n.clamp(min=1) if alpha is None else torch.full_like(n, alpha)
        return kernels.hs_lr_rows, (pos_scale, neg_scale, n, bound)
    n = num_hard_negatives(num_classes - 1, m)
    return kernels.hs_lr_rows, (pos_scale, float(beta / n if alpha is None else alpha), n, n)


# ---------------------------------------------------------------------------------------------
# Functional API
# ---------------------------------------------------------------------------------------------


@float32_under_autocast
def lr_loss(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    normalization: Normalization = "paper",
) -> Tensor:
    r"""Vanilla logistic regression, Eq. (3): one sigmoid binary cross-entropy per class.

    $$\mathrm{loss}_i = \sum_{k \in P_i} \operatorname{softplus}(-z_k)
    + \sum_{k \in N_i} \operatorname{softplus}(z_k),$$

    summed over classes. Soft targets $t \in [0, 1]$ give
    $\sum_k t_k \operatorname{softplus}(-z_k) + (1 - t_k) \operatorname{softplus}(z_k)$.

    Args:
        logits: (N, K) or (N, K, d1, ...) logits, K >= 2; float32/float16/bfloat16 are
            computed in float32, float64 in float64.
        target: int64 (or int32/int16/int8/uint8) class indices of shape (N, d1, ...), or a
            float/bool tensor of the logits' shape: multi-hot {0, 1} or soft targets with
            every value in [0, 1].
        weight: optional (K,) per-class weight on class k's term, finite and >= 0 (the
            BCEWithLogitsLoss convention, not CrossEntropyLoss's); "mean" still divides by
            the sample count. Default None (all 1).
        reduction: "mean" (default) over non-ignored samples, "sum", or "none" (per-sample
            losses, of the target's shape for index targets).
        ignore_index: class-index targets equal to it contribute nothing (default -100);
            a batch with every sample ignored gives 0.
        normalization: "paper" (default, above) or "reference": the mean of the elementwise
            binary cross-entropy over all N*K entries, the conventional multi-label
            implementation (the authors released no LR code); "mean" reduction only.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> logits = torch.tensor([[2.0, -1.0, 0.5, 1.5, -0.5], [0.0, 1.0, -2.0, 0.5, 3.0]])
        >>> target = torch.tensor([0, 2])
        >>> frlr.lr_loss(logits, target, reduction="none")
        tensor([3.5898, 8.1560])
        >>> from torch.nn.functional import binary_cross_entropy_with_logits as bce, one_hot
        >>> multi_hot = one_hot(target, 5).float()  # the same target as a float tensor
        >>> summed = bce(logits, multi_hot, reduction="sum") / 2  # sum over classes, mean over N
        >>> torch.allclose(frlr.lr_loss(logits, multi_hot), summed)
        True
        >>> soft = torch.tensor([[0.9, 0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.8, 0.0, 0.2]])
        >>> frlr.lr_loss(logits, soft, reduction="none")
        tensor([3.8898, 7.1560])
    """
    check_loss_options(reduction=reduction, normalization=normalization)
    batch = Batch(logits, target, weight, ignore_index)
    if normalization == "reference":
        return _reference_loss("lr", batch, reduction)
    block, constants = sigmoid_block("lr", batch.y, batch.dense)
    return batch.loss(block, reduction, *constants)


@float32_under_autocast
def hs_lr_loss(
    logits: Tensor,
    target: Tensor,
    *,
    beta: float = 10.0,
    m: float = 25.0,
    alpha: float | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    normalization: Normalization = "paper",
) -> Tensor:
    r"""Focus-rectified LR by negative-class hard selection (HS-LR), Eq. (5).

    $$\mathrm{loss}_i = \operatorname*{mean}_{k \in P_i} \operatorname{softplus}(-z_k)
    + \alpha_i \sum_{k \in S_i} \operatorname{softplus}(z_k)$$

    S_i holds the n_i = max(1, floor(m/100 |N_i|)) negatives of highest probability (highest
    logit: the sigmoid is monotonic, so selection is one top-k over logits, never a sort), and
    alpha_i = beta / n_i unless ``alpha`` is given. A multi-label sample with no positive has a
    zero positive term; one with no negative has a zero negative term.

    Soft targets t in [0, 1]^K (class k: positive mass t_k, negative mass 1 - t_k) generalise
    it, reducing to the above for {0, 1} targets:

    $$\mathrm{loss}_i = \frac{\sum_k t_k \operatorname{softplus}(-z_k)}{\sum_k t_k}
    + \alpha_i \sum_{k \in S_i} (1 - t_k) \operatorname{softplus}(z_k)$$

    with M_i = sum_k (1 - t_k), n_i = max(1, floor(m M_i / 100)) (0 when M_i = 0), S_i the n_i
    highest-logit classes among those with t_k < 1, and alpha_i = beta / n_i.

    Args:
        logits: (N, K) or (N, K, d1, ...) logits, K >= 2, as in [`lr_loss`][].
        target: int64 class indices (N, d1, ...), or a float/bool tensor of the logits' shape:
            multi-hot {0, 1} or soft targets in [0, 1] (the generalisation above).
        beta: the balance weight, finite and >= 0; 10 (the paper's) by default.
        m: the percentage of negative classes kept, in (0, 100]; 25 (the paper's) by default.
        alpha: a fixed weight >= 0 that replaces beta / n_i when given; default None.
        weight: optional (K,) per-class weight on class k's term, finite and >= 0.
        reduction: "mean" (default) over non-ignored samples, "sum", or "none".
        ignore_index: class-index targets equal to it contribute nothing (default -100).
        normalization: "paper" (default, above, per sample) or "reference", the authors'
            released code: positive term pooled over all positive entries of the batch, plus
            alpha times the mean, over N * k entries, of the k = int(K * m / 100) largest
            -log(1 - p) per sample (k counts from K, not K - 1; a positive is "selected" as a
            zero once k exceeds the negatives). alpha defaults to beta there, so for
            single-label data the two modes differ only in k. "mean" reduction only.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> from torch.nn.functional import softplus
        >>> logits = torch.tensor([[2.0, -1.0, 0.5, 1.5, -0.5], [0.0, 1.0, -2.0, 0.5, 3.0]])
        >>> target = torch.tensor([0, 2])
        >>> loss = frlr.hs_lr_loss(logits, target, m=50.0, reduction="none")
        >>> loss
        tensor([13.5044, 23.9362])
        >>> z = logits[0]  # n = floor(50 * 4 / 100) = 2 hardest negatives: classes 3 and 2
        >>> torch.allclose(loss[0], softplus(-z[0]) + 10 / 2 * (softplus(z[3]) + softplus(z[2])))
        True
        >>> soft = torch.tensor([[0.9, 0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.8, 0.0, 0.2]])
        >>> frlr.hs_lr_loss(logits, soft, reduction="none")
        tensor([ 2.3725, 26.1000])
    """
    check_loss_options(
        beta=beta, m=m, alpha=alpha, reduction=reduction, normalization=normalization
    )
    batch = Batch(logits, target, weight, ignore_index)
    if normalization == "reference":
        return _reference_loss("hs-lr", batch, reduction, beta=beta, m=m, alpha=alpha)
    block, constants = sigmoid_block(
        "hs-lr", batch.y, batch.dense, beta=beta, m=m, alpha=alpha, num_classes=batch.num_classes
    )
    return batch.loss(block, reduction, *constants)


@float32_under_autocast
def ss_lr_loss(
    logits: Tensor,
    target: Tensor,
    *,
    beta: float = 10.0,
    r: float = 2.0,
    alpha: float | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    normalization: Normalization = "paper",
) -> Tensor:
    r"""Focus-rectified LR by negative-class soft selection (SS-LR), Eq. (6).

    $$\mathrm{loss}_i = \operatorname*{mean}_{k \in P_i} \operatorname{softplus}(-z_k)
    + \alpha_i \sum_{k \in N_i} p_k^r \operatorname{softplus}(z_k)$$

    with alpha_i = beta / |N_i| unless ``alpha`` is given. The weight p_k^r is not detached
    (as in the authors' code), so it is differentiated too. r = 0 equals HS-LR at m = 100.

    Soft targets t in [0, 1]^K (class k: positive mass t_k, negative mass 1 - t_k) generalise
    it, reducing to the above for {0, 1} targets:

    $$\mathrm{loss}_i = \frac{\sum_k t_k \operatorname{softplus}(-z_k)}{\sum_k t_k}
    + \alpha_i \sum_k (1 - t_k) p_k^r \operatorname{softplus}(z_k),
    \qquad \alpha_i = \frac{\beta}{\sum_k (1 - t_k)}$$

    (the first term 0 when sum_k t_k = 0, the second when sum_k (1 - t_k) = 0).

    Args:
        logits: (N, K) or (N, K, d1, ...) logits, K >= 2, as in [`lr_loss`][].
        target: int64 class indices (N, d1, ...), or a float/bool tensor of the logits' shape:
            multi-hot {0, 1} or soft targets in [0, 1] (the generalisation above).
        beta: the balance weight, finite and >= 0; 10 (the paper's) by default.
        r: the attending power, finite and >= 0; 2 (the paper's) by default.
        alpha: a fixed weight >= 0 that replaces beta / |N_i| when given; default None.
        weight: optional (K,) per-class weight on class k's term, finite and >= 0.
        reduction: "mean" (default) over non-ignored samples, "sum", or "none".
        ignore_index: class-index targets equal to it contribute nothing (default -100).
        normalization: "paper" (default, above, per sample) or "reference", the authors'
            released code: positive term pooled over all positive entries of the batch plus
            alpha times the negative term pooled over all negative entries of the batch.
            alpha defaults to beta there, so the two modes agree exactly on single-label
            data. "mean" reduction only.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> from torch.nn.functional import softplus
        >>> logits = torch.tensor([[2.0, -1.0, 0.5, 1.5, -0.5], [0.0, 1.0, -2.0, 0.5, 3.0]])
        >>> target = torch.tensor([0, 2])
        >>> loss = frlr.ss_lr_loss(logits, target, reduction="none")
        >>> loss
        tensor([ 4.1392, 12.1740])
        >>> z, p = logits[0], torch.sigmoid(logits[0])  # alpha = beta / (K - 1) = 10 / 4
        >>> torch.allclose(loss[0], softplus(-z[0]) + 10 / 4 * (p[1:] ** 2 * softplus(z[1:])).sum())
        True
        >>> soft = torch.tensor([[0.9, 0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.8, 0.0, 0.2]])
        >>> frlr.ss_lr_loss(logits, soft, reduction="none")
        tensor([ 4.6647, 10.3761])
    """
    check_loss_options(
        beta=beta, r=r, alpha=alpha, reduction=reduction, normalization=normalization
    )
    batch = Batch(logits, target, weight, ignore_index)
    if normalization == "reference":
        return _reference_loss("ss-lr", batch, reduction, beta=beta, r=r, alpha=alpha)
    block, constants = sigmoid_block(
        "ss-lr", batch.y, batch.dense, beta=beta, r=r, alpha=alpha, num_classes=batch.num_classes
    )
    return batch.loss(block, reduction, *constants)


@float32_under_autocast
def sr_loss(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Tensor:
    r"""Softmax regression, Eq. (4): ``F.cross_entropy`` with this library's input checks.

    $$\mathrm{loss}_i = -\sum_k c_k \log q_k, \qquad q = \operatorname{softmax}(z),$$

    c the target distribution: -log q_y for a class index y. Float targets are class
    probabilities, as in ``F.cross_entropy`` (not renormalised); ``weight`` and the "mean"
    reduction follow ``F.cross_entropy`` exactly (mean weighted by weight[y]).

    Args:
        logits: (N, K) or (N, K, d1, ...) logits, K >= 2, as in [`lr_loss`][].
        target: int64 class indices (N, d1, ...), or a float/bool tensor of the logits' shape
            holding class probabilities in [0, 1] (one-hot, soft or mixed targets).
        weight: optional (K,) per-class weight, finite and >= 0 (CrossEntropyLoss's
            convention: with index targets "mean" divides by sum_i weight[y_i]).
        reduction: "mean" (default), "sum", or "none". An all-ignored batch gives 0, not NaN.
        ignore_index: class-index targets equal to it contribute nothing (default -100).
        label_smoothing: in [0, 1], mixes the target with the uniform distribution, as in
            ``F.cross_entropy``; default 0.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> logits = torch.tensor([[2.0, -1.0, 0.5, 1.5, -0.5], [0.0, 1.0, -2.0, 0.5, 3.0]])
        >>> target = torch.tensor([0, 2])
        >>> cross_entropy = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
        >>> torch.allclose(frlr.sr_loss(logits, target, label_smoothing=0.1), cross_entropy)
        True
        >>> frlr.sr_loss(logits, target, reduction="none")
        tensor([0.6737, 5.2421])
        >>> soft = torch.tensor([[0.9, 0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.8, 0.0, 0.2]])
        >>> frlr.sr_loss(logits, soft, reduction="none")
        tensor([0.9737, 4.2421])
    """
    check_loss_options(reduction=reduction)
    Batch(logits, target, weight, ignore_index)  # validation only
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=logits.dtype)
    if target.dtype == torch.bool or target.is_floating_point():
        target = target.to(logits.dtype)
    samples = logits.numel() // logits.shape[1] if logits.dim() >= 2 and logits.shape[1] else 0
    if reduction == "mean" and target.is_floating_point() and samples == 0:
        # F.cross_entropy's mean of no samples is 0/0 = NaN; the empty sum is 0, grad zero
        reduction = "sum"
    if reduction != "mean" or target.is_floating_point():
        return F.cross_entropy(
            logits,
            target,
            weight=weight,
            reduction=reduction,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
        )
    # F.cross_entropy's mean is 0/0 = NaN on an all-ignored batch; keep its weighting, not that.
    total = F.cross_entropy(
        logits,
        target,
        weight=weight,
        reduction="sum",
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )
    valid = target != ignore_index
    safe_target = torch.where(valid, target, 0)
    counts = valid.to(logits.dtype) if weight is None else weight[safe_target] * valid
    denominator = counts.sum()
    return total / torch.where(denominator > 0, denominator, torch.ones_like(denominator))


@float32_under_autocast
def hs_sr_loss(
    logits: Tensor,
    target: Tensor,
    *,
    beta: float = 10.0,
    m: float = 25.0,
    alpha: float | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
) -> Tensor:
    r"""Hard selection (Eq. 5) applied to softmax probabilities: the paper's ablation.

    $$\mathrm{loss}_i = -\log q_y
    + \frac{\beta}{n} \sum_{k \in \text{top } n \text{ negatives}} -\log(1 - q_k),
    \qquad q = \operatorname{softmax}(z),
    \quad n = \max(1, \lfloor \tfrac{m}{100} (K - 1) \rfloor).$$

    log(1 - q_k) is computed as log1p(-q_k) where q_k <= 1/2 and as logsumexp over the other
    classes minus logsumexp over all where q_k > 1/2 (at most the row's arg-max), so it stays
    exact when q_k -> 1. Single-label (index) targets only.

    Args:
        logits: (N, K) or (N, K, d1, ...) logits, K >= 2, as in [`lr_loss`][].
        target: int64 class indices (N, d1, ...) only: softmax is single-label, so a float
            (multi-hot or soft) target is a ValueError.
        beta: the balance weight, finite and >= 0; default 10.
        m: the percentage of negative classes kept, in (0, 100]; default 25.
        alpha: a fixed weight >= 0 that replaces beta / n when given; default None.
        weight: optional (K,) per-class weight, finite and >= 0, on the positive term
            (weight[y]) and on each selected negative's term.
        reduction: "mean" (default) over non-ignored samples, "sum", or "none".
        ignore_index: class-index targets equal to it contribute nothing (default -100).

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> logits = torch.tensor([[2.0, -1.0, 0.5, 1.5, -0.5], [0.0, 1.0, -2.0, 0.5, 3.0]])
        >>> target = torch.tensor([0, 2])
        >>> loss = frlr.hs_sr_loss(logits, target, reduction="none")
        >>> loss
        tensor([ 4.3730, 20.6116])
        >>> q = torch.softmax(logits[0], 0)  # n = max(1, floor(25 * 4 / 100)) = 1: class 3
        >>> torch.allclose(loss[0], -q[0].log() - 10 / 1 * (1 - q[3]).log())
        True
    """
    check_loss_options(beta=beta, m=m, alpha=alpha, reduction=reduction)
    batch = Batch(logits, target, weight, ignore_index)
    if batch.dense:
        raise ValueError("hs_sr_loss takes class-index targets only: softmax is single-label")
    z, y = batch.z, batch.y
    num_classes = batch.num_classes
    n = num_hard_negatives(num_classes - 1, m)
    a = beta / n if alpha is None else alpha
    log_q = torch.log_softmax(z, dim=1)
    pos = -log_q.gather(1, y.unsqueeze(1)).squeeze(1)
    values, indices, _ = kernels.hard_negatives_index(z, y, n)
    keep = values != float("-inf")
    log_q_sel = log_q.gather(1, indices)
    q_sel = log_q_sel.exp()
    big = q_sel > 0.5
    top = z.argmax(1, keepdim=True)
    lse_others = torch.logsumexp(z.scatter(1, top, float("-inf")), dim=1, keepdim=True)
    log1m_big = (lse_others - torch.logsumexp(z, dim=1, keepdim=True)).expand_as(q_sel)
    log1m = torch.where(big, log1m_big, torch.log1p(-torch.where(big, 0.0, q_sel)))
    coef = keep.to(z.dtype)
    if batch.weight is not None:
        coef = coef * batch.weight[indices]
        pos = pos * batch.weight[y]
    rows = pos - a * (log1m * coef).sum(1)
    return batch.reduce(rows, reduction)


# ---------------------------------------------------------------------------------------------
# The authors' normalisation, for matching their released numbers.
# ---------------------------------------------------------------------------------------------


def reference_blocks(
    name: str,
    z: Tensor,
    t: Tensor,
    weight: Tensor | None,
    *,
    beta: float = 10.0,
    m: float = 25.0,
    r: float = 2.0,
    alpha: float | None = None,
) -> list[tuple[Callable[..., tuple[Tensor, Tensor | None]], Tensor | None, tuple]]:
    """The authors' batch pooling as calls of the block functions: [positive part, negative
    part], each ``(block, indices, args)`` meaning ``block(z.gather(1, indices), *args)`` (or
    ``block(z, *args)`` when ``indices`` is None), whose rows sum to that part of the loss.

    LR: the mean of the elementwise binary cross-entropy over all M K entries. SS-LR: positive
    terms pooled over the batch's positive mass, plus alpha (default beta) times the negative
    terms pooled over its negative mass. HS-LR: the same positive part, plus alpha times the
    mean, over M k entries, of each row's k = int(K m / 100) largest (1 - t) w softplus(z).
    Used by the losses (``normalization="reference"``) and the NCD diagnostics alike.
    """
    num_classes = z.shape[1]
    a = beta if alpha is None else alpha
    if name == "lr":
        scale = 1.0 / max(z.numel(), 1)
        return [
            (kernels.lr_block, None, (t, None, weight, scale, 0.0)),
            (kernels.lr_block, None, (t, None, weight, 0.0, scale)),
        ]
    pos_scale = 1.0 / max(float(t.sum()), 1.0)
    if name == "ss-lr":
        neg_scale = a / max(float((1 - t).sum()), 1.0)
        return [
            (kernels.ss_lr_block, None, (t, None, weight, pos_scale, 0.0, float(r))),
            (kernels.ss_lr_block, None, (t, None, weight, 0.0, neg_scale, float(r))),
        ]
    k = int(num_classes * m / 100.0)
    if k == 0:
        raise ValueError(
            f"normalization='reference' keeps int(K*m/100) = 0 negatives for K={num_classes}"
            f", m={m} (the authors' code returns NaN there); raise m or use 'paper'"
        )
    # the selection ranks the weighted negative terms (a positive counts as a zero term)
    ranked = kernels.softplus(z.detach()).mul_(1 - t)
    if weight is not None:
        ranked.mul_(weight)
    indices = ranked.topk(k, dim=1).indices
    selected = (
        t.gather(1, indices),
        None,
        None if weight is None else weight[indices],
        0.0,
        a / max(z.shape[0] * k, 1),
    )
    return [
        (kernels.hs_lr_block, None, (t, None, weight, pos_scale, 0.0)),
        (kernels.hs_lr_block, indices, selected),
    ]


def _reference_loss(
    name: str,
    batch: Batch,
    reduction: str,
    *,
    beta: float = 10.0,
    m: float = 25.0,
    r: float = 2.0,
    alpha: float | None = None,
) -> Tensor:
    """Batch-pooled normalisation of the authors' code, with exact log-sigmoid numerics.

    Differences from ``normalization="paper"``: the positive term is averaged over all positive
    entries of the batch (not per sample), the negative term is averaged over all negative
    entries (SS) or over N * int(K m/100) selected entries (HS), alpha defaults to beta, and
    the authors' ``log(p + 1e-7)`` is replaced by exact softplus forms (they agree on moderate
    logits). Ignored samples are dropped before pooling. Computed by the block functions
    (``reference_blocks``).
    """
    if reduction != "mean":
        raise ValueError(
            f"normalization='reference' pools over the batch; reduction must be 'mean', "
            f"got {reduction!r}"
        )
    z = batch.z
    if batch.dense:
        t = batch.y
    else:
        t = F.one_hot(batch.y, batch.num_classes).to(z.dtype)
        if batch.valid is not None:
            z, t = z[batch.valid], t[batch.valid]
    parts = reference_blocks(name, z, t, batch.weight, beta=beta, m=m, r=r, alpha=alpha)
    if z.shape[0] == 0:
        return z.sum() * 0.0
    total = z.new_zeros(())
    for block, indices, args in parts:
        operand = z if indices is None else z.gather(1, indices)
        total = total + kernels.row_losses(block, operand, *args, divisor=1)
    return total


# ---------------------------------------------------------------------------------------------
# Modules and the registry
# ---------------------------------------------------------------------------------------------


class _Loss(nn.Module):
    """A thin module over a functional loss, ``_fn``: the constructor takes the function's
    options by keyword, checks them and holds them in ``options``, defaults filled in.

    The options' names and defaults are written once, in the function's signature (the class
    weight aside: a module keeps it as a buffer).
    """

    _fn: ClassVar[Callable[..., Tensor]]
    defaults: ClassVar[dict[str, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        options = option_parameters(cls._fn, skip=("logits", "target", "weight"))
        cls.defaults = {p.name: p.default for p in options}
        weight = inspect.signature(_Loss.__init__).parameters["weight"]
        sign_constructor(cls, [weight, *options])

    def __init__(self, weight: Tensor | None = None, **options: Any) -> None:
        super().__init__()
        check_option_names(type(self).__name__, options, ["weight", *self.defaults])
        if weight is not None and not isinstance(weight, Tensor):
            raise TypeError(
                f"weight must be a (K,) tensor or None, got {weight!r:.60}; the other options "
                "are keyword-only"
            )
        self.options = {**self.defaults, **options}
        checked = ("beta", "m", "r", "alpha", "reduction", "normalization")
        check_loss_options(**{k: v for k, v in self.options.items() if k in checked})
        self.register_buffer("weight", weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return type(self)._fn(logits, target, weight=self.weight, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class LRLoss(_Loss):
    """Module form of [`lr_loss`][] (Eq. 3): ``LRLoss(...)(logits, target)`` is
    ``lr_loss(logits, target, ...)``, with the same logits and target formats.

    Args:
        weight: optional (K,) per-class weight, finite and >= 0, kept as a buffer (it moves
            with ``.to(device)``); default None.
        **options: [`lr_loss`][]'s options, by keyword (below); one it does not take is a
            TypeError.

    Other Parameters:
        reduction, ignore_index, normalization: as in [`lr_loss`][]; defaults "mean", -100
            and "paper".

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> logits, target = torch.randn(4, 10), torch.randint(0, 10, (4,))
        >>> weight = torch.linspace(0.5, 2.0, 10)
        >>> loss = frlr.LRLoss(weight=weight)(logits, target)
        >>> torch.equal(loss, frlr.lr_loss(logits, target, weight=weight))
        True
    """

    _fn = staticmethod(lr_loss)


class HSLRLoss(_Loss):
    r"""Module form of [`hs_lr_loss`][] (Eq. 5; beta = 10, m = 25 as in the paper).

    $$\mathrm{loss}_i = \operatorname*{mean}_{k \in P_i} \operatorname{softplus}(-z_k)
    + \frac{\beta}{n_i} \sum_{k \in \text{top } n_i \text{ of } N_i} \operatorname{softplus}(z_k),
    \qquad n_i = \max(1, \lfloor m |N_i| / 100 \rfloor);$$

    index, multi-hot and soft targets as in the function.

    Args:
        weight: optional (K,) per-class weight, finite and >= 0, kept as a buffer; default None.
        **options: [`hs_lr_loss`][]'s options, by keyword (below); one it does not take is a
            TypeError.

    Other Parameters:
        beta: the balance weight, finite and >= 0; default 10.
        m: the percentage of negative classes kept, in (0, 100]; default 25.
        alpha: a fixed weight >= 0 in place of beta / n_i; default None.
        reduction, ignore_index, normalization: as in [`hs_lr_loss`][] (defaults "mean",
            -100, "paper").

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> logits, target = torch.randn(4, 10), torch.randint(0, 10, (4,))
        >>> criterion = frlr.HSLRLoss(m=50.0)
        >>> torch.equal(criterion(logits, target), frlr.hs_lr_loss(logits, target, m=50.0))
        True
    """

    _fn = staticmethod(hs_lr_loss)


class SSLRLoss(_Loss):
    r"""Module form of [`ss_lr_loss`][] (Eq. 6; beta = 10, r = 2 as in the paper).

    $$\mathrm{loss}_i = \operatorname*{mean}_{k \in P_i} \operatorname{softplus}(-z_k)
    + \frac{\beta}{|N_i|} \sum_{k \in N_i} p_k^r \operatorname{softplus}(z_k);$$

    index, multi-hot and soft targets as in the function.

    Args:
        weight: optional (K,) per-class weight, finite and >= 0, kept as a buffer; default None.
        **options: [`ss_lr_loss`][]'s options, by keyword (below); one it does not take is a
            TypeError.

    Other Parameters:
        beta: the balance weight, finite and >= 0; default 10.
        r: the attending power, finite and >= 0; default 2.
        alpha: a fixed weight >= 0 in place of beta / |N_i|; default None.
        reduction, ignore_index, normalization: as in [`ss_lr_loss`][] (defaults "mean",
            -100, "paper").

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> model, criterion = torch.nn.Linear(8, 10), frlr.SSLRLoss()  # for nn.CrossEntropyLoss()
        >>> x, y = torch.randn(4, 8), torch.randint(0, 10, (4,))
        >>> loss = criterion(model(x), y)
        >>> loss.backward()
        >>> torch.equal(loss, frlr.ss_lr_loss(model(x), y)), model.weight.grad.shape
        (True, torch.Size([10, 8]))
    """

    _fn = staticmethod(ss_lr_loss)


class SRLoss(_Loss):
    """Module form of [`sr_loss`][] (Eq. 4, softmax cross-entropy, the baseline):
    ``nn.CrossEntropyLoss`` with this library's input checks.

    Args:
        weight: optional (K,) per-class weight, as in [`sr_loss`][], kept as a buffer; default
            None.
        **options: [`sr_loss`][]'s options, by keyword (below); one it does not take is a
            TypeError.

    Other Parameters:
        reduction, ignore_index, label_smoothing: as in [`sr_loss`][] (defaults "mean", -100,
            0.0).

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> logits, target = torch.randn(4, 10), torch.randint(0, 10, (4,))
        >>> reference = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, target)
        >>> torch.allclose(frlr.SRLoss(label_smoothing=0.1)(logits, target), reference)
        True
    """

    _fn = staticmethod(sr_loss)


class HSSRLoss(_Loss):
    r"""Module form of [`hs_sr_loss`][] (hard selection on softmax, the ablation):

    $$-\log q_y + \frac{\beta}{n} \sum_{k \in \text{top } n \text{ negatives}} -\log(1 - q_k),$$

    class-index targets only.

    Args:
        weight: optional (K,) per-class weight, as in [`hs_sr_loss`][], kept as a buffer;
            default None.
        **options: [`hs_sr_loss`][]'s options, by keyword (below); one it does not take is a
            TypeError.

    Other Parameters:
        beta: the balance weight, finite and >= 0; default 10.
        m: the percentage of negative classes kept, in (0, 100]; default 25.
        alpha: a fixed weight >= 0 in place of beta / n; default None.
        reduction, ignore_index: as in [`hs_sr_loss`][] (defaults "mean", -100).

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> logits, target = torch.randn(4, 10), torch.randint(0, 10, (4,))
        >>> loss = frlr.HSSRLoss(alpha=1.0)(logits, target)
        >>> torch.equal(loss, frlr.hs_sr_loss(logits, target, alpha=1.0))
        True
    """

    _fn = staticmethod(hs_sr_loss)


LOSSES: dict[str, type[_Loss]] = dict(
    zip(LOSS_NAMES, (SRLoss, LRLoss, HSLRLoss, SSLRLoss, HSSRLoss), strict=True)
)
"""Registry name (``frlr.catalogue.LOSS_NAMES``) -> module class."""

FUNCTIONAL: dict[str, Callable[..., Tensor]] = dict(
    zip(LOSS_NAMES, (sr_loss, lr_loss, hs_lr_loss, ss_lr_loss, hs_sr_loss), strict=True)
)
"""Registry name -> functional form."""


def get_loss(name: str, **kwargs) -> nn.Module:
    """The loss module registered under ``name`` ("sr", "lr", "hs-lr", "ss-lr", "hs-sr").

    Keyword arguments go to the module's constructor; one it does not take is an error.

    Args:
        name: a registry name, in any case and with "_" or "-" ("SS_LR" is "ss-lr"); an
            unknown name is a ValueError.
        **kwargs: the constructor's arguments ([`SRLoss`][], [`LRLoss`][],
            [`HSLRLoss`][], [`SSLRLoss`][], [`HSSRLoss`][]): beta, m, r, alpha,
            weight, reduction, ignore_index, normalization or label_smoothing, as it takes;
            one it does not take is a TypeError.

    Returns:
        The loss module, called as ``criterion(logits, target)``.

    Examples:
        >>> import frlr.torch as frlr
        >>> frlr.get_loss("SS_LR", r=1.0)
        SSLRLoss(beta=10.0, r=1.0, alpha=None, reduction='mean', ...)
        >>> frlr.get_loss("hs-lr", r=1.0)
        Traceback (most recent call last):
        ...
        TypeError: loss 'hs-lr': HSLRLoss takes no option 'r'; it takes alpha, beta, ...
    """
    key = canonical_loss_name(name)
    if key is None:
        raise ValueError(f"unknown loss name {name!r}; known: {', '.join(LOSSES)}")
    cls = LOSSES[key]
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise TypeError(f"loss {name!r}: {error}") from None
