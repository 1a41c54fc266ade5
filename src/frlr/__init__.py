"""frlr: focus-rectified logistic-regression losses (Dong, Zhu and Gong, AAAI 2019).

Importing ``frlr`` imports no deep-learning framework: the losses live in the framework
namespaces ``frlr.torch`` and ``frlr.keras``, and the experiment toolkit in its own modules.
"""

from frlr.catalogue import LOSS_NAMES

__version__ = "0.1.0"

__all__ = ["LOSS_NAMES", "__version__"]
