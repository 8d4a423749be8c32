"""The do-no-harm guard of :func:`autolr_jax.auto.auto_lr` and its memory, after the rule.

A probe's rule proposes a level; :func:`settle` then undoes the last rise if the
loss signal has grown since (``guard_on``: the probe batch's loss at successive
probes, or the mean training loss passed as ``value=`` between them), limits
rises towards a level it undid (``guard_memory``), and returns the control state
the next probe needs. Pure functions of arrays, traced inside ``auto_lr``'s update.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax
from jax import lax

from autolr_jax.auto._combine import next_learning_rate
from autolr_jax.auto._rules import DECISIONS, cap_rise, guard_level

__all__ = ["add_value", "settle"]


def _undo(level, new_lr, clamped, decision, signal, last, control, first, tolerance, backoff,
           bounds):  # fmt: skip
    """The do-no-harm guard after a probe: ``(level, clamped, decision)``, the rule's own
    unless the last probe raised the level and the loss ``signal`` has since grown over
    ``last``, what it was at that probe (then back, and decision ``"guard"``; see
    :func:`autolr_jax.auto._rules.guard_level`). Never at the first probe, which has
    nothing to compare with."""
    guarded_lr, guarded = guard_level(
        level,
        new_lr,
        signal,
        last,
        control.before_rise,
        control.rose & ~first,
        tolerance,
        backoff,
    )
    guarded = guarded & ~first
    guarded_lr, guard_clamped = next_learning_rate(guarded_lr, jnp.float32(1.0), *bounds)
    return (
        jnp.where(guarded, guarded_lr, new_lr),
        jnp.where(guarded, guard_clamped, clamped),
        jnp.where(guarded, jnp.int32(DECISIONS["guard"]), decision),
    )


def add_value(control, value, axis_name, guard_on="value"):
    """``control`` with ``value``, update's training loss, added to the interval's sum.

    ``guard_on`` is auto_lr's argument, for the error messages (``None``: the
    default, which compares ``value=`` because the update was given one)."""
    if value is None:  # absent, or value=None: no training loss
        raise TypeError(
            "auto_lr(guard_on='value'): update needs the training loss passed as a keyword: "
            "tx.update(grads, state, params, batch=batch, value=loss)"
        )
    value = jnp.asarray(value)
    if value.shape != () or not jnp.issubdtype(value.dtype, jnp.floating):
        why = (
            "guard_on='value'"
            if guard_on == "value"
            else "the default guard_on=None compares the value= an update is given; pass "
            "guard_on='probe' to leave value= to other transformations"
        )
        raise TypeError(
            f"auto_lr ({why}): value= must be the scalar floating-point training "
            f"loss, got shape {value.shape} and dtype {value.dtype}"
        )
    value = value.astype(jnp.float32)
    if axis_name is not None:
        value = lax.pmean(value, axis_name)
    return control._replace(
        value_sum=jnp.asarray(control.value_sum, jnp.float32) + value,
        value_count=optax.safe_increment(jnp.asarray(control.value_count, jnp.int32)),
    )


def _remember(level, new_lr, decision, control, memory_len):
    """The guard's memory after the guard: ``(level, decision, failed, memory)``.

    A rise is limited to halfway (in log) to the remembered failed level
    (:func:`autolr_jax.auto._rules.cap_rise`); an undo by the guard remembers the
    level it undid, for ``memory_len`` probes."""
    remembered = jnp.asarray(control.memory, jnp.int32) > 0
    failed = jnp.where(remembered, jnp.asarray(control.failed, jnp.float32), jnp.inf)
    undone = decision == DECISIONS["guard"]
    new_lr, capped = cap_rise(level, new_lr, failed)
    capped = capped & ~undone
    decision = jnp.where(capped, jnp.int32(DECISIONS["capped"]), decision)
    failed = jnp.where(undone, jnp.minimum(level, failed), failed)
    memory = jnp.where(
        undone, jnp.int32(memory_len), jnp.maximum(jnp.asarray(control.memory, jnp.int32) - 1, 0)
    )
    failed = jnp.where(memory > 0, failed, jnp.inf).astype(jnp.float32)
    return new_lr, decision, failed, memory


# fmt: off
def settle(level, new_lr, clamped, decision, loss0, first, control, *, guard, guard_on,
           tolerance, backoff, memory_len, bounds):
    """After the rule's proposal ``new_lr`` for ``level``: ``(level, clamped, decision, control)``.

    The guard (when on) compares ``guard_on``'s signal with the last probe's and
    may undo the last rise (:func:`_undo`); the memory (``memory_len`` > 0) caps
    rises towards a level it undid (:func:`_remember`). ``control`` comes back
    with this probe's level, loss, rise and signal, ready for the next probe;
    ``bounds`` is ``(min_lr, max_lr, floor, ceiling)``.
    """
    # fmt: on
    value_sum = jnp.asarray(control.value_sum, jnp.float32)
    value_count = jnp.asarray(control.value_count, jnp.int32)
    last_value = jnp.asarray(control.last_value, jnp.float32)
    if guard_on == "value":
        # The mean training loss of the interval since the last probe against that
        # of the interval before it: many batches each, so not the noise of one.
        signal = value_sum / jnp.maximum(value_count, 1).astype(jnp.float32)
        last_signal = last_value
        value_sum, value_count, last_value = jnp.float32(0), jnp.int32(0), signal
    else:
        signal, last_signal = loss0, control.last_loss0
        # No interval mean to compare with should a later update pass value=.
        last_value = jnp.float32(jnp.inf)
    if guard:
        new_lr, clamped, decision = _undo(
            level, new_lr, clamped, decision, signal, last_signal, control, first,
            tolerance, backoff, bounds,
        )  # fmt: skip
    failed = jnp.asarray(control.failed, jnp.float32)
    memory = jnp.asarray(control.memory, jnp.int32)
    if memory_len:
        new_lr, decision, failed, memory = _remember(level, new_lr, decision, control, memory_len)
    rose = new_lr > level
    new_control = control._replace(
        level=new_lr,
        last_loss0=loss0,
        before_rise=jnp.where(rose, level, jnp.asarray(control.before_rise, jnp.float32)),
        rose=rose,
        peaked=jnp.asarray(control.peaked, jnp.bool_),
        failed=failed,
        memory=memory,
        value_sum=value_sum,
        value_count=value_count,
        last_value=last_value,
    )
    return new_lr, clamped, decision, new_control
