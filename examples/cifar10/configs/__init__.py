"""Presets of the CIFAR-10 example, as ``ml_collections`` config files.

Each preset is a file beside this one with a ``get_config()``; pass its path to
``--config`` (``--config=examples/cifar10/configs/cpu.py``), or get it by name
with :func:`get_config` (``gpu-short`` and ``gpu_short`` are the same preset).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ml_collections import config_dict

DIR = Path(__file__).resolve().parent
PRESETS = ("default", "seed", "seed_published", "tuned", "cpu", "gpu_short")


def path(name: str) -> Path:
    """The config file of preset ``name`` (for ``--config``)."""
    return DIR / f"{_key(name)}.py"


def get_config(name: str) -> config_dict.ConfigDict:
    """The preset called ``name``."""
    return importlib.import_module(f"{__name__}.{_key(name)}").get_config()


def _key(name: str) -> str:
    key = name.replace("-", "_")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return key
