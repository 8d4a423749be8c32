"""auto_lr data-parallel on 8 simulated CPU devices equals the single-device run.

JAX fixes its device count when it initialises, so the 8-device run happens in a
subprocess started with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax import lax
    from jax.sharding import NamedSharding, PartitionSpec as P

    from autolr_jax._state_utils import current_lr
    from autolr_jax.auto import auto_lr

    assert jax.device_count() == 8, jax.devices()
    STEPS, BATCH, PROBE = 12, 32, 16
    rng = np.random.default_rng(0)
    w_true = np.array([1.5, -2.0, 0.7], np.float32)
    X = rng.normal(size=(STEPS, BATCH, 3)).astype(np.float32)
    Y = (X @ w_true + 0.5 + 0.3 * rng.normal(size=(STEPS, BATCH))).astype(np.float32)
    PX = rng.normal(size=(STEPS, PROBE, 3)).astype(np.float32)
    PY = (PX @ w_true + 0.5 + 0.3 * rng.normal(size=(STEPS, PROBE))).astype(np.float32)

    def loss_fn(params, batch):
        x, y = batch
        return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    def make_tx(axis_name=None, **kw):
        return auto_lr(optax.sgd, 0.02, loss_fn=loss_fn, factors=(4.0, 2.0, 1.0, 0.5),
                       every=2, momentum=0.9, axis_name=axis_name,
                       **{"rule": "seed", "initial_search": False, **kw})

    def trajectory(step, tx, put=lambda a: a):
        params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
        state = tx.init(params)
        lrs = []
        for t in range(STEPS):
            params, state = step(params, state, put(X[t]), put(Y[t]), put(PX[t]), put(PY[t]))
            lrs.append(float(current_lr(state)))
        return lrs, np.asarray(params["w"]).tolist(), np.asarray(state.telemetry.losses).tolist()

    # 1. Single device, full batch.
    tx1 = make_tx()
    @jax.jit
    def single_step(params, state, x, y, px, py):
        grads = jax.grad(loss_fn)(params, (x, y))
        updates, state = tx1.update(grads, state, params, batch=(px, py))
        return optax.apply_updates(params, updates), state
    single = trajectory(single_step, tx1)

    # 2. shard_map over 8 devices, each with 1/8 of the batches; losses pmean'd via axis_name.
    # Auto axes: the classic GSPMD mode, where a jitted step needs no sharding annotations.
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = NamedSharding(mesh, P("data"))
    put = lambda a: jax.device_put(a, sharding)
    out = {}
    for strategy in ("map", "vmap"):
        txd = make_tx("data", strategy=strategy)
        def dp_step(params, state, x, y, px, py, txd=txd):
            # With check_vma, the gradient of the pmean'd loss w.r.t. the replicated
            # params is the full-batch gradient, the same on every device.
            grads = jax.grad(lambda p: lax.pmean(loss_fn(p, (x, y)), "data"))(params)
            updates, state = txd.update(grads, state, params, batch=(px, py))
            return optax.apply_updates(params, updates), state
        sharded = jax.jit(jax.shard_map(
            dp_step, mesh=mesh,
            in_specs=(P(), P(), P("data"), P("data"), P("data"), P("data")),
            out_specs=(P(), P())))
        out["shard_map_" + strategy] = trajectory(sharded, txd, put)

    # 3. Without axis_name each device would pick its own lr: a clear error names axis_name,
    #    and with check_vma=False (per-device lrs allowed) the per-device losses differ.
    txn = make_tx()
    def local_losses(params, state, px, py):
        grads = jax.tree.map(jnp.ones_like, params)
        _, state = txn.update(grads, state, params, batch=(px, py))
        return state.telemetry.losses[None]
    params0 = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    for check_vma in (True, False):
        per_device = jax.jit(jax.shard_map(
            local_losses, mesh=mesh, in_specs=(P(), P(), P("data"), P("data")),
            out_specs=P("data"), check_vma=check_vma))
        try:
            losses = np.asarray(per_device(params0, txn.init(params0), put(PX[0]), put(PY[0])))
        except ValueError as e:
            out["error_without_axis_name"] = str(e)
        else:
            out["per_device_losses_differ"] = bool(np.ptp(losses[:, 0]) > 1e-3)

    # 4. Plain jit with the batch sharded across the 8 devices: nothing special needed.
    out["jit_sharded"] = trajectory(single_step, tx1, put)
    out["single"] = single
    print("RESULT" + json.dumps(out))
    """
)


def test_shard_map_matches_single_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT"))
    out = json.loads(line[len("RESULT") :])

    single_lrs, single_w, single_losses = out["single"]
    assert len(set(single_lrs)) > 2  # the lr moves, so agreement means something
    for key in ("shard_map_map", "shard_map_vmap", "jit_sharded"):
        lrs, w, losses = out[key]
        np.testing.assert_allclose(lrs, single_lrs, rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(w, single_w, rtol=1e-5, atol=1e-6, err_msg=key)
        # The scores are scale-invariant, so also check the losses are means, not sums.
        np.testing.assert_allclose(losses, single_losses, rtol=1e-5, err_msg=key)
    assert out["per_device_losses_differ"]
    assert "axis_name='data'" in out["error_without_axis_name"]
