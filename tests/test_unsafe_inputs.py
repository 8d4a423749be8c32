"""auto_lr's last unsafe inputs: a step measured to blow up, a rate schedule as the shape,
a rule of the wrong signature, an infinite tolerance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import autolr_jax as al

X = jnp.linspace(-1.0, 1.0, 8)
BATCH = (X, 3.0 * X)


def loss_fn(w, batch):
    return jnp.mean((w * batch[0] - batch[1]) ** 2)


def _run(tx, steps):
    w, state = jnp.zeros(()), None
    state = tx.init(w)

    @jax.jit
    def step(w, state):
        g = jax.grad(loss_fn)(w, BATCH)
        u, state = tx.update(g, state, w, batch=BATCH)
        return optax.apply_updates(w, u), state

    decisions, ws = [], []
    for _ in range(steps):
        w, state = step(w, state)
        decisions.append(int(state.telemetry.decision))
        ws.append(float(w))
    return np.array(ws), decisions, state


@pytest.mark.parametrize("lr", [1e30, 1e6])
@pytest.mark.parametrize("shaped", [False, True])
def test_a_start_whose_every_step_blows_up_searches_down_and_trains(lr, shaped):
    schedule = al.warmup_stable_decay(1.0, 40) if shaped else None
    ws, decisions, state = _run(al.auto_lr(optax.sgd, lr, loss_fn=loss_fn, every=2,
                                           schedule=schedule), 30)  # fmt: skip
    down = al.DECISIONS["search_down"]
    assert decisions[0] == down  # the first search found every step too large
    assert np.all(np.isfinite(ws))
    # While the search goes down, nothing is applied; then it trains to w = 3.
    n_down = decisions.index(al.DECISIONS["search"])
    assert all(d == down for d in decisions[:n_down]) and np.all(ws[:n_down] == 0.0)
    assert abs(ws[-1] - 3.0) < 1e-2


def test_a_start_that_trains_is_unchanged_by_the_down_search():
    # From 0.1 the first search finds a lower loss: the ordinary decision, no zero update.
    ws, decisions, _ = _run(al.auto_lr(optax.sgd, 0.1, loss_fn=loss_fn, every=2), 4)
    assert decisions[0] == al.DECISIONS["search"] and ws[0] != 0.0


def test_a_learning_rate_schedule_is_refused_as_the_shape():
    with pytest.raises(ValueError, match=r"pass the shape, e\.g\. warmup_stable_decay"):
        al.auto_lr(optax.sgd, 0.1, loss_fn=loss_fn, every=2,
                   schedule=optax.cosine_decay_schedule(1e-3, 20))  # fmt: skip
    # Shapes that start at 1 or warm up to it pass, long warmups included.
    for shape in (
        al.warmup_stable_decay(1.0, 100),
        al.warmup_stable_decay(1.0, 10**8, warmup_steps=5 * 10**6),
        optax.warmup_cosine_decay_schedule(0.0, 1.0, 50, 500),
    ):
        al.auto_lr(optax.sgd, 0.1, loss_fn=loss_fn, every=2, schedule=shape)


def test_a_rule_of_the_wrong_signature_is_refused_when_built():
    with pytest.raises(ValueError, match=r"rule must be callable as rule\(losses, factors"):
        al.auto_lr(optax.sgd, 0.1, loss_fn=loss_fn, every=2, rule=lambda losses, factors: 1.0)
    al.auto_lr(optax.sgd, 0.1, loss_fn=loss_fn, every=2, rule=lambda a, b, c, d: 1.0)


def test_an_infinite_tolerance_is_called_not_finite():
    with pytest.raises(ValueError, match="guard_tolerance must be >= 0.0 and finite, got inf"):
        al.auto_lr(optax.sgd, 0.1, loss_fn=loss_fn, every=2, guard_tolerance=float("inf"))


def test_the_example_logs_the_search_losses_at_the_first_probe():
    from examples.cifar10.train import _probe_records

    probe = {"multiplier": 0.25, "level": 0.01, "decision": al.DECISIONS["search"], "loss0": 2.3,
             "losses": [0.0, 0.0, 0.0], "scores": [0.0, 0.0, 0.0],
             "search_losses": [9.0, 2.1, 2.2]}  # fmt: skip
    lines = []
    records = _probe_records({0: {"probe": probe, "lr": 0.01}}, lines.append)
    assert "search losses (largest factor first) [9.0, 2.1, 2.2]" in lines[0]
    assert "[0.0, 0.0, 0.0]" not in lines[0] and records[0]["search_losses"] == [9.0, 2.1, 2.2]
    probe = {**probe, "decision": al.DECISIONS["accept"], "losses": [2.0, 1.9, 1.95]}
    _probe_records({3: {"probe": probe, "lr": 0.02}}, lines.append)
    assert "losses [2.0, 1.9, 1.95] -> accept" in lines[1]
