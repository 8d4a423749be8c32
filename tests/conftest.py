"""Shared test fixtures.

Oracles (PyTorch) are optional on a developer's machine but required in CI: a
skipped oracle is not a pass, so under CI=true a missing torch fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# One persistent XLA compilation cache for the session (subprocesses inherit it): the tests
# compile the same train steps several times (a run, then the same run stopped and resumed).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="autolr_jax_test_xla_"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# The suite compiles hundreds of small programs and runs each briefly: LLVM's optimisation
# passes cost more than they save (measured on 2 cores: 377 s -> 263 s for the whole suite;
# the one compute-bound test, the real-CIFAR epoch, takes 60 s instead of 48 s), and so do
# XLA:CPU's MLIR fusion emitters against its LLVM IR ones (measured on 2 cores: compilation
# in tests/test_contract.py 46 s -> 16 s; the real-CIFAR epoch within noise). Semantics are
# XLA's at any level and with either emitter; set xla_backend_optimization_level yourself to
# test at another (then none of these flags is added).
LEGACY_EMITTERS = "--xla_cpu_use_fusion_emitters=false"


def _xla_knows(flag: str) -> bool:
    """Whether this jaxlib's XLA accepts ``flag``: an unknown flag in XLA_FLAGS aborts every
    JAX process (the emitter flag is recent, and the legacy emitters will go one day)."""
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    code = "import jax.numpy as jnp; (jnp.zeros(1) + 1).block_until_ready()"
    probe = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300)
    return probe.returncode == 0


# Set once, in the first pytest process: xdist's workers and the tests' subprocesses inherit it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    flags = [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0",
             "--xla_llvm_disable_expensive_passes=true"]  # fmt: skip
    if _xla_knows(LEGACY_EMITTERS):
        flags.append(LEGACY_EMITTERS)
    os.environ["XLA_FLAGS"] = " ".join(filter(None, flags))
# Decoded-data caches of the tests go to a temporary folder, never the user's cache.
os.environ.setdefault("AUTOLR_JAX_CACHE", tempfile.mkdtemp(prefix="autolr_jax_test_cache_"))


# Module fixtures that train or benchmark for seconds: the tests that share one run on one
# xdist worker (pyproject's --dist loadgroup), so that it is made once, not once per worker.
SHARED_RUNS = ("smoke", "quick_run", "auto_runs", "interrupted_run")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        for name in SHARED_RUNS:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}.{name}"))


def require(module_name: str, reason: str):
    """Imports ``module_name``; skips (locally) or fails (under CI=true) if absent."""
    try:
        return __import__(module_name)
    except ImportError as e:
        msg = f"{module_name} is not installed ({reason}); `pip install -e '.[test]'` installs it"
        if IN_CI:
            pytest.fail(f"CI=true but {msg}: {e}")
        pytest.skip(msg)


@pytest.fixture(scope="session")
def torch():
    """PyTorch, the oracle for schedule and plateau parity."""
    return require("torch", "the PyTorch parity oracle")
