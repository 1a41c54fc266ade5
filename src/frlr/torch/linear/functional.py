r"""Losses that never hold the logits: the classifier fused with the loss in class chunks.

For features X (N, d) and a classifier W (K, d), b (K,) with K from 10^5 to 10^7 classes, the
logits Z = X W^T + b are N x K -- 4 GB at N = 1,024, K = 10^6 -- and set the memory, not the
network. These losses compute Z one chunk of C classes at a time and never allocate N x K:

$$L = \sum_i w_i \sum_c \mathrm{rows}_i(Z_{:, c})$$

(c: chunks of classes, w_i the reduction).

LR (Eq. 3) and SS-LR (Eq. 6) are sums over classes of terms that depend on one logit and on
per-row constants (1/|P_i|, beta/|N_i|), so the chunked sum is exact and each logit's gradient
G_ij = w_i d rows_i / d z_ij needs only z_ij. The gradient is consumed as soon as it exists,
one chunk at a time,

$$dW_c = G_c^\top X, \qquad db_c = \mathbf{1}^\top G_c, \qquad dX \mathrel{+}= G_c W_c,$$

in the forward pass itself when the loss is reduced to a scalar, so the backward only scales
dX, dW, db by the incoming gradient: three matrix products per chunk, no recomputation. With
``reduction="none"`` the per-row weights w_i arrive only in the backward, which then recomputes
each chunk's logits once. HS-LR (Eq. 5) first brackets each row's top-n threshold by
counting over the chunks (``frlr.torch.linear.selection``), then decides each logit on the
value its sweep computes (``frlr.torch.linear.hs_lr``); SR, the softmax baseline,
first takes an online log-sum-exp over the chunks.

Every sigmoid loss's maths is the per-block function of ``frlr.torch._kernels`` (the same
one the materialised losses call); this module only chunks, reduces and communicates.

Memory: beyond the gradients of W and X (the unavoidable floor), a few (N, C) float32 buffers
and (N, d) float32 accumulators. ``chunk_size=None`` sizes C so that one (N, C) float32 buffer
is ``CHUNK_BYTES`` (8 MiB): small enough to stay in the allocator's reuse range and in cache.

Class-parallel: with ``process_group`` each rank holds the classes [class_offset, class_offset +
K_r) of ``num_classes`` and passes its own local batch; see ``frlr.torch.class_sharding``.

Soft targets (mixup, label smoothing) stay sparse: class lists with ``target_weights`` and a
``label_smoothing`` eps give t = (1 - eps) sparse + eps/K. The per-row constants (sum_k t_k,
the negative mass M, HS-LR's n) follow in closed form from the lists and eps, and each chunk
builds its own (N, C) target block for the same block functions, which take soft blocks.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from frlr.torch._conventions import Reduction, no_autocast
from frlr.torch.linear.hs_lr import HSLRLoss
from frlr.torch.linear.problem import Options, Problem
from frlr.torch.linear.sigmoid import LRLoss, SSLRLoss
from frlr.torch.linear.softmax import SRLoss
from frlr.torch.linear.sweep import ChunkedLoss, LinearLossFn


def _linear_loss(
    make_loss: Callable[[], ChunkedLoss],
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    bias: Tensor | None,
    reduction: str,
    ignore_index: int,
    chunk_size: int | None,
    process_group: object,
    class_offset: int,
    num_classes: int | None,
    target_weights: Tensor | None,
    label_smoothing: float,
) -> Tensor:
    """The loss ``make_loss()`` builds (its hyper-parameters checked with the other inputs, see
    ``Problem``) over the chunks."""
    options = Options(
        reduction, ignore_index, chunk_size, process_group, class_offset, num_classes,
        target_weights, label_smoothing,
    )  # fmt: skip
    problem = Problem(make_loss, features, weight, target, bias, options)
    with no_autocast(features.device):
        return LinearLossFn.apply(features, weight, bias, problem.loss, problem)


def linear_lr_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    target_weights: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    chunk_size: int | None = None,
    process_group: object = None,
    class_offset: int = 0,
    num_classes: int | None = None,
) -> Tensor:
    r"""``frlr.torch.lr_loss(features @ weight.T + bias, target)`` without the N x K logits.

    LR, Eq. (3), as [`lr_loss`][frlr.torch.lr_loss] computes it, over chunks of classes with
    the gradient consumed per chunk:

    $$\mathrm{loss}_i = \sum_{k \in P_i} \operatorname{softplus}(-z_k)
    + \sum_{k \in N_i} \operatorname{softplus}(z_k), \qquad z = x_i W^\top + b.$$

    Args:
        features: (N, d) float32/float16/bfloat16; the loss is computed in float64 when
            features, weight or bias is float64, in float32 otherwise.
        weight: (K, d), laid out like ``nn.Linear.weight`` (this rank's classes when
            class-parallel); bf16/fp16 products run natively where they can (``linear.products``).
        target: int64 class indices (N,), or int64 positive lists (N, P) padded with
            ``ignore_index`` -- sparse multi-label, equal to the multi-hot target of the
            materialised loss. A class index equal to ``ignore_index`` drops its row.
        bias: (K,) or None.
        target_weights: float (N, P) weights in [0, 1] of the listed classes of a (N, P)
            ``target``: a sparse soft target, class ``target[i, p]`` carrying
            ``target_weights[i, p]`` (padding entries are ignored, whatever their weight). A
            class listed twice in a row carries the sum of its weights, which must stay <= 1
            (a sum within float round-off of 1 is 1). None: every listed class has weight 1.
            No gradient flows to it. Mixup of two labels a, b is ``target = [a, b]``,
            ``target_weights = [lam, 1 - lam]``.
        label_smoothing: eps in [0, 1): the target becomes t = (1 - eps) sparse + eps / K,
            K = ``num_classes`` (timm's smoothing; smoothing then mixing gives the same t). With
            index targets (N,) too. Per-row masses are formed in closed form and each chunk
            builds its (N, C) target block, so nothing N x K is held; the losses of a soft t
            are the materialised ones' on the dense t (see [`ss_lr_loss`][frlr.torch.ss_lr_loss]).
        reduction: "mean" over the counted rows, "sum", or "none" (this rank's rows).
        ignore_index: the ignored class index, and the padding of positive lists.
        chunk_size: classes per chunk; None sizes one (N, chunk) float32 buffer at
            ``CHUNK_BYTES``. The result does not depend on it beyond float round-off.
        process_group: shard the classifier by class over this group's ranks; each rank
            passes its own local batch, and the loss is that of the global batch (all ranks'
            batches in rank order) against the whole classifier (``frlr.torch.class_sharding``).
        class_offset: this rank's first class (class-parallel only).
        num_classes: the whole classifier's class count (class-parallel only).

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = frlr.linear_lr_loss(features, head.weight, target, bias=head.bias)
        >>> loss.backward()  # head.weight.grad, head.bias.grad: written chunk by chunk
        >>> torch.allclose(loss, frlr.lr_loss(head(features), target))
        True

        Soft targets without a dense one: mixup of two labels per row, then smoothing.

        >>> pairs = torch.stack([target, target.flip(0)], 1)  # (8, 2) class lists
        >>> lam = torch.tensor([[0.7, 0.3]]).expand(8, 2)
        >>> soft = frlr.linear_lr_loss(features, head.weight, pairs, bias=head.bias,
        ...                            target_weights=lam, label_smoothing=0.1)
        >>> dense = 0.9 * torch.zeros(8, 1000).index_put_(
        ...     (torch.arange(8).repeat_interleave(2), pairs.reshape(-1)), lam.reshape(-1),
        ...     accumulate=True) + 0.1 / 1000
        >>> torch.allclose(soft, frlr.lr_loss(head(features), dense))
        True
    """
    return _linear_loss(
        LRLoss, features, weight, target, bias, reduction, ignore_index, chunk_size,
        process_group, class_offset, num_classes, target_weights, label_smoothing,
    )  # fmt: skip


def linear_ss_lr_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    target_weights: Tensor | None = None,
    label_smoothing: float = 0.0,
    r: float = 2.0,
    beta: float = 10.0,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    chunk_size: int | None = None,
    process_group: object = None,
    class_offset: int = 0,
    num_classes: int | None = None,
    compiled: bool = False,
) -> Tensor:
    r"""``frlr.torch.ss_lr_loss(features @ weight.T + bias, target, r=r, beta=beta)`` without
    the N x K logits.

    SS-LR, Eq. (6), as [`ss_lr_loss`][frlr.torch.ss_lr_loss] computes it:

    $$\mathrm{loss}_i = \operatorname*{mean}_{k \in P_i} \operatorname{softplus}(-z_k)
    + \frac{\beta}{|N_i|} \sum_{k \in N_i} \sigma(z_k)^r \operatorname{softplus}(z_k).$$

    A soft target t (``target_weights``, ``label_smoothing``) gives

    $$\frac{\sum_k t_k \operatorname{softplus}(-z_k)}{\sum_k t_k}
    + \frac{\beta}{M} \sum_k (1 - t_k) p_k^r \operatorname{softplus}(z_k),
    \qquad M = \sum_k (1 - t_k).$$

    Args:
        r: the attending power, >= 0; 2 in the paper.
        beta: the balance weight, 10 in the paper.
        features, weight, target, bias: as in [`linear_lr_loss`][].
        target_weights, label_smoothing: as in [`linear_lr_loss`][].
        reduction, ignore_index, chunk_size: as in [`linear_lr_loss`][].
        process_group, class_offset, num_classes: as in [`linear_lr_loss`][].
        compiled: compute each chunk of index targets in float32 by one loop compiled with
            ``torch.compile`` (``frlr.torch.fused.ss_lr_chunk``): the same maths, about a
            third of the eager element-wise time; the first call compiles (seconds, again for
            a new chunk or batch shape), and where compilation is unavailable it warns once
            and computes eagerly. Soft targets, positive lists and float64 stay eager.

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = frlr.linear_ss_lr_loss(features, head.weight, target, bias=head.bias, r=1.0)
        >>> loss.backward()  # head.weight.grad, head.bias.grad: written chunk by chunk
        >>> torch.allclose(loss, frlr.ss_lr_loss(head(features), target, r=1.0))
        True

        Mixup's two labels with weights lam, 1 - lam, and label smoothing:

        >>> pairs = torch.stack([target, target.flip(0)], 1)
        >>> lam = torch.tensor([[0.7, 0.3]]).expand(8, 2)
        >>> loss = frlr.linear_ss_lr_loss(features, head.weight, pairs, bias=head.bias,
        ...                               target_weights=lam, label_smoothing=0.1)
    """
    return _linear_loss(
        lambda: SSLRLoss(r, beta, compiled), features, weight, target, bias, reduction,
        ignore_index, chunk_size, process_group, class_offset, num_classes, target_weights,
        label_smoothing,
    )  # fmt: skip


def linear_hs_lr_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    target_weights: Tensor | None = None,
    label_smoothing: float = 0.0,
    beta: float = 10.0,
    m: float = 25.0,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    chunk_size: int | None = None,
    process_group: object = None,
    class_offset: int = 0,
    num_classes: int | None = None,
) -> Tensor:
    r"""``frlr.torch.hs_lr_loss(features @ weight.T + bias, target, beta=beta, m=m)`` without
    the N x K logits.

    HS-LR, Eq. (5), as [`hs_lr_loss`][frlr.torch.hs_lr_loss] computes it:

    $$\mathrm{loss}_i = \operatorname*{mean}_{k \in P_i} \operatorname{softplus}(-z_k)
    + \frac{\beta}{n_i} \sum_{k \in \text{top } n_i \text{ of } N_i} \operatorname{softplus}(z_k),
    \qquad n_i = \max(1, \lfloor m |N_i| / 100 \rfloor).$$

    A bracket of
    each row's threshold is counted over the chunks first (one more matrix product per chunk),
    and the gradient sweep selects exactly n_i on the logits it computes; rows no bracket can
    plan (zero, repeated or near-repeated classifier rows, NaN or inf) are computed whole.
    Negatives tied at the threshold share the remaining places equally (the materialised
    loss's top-k picks some of them instead: same value, another subgradient).

    A soft target t (``target_weights``, ``label_smoothing``) gives

    $$\frac{\sum_k t_k \operatorname{softplus}(-z_k)}{\sum_k t_k}
    + \frac{\beta}{n_i} \sum_{k \in S_i} (1 - t_k) \operatorname{softplus}(z_k),
    \qquad n_i = \max(1, \lfloor m M_i / 100 \rfloor), \quad M_i = \sum_k (1 - t_k),$$

    S_i the n_i highest logits among the classes with t_k < 1 (with eps > 0 that is every
    class; with eps = 0 a listed weight of 1 is excluded).

    Args:
        beta: the balance weight, 10 in the paper.
        m: the percentage of negative classes kept, in (0, 100]; 25 in the paper.
        features, weight, target, bias: as in [`linear_lr_loss`][].
        target_weights, label_smoothing: as in [`linear_lr_loss`][].
        reduction, ignore_index, chunk_size: as in [`linear_lr_loss`][].
        process_group, class_offset, num_classes: as in [`linear_lr_loss`][].

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = frlr.linear_hs_lr_loss(features, head.weight, target, bias=head.bias, m=10.0)
        >>> loss.backward()  # head.weight.grad, head.bias.grad: written chunk by chunk
        >>> torch.allclose(loss, frlr.hs_lr_loss(head(features), target, m=10.0))
        True

        Index targets with label smoothing (the true class is then a candidate negative too):

        >>> loss = frlr.linear_hs_lr_loss(features, head.weight, target, bias=head.bias,
        ...                               label_smoothing=0.1)
        >>> dense = torch.nn.functional.one_hot(target, 1000) * 0.9 + 0.1 / 1000
        >>> torch.allclose(loss, frlr.hs_lr_loss(head(features), dense))
        True
    """
    return _linear_loss(
        lambda: HSLRLoss(beta, m), features, weight, target, bias, reduction, ignore_index,
        chunk_size, process_group, class_offset, num_classes, target_weights, label_smoothing,
    )  # fmt: skip


def linear_sr_loss(
    features: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    target_weights: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    ignore_index: int = -100,
    chunk_size: int | None = None,
    process_group: object = None,
    class_offset: int = 0,
    num_classes: int | None = None,
) -> Tensor:
    r"""``F.cross_entropy(features @ weight.T + bias, target)`` without the N x K logits: the
    softmax baseline with the same chunking, [`sr_loss`][frlr.torch.sr_loss] without logits.

    $$\mathrm{loss}_i = \log \sum_k e^{z_k} - z_{y_i}:$$

    the log-sum-exp is taken online over the chunks (running max m, sum
    $s \leftarrow s\, e^{m - m'} + \sum e^{z - m'}$), then
    $\partial / \partial z = \operatorname{softmax}(z) - \operatorname{onehot}(y)$ chunk by
    chunk. A soft target t (``target_weights``, ``label_smoothing``) gives the soft
    cross-entropy $-\sum_k t_k \log \operatorname{softmax}(z)_k$, ``F.cross_entropy`` with
    probabilities.

    Args:
        features, weight, bias: as in [`linear_lr_loss`][].
        target: int64 class indices (N,) (softmax is single-label), or class lists (N, P)
            with ``target_weights``.
        target_weights, label_smoothing: as in [`linear_lr_loss`][].
        reduction, ignore_index, chunk_size: as in [`linear_lr_loss`][].
        process_group, class_offset, num_classes: as in [`linear_lr_loss`][].

    Examples:
        >>> import torch
        >>> import frlr.torch as frlr
        >>> head = torch.nn.Linear(16, 1000)
        >>> features, target = torch.randn(8, 16), torch.randint(0, 1000, (8,))
        >>> loss = frlr.linear_sr_loss(features, head.weight, target, bias=head.bias)
        >>> loss.backward()  # head.weight.grad, head.bias.grad: written chunk by chunk
        >>> torch.allclose(loss, frlr.sr_loss(head(features), target))
        True
        >>> smoothed = frlr.linear_sr_loss(features, head.weight, target, bias=head.bias,
        ...                                label_smoothing=0.1)
        >>> torch.allclose(smoothed, frlr.sr_loss(head(features), target, label_smoothing=0.1))
        True
    """
    return _linear_loss(
        SRLoss, features, weight, target, bias, reduction, ignore_index, chunk_size,
        process_group, class_offset, num_classes, target_weights, label_smoothing,
    )  # fmt: skip
