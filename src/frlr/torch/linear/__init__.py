"""Losses that never hold the logits: the classifier fused with the loss in class chunks.

The package, one concept per module, each importing only those before it:

``inputs``                argument checks, dtype, chunk size, targets as class lists
``exchange``              what class-parallel ranks exchange (identity in one process)
``products``              the chunk's three matrix products at the inputs' precision
``problem``               one call's checked inputs; the chunk's logits and target blocks
``sweep``                 the chunk sweep, the loss interface (hooks) and the autograd Function
``sigmoid``               LR and SS-LR
``softmax``               SR
``selection``             HS-LR's plan: per-row brackets of the threshold, by counting
``held_rows``             HS-LR's exact whole-row fallback
``hs_lr``                 HS-LR: the sweep that decides on its own values
``functional``            ``linear_*_loss``
``argmax``                ``linear_argmax``
``modules``               the modules and the registry
========================  ======================================================================
=======
| module | what it holds |
| --- | --- |
| ``inputs`` | argument checks, dtype, chunk size, targets as class lists |
| ``exchange`` | what class-parallel ranks exchange (identity in one process) |
| ``products`` | the chunk's three matrix products at the inputs' precision |
| ``problem`` | one call's checked inputs; the chunk's logits and target blocks |
| ``sweep`` | the chunk sweep, the loss interface (hooks) and the autograd Function |
| ``sigmoid`` | LR and SS-LR |
| ``softmax`` | SR |
| ``selection`` | HS-LR's plan: per-row brackets of the threshold, by counting |
| ``held_rows`` | HS-LR's exact whole-row fallback |
| ``hs_lr`` | HS-LR: the sweep that decides on its own values |
| ``functional`` | ``linear_*_loss`` |
| ``argmax`` | ``linear_argmax`` |
| ``modules`` | the modules and the registry |

See ``frlr.torch.linear.functional`` for the maths and the memory.
"""

from frlr.torch._conventions import Reduction
from frlr.torch.linear.argmax import linear_argmax
from frlr.torch.linear.functional import (
    linear_hs_lr_loss,
    linear_lr_loss,
    linear_sr_loss,
    linear_ss_lr_loss,
)
from frlr.torch.linear.inputs import (
    CHUNK_BYTES,
    compute_dtype,
    default_chunk_size,
    positive_lists,
)
from frlr.torch.linear.modules import (
    LINEAR_LOSSES,
    LinearHSLRLoss,
    LinearLRLoss,
    LinearSRLoss,
    LinearSSLRLoss,
    get_linear_loss,
)

__all__ = [
    "CHUNK_BYTES",
    "LINEAR_LOSSES",
    "LinearHSLRLoss",
    "LinearLRLoss",
    "LinearSRLoss",
    "LinearSSLRLoss",
    "Reduction",
    "compute_dtype",
    "default_chunk_size",
    "get_linear_loss",
    "linear_argmax",
    "linear_hs_lr_loss",
    "linear_lr_loss",
    "linear_sr_loss",
    "linear_ss_lr_loss",
    "positive_lists",
]
