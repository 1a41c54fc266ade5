"""Named training recipes, as TOML files shipped with the package.

A preset is a flat table of :class:`frlr.train.TrainConfig` fields plus a ``description``,
with optional ``[dataset.NAME]`` tables whose values replace the top-level ones for that
dataset (the paper's batch of 64 for Tiny ImageNet)::

    lr = 0.1
    batch_size = 128
    [dataset.tiny-imagenet]
    batch_size = 64

======================  ========================================================================
name                    recipe
======================  ========================================================================
``paper``               Table 1: SGD 0.9, lr 0.1, wd 1e-4, batch 128 (64 Tiny ImageNet), 300
                        epochs, step decay x0.1 at 50% and 75% of the epochs
``cpu``                 2 CPU cores in minutes: resnet20 at 32x32, bf16 autocast, 6 epochs;
                        Adam 1-2 minute runs for omniglot-retrieval and mosaic-tiny-imagenet
``reid-paper``          Table 2: Adam lr 3e-4, wd 1e-4, batch 32, 300 epochs, people 256x128
``multilabel-paper``    Table 3: Adam lr 1e-4 (1e-5 for the last 10%), wd 4e-5, batch 32, 50
                        epochs
======================  ========================================================================

``load_preset("paper", dataset="tiny-imagenet")`` gives the merged table; a path to a ``.toml``
file works wherever a name does. Field names and types are checked by
:func:`frlr.train.resolve_config`, which layers a preset over the dataclass defaults and under the
command line. Importing this module imports no deep-learning framework.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["available_presets", "load_preset", "preset_text"]


def available_presets() -> dict[str, str]:
    """Every shipped preset: name -> its one-line description."""
    names = sorted(
        entry.name.removesuffix(".toml")
        for entry in resources.files(__name__).iterdir()
        if entry.name.endswith(".toml")
    )
    return {name: str(_parse(name, preset_text(name)).get("description", "")) for name in names}


def _is_path(name: str) -> bool:
    return name.endswith(".toml") or "/" in name or "\\" in name


def preset_text(name: str) -> str:
    """The TOML source of a shipped preset, or of a ``.toml`` file when ``name`` is a path."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"preset must be a non-empty name or path, got {name!r}")
    if _is_path(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"preset file {path} does not exist")
        return path.read_text(encoding="utf-8")
    source = resources.files(__name__).joinpath(f"{name}.toml")
    if not source.is_file():
        known = ", ".join(
            entry.name.removesuffix(".toml")
            for entry in sorted(resources.files(__name__).iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".toml")
        )
        raise ValueError(f"unknown preset {name!r}; known: {known} (or a path to a .toml file)")
    return source.read_text(encoding="utf-8")


def _parse(name: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"preset {name!r} is not valid TOML: {error}") from None


def load_preset(name: str, dataset: str | None = None) -> dict[str, Any]:
    """The preset's fields, with its ``[dataset.<dataset>]`` table applied on top.

    The ``description`` and the ``dataset`` tables are removed; the values are not checked
    here (see :func:`frlr.train.resolve_config`).
    """
    table = _parse(name, preset_text(name))
    table.pop("description", None)
    overrides = table.pop("dataset", {})
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise ValueError(
            f"preset {name!r}: 'dataset' must hold [dataset.NAME] tables of overrides, "
            f"got {overrides!r}"
        )
    if dataset is not None and dataset in overrides:
        table.update(overrides[dataset])
    return table
