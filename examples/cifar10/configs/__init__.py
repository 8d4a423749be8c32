"""Presets of the CIFAR-10 example: ``get_config(name)`` returns a :class:`Config`."""

from __future__ import annotations

from configs import cpu, default, gpu_short, seed, tuned
from configs.default import LR_FREE, SCHEDULES, Config

PRESETS = {
    "default": default.get_config,
    "seed": seed.get_config,
    "tuned": tuned.get_config,
    "cpu": cpu.get_config,
    "gpu_short": gpu_short.get_config,
}

__all__ = ["Config", "LR_FREE", "PRESETS", "SCHEDULES", "get_config", "preset_names"]


def preset_names() -> list[str]:
    """Every name ``get_config`` accepts: the presets, and ``gpu-short`` for ``gpu_short``."""
    names = set(PRESETS)
    names.update(n.replace("_", "-") for n in PRESETS)
    return sorted(names)


def get_config(name: str) -> Config:
    """The preset called ``name`` (``-`` and ``_`` are interchangeable: ``gpu-short``)."""
    key = name.replace("-", "_")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[key]()
