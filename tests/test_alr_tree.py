"""The ALR tree against an independent NumPy implementation, and its edge cases.

The oracle below is written from the seed's Algorithm 1 (Takase et al., 2018)
directly: Python loops over beam members, branches and batches, float64 NumPy
(momentum) SGD on linear regression, a stable sort of the children by training
loss. It shares no code with ``autolr_jax.alr``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autolr_jax._state_utils import current_lr
from autolr_jax.alr import (
    ALRState,
    alr_tree,
    best_lr,
    best_model_state,
    best_opt_state,
    best_params,
)

# Linear regression, B = 4 batches of 8 rows, 3 features on different scales so
# training is still far from converged after a few epochs (children stay apart).
_RNG = np.random.default_rng(0)
B, ROWS, D = 4, 8, 3
X = _RNG.normal(size=(B, ROWS, D)) * np.array([1.0, 0.5, 0.2])
Y = X @ np.array([1.0, -2.0, 3.0]) + 0.5 + 0.05 * _RNG.normal(size=(B, ROWS))
BATCHES = (jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32))
W0 = np.array([0.2, 0.0, -0.1])
B0 = 0.0


def init_params(dtype=jnp.float32):
    return {"w": jnp.asarray(W0, dtype), "b": jnp.asarray(B0, dtype)}


def loss_fn(params, batch):
    x, y = batch
    pred = x @ params["w"].astype(jnp.float32) + params["b"].astype(jnp.float32)
    return 0.5 * jnp.mean((pred - y) ** 2)


def aux_loss_fn(params, model_state, batch):
    # A toy BatchNorm-like statistic: a running mean of the model's outputs, which
    # depends on each child's parameters, and which the loss reads.
    x, y = batch
    h = x @ params["w"]
    pred = h + params["b"] - 0.5 * model_state["mean"]
    new_state = {"mean": 0.9 * model_state["mean"] + 0.1 * jnp.mean(h)}
    return 0.5 * jnp.mean((pred - y) ** 2), new_state


# ---------------------------------------------------------------------------
# Independent oracle
# ---------------------------------------------------------------------------


def oracle(lrs, factors, epochs, *, rank_by="mean", momentum=0.0, beam_size=None, aux=False):
    """Algorithm 1 with Python loops and float64 NumPy; returns per-epoch records."""
    k = len(lrs) if beam_size is None else beam_size
    # member: (lr, w, b, velocity_w, velocity_b, running_mean)
    beam = [(lr, W0.copy(), B0, np.zeros(D), 0.0, 0.0) for lr in lrs]
    records = []
    for _ in range(epochs):
        children, beam_in = [], beam
        for m, (lr, w, b, vw, vb, s) in enumerate(beam_in):
            for n, r in enumerate(factors):
                clr, cw, cb, cvw, cvb, cs = lr * r, w.copy(), b, vw.copy(), vb, s
                losses = []
                for x, y in zip(X, Y, strict=True):
                    h = x @ cw
                    res = h + cb - (0.5 * cs if aux else 0.0) - y
                    losses.append(0.5 * np.mean(res**2))
                    gw, gb = x.T @ res / len(y), np.mean(res)
                    if aux:
                        cs = 0.9 * cs + 0.1 * np.mean(h)
                    cvw, cvb = momentum * cvw + gw, momentum * cvb + gb
                    cw, cb = cw - clr * cvw, cb - clr * cvb
                e = np.mean(losses) if rank_by == "mean" else losses[-1]
                children.append((e, m, n, (clr, cw, cb, cvw, cvb, cs)))
        ranked = sorted(children, key=lambda c: c[0])  # Python's sort is stable
        beam = [c[3] for c in ranked[:k]]
        records.append(
            {
                "losses": np.array([c[0] for c in children]).reshape(len(beam_in), -1),
                "parents": [c[1] for c in ranked[:k]],
                "branches": [c[2] for c in ranked[:k]],
                "lrs": np.array([c[0] for c in beam]),
                "w": np.stack([c[1] for c in beam]),
                "b": np.array([c[2] for c in beam]),
                "s": np.array([c[5] for c in beam]),
                "sorted": np.array([c[0] for c in ranked]),
            }
        )
    return records


def run(tree, state, epochs, batches=BATCHES):
    epoch = jax.jit(tree.epoch)
    infos = []
    for _ in range(epochs):
        state, info = epoch(state, batches)
        infos.append(jax.device_get(info))
    return state, infos


# ---------------------------------------------------------------------------
# Against the oracle
# ---------------------------------------------------------------------------

LRS = (0.3, 0.05)
FACTORS = (1.7, 1.0, 0.45)
EPOCHS = 4


@pytest.mark.parametrize(
    "rank_by, momentum, beam_size",
    [
        ("mean", None, None),
        ("last", None, None),
        ("mean", 0.9, None),
        ("last", 0.9, 4),
        ("mean", None, 1),
    ],
)
def test_matches_numpy_oracle(rank_by, momentum, beam_size):
    kwargs = {} if momentum is None else {"momentum": momentum}
    tree = alr_tree(
        loss_fn, optax.sgd, FACTORS, rank_by=rank_by, beam_size=beam_size, strategy="map", **kwargs
    )
    state = tree.init(init_params(), LRS)
    state, infos = run(tree, state, EPOCHS)
    ref = oracle(
        LRS, FACTORS, EPOCHS, rank_by=rank_by, momentum=momentum or 0.0, beam_size=beam_size
    )
    for epoch, (info, r) in enumerate(zip(infos, ref, strict=True)):
        # The oracle's ranking must be unambiguous, or float32 could legitimately differ.
        gaps = np.diff(r["sorted"]) / r["sorted"][1:]
        assert np.all(gaps > 1e-3), f"epoch {epoch}: near-tie in the oracle {r['sorted']}"
        np.testing.assert_allclose(info.losses, r["losses"], rtol=1e-4, err_msg=f"epoch {epoch}")
        assert list(info.parents) == r["parents"], epoch
        assert list(info.branches) == r["branches"], epoch
        assert not info.diverged.any() and not info.all_diverged
    last = ref[-1]
    np.testing.assert_allclose(state.learning_rates, last["lrs"], rtol=1e-6)
    np.testing.assert_allclose(state.params["w"], last["w"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(state.params["b"], last["b"], rtol=1e-4, atol=1e-6)
    assert state.learning_rates.shape == (len(last["lrs"]),)
    assert int(state.epoch) == EPOCHS
    np.testing.assert_allclose(best_params(state)["w"], last["w"][0], rtol=1e-4, atol=1e-6)
    assert float(best_lr(state)) == pytest.approx(last["lrs"][0], rel=1e-6)
    # The learning rate also lives in each member's optimizer state.
    assert float(current_lr(best_opt_state(state))) == float(best_lr(state))
    np.testing.assert_array_equal(
        state.opt_state.hyperparams["learning_rate"], state.learning_rates
    )


def test_model_state_travels_with_each_child():
    tree = alr_tree(aux_loss_fn, optax.sgd, FACTORS, has_aux=True, momentum=0.5)
    state = tree.init(init_params(), LRS, model_state={"mean": jnp.float32(0.0)})
    state, infos = run(tree, state, EPOCHS)
    ref = oracle(LRS, FACTORS, EPOCHS, momentum=0.5, aux=True)
    for info, r in zip(infos, ref, strict=True):
        np.testing.assert_allclose(info.losses, r["losses"], rtol=1e-4)
        assert list(info.parents) == r["parents"] and list(info.branches) == r["branches"]
    np.testing.assert_allclose(state.model_state["mean"], ref[-1]["s"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(state.params["w"], ref[-1]["w"], rtol=1e-4, atol=1e-6)
    # The members' statistics differ: they were not shared across children.
    assert abs(float(state.model_state["mean"][0] - state.model_state["mean"][1])) > 1e-3
    assert float(best_model_state(state)["mean"]) == float(state.model_state["mean"][0])


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------


def test_strategies_agree():
    results = {}
    # chunk_size=4 of 6 children leaves a remainder chunk of 2.
    for strategy, chunk in [("vmap", None), ("map", None), ("map", 2), ("map", 4), ("auto", None)]:
        tree = alr_tree(
            loss_fn, optax.sgd, FACTORS, strategy=strategy, chunk_size=chunk, momentum=0.9
        )
        state, infos = run(tree, tree.init(init_params(), LRS), 2)
        results[(strategy, chunk)] = (state, infos)
    ref_state, ref_infos = results[("map", None)]
    for key, (state, infos) in results.items():
        for info, ref in zip(infos, ref_infos, strict=True):
            np.testing.assert_array_equal(info.parents, ref.parents, err_msg=str(key))
            np.testing.assert_array_equal(info.branches, ref.branches, err_msg=str(key))
            np.testing.assert_allclose(info.batch_losses, ref.batch_losses, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(state.learning_rates, ref_state.learning_rates)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
            state.params,
            ref_state.params,
        )


# ---------------------------------------------------------------------------
# Ties and divergence
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["map", "vmap"])
def test_ties_break_by_lower_index(strategy):
    # Equal parents and equal factors: children (0,0), (0,1), (1,0), (1,1) are identical.
    tree = alr_tree(loss_fn, optax.sgd, (1.0, 1.0, 0.5), beam_size=5, strategy=strategy)
    state, (info,) = run(tree, tree.init(init_params(), (0.3, 0.3)), 1)
    assert info.losses[0, 0] == info.losses[0, 1] == info.losses[1, 0] == info.losses[1, 1]
    assert info.losses[0, 2] == info.losses[1, 2] > info.losses[0, 0]
    kept = list(zip(info.parents, info.branches, strict=True))
    assert kept == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2)]


def test_diverged_child_ranked_last_never_chosen():
    # Branch 1 multiplies the learning rate by 1e20: it diverges (inf/NaN) every epoch.
    # beam_size=3 > the 2 finite children, so one diverged child enters the beam, last.
    tree = alr_tree(loss_fn, optax.sgd, (1.0, 1e20), beam_size=3)
    state, infos = run(tree, tree.init(init_params(), (0.3, 0.05)), 3)
    for epoch, info in enumerate(infos):
        m = info.losses.shape[0]
        assert info.diverged[:, 1].all() and not info.all_diverged, epoch
        assert not np.isfinite(info.losses[:, 1]).all()
        # Every finite child ranks first (by loss), then the diverged ones by index.
        n_finite = int((~info.diverged).sum())
        assert all(b == 0 for b in info.branches[:n_finite]), epoch
        assert all(b == 1 for b in info.branches[n_finite:]), epoch
        finite = info.losses[~info.diverged]
        assert info.losses[info.parents[0], info.branches[0]] == finite.min()
        if epoch == 0:
            kept = list(zip(info.parents, info.branches, strict=True))
            assert m == 2 and kept == [(0, 0), (1, 0), (0, 1)]
    # The best member is finite and keeps improving; the diverged one sits last.
    assert np.isfinite(np.asarray(best_params(state)["w"])).all()
    assert not np.isfinite(np.asarray(state.params["w"][-1])).all()
    assert infos[-1].losses[0, 0] < infos[0].losses[0, 0]


def test_all_children_diverged_keeps_previous_beam():
    tree = alr_tree(loss_fn, optax.sgd, (1e20, 1e30), rank_by="last")
    state0 = tree.init(init_params(), (10.0, 30.0))
    state, (info,) = run(tree, state0, 1)
    assert bool(info.all_diverged) and info.diverged.all()
    assert list(info.parents) == [0, 1] and list(info.branches) == [-1, -1]
    jax.tree.map(np.testing.assert_array_equal, state._replace(epoch=0), state0._replace(epoch=0))
    assert int(state.epoch) == 1


def test_nan_loss_is_diverged():
    # A loss that is NaN for large weights, with finite parameters: caught by the loss.
    def nan_loss(params, batch):
        loss = loss_fn(params, batch)
        return jnp.where(jnp.abs(params["b"]) > 0.4, jnp.nan, loss)

    tree = alr_tree(nan_loss, optax.sgd, (1.0, 3.0), strategy="vmap")
    _, (info,) = run(tree, tree.init(init_params(), (0.1,)), 1)
    assert list(info.diverged[0]) == [False, True]
    assert list(info.branches) == [0]


def test_non_finite_params_or_model_state_is_diverged_even_with_finite_losses():
    # rank_by="last" on one batch: the ranking loss is computed before the only update,
    # so it is finite; the divergence shows only in the parameters / model state.
    one_batch = jax.tree.map(lambda x: x[:1], BATCHES)

    def nan_grad_loss(params, batch):
        b = params["b"]
        # Value 0, gradient NaN (where b > -1): the NaN reaches the parameters only.
        return loss_fn(params, batch) + jnp.where(b > -1.0, 0.0, 0.0 * jnp.sqrt(-1.0 - b))

    tree = alr_tree(nan_grad_loss, optax.sgd, (1.0, 0.5), rank_by="last")
    _, (info,) = run(tree, tree.init(init_params(), (0.1,)), 1, one_batch)
    assert np.isfinite(info.losses).all() and info.diverged.all() and info.all_diverged

    def nan_state_loss(params, model_state, batch):
        # The loss ignores the state, whose update is NaN once |b| > 0.2.
        bad = jnp.abs(params["b"]) > 0.2
        return loss_fn(params, batch), {"mean": jnp.where(bad, jnp.nan, model_state["mean"])}

    two_batches = jax.tree.map(lambda x: x[:2], BATCHES)
    tree = alr_tree(nan_state_loss, optax.sgd, (1.0, 20.0), rank_by="last", has_aux=True)
    state = tree.init(init_params(), (0.05,), model_state={"mean": jnp.float32(0.0)})
    state, (info,) = run(tree, state, 1, two_batches)
    assert np.isfinite(info.losses).all()
    assert list(info.diverged[0]) == [False, True] and list(info.branches) == [0]
    assert np.isfinite(np.asarray(state.model_state["mean"])).all()


# ---------------------------------------------------------------------------
# Degenerate tree, checkpointing, dtypes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("factory, kwargs", [(optax.sgd, {"momentum": 0.9}), (optax.adam, {})])
def test_single_child_is_plain_training(factory, kwargs):
    lr, epochs = 0.05, 3
    tree = alr_tree(loss_fn, factory, (1.0,), **kwargs)
    state, infos = run(tree, tree.init(init_params(), (lr,)), epochs)

    tx = factory(lr, **kwargs)

    @jax.jit
    def plain_epoch(params, opt_state):
        def step(carry, batch):
            p, o = carry
            loss, g = jax.value_and_grad(loss_fn)(p, batch)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), loss

        return jax.lax.scan(step, (params, opt_state), BATCHES)

    params = init_params()
    opt_state = tx.init(params)
    for info in infos:
        (params, opt_state), losses = plain_epoch(params, opt_state)
        # float32 rounding only: the injected learning rate is an array, not a constant.
        np.testing.assert_allclose(info.batch_losses[0, 0], losses, rtol=1e-5)
        assert info.losses[0, 0] == pytest.approx(float(np.mean(losses)), rel=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a[0], b, rtol=1e-5, atol=1e-7), state.params, params
    )
    assert float(best_lr(state)) == np.float32(lr)


def test_checkpoint_round_trip_continues_identically(tmp_path):
    tree = alr_tree(aux_loss_fn, optax.adam, FACTORS, has_aux=True, beam_size=3)
    state0 = tree.init(init_params(), LRS, model_state={"mean": jnp.float32(0.0)})
    traces = []

    def counted(state, batches):
        traces.append(1)
        return tree.epoch(state, batches)

    epoch = jax.jit(counted)
    state = state0
    for _ in range(2):
        state, _ = epoch(state, BATCHES)
    path = tmp_path / "alr.npz"
    leaves, treedef = jax.tree.flatten(state)
    np.savez(path, *[np.asarray(x) for x in jax.device_get(leaves)])

    straight = state
    for _ in range(2):
        straight, straight_info = epoch(straight, BATCHES)

    with np.load(path) as f:
        loaded = [jnp.asarray(f[f"arr_{i}"]) for i in range(len(f.files))]
    restored = jax.tree.unflatten(treedef, loaded)
    assert isinstance(restored, ALRState)
    for _ in range(2):
        restored, restored_info = epoch(restored, BATCHES)
    jax.tree.map(np.testing.assert_array_equal, restored, straight)
    jax.tree.map(np.testing.assert_array_equal, restored_info, straight_info)
    # M=2 -> K=3 changes the beam's shape once; after that, no retracing.
    assert len(traces) == 2


def test_bf16_params_keep_dtype_and_float32_lrs():
    tree = alr_tree(loss_fn, optax.sgd, (2.0, 1.0, 0.5))
    state, (info,) = run(tree, tree.init(init_params(jnp.bfloat16), (0.1, 0.02)), 1)
    assert state.params["w"].dtype == jnp.bfloat16
    assert state.learning_rates.dtype == jnp.float32 and info.learning_rates.dtype == jnp.float32
    assert info.losses.dtype == jnp.float32
    assert np.isfinite(info.losses).all()


# ---------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"factors": ()}, r"factors must be a non-empty 1-D sequence.*\(\)"),
        ({"factors": 2.0}, r"factors must be a non-empty 1-D sequence.*2\.0"),
        ({"factors": (1.0, 0.0)}, r"factors\[1\] must be > 0.0, got 0\.0"),
        ({"factors": (1.0, -2.0)}, r"factors\[1\] must be > 0.0, got -2\.0"),
        ({"factors": (math.nan,)}, r"factors\[0\] must be > 0.0, got nan"),
        ({"factors": (math.inf,)}, r"factors\[0\] must be > 0.0 and finite, got inf"),
        ({"beam_size": 0}, r"beam_size must be an integer >= 1, got 0"),
        ({"beam_size": 1.5}, r"beam_size must be an integer, got 1\.5"),
        ({"rank_by": "median"}, r"rank_by must be one of \('mean', 'last'\), got 'median'"),
        ({"strategy": "pmap"}, r"strategy must be one of .*'vmap'.*got 'pmap'"),
        ({"strategy": ["vmap"]}, r"strategy must be one of .*got \['vmap'\]"),
        ({"chunk_size": 0}, r"chunk_size must be an integer >= 1, got 0"),
        ({"strategy": "vmap", "chunk_size": 2}, r"chunk_size must be None with strategy='vmap'"),
        ({"has_aux": "yes"}, r"has_aux must be True or False, got 'yes'"),
        ({"learning_rate": 0.1}, r"learning_rate must not be passed"),
        ({"loss_fn": 3}, r"loss_fn must be callable, got 3"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    args = {"loss_fn": loss_fn, "optimizer_factory": optax.sgd, "factors": FACTORS}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        alr_tree(**args)


@pytest.mark.parametrize(
    "lrs, match",
    [
        ((), r"learning_rates must be a non-empty 1-D sequence"),
        ((0.1, 0.0), r"learning_rates\[1\] must be > 0.0, got 0\.0"),
        ((-0.1,), r"learning_rates\[0\] must be > 0.0, got -0\.1"),
        ((math.inf,), r"learning_rates\[0\] must be > 0.0 and finite, got inf"),
        ([[0.1]], r"learning_rates must be a non-empty 1-D sequence"),
    ],
)
def test_bad_learning_rates(lrs, match):
    tree = alr_tree(loss_fn, optax.sgd, FACTORS)
    with pytest.raises(ValueError, match=match):
        tree.init(init_params(), lrs)


def test_beam_larger_than_children_and_other_init_errors():
    tree = alr_tree(loss_fn, optax.sgd, (2.0, 0.5), beam_size=5)
    with pytest.raises(
        ValueError,
        match=r"beam_size must be an integer in \[1, M \* N\] = "
        r"\[1, 4\] \(M = 2 .*N = 2.*got 5",
    ):
        tree.init(init_params(), (0.1, 0.2))
    assert tree.init(init_params(), (0.1, 0.2, 0.3)).learning_rates.shape == (3,)
    with pytest.raises(ValueError, match="model_state must be None when has_aux=False"):
        alr_tree(loss_fn, optax.sgd, FACTORS).init(init_params(), LRS, model_state={"a": 1.0})
    tree = alr_tree(loss_fn, optax.sgd, FACTORS)
    state = tree.init(init_params(), LRS)
    with pytest.raises(ValueError, match="batches must be a pytree whose leaves share a leading"):
        tree.epoch(state, (BATCHES[0], BATCHES[1][:2]))
