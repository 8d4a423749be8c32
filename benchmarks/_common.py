"""Shared benchmark helpers: machine and version facts, timing."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_facts(argv: list[str] | None = None) -> dict[str, Any]:
    """CPU, backend, device kind, library versions, date and the command line."""
    import jax

    dev = jax.devices()[0]
    argv = sys.argv if argv is None else argv
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "python": platform.python_version(),
        "versions": {
            d: _version(d)
            for d in ("jax", "jaxlib", "optax", "flax", "torch", "numpy", "autolr_jax")
        },
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + shlex.join(argv),
    }


def block(tree: Any) -> Any:
    """Waits for every JAX array in ``tree`` (asynchronous dispatch) and returns it."""
    import jax

    return jax.block_until_ready(tree)


def median_time(fn: Callable[[], Any], reps: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` over ``reps`` calls, after ``warmup`` untimed calls.

    ``fn`` must itself wait for its result (``block`` for JAX; PyTorch on CPU is
    synchronous).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def write_record(out: str | os.PathLike, name: str, result: dict, markdown: str) -> None:
    """Writes ``<out>/<name>.json`` (the record) and ``<out>/<name>.md`` (its tables), and
    prints the tables."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
