"""frlr: focus-rectified logistic-regression losses (Dong, Zhu and Gong, AAAI 2019).

Importing ``frlr`` imports no deep-learning framework: the losses live in the framework
namespaces ``frlr.torch`` and ``frlr.keras``, and the experiment toolkit in its own modules.
"""

__version__ = "0.1.0"

LOSS_NAMES = ("sr", "lr", "hs-lr", "ss-lr", "hs-sr")
"""The losses every framework namespace provides, by registry name."""

__all__ = ["LOSS_NAMES", "__version__"]
