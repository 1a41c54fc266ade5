"""The PyTorch half of the loss library: drop-in replacements for ``nn.CrossEntropyLoss``.

```python
import frlr.torch as frlr
criterion = frlr.SSLRLoss()          # instead of nn.CrossEntropyLoss()
loss = criterion(logits, target)     # same (logits, target) contract
```
"""

from frlr.torch.diagnostics import NCDMonitor, ncd_stats, ncd_verdict, plot_ncd
from frlr.torch.fused import compiled
from frlr.torch.linear import (
    LINEAR_LOSSES,
    LinearHSLRLoss,
    LinearLRLoss,
    LinearSRLoss,
    LinearSSLRLoss,
    get_linear_loss,
    linear_argmax,
    linear_hs_lr_loss,
    linear_lr_loss,
    linear_sr_loss,
    linear_ss_lr_loss,
    positive_lists,
)
from frlr.torch.losses import (
    FUNCTIONAL,
    LOSSES,
    HSLRLoss,
    HSSRLoss,
    LRLoss,
    SRLoss,
    SSLRLoss,
    get_loss,
    hs_lr_loss,
    hs_sr_loss,
    lr_loss,
    sr_loss,
    ss_lr_loss,
)

__all__ = [
    "FUNCTIONAL",
    "LINEAR_LOSSES",
    "LOSSES",
    "HSLRLoss",
    "HSSRLoss",
    "LRLoss",
    "LinearHSLRLoss",
    "LinearLRLoss",
    "LinearSRLoss",
    "LinearSSLRLoss",
    "NCDMonitor",
    "SRLoss",
    "SSLRLoss",
    "compiled",
    "get_linear_loss",
    "get_loss",
    "hs_lr_loss",
    "hs_sr_loss",
    "linear_argmax",
    "linear_hs_lr_loss",
    "linear_lr_loss",
    "linear_sr_loss",
    "linear_ss_lr_loss",
    "lr_loss",
    "ncd_stats",
    "ncd_verdict",
    "plot_ncd",
    "positive_lists",
    "sr_loss",
    "ss_lr_loss",
]
