"""Every runnable ``Example:`` in the package's docstrings runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import autolr_jax

MODULES = sorted(m.name for m in pkgutil.walk_packages(autolr_jax.__path__, prefix="autolr_jax."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_public_functions_have_examples():
    missing = []
    for name in autolr_jax.__all__:
        obj = getattr(autolr_jax, name)
        if callable(obj) and not isinstance(obj, type) and "Example" not in (obj.__doc__ or ""):
            missing.append(name)
    assert not missing, f"public functions without an example: {missing}"
