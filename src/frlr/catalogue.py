"""The loss catalogue, framework-free: the five losses' names, their spelling in the paper, the
hyper-parameters each takes, and each hyper-parameter's default, range and check.

Everything that lists the losses derives from here: the ``frlr.torch`` and ``frlr.keras``
registries and their checks, the training config and the ``frlr`` command's help, the figure
legends (``frlr.style``) and the defaults of ``frlr compare`` and ``frlr sweep``. Stdlib only,
so ``import frlr`` stays free of any framework.

The hyper-parameters (Dong, Zhu and Gong, AAAI 2019):

* ``beta`` >= 0 weighs the negative term: alpha = beta / |N| (Eq. 5, 6), default 10;
* ``m`` in (0, 100] is the share of negative classes hard selection keeps, in per cent:
  n = max(1, floor(m |N| / 100)) (Eq. 5), default 25;
* ``r`` >= 0 is the soft-selection exponent on sigmoid(z)^r (Eq. 6), default 2;
* ``alpha`` >= 0 replaces beta / |N| by a fixed weight (no default: beta decides).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from inspect import Parameter
from typing import Any, Literal, get_args

__all__ = [
    "HYPERPARAMETERS",
    "LOSS_HYPERPARAMETERS",
    "LOSS_LABELS",
    "LOSS_NAMES",
    "NORMALIZATIONS",
    "TABLE_1_LOSSES",
    "HyperParameter",
    "Normalization",
    "canonical_loss_name",
    "check_hyperparameters",
    "check_normalization",
    "check_option_names",
    "default_hyperparameter",
    "hyperparameter_problem",
    "num_hard_negatives",
    "option_parameters",
    "sign_constructor",
]

LOSS_NAMES: tuple[str, ...] = ("sr", "lr", "hs-lr", "ss-lr", "hs-sr")
"""The losses every framework namespace provides, by registry name."""

TABLE_1_LOSSES: tuple[str, ...] = ("sr", "lr", "hs-lr", "ss-lr")
"""The losses of the paper's Table 1, which ``frlr compare`` trains by default (HS-SR is the
paper's ablation)."""

LOSS_LABELS: dict[str, str] = {
    "sr": "SR",
    "lr": "LR",
    "hs-lr": "HS-LR",
    "ss-lr": "SS-LR",
    "hs-sr": "HS-SR",
}
"""Loss name -> the paper's spelling, for tables and legends."""

LOSS_HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "sr": (),
    "lr": (),
    "hs-lr": ("beta", "m"),
    "ss-lr": ("beta", "r"),
    "hs-sr": ("beta", "m"),
}
"""The paper's hyper-parameters each loss takes (Eq. 5: beta, m; Eq. 6: beta, r); the losses
with beta also take ``alpha``, which overrides beta / |N|."""


Normalization = Literal["paper", "reference"]
"""How the LR family normalises its loss: "paper" per sample (Eq. 3, 5, 6), "reference" pooled
over the batch (the authors' code for HS-LR and SS-LR, the usual multi-label BCE for LR)."""

NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)


@dataclass(frozen=True)
class HyperParameter:
    """One loss hyper-parameter: its default, its range [low, high] (``open_low``: low itself
    excluded), and how its range reads in an error message."""

    name: str
    default: float | None
    low: float
    high: float = math.inf
    open_low: bool = False
    requirement: str = "must be >= 0"
    meaning: str = ""
    figure_loss: str | None = None  # the loss it is swept with in the paper (Fig. 6, 7)

    @property
    def range_text(self) -> str:
        """The range as in the messages and the command's help: ">= 0", "in (0, 100]"."""
        if self.high == math.inf:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"

    def contains(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        return math.isfinite(value) and above and value <= self.high


HYPERPARAMETERS: dict[str, HyperParameter] = {
    "beta": HyperParameter(
        "beta", 10.0, 0.0, meaning="weight of the negative term", figure_loss="ss-lr"
    ),
    "m": HyperParameter(
        "m",
        25.0,
        0.0,
        100.0,
        open_low=True,
        requirement="is a percentage of the negative classes in (0, 100]",
        meaning="hard-selection percentage of the negative classes",
        figure_loss="hs-lr",
    ),
    "r": HyperParameter("r", 2.0, 0.0, meaning="soft-selection exponent", figure_loss="ss-lr"),
    "alpha": HyperParameter("alpha", None, 0.0, meaning="a fixed weight instead of beta / |N|"),
}
"""Every hyper-parameter, by name, in the order the checks report them."""


def canonical_loss_name(name: Any) -> str | None:
    """The registry name of ``name`` ("SS_LR" -> "ss-lr"), or None when it names no loss.

    The one place that decides which spellings name a loss: lower case, "_" or "-".
    """
    if not isinstance(name, str):
        return None
    key = name.lower().replace("_", "-")
    return key if key in LOSS_NAMES else None


def default_hyperparameter(loss: str, name: str) -> float | None:
    """The paper's default of hyper-parameter ``name`` when ``loss`` takes it (hs-lr m: 25),
    else None."""
    return HYPERPARAMETERS[name].default if name in LOSS_HYPERPARAMETERS.get(loss, ()) else None


def hyperparameter_problem(name: str, value: Any, label: str | None = None) -> str | None:
    """What is wrong with ``value`` for hyper-parameter ``name`` (None: nothing), naming it as
    ``label`` (default ``name``; the command line says ``--beta``). NaN and infinity are out of
    every range: beta = inf would weigh the negatives infinitely, r = inf overflows s^r."""
    spec = HYPERPARAMETERS[name]
    label = name if label is None else label
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None  # the type is check_hyperparameters' TypeError
    if math.isnan(value) or math.isinf(value):
        return f"{label} must be finite and {spec.range_text}, got {value}"
    if not spec.contains(value):
        return f"{label} {spec.requirement}, got {value}"
    return None


def check_hyperparameters(
    *, beta: Any = None, m: Any = None, r: Any = None, alpha: Any = None
) -> None:
    """Raise TypeError (not a real number) or ValueError (NaN, infinite or out of range) for
    the first bad hyper-parameter, naming it and its value; None means "not given"."""
    given = {"beta": beta, "m": m, "r": r, "alpha": alpha}
    for name, value in given.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"{name} must be a real number, got {value!r}")
    for name, value in given.items():
        problem = None if value is None else hyperparameter_problem(name, value)
        if problem is not None:
            raise ValueError(problem)


def check_normalization(normalization: Any) -> None:
    """Raise ValueError naming ``normalization`` unless it is one of [`NORMALIZATIONS`][]."""
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def option_parameters(function: Callable[..., Any], skip: Iterable[str] = ()) -> list[Parameter]:
    """The options of a functional loss, keyword-only, in signature order: its parameters with a
    default, less ``skip``. A loss class takes them by keyword, so they are written once, in
    the function's signature."""
    skip = set(skip)
    return [
        p.replace(kind=Parameter.KEYWORD_ONLY)
        for p in inspect.signature(function).parameters.values()
        if p.default is not Parameter.empty and p.name not in skip
    ]


def sign_constructor(cls: type, parameters: Sequence[Parameter]) -> None:
    """Give ``cls`` a constructor that calls the one it inherits, signed with ``parameters``,
    so ``help()``, ``inspect.signature`` and the editors that ask the interpreter show a loss
    class's options though it takes them as ``**options``."""
    inherited = cls.__init__
    positional = [p.name for p in parameters if p.kind is not Parameter.KEYWORD_ONLY]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(positional):
            raise TypeError(
                f"{cls.__name__} takes {len(positional)} positional argument(s) "
                f"({', '.join(positional) or 'none'}), got {len(args)}: its options are "
                "keyword-only"
            )
        inherited(self, *args, **kwargs)

    self_parameter = Parameter("self", Parameter.POSITIONAL_OR_KEYWORD)
    __init__.__signature__ = inspect.Signature([self_parameter, *parameters])  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__module__ = cls.__module__
    __init__.__doc__ = inherited.__doc__
    cls.__init__ = __init__  # type: ignore[misc]


def check_option_names(owner: str, given: Iterable[str], accepted: Iterable[str]) -> None:
    """Raise TypeError for the first of ``given`` that ``owner`` (a loss, a monitor) does not
    take, naming what it takes: the one message for an unknown option, whichever framework."""
    accepted = sorted(accepted)
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise TypeError(f"{owner} takes no option {unknown[0]!r}; it takes {', '.join(accepted)}")


def num_hard_negatives(num_negatives: int, m: float) -> int:
    """n = max(1, floor(m% of the negatives)); m * count / 100, not m / 100 * count, which
    rounds 0.29 * 100 down to 28."""
    return max(1, math.floor(m * num_negatives / 100.0))
