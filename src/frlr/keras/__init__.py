"""The Keras 3 half of the loss library: SR, LR, HS-LR, SS-LR (and HS-SR) on any backend.

```python
import frlr.keras as frlr
model.compile(optimizer="sgd", loss=frlr.SSLRLoss())   # y_pred = logits, y_true = indices
per_sample = frlr.ss_lr_loss(y_true, logits)           # raw tf / jax / torch tensors too
```

Written with ``keras.ops`` only, numerically the same as ``frlr.torch``. Needs Keras 3 and a
backend: ``pip install "frlr[tensorflow]"`` or ``"frlr[jax]"`` (or ``"frlr[keras]"`` plus
PyTorch), with ``KERAS_BACKEND`` set before Keras is first imported.
"""

try:
    import keras as _keras
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'frlr.keras needs Keras 3 and a backend: pip install "frlr[keras]" plus one of '
        '"frlr[tensorflow]", "frlr[jax]" or PyTorch ("frlr[torch]")'
    ) from error

if int(_keras.__version__.split(".")[0]) < 3:  # pragma: no cover
    raise ImportError(
        f'frlr.keras needs Keras 3, found keras {_keras.__version__}: pip install "frlr[keras]"'
    )

from frlr.keras.diagnostics import NCDCallback, ncd_stats_numpy
from frlr.keras.losses import (
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
    "LOSSES",
    "HSLRLoss",
    "HSSRLoss",
    "LRLoss",
    "NCDCallback",
    "SRLoss",
    "SSLRLoss",
    "get_loss",
    "hs_lr_loss",
    "hs_sr_loss",
    "lr_loss",
    "ncd_stats_numpy",
    "sr_loss",
    "ss_lr_loss",
]
