"""The transient memory of an auto_lr probe, from XLA's memory analysis of the compiled update.

With ``strategy="vmap"`` the first probe's search (17 grid points) is vmapped
``len(factors)`` candidates at a time, so it holds no more candidates at once than
a regular probe: its compiled temporary memory is bounded by the regular probe's,
whatever the grid size (without the bound: about 18x the parameter bytes on the MLP
below against 3x for the regular probe).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import autolr_jax.auto._settings as settings_module
from autolr_jax import DECISIONS, auto_lr
from autolr_jax._candidates import evaluate_candidates
from autolr_jax.auto._rules import search_grid

SIZES = (32, 256, 256, 8)  # 76k float32 parameters, 305 kB
FACTORS = (2.0, 1.0, 0.5)


def _params():
    keys = jax.random.split(jax.random.PRNGKey(0), len(SIZES) - 1)
    return [
        {"w": 0.1 * jax.random.normal(k, (a, b)), "b": jnp.zeros(b)}
        for k, a, b in zip(keys, SIZES[:-1], SIZES[1:], strict=True)
    ]


def _loss(params, batch):
    x, y = batch
    for i, layer in enumerate(params):
        x = x @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            x = jnp.tanh(x)
    return jnp.mean((x - y) ** 2)


PARAMS = _params()
PARAM_BYTES = sum(x.nbytes for x in jax.tree.leaves(PARAMS))
# A small batch: the candidates' parameters, not their activations, dominate the memory.
BATCH = (jnp.ones((16, SIZES[0])), jnp.ones((16, SIZES[-1])))


def _update(**kw):
    tx = auto_lr(optax.sgd, 0.1, loss_fn=_loss, factors=FACTORS, every=1, **kw)
    return tx, jax.jit(lambda g, s, p: tx.update(g, s, p, batch=BATCH))


def _temp_bytes(**kw) -> int:
    tx, step = _update(**kw)
    compiled = step.lower(PARAMS, tx.init(PARAMS), PARAMS).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:  # pragma: no cover - a backend without the analysis
        pytest.skip("no memory_analysis() on this backend")
    return int(analysis.temp_size_in_bytes)


def test_vmap_search_memory_is_bounded_by_a_regular_probe(monkeypatch):
    regular = _temp_bytes(strategy="vmap", initial_search=False)
    with_search = _temp_bytes(strategy="vmap")
    monkeypatch.setattr(settings_module, "search_grid", lambda: search_grid(decades=8))
    wide = _temp_bytes(strategy="vmap")  # a 33-point grid
    # A regular probe holds len(factors) candidates (about 1x the parameters each).
    assert regular <= (len(FACTORS) + 1) * PARAM_BYTES
    # The search adds nothing beyond it, and does not grow with the grid.
    assert with_search <= 1.1 * regular + 0.1 * PARAM_BYTES, (with_search, regular)
    assert wide <= 1.1 * regular + 0.1 * PARAM_BYTES, (wide, regular)


def test_vmap_search_gives_the_map_search():
    grads = jax.grad(_loss)(PARAMS, BATCH)
    out = {}
    for strategy in ("vmap", "map"):
        tx, step = _update(strategy=strategy)
        _, state = step(grads, tx.init(PARAMS), PARAMS)
        out[strategy] = state.telemetry
    assert int(out["vmap"].decision) == int(out["map"].decision) == DECISIONS["search"]
    np.testing.assert_allclose(out["vmap"].search_losses, out["map"].search_losses, rtol=1e-6)
    np.testing.assert_allclose(out["vmap"].level, out["map"].level, rtol=1e-6)


@pytest.mark.parametrize("n, width", [(17, 3), (18, 3), (5, 1), (4, 4), (3, 8)])
def test_evaluate_candidates_max_width_gives_the_full_vmap(n, width):
    candidates = jnp.linspace(0.5, 3.0, n)

    def fn(c):
        return {"sq": c * c, "vec": jnp.stack([c, -c])}

    got = evaluate_candidates(fn, candidates, "vmap", None, max_width=width)
    want = jax.vmap(fn)(candidates)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape
        np.testing.assert_array_equal(g, w)
