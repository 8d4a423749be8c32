"""The twin-overhead benchmark runs end to end, and its three steps are what it says.

Timings are the benchmark's output, not assertions: this checks the record, the table,
the state sizes (Adam's twin reads Adam's own state: no buffer more) and that
the baseline row is the optimizer itself (a NumPy oracle).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import probe_overhead as po
from benchmarks import twin_overhead as to


def test_quick_run_writes_the_record_and_the_table(tmp_path):
    result = to.main(["--quick", "--optimizers", "adam", "--reps", "2", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "twin_overhead.json").read_text())
    assert data["schema"] == to.SCHEMA and set(data["optimizers"]) == {"adam"}
    steps = data["optimizers"]["adam"]["steps"]
    want = {"plain/ordinary", "update/probing", "update/ordinary", "twin/probing", "twin/ordinary"}
    assert set(steps) == want
    assert all(s["reps"] >= 2 and s["median_s"] > 0 for s in steps.values())
    sizes = data["optimizers"]["adam"]["state_bytes"]
    n_params = sum(x.size for x in jax.tree.leaves(po.build_models("small_cnn", 0.0625)[0]))
    # Adam's twin (b1=0) reads Adam's own statistics: no state of its own, so the states are
    # the same size; a twin given as a factory would add two float32 buffers (mu, nu).
    assert sizes["twin"] == sizes["update"] > 2 * 4 * n_params
    md = (tmp_path / "twin_overhead.md").read_text()
    assert "twin ÷ update, ordinary step" in md and "adam" in md
    assert result["config"]["optimizers"] == ["adam"]


def test_plain_baseline_is_heavy_ball_sgd():
    """The baseline row is the optimizer itself: SGD, momentum 0.9, against NumPy."""
    target = np.array([1.0, -2.0, 0.5])

    def loss_fn(p, batch):
        return 0.5 * jnp.sum((p["w"] - batch) ** 2)

    tx = to.transformations("sgd_momentum", loss_fn, every=100)["plain"]
    p = {"w": jnp.zeros(3)}
    state = tx.init(p)
    step = jax.jit(lambda g, s, p: tx.update(g, s, p, batch=target))
    w, v = np.zeros(3), np.zeros(3)
    lr, m = to.OPTIMIZERS["sgd_momentum"][2], to.OPTIMIZERS["sgd_momentum"][1]["momentum"]
    for _ in range(5):
        u, state = step(jax.grad(loss_fn)(p, target), state, p)
        p = optax.apply_updates(p, u)
        v = m * v + (w - target)
        w = w - lr * v
    np.testing.assert_allclose(p["w"], w, rtol=1e-6)


def test_bad_optimizer_name_is_refused():
    with pytest.raises(SystemExit):
        to.parse_args(["--optimizers", "nadam"])
