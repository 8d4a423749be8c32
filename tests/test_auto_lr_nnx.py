"""auto_lr with Flax NNX: nnx.Optimizer forwards batch=, and BatchNorm statistics are untouched."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import require

from autolr_jax._state_utils import current_lr
from autolr_jax.auto import auto_lr


@pytest.fixture(scope="module")
def nnx():
    return require("flax.nnx", "the NNX integration test").nnx


def make_model(nnx):
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(3, 8, rngs=rngs)
            self.bn = nnx.BatchNorm(8, momentum=0.5, rngs=rngs)
            self.l2 = nnx.Linear(8, 1, rngs=rngs)

        def __call__(self, x):
            return self.l2(nnx.relu(self.bn(self.l1(x))))[:, 0]

    return Net(nnx.Rngs(0))


_rng = np.random.default_rng(1)
X = jnp.asarray(_rng.normal(size=(8, 16, 3)), jnp.float32)
Y = jnp.asarray(np.sin(np.asarray(X).sum(-1)), jnp.float32)
# Probe batches from a shifted distribution: if the probe leaked into the running
# statistics, their mean would move visibly.
PX = jnp.asarray(_rng.normal(loc=3.0, size=(8, 4, 3)), jnp.float32)
PY = jnp.asarray(np.sin(np.asarray(PX).sum(-1)), jnp.float32)


def mse(pred, y):
    return jnp.mean((pred - y) ** 2)


def make_tx(nnx, model):
    graphdef, _, _ = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, batch):
        x, y, rest = batch
        copy = nnx.merge(graphdef, params, rest)  # train mode; its stat updates are discarded
        return mse(copy(x), y)

    return auto_lr(
        optax.sgd, 0.05, loss_fn=loss_fn, every=2, momentum=0.9, rule="seed", initial_search=False
    )


def test_nnx_optimizer_probe_leaves_batch_stats_alone(nnx):
    model = make_model(nnx)
    optimizer = nnx.Optimizer(model, make_tx(nnx, model), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y, px, py):
        loss, grads = nnx.value_and_grad(lambda m: mse(m(x), y))(model)
        rest = nnx.state(model, nnx.Not(nnx.Param))
        optimizer.update(model, grads, batch=(px, py, rest))
        return loss

    lrs = []
    for t in range(6):
        # The reference: the statistics after exactly one training forward on x.
        reference = nnx.clone(model)
        reference(X[t])
        before = np.asarray(model.bn.mean[...])
        train_step(model, optimizer, X[t], Y[t], PX[t], PY[t])
        after = np.asarray(model.bn.mean[...])
        assert not np.allclose(after, before)  # the training forward does move them
        np.testing.assert_allclose(after, reference.bn.mean[...], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(model.bn.var[...], reference.bn.var[...], rtol=1e-6)
        lrs.append(float(current_lr(optimizer.opt_state)))
        assert float(optimizer.opt_state.hyperparams["learning_rate"][...]) == lrs[-1]
    assert len(set(lrs)) > 1
    assert int(optimizer.opt_state.telemetry.num_probes[...]) == 3


def test_nnx_optimizer_matches_functional_run(nnx):
    """nnx.Optimizer.update(model, grads, batch=...) gives the same lrs as plain optax code."""
    model = make_model(nnx)
    functional_model = nnx.clone(model)
    optimizer = nnx.Optimizer(model, make_tx(nnx, model), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y, px, py):
        grads = nnx.grad(lambda m: mse(m(x), y))(model)
        optimizer.update(model, grads, batch=(px, py, nnx.state(model, nnx.Not(nnx.Param))))

    # The same training written with optax alone on (params, rest).
    # Pure arrays (as nnx.Optimizer.update passes them), so merge builds fresh Variables.
    graphdef, params, rest = nnx.split(functional_model, nnx.Param, ...)
    params, rest = nnx.as_pure(params), nnx.as_pure(rest)
    tx = make_tx(nnx, functional_model)
    state = tx.init(params)

    @jax.jit
    def functional_step(params, rest, state, x, y, px, py):
        def loss(p):
            copy = nnx.merge(graphdef, p, rest)
            value = mse(copy(x), y)
            return value, nnx.as_pure(nnx.state(copy, nnx.Not(nnx.Param)))

        grads, new_rest = jax.grad(loss, has_aux=True)(params)
        updates, state = tx.update(grads, state, params, batch=(px, py, new_rest))
        return optax.apply_updates(params, updates), new_rest, state

    for t in range(6):
        train_step(model, optimizer, X[t], Y[t], PX[t], PY[t])
        params, rest, state = functional_step(params, rest, state, X[t], Y[t], PX[t], PY[t])
        np.testing.assert_allclose(
            float(current_lr(optimizer.opt_state)), float(current_lr(state)), rtol=1e-6
        )
    np.testing.assert_allclose(
        model.l1.kernel[...], params["l1"]["kernel"][...], rtol=1e-5, atol=1e-6
    )
