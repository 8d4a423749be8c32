"""Presets of the CIFAR-10 example: ``PRESETS[name]()`` returns a :class:`Config`."""

from __future__ import annotations

from configs import cpu, default, seed, tuned
from configs.default import SCHEDULES, Config

PRESETS = {
    "default": default.get_config,
    "seed": seed.get_config,
    "tuned": tuned.get_config,
    "cpu": cpu.get_config,
}

__all__ = ["Config", "PRESETS", "SCHEDULES", "get_config"]


def get_config(name: str) -> Config:
    """The preset called ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
