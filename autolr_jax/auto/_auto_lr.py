"""The automated learning-rate scheduler: candidates of the update inside jit, a rule."""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from autolr_jax._candidates import evaluate_candidates, resolve_probe_strategy
from autolr_jax._state_utils import with_learning_rate
from autolr_jax.auto._combine import (
    clamp_level,
    next_learning_rate,
    score_candidates,
    weighted_geometric_mean,
)
from autolr_jax.auto._guard import add_value, settle
from autolr_jax.auto._probe import (
    apply_scaled,
    as_scalar_loss,
    check_not_varying,
    check_stacked,
    lookahead_loss,
)
from autolr_jax.auto._rules import (
    DECISIONS,
    call_rule,
    search_factor,
)
from autolr_jax.auto._scores import ScoreFn
from autolr_jax.auto._settings import check_probe_optimizer, check_settings
from autolr_jax.auto._twin import averages_gradients

__all__ = ["AutoLRControl", "AutoLRState", "AutoLRTelemetry", "auto_lr"]

# An absent keyword argument (None may be a user's value).
MISSING = object()


class AutoLRTelemetry(NamedTuple):
    """What the last probe of :func:`auto_lr` saw, for logging.

    Before the first probe the losses and scores are zeros, the multiplier is 1,
    ``num_probes`` is 0 and ``clamped`` is False.

    Attributes:
      losses: float32 ``(N,)``, the candidate losses ``loss_fn(params + f_i * u, batch)``
        in the order of ``factors`` (after the look-ahead updates with
        ``lookahead > 1``; averaged over ``axis_name`` when given).
      scores: float32 ``(N,)``, the scores used as weights (0 for non-finite losses),
        before their exact power-of-two normalisation.
      multiplier: float32 scalar, the weighted geometric mean of the factors that
        multiplied the learning rate (before clipping to ``[min_lr, max_lr]``).
      num_probes: int32 scalar, the number of probes so far (saturating at 2**31 - 1).
      clamped: bool scalar, whether the last probe kept the learning rate at the
        floor (or the ceiling) of :func:`auto_lr`'s level range instead of
        ``clip(lr * multiplier, min_lr, max_lr)``, or found the learning rate it
        multiplies outside that range. A run that stays clamped has stopped
        learning (e.g. its loss is NaN at every candidate); set
        ``state.hyperparams['learning_rate']`` to restart it.
      decision: int32 scalar, what the rule decided at the last probe, a code of
        :data:`autolr_jax.auto.DECISIONS` (``"seed"``, ``"accept"``,
        ``"backoff"``, ``"stay"``, ``"move"``, ``"guard"``, ``"search"``, ...); 0
        before the first probe.
      loss0: float32 scalar, the loss at the current parameters on the probe
        batch at the last probe, ``loss_fn(params, batch)``; 0 where nothing
        needs it (``rule="seed"`` without guard or search).
      level: float32 scalar, the level the last probe set (the learning rate
        before the ``schedule`` shape; without a schedule, the learning rate).
      search_losses: float32 ``(G,)``, the losses of the first probe's wide
        search (``initial_search=True``) in the order of its grid, largest
        factor first; shape ``(1,)`` (a zero) without the search, since Orbax
        cannot save zero-size arrays. At that probe
        ``losses`` and ``scores`` stay zeros.
    """

    losses: jax.Array
    scores: jax.Array
    multiplier: jax.Array
    num_probes: jax.Array
    clamped: jax.Array
    decision: jax.Array
    loss0: jax.Array
    level: jax.Array
    search_losses: jax.Array


class AutoLRControl(NamedTuple):
    """What :func:`auto_lr` remembers between probes besides the learning rate.

    Attributes:
      level: float32, the automated level; the applied learning rate is ``level
        * schedule(count)`` (with ``schedule=None`` the applied learning rate
        *is* the level, and ``state.hyperparams['learning_rate']`` is what the
        probe multiplies; this field then only mirrors it). With a schedule,
        assign ``state.control.level`` (``state._replace(control=...)``) to
        restart the level.
      last_loss0: float32, the loss at the parameters of the last probe (0
        before the first probe or when not computed).
      before_rise: float32, the level before the last probe that raised it.
      rose: bool, whether the last probe raised the level.
      peaked: bool, whether ``schedule`` has reached 1 (its peak) at some update:
        with ``probe_during_decay=False`` probing stops once the shape falls
        below 1 after that.
      failed: float32, the lowest level the guard undid within the last
        ``guard_memory`` probes (``inf`` when none is remembered, and always
        with ``guard_memory=0``).
      memory: int32, how many more probes ``failed`` is remembered for.
      value_sum: float32, where the guard compares ``value=``: the sum of the ``value=``
        passed to the updates since the last probe (0 otherwise).
      value_count: int32, how many updates that sum holds.
      last_value: float32, where the guard compares ``value=``: the mean ``value`` of the
        interval that ended at the last probe, what the guard compares the next
        interval's mean with (inf, no baseline, before the first probe and after a
        probe whose guard compared the probe batches' losses).
    """

    level: jax.Array
    last_loss0: jax.Array
    before_rise: jax.Array
    rose: jax.Array
    peaked: jax.Array
    failed: jax.Array
    memory: jax.Array
    value_sum: jax.Array
    value_count: jax.Array
    last_value: jax.Array


class AutoLRState(NamedTuple):
    """State of :func:`auto_lr`.

    Attributes:
      inject_state: the ``optax.inject_hyperparams`` state of the wrapped
        optimizer. Its ``hyperparams['learning_rate']`` (float32) is the learning
        rate used by the last update (before the first update: the initial one);
        its ``count`` (int32) is the number of updates so far.
      telemetry: an :class:`AutoLRTelemetry` describing the last probe.
      control: an :class:`AutoLRControl`: the level, and what the do-no-harm
        guard and ``probe_during_decay`` need.
      probe_state: with a ``probe_optimizer`` of its own, the state of that
        optimizer (updated with every gradient, like the wrapped one's);
        ``None`` without one, and for the built-in twin of the Adam family (it
        reads the wrapped optimizer's state).
    """

    inject_state: Any
    telemetry: AutoLRTelemetry
    control: AutoLRControl
    probe_state: Any = None

    @property
    def hyperparams(self) -> dict[str, jax.Array]:
        """The injected hyperparameters (``{'learning_rate': ...}``), as in ``optax``.

        Like ``optax.inject_hyperparams``, assigning
        ``state.hyperparams['learning_rate'] = x`` sets the learning rate that the
        next update uses (and that the next probe multiplies).
        """
        return self.inject_state.hyperparams


_F32, _I32, _BOOL = jnp.float32, jnp.int32, jnp.bool_
_TELEMETRY_DTYPES = AutoLRTelemetry(_F32, _F32, _F32, _I32, _BOOL, _I32, _F32, _F32, _F32)
_CONTROL_DTYPES = AutoLRControl(_F32, _F32, _F32, _BOOL, _BOOL, _F32, _I32, _F32, _I32, _F32)


def _cast(state: NamedTuple, dtypes: NamedTuple) -> NamedTuple:
    """``state`` with each field an array of the dtype in the same field of ``dtypes``."""
    return type(state)(*(jnp.asarray(x, d) for x, d in zip(state, dtypes, strict=True)))


def _shape_at(schedule: optax.Schedule, count: Any) -> jax.Array:
    """``schedule(count)`` as float32, clipped to [0, 1] (NaN: 0, no update)."""
    value = jnp.asarray(schedule(jnp.asarray(count, jnp.int32)), jnp.float32).reshape(())
    return jnp.where(jnp.isnan(value), 0.0, jnp.clip(value, 0.0, 1.0)).astype(jnp.float32)


def _slope(grads: Any, updates: Any) -> jax.Array:
    """``<g, u>`` in float32 over every leaf: the loss's slope along ``u`` (< 0: descent)."""
    parts = [
        jnp.vdot(jnp.asarray(g, jnp.float32).ravel(), jnp.asarray(u, jnp.float32).ravel())
        for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(updates), strict=True)
    ]
    return sum(parts, jnp.zeros((), jnp.float32))


def _matched(step: Any, applied: Any) -> Any:
    """``step`` rescaled to the global norm of ``applied``; unchanged where either norm is 0.

    The twin says which way a one-step probe should look; the applied update says how
    far the run actually moves per update (with momentum, the noise in the gradients
    averages out of it, so in the noise-dominated regime it is shorter than the twin's
    step, which follows one batch's gradient).
    """
    norm_step, norm_applied = optax.tree.norm(step), optax.tree.norm(applied)
    ok = (norm_step > 0) & jnp.isfinite(norm_step) & jnp.isfinite(norm_applied)
    scale = jnp.where(ok, norm_applied / jnp.where(ok, norm_step, 1.0), 1.0)
    return jax.tree.map(lambda x: (x * scale).astype(x.dtype), step)


def _propose(settings, score, candidate_losses, loss0, slope, first, search_losses):
    """The rule's proposal at a probe: ``(losses, scores, search_losses, multiplier, decision)``.

    ``candidate_losses(factors)`` gives the ``(N,)`` losses of the candidates
    ``params + f * u``. Where ``first`` (the first probe with ``initial_search``),
    the wide grid is evaluated and :func:`search_factor` decides, else the
    ``factors`` and the rule (or Algorithm 1's scores and weighted geometric mean).
    The two candidate sets have different shapes: both branches of a ``lax.cond``,
    compiled once. Module level so that nothing but its arguments decides it.
    """
    factors, n = settings.factors, len(settings.factors)

    def regular(_):
        losses = candidate_losses(factors)
        if settings.rule_fn is None:
            scores = score_candidates(settings.score_fn, losses, score)
            multiplier, ok = weighted_geometric_mean(scores, factors)
            decision = jnp.where(
                ok, jnp.int32(DECISIONS["seed"]), jnp.int32(DECISIONS["seed_fallback"])
            )
        else:
            scores = jnp.zeros((n,), jnp.float32)
            multiplier, decision = call_rule(
                settings.rule_fn,
                losses.astype(jnp.float32),
                jnp.asarray(factors, jnp.float32),
                loss0,
                slope,
                min(factors),
            )
        return (
            losses.astype(jnp.float32),
            scores.astype(jnp.float32),
            jnp.asarray(search_losses, jnp.float32),
            multiplier,
            decision,
        )

    def search(_):
        grid_losses = candidate_losses(settings.grid).astype(jnp.float32)
        multiplier, decision = search_factor(
            grid_losses, settings.grid, loss0, settings.search_safety
        )
        zeros = jnp.zeros((n,), jnp.float32)
        return zeros, zeros, grid_losses, multiplier, decision

    if not settings.initial_search:
        return regular(None)
    return lax.cond(first, search, regular, None)


def auto_lr(
    optimizer: Callable[..., optax.GradientTransformation],
    /,
    learning_rate: float,
    *,
    loss_fn: Callable[..., Any] | None = None,
    factors: Sequence[float] = (2.0, 1.0, 0.5),
    every: int | None = None,
    min_lr: float = 0.0,
    max_lr: float = float("inf"),
    has_aux: bool = False,
    score: str | ScoreFn = "minmax_exp",
    strategy: str = "auto",
    chunk_size: int | None = None,
    axis_name: Hashable | None = None,
    lookahead: int = 1,
    rule: str | Callable[..., Any] = "armijo",
    schedule: optax.Schedule | None = None,
    probe_during_decay: bool = True,
    initial_search: bool = True,
    search_safety: float = 4.0,
    guard: bool | None = None,
    guard_tolerance: float = 0.05,
    guard_memory: int | None = None,
    guard_on: str | None = None,
    probe_optimizer: str | Callable[..., optax.GradientTransformation] | None = "auto",
    **inner_kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
    """Wraps an Optax optimizer so that its learning rate is set by probing factors of it.

    Every ``every`` updates (update indices 0, ``every``, ``2 * every``, ...) the
    update is a *probe*. By default (``rule="armijo"``, ``initial_search=True``)
    the first probe tries the update scaled by ``10**(k/2)``, ``|k| <= 8``, and
    sets the level a safety factor below the best of them (the scale, from any
    start); each later probe tries ``factors`` and takes the largest whose
    candidate decreases the loss on the probe batch sufficiently (Armijo's
    condition, :func:`armijo_rule`), backing off to the smallest factor when
    none does, with a guard that undoes a rise that made the loss worse. Pass
    the training batch as ``batch=``: the condition is about the batch the
    gradient came from. Give the run's budget as ``schedule`` (e.g.
    :func:`warmup_stable_decay`) for the annealing no probe does.

    ``rule="seed", initial_search=False`` is Algorithm 1 of the seed paper, the
    default of earlier releases. With the current learning rate ``lr``, the
    incoming gradient ``g`` and the wrapped optimizer's update ``u`` computed at
    ``lr``:

    1. the candidates are ``params + f_i * u`` for each factor ``f_i`` (for plain
       SGD, ``params - f_i * lr * g``);
    2. ``L_i = loss_fn(params + f_i * u, batch)``, all candidates evaluated in the
       same jitted computation, forward only (no candidate gradients, no copies
       of the model in Python);
    3. the losses are scored by ``score`` (default: min-max normalised,
       ``s_i = exp(-x_i)``, see :func:`minmax_exp_score`); a non-finite loss
       scores 0 (a custom score that gives every finite loss 0, e.g. an
       underflowed ``exp(-L)``, is retried on the losses shifted to a minimum of
       0, see :func:`autolr_jax.auto._combine.score_candidates`);
    4. ``m = exp(sum(s_i * log f_i) / sum(s_i))``, the score-weighted geometric
       mean of the factors, with the scores first scaled by the power of two
       that brings their maximum into ``[1, 2)`` (exact, and no change for the
       built-in scores, whose best candidate scores 1; it keeps huge and tiny
       custom scores from overflowing), or the smallest factor if every loss is
       non-finite or no score is positive; then ``lr <- clip(lr * m, min_lr,
       max_lr)``;
    5. the update returned by that same call uses the new ``lr``: the wrapped
       optimizer's update is *recomputed* at the new ``lr`` from the original
       inner state, so the result is exactly ``optimizer(lr_new).update(...)``
       for every optimizer (no assumption that the update is linear in ``lr``).
       The inner state advances once per call, as if the optimizer had been run
       at the new ``lr``.

    With ``lookahead=k > 1`` a candidate is scored after ``k`` updates instead
    of one, a longer horizon against the short-horizon bias of a one-step probe
    (the factor that lowers the loss most after one step is not the one that
    trains best). ``batch`` is then ``k`` batches stacked on a leading axis
    (every leaf has leading dimension ``k``): candidate ``i`` starts from
    ``params + u(lr * f_i)`` with the wrapped optimizer's state after that
    update, takes ``k - 1`` more updates of the wrapped optimizer at
    ``lr * f_i`` with the gradients of ``loss_fn`` on ``batch[0], ...,
    batch[k - 2]``, and is scored by ``loss_fn`` on ``batch[k - 1]``. Each probe
    then costs ``N * (k - 1)`` forward-backward passes and ``N`` forwards. The
    look-ahead updates use the wrapped optimizer only (transformations before
    ``auto_lr`` in a chain, such as weight decay or clipping, are not applied to
    them) and the same extra ``update`` keyword arguments.

    The learning rate a probe multiplies, and the one it sets, are kept in
    ``[floor, ceiling]`` where every candidate's learning rate ``lr * f_i`` is
    a normal, finite float32: ``floor = 2**-126 / min(1, min f)`` (about
    ``2.4e-38`` for the default factors) and ``ceiling = float32 max / max(1,
    max f)``. Without the floor a loss that is NaN at every candidate would
    halve the rate until float32 underflows to exactly 0, from which no
    multiplier recovers; at the floor ``state.telemetry.clamped`` is True.
    The floor is far below any learning rate that trains, so it changes no run
    that does not come near it.

    Between probes it is the wrapped optimizer's plain update at the current
    ``lr``. Probe and non-probe updates are branches of one ``lax.cond``, so a
    jitted training step compiles once.

    The probe batch is whatever is passed as ``batch=`` to ``update`` (it may be
    smaller than, or different from, the training batch). Extra keyword
    arguments of ``update`` other than ``batch`` are forwarded to the wrapped
    optimizer. Inside ``optax.chain`` (e.g. after ``optax.clip_by_global_norm``)
    ``batch=`` is forwarded by the chain, and ``u`` is auto_lr's own output.

    The learning rate lives in an ``optax.inject_hyperparams`` state (float32,
    also for bfloat16 parameters or with ``jax_enable_x64``):
    ``state.hyperparams['learning_rate']`` and :func:`autolr_jax.current_lr`
    give the learning rate used by the last update. Only ``learning_rate`` is
    injected; ``inner_kwargs`` are passed to the factory unchanged, as Python
    values. Updates keep the dtype of the incoming updates (bfloat16 stays
    bfloat16, unlike ``optax.inject_hyperparams``, whose float32 learning rate
    promotes them); the learning rate itself stays float32. The last
    probe's losses, scores and multiplier are in ``state.telemetry``
    (:class:`AutoLRTelemetry`).

    Data parallelism: under ``jit`` with sharded arrays nothing is needed. Under
    ``shard_map`` or ``pmap`` (each device seeing its shard of the batch), pass
    ``axis_name``: the candidate losses are averaged with ``lax.pmean`` so every
    device picks the same learning rate (for a loss that is a mean over equal
    shards, the result equals a single-device run on the whole batch). Without
    it, devices may drift apart.

    Models with state (Flax NNX with BatchNorm): ``loss_fn`` must be a pure
    function of ``(params, batch)``, so the probe cannot change the model's
    running statistics. Rebuild the model inside ``loss_fn`` from the graph
    definition, the candidate parameters and the model's other state passed in
    the batch (``nnx.Optimizer.update`` hands its keyword arguments over as pure
    arrays, so ``nnx.merge`` builds a fresh copy); whatever the forward does to
    the copy's statistics is discarded with it. In train mode the copy normalises
    with the probe batch's own statistics, as the training forward does::

        graphdef, _, _ = nnx.split(model, nnx.Param, ...)

        def loss_fn(params, batch):
            x, y, rest = batch  # rest: the model's batch stats (and RNG state)
            copy = nnx.merge(graphdef, params, rest)
            return optax.softmax_cross_entropy_with_integer_labels(copy(x), y).mean()

        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        rest = nnx.state(model, nnx.Not(nnx.Param))
        optimizer.update(model, grads, batch=(x, y, rest))

    Args:
      optimizer: an Optax optimizer *factory* with a ``learning_rate`` argument,
        e.g. ``optax.sgd``, ``optax.adam``, ``optax.adamw``, ``optax.lion``.
        Positional only.
      learning_rate: the initial learning rate, a number > 0 in ``[floor,
        ceiling]`` (see above: ``learning_rate * f_i`` must be a normal, finite
        float32 for every factor).
      loss_fn: ``loss_fn(params, batch) -> scalar`` (or ``(scalar, aux)`` with
        ``has_aux=True``); pure and traceable. ``params`` has the structure the
        optimizer sees.
      factors: the learning-rate factors to probe, a 1-D sequence of distinct
        numbers > 0 that are finite and normal in float32
        (the seed's sets: ``(2, 1, 0.5)``, ``(4, 2, 1, 0.5, 0.125)``, ...).
        Distinct because a repeat would silently double a factor's weight.
        Their geometric mean is the multiplier when every candidate scores the
        same, i.e. the drift of a probe that learns nothing: 1 for sets symmetric
        in log space such as ``(2, 1, 0.5)``, but 0.87 for the seed's
        ``(4, 2, 1, 0.5, 0.125)`` (and, since the min-max score keeps every finite
        candidate's weight within a factor e of the best's, much of it survives
        real scores).
      every: the probe interval, in update calls (e.g. steps per epoch); an
        integer >= 1. Required.
      min_lr: lower bound of the learning rate, >= 0 and <= ``ceiling``.
      max_lr: upper bound of the learning rate, > ``min_lr`` and >= ``floor``
        (may be ``inf``).
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``; ``aux`` is ignored.
      score: ``"minmax_exp"`` (default, :func:`minmax_exp_score`), ``"softmax"``
        (:func:`softmax_score` with temperature 1), ``"rank_exp"``
        (:func:`rank_exp_score`), ``"zscore_exp"`` (:func:`zscore_exp_score`, the
        published code's), or a callable
        ``score(losses, finite) -> scores`` (float ``(N,)``, bool ``(N,)`` ->
        nonnegative ``(N,)``; see :mod:`autolr_jax.auto._scores` for the
        contract), e.g. ``softmax_score(temperature=0.5)``.
      strategy: how the candidates are evaluated: ``"vmap"`` (``jax.vmap`` over
        the factors), ``"map"`` (``lax.map``: one forward after another inside
        one computation, peak memory of one forward), or ``"auto"``
        (:func:`default_probe_strategy` of the backend at trace time; ``"map"``
        when ``chunk_size`` is given). With ``"vmap"`` the first probe's search
        vmaps its grid ``len(factors)`` points at a time, so its transient memory
        is bounded by a regular probe's, whatever the grid's size.
      chunk_size: with ``"map"``, the number of candidates vmapped at a time
        (``lax.map(..., batch_size=chunk_size)``); an integer >= 1 or ``None``.
        Not allowed with ``"vmap"``.
      axis_name: the mapped axis name (or names) of ``shard_map``/``pmap`` over
        which to average candidate losses (and, with ``lookahead > 1``, the
        look-ahead gradients), or ``None``.
      lookahead: the number of updates each candidate takes before it is
        scored, an integer >= 1; 1 (the default) is the one-step probe of
        Algorithm 1. With ``k > 1``, ``batch`` must stack ``k`` batches on a
        leading axis (see above).
      rule: what sets the level at a probe: ``"armijo"`` (the default,
        :func:`armijo_rule`: the largest factor meeting sufficient decrease
        ``L(f) <= L(0) - c f |<g, u>|`` on the probe batch, else the smallest
        factor; needs ``lookahead=1``; meant for the batch the gradient came
        from: pass the training batch as ``batch=``), ``"seed"`` (steps 3-4
        above, Algorithm 1, bit-identical to earlier releases, whose default it
        was; the only built-in rule for ``lookahead > 1``), ``"parabola"`` (:func:`parabola_rule`: a
        quadratic in ``log f`` fitted to the losses; to its minimum only when the
        predicted gain exceeds the fit's noise), or a callable ``rule(losses,
        factors, loss0, slope) -> multiplier`` or ``(multiplier, decision)``
        (float32 ``(N,)``, float32 ``(N,)``, the loss at the current parameters,
        ``<g, u>``; a non-finite or non-positive multiplier becomes the smallest
        factor). The decision is in ``state.telemetry.decision``
        (:data:`autolr_jax.auto.DECISIONS`).
      schedule: ``None`` (default), or a budget *shape*: an Optax schedule of the
        update count with values in ``[0, 1]`` (checked at 0, clipped inside),
        e.g. ``warmup_stable_decay(1.0, total_steps)``. The learning rate applied
        at update ``t`` (the first is ``t = 0``) is ``level * schedule(t)``, and
        that product is what :func:`autolr_jax.current_lr` returns; the probes
        set the level (``state.control.level``) and evaluate their candidates at
        the level, not at the shaped rate. The annealing a probe never does
        comes from the shape.
      probe_during_decay: with a ``schedule``, whether probes continue once the
        shape has reached 1 and fallen below it again (the cooldown). True (the
        default) keeps probing; False holds the level through the cooldown.
      initial_search: whether (default True) the first probe evaluates a wide geometric grid of
        factors, ``10**(k / 2)`` for ``k = -8 .. 8`` (four decades either side of
        ``learning_rate``, 17 candidates, once) instead of ``factors``. The level
        becomes the grid factor of lowest finite loss that is below the loss at
        the current parameters, divided by ``search_safety`` (a one-step optimum
        sits near the edge of stability); if no candidate is below it, the level
        is kept. The two candidate sets are the two branches of a ``lax.cond``:
        one compilation.
      search_safety: the step back from the search's best factor, in ``[1, 1e4]``.
      guard: the do-no-harm guard: if the last probe raised the level and the
        loss has since got worse by more than ``guard_tolerance`` (relative; which
        loss: ``guard_on``), the level returns to the one before the rise (or
        lower, if the rule asks for lower); a non-finite loss always backs off.
        ``None`` (default): on for every rule but ``"seed"`` (which stays
        bit-identical). For Algorithm 1 exactly
        as earlier releases computed it: ``rule="seed", initial_search=False``.
      guard_tolerance: the relative loss increase the guard tolerates, >= 0.
      guard_memory: how many probes the guard remembers a level it undid, an
        int >= 0 (needs the guard). While it does, a rise may go at most halfway
        in log from the level to the lowest remembered failed level
        (decision ``"capped"``), so the probes bisect towards the edge instead of
        re-trying the rise that failed every other probe. ``0``: no memory.
        ``None`` (default): 5 where the guard is on, else 0. Until the guard
        undoes a rise the memory changes nothing.
      guard_on: what the guard compares. ``"probe"``: the loss at the current
        parameters on this probe's batch against the same at the last probe, two
        different batches, so a rise is judged within one batch's noise
        (``guard_tolerance`` has to cover it). ``"value"``: the mean of the
        training losses passed as ``update(..., value=loss)`` over the updates
        since the last probe against the mean over the interval before it (the
        one at the level before the rise): like with like, many batches each, so
        the guard undoes a rise only when the training loss got worse on
        average. ``update`` then needs ``value=``, a float scalar (averaged
        over ``axis_name`` when given); it is also forwarded to the wrapped
        optimizer, like every extra keyword. ``None`` (default): ``"value"``
        where ``update`` is called with a ``value=`` that is not None (decided
        when it is traced; ``value=`` is the keyword Optax's line searches and
        ``reduce_on_plateau`` take), ``"probe"`` where it is not.
      probe_optimizer: what step the probes scale. ``"auto"`` (default): the
        wrapped optimizer's step without momentum, at the scale of its steady
        step (:func:`momentum_free_twin`), where its momentum is known and on
        (``optax.adam`` and its ``b1`` family; ``optax.sgd`` and
        ``optax.rmsprop`` with ``momentum=``) and ``rule`` is not ``"seed"``;
        otherwise the wrapped optimizer's own update (so plain SGD, RMSprop
        without momentum, a lambda or ``optax.chain``, and Algorithm 1 are
        unchanged). ``"matched"``: the twin's step rescaled, at each probe, to
        the global norm of the update the wrapped optimizer applies at the same
        level: the twin's direction, the run's step length. ``"momentum_free"``:
        the twin, a ``ValueError`` where none is known. ``None``: always the
        wrapped optimizer's own update. Or an Optax
        optimizer factory with a ``learning_rate`` argument whose update the
        probes scale instead, e.g. ``functools.partial(optax.adam, b1=0.0)``.
        Why: a one-step probe along a momentum update judges a step that is
        mostly the average of past gradients, and the level it accepts grows with
        the momentum while the best rate does not, so, as Vaswani et al.'s line search for
        adaptive methods does, the trial steps leave the momentum out. Heavy-ball
        momentum sums the gradients, so its steady step is ``1 / (1 - m)`` times
        the rate's and the twin of ``optax.sgd(lr, momentum=m)`` is
        ``optax.sgd(lr / (1 - m))``. A factory's twin keeps its own state,
        updated with every gradient; the built-in twin of the Adam family reads
        the wrapped optimizer's state instead (the same statistics but the first
        moment, which it does not use). The level it finds is applied to the
        wrapped optimizer. A factory needs ``lookahead=1``; ``"auto"`` with
        ``lookahead > 1`` scales the update. ``AutoLRState.probe_state`` is None
        where the probes scale the update or the twin reads the wrapped state.
      **inner_kwargs: passed to ``optimizer``, e.g. ``momentum=0.9``,
        ``nesterov=True``, ``weight_decay=1e-4``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update(updates,
      state, params, *, batch, **extra)`` requires ``params`` and ``batch``; its
      state is an :class:`AutoLRState`.

    Raises:
      ValueError: at construction, for any invalid argument (the message names it).
      TypeError: at trace time, when ``update`` is called without ``batch=`` or
        ``params`` (or, with ``guard_on="value"``, without ``value=``), or with a
        ``value=`` that is not a float scalar where the guard compares it.

    Example:
      >>> import jax, jax.numpy as jnp, optax, autolr_jax
      >>> from autolr_jax.auto import auto_lr
      >>> x = jnp.linspace(-1.0, 1.0, 8)
      >>> batch = (x, 3.0 * x)
      >>> def loss_fn(w, batch):
      ...     return jnp.mean((w * batch[0] - batch[1]) ** 2)
      >>> tx = auto_lr(optax.sgd, 0.1, loss_fn=loss_fn, every=2)
      >>> w = jnp.zeros(())
      >>> state = tx.init(w)
      >>> @jax.jit
      ... def step(w, state):
      ...     grads = jax.grad(loss_fn)(w, batch)
      ...     updates, state = tx.update(grads, state, w, batch=batch)
      ...     return optax.apply_updates(w, updates), state
      >>> for _ in range(4):
      ...     w, state = step(w, state)
      >>> float(autolr_jax.current_lr(state)), int(state.telemetry.num_probes)
      (0.5, 2)
      >>> [name for name, code in autolr_jax.DECISIONS.items()
      ...  if code == int(state.telemetry.decision)]  # the largest factor, 2, met Armijo
      ['accept']

      Algorithm 1 of the seed paper (the default of earlier releases):

      >>> seed = auto_lr(optax.sgd, 0.1, loss_fn=loss_fn, every=2, rule="seed",
      ...                initial_search=False)
      >>> grads = jax.grad(loss_fn)(jnp.zeros(()), batch)
      >>> _, s = jax.jit(seed.update)(grads, seed.init(w), jnp.zeros(()), batch=batch)
      >>> round(float(autolr_jax.current_lr(s)), 4)  # 0.1 x the weighted mean of (2, 1, 0.5)
      0.1261

      With a budget shape (the default rule and first-probe search), from 1e-4:

      >>> shape = autolr_jax.warmup_stable_decay(1.0, total_steps=4)
      >>> tx = auto_lr(optax.sgd, 1e-4, loss_fn=loss_fn, every=2, schedule=shape)
      >>> @jax.jit
      ... def step(w, state):
      ...     grads = jax.grad(loss_fn)(w, batch)
      ...     updates, state = tx.update(grads, state, w, batch=batch)
      ...     return optax.apply_updates(w, updates), state
      >>> w = jnp.zeros(())
      >>> state = tx.init(w)
      >>> w, state = step(w, state)
      >>> int(state.telemetry.decision) == autolr_jax.DECISIONS["search"]
      True
      >>> round(float(autolr_jax.current_lr(state)), 4)  # from 1e-4: the best, 1.0, over 4
      0.25

    References:
      Kim and Yu, "Automated learning rate scheduling with in-training
      information", Algorithm 1 (Automated learning rate scheduler).

      Vaswani et al., "Painless Stochastic Gradient: Interpolation, Line-Search,
      and Convergence Rates", NeurIPS 2019 (Armijo on the training batch).

      Vaswani et al., "Adaptive Gradient Methods Converge Faster with
      Over-Parameterization", 2020, code ``IssamLaradji/ada_sls`` (the line
      search's trial steps without momentum: ``probe_optimizer``).

      Hägele et al., "Scaling Laws and Compute-Optimal Training Beyond Fixed
      Training Durations", arXiv:2405.18392, 2024 (warmup-stable-decay).
    """
    # fmt: off
    settings = check_settings(
        optimizer, learning_rate, loss_fn, factors, every, min_lr, max_lr, has_aux, score,
        strategy, chunk_size, axis_name, lookahead, rule, schedule, probe_during_decay,
        initial_search, search_safety, guard, guard_tolerance, guard_memory, guard_on,
        inner_kwargs,
    )
    (
        learning_rate, factors, floor, ceiling, every, min_lr, max_lr, has_aux, score_fn,
        chunk_size, lookahead, rule_name, rule_fn, schedule, guard, initial_search,
        probe_during_decay, search_safety, guard_tolerance, guard_memory, guard_on, grid,
        needs_loss0, backoff,
    ) = settings
    # fmt: on
    n = len(factors)
    # The probe twin is built at the rate it is asked for (a traced scalar is fine for an
    # Optax factory); its state then holds no learning rate, so current_lr stays unambiguous.
    match_length = isinstance(probe_optimizer, str) and probe_optimizer == "matched"
    # A built-in twin of the Adam family reads the wrapped optimizer's statistics: its own
    # state would repeat them (the same gradients, the same b2) at the cost of an update.
    shares_state = isinstance(probe_optimizer, str) and averages_gradients(
        optimizer, **inner_kwargs
    )
    twin = check_probe_optimizer(
        probe_optimizer,
        learning_rate,
        lookahead,
        optimizer=optimizer,
        inner_kwargs=inner_kwargs,
        rule=rule,
    )

    def factory(learning_rate):
        return optimizer(learning_rate=learning_rate, **inner_kwargs)

    inner = optax.inject_hyperparams(factory, hyperparam_dtype=jnp.float32)(
        learning_rate=learning_rate
    )

    def init_fn(params):
        telemetry = AutoLRTelemetry(
            losses=jnp.zeros((n,), jnp.float32),
            scores=jnp.zeros((n,), jnp.float32),
            multiplier=jnp.ones((), jnp.float32),
            num_probes=jnp.zeros((), jnp.int32),
            clamped=jnp.zeros((), jnp.bool_),
            decision=jnp.zeros((), jnp.int32),
            loss0=jnp.zeros((), jnp.float32),
            level=jnp.asarray(learning_rate, jnp.float32),
            # One entry without a search: Orbax cannot save zero-size arrays.
            search_losses=jnp.zeros((max(len(grid), 1),), jnp.float32),
        )
        control = AutoLRControl(
            level=jnp.asarray(learning_rate, jnp.float32),
            last_loss0=jnp.zeros((), jnp.float32),
            before_rise=jnp.asarray(learning_rate, jnp.float32),
            rose=jnp.zeros((), jnp.bool_),
            peaked=jnp.zeros((), jnp.bool_),
            failed=jnp.full((), jnp.inf, jnp.float32),
            memory=jnp.zeros((), jnp.int32),
            value_sum=jnp.zeros((), jnp.float32),
            value_count=jnp.zeros((), jnp.int32),
            # inf: no interval mean to compare with yet, so the guard does not undo (inf,
            # not NaN, as `failed` does: jax_debug_nans users get no false alarm).
            last_value=jnp.full((), jnp.inf, jnp.float32),
        )
        inject_state = inner.init(params)
        if schedule is not None:
            # The first update's learning rate: level * shape(0).
            inject_state = with_learning_rate(
                inject_state, jnp.float32(learning_rate) * _shape_at(schedule, 0)
            )
        probe_state = None
        if twin is not None and not shares_state:
            probe_state = twin(learning_rate=learning_rate).init(params)
        return AutoLRState(
            inject_state=inject_state, telemetry=telemetry, control=control, probe_state=probe_state
        )

    def scalar_loss(params, batch):
        return as_scalar_loss(loss_fn(params, batch), has_aux)

    def update_fn(updates, state, params=None, *, batch=MISSING, **extra_args):
        if batch is MISSING:
            raise TypeError(
                "auto_lr: update needs the probe batch passed as a keyword: "
                "tx.update(grads, state, params, batch=batch) (inside optax.chain and "
                "nnx.Optimizer.update, pass batch=batch to their update)"
            )
        if params is None:
            raise TypeError(
                "auto_lr: update needs params, to build the candidates params + f * u: "
                "tx.update(grads, state, params, batch=batch)"
            )
        inject_state = state.inject_state
        control = state.control
        tel = state.telemetry
        # guard_on=None: the training loss where the caller passes it (fixed per trace).
        value = extra_args.get("value")
        signal_on = guard_on or ("value" if guard and value is not None else "probe")
        if signal_on == "value":
            control = add_value(control, value, axis_name, guard_on)
        count = jnp.asarray(inject_state.count, jnp.int32)
        if schedule is None:
            # The injected learning rate is the level (users may assign it).
            lr = jnp.asarray(inject_state.hyperparams["learning_rate"], jnp.float32)
            shape_t = None
        else:
            lr = jnp.asarray(control.level, jnp.float32)
            shape_t = _shape_at(schedule, count)

        def inner_update(lr_value):
            return inner.update(
                updates, with_learning_rate(inject_state, lr_value), params, **extra_args
            )

        if lookahead > 1:
            check_stacked(batch, lookahead)
        score_batch = batch if lookahead == 1 else jax.tree.map(lambda x: x[-1], batch)

        def probe(_):
            level = clamp_level(lr, floor, ceiling)
            if lookahead == 1:
                if twin is None:
                    u, _ = inner_update(level)
                else:
                    twin_state = inject_state.inner_state if shares_state else state.probe_state
                    u, _ = twin(learning_rate=level).update(updates, twin_state, params)
                    if match_length:
                        u = _matched(u, inner_update(level)[0])

                def loss_at(f):
                    return scalar_loss(apply_scaled(params, u, f), batch)
            else:
                u = None
                inner_step = functools.partial(inner.update, **extra_args)

                def loss_at(f):
                    u, inner_state = inner_update(level * f)
                    return lookahead_loss(
                        scalar_loss, inner_step, params, u, inner_state, batch, lookahead, axis_name
                    )

            def candidate_losses(candidates):
                losses = evaluate_candidates(
                    loss_at,
                    jnp.asarray(candidates, jnp.float32),
                    resolve_probe_strategy(strategy, chunk_size),
                    chunk_size,
                    # The search's grid: vmapped n at a time, no more than a regular probe.
                    max_width=n,
                )
                if axis_name is not None:
                    losses = lax.pmean(losses, axis_name)
                check_not_varying(losses, axis_name)
                return losses

            if needs_loss0:
                loss0 = scalar_loss(params, score_batch).astype(jnp.float32)
                slope = _slope(updates, u) if u is not None else jnp.float32(jnp.nan)
                if axis_name is not None:
                    loss0 = lax.pmean(loss0, axis_name)
                    slope = lax.pmean(slope, axis_name)
            else:
                loss0 = jnp.zeros((), jnp.float32)
                slope = None

            num_probes = jnp.asarray(tel.num_probes, jnp.int32)
            # The search runs again after one whose every candidate was non-finite.
            first = ((num_probes == 0) | searching_down) & initial_search
            losses, scores, search_losses, multiplier, decision = _propose(
                settings, score, candidate_losses, loss0, slope, first, tel.search_losses
            )
            new_lr, clamped = next_learning_rate(level, multiplier, min_lr, max_lr, floor, ceiling)
            new_lr, clamped, decision, new_control = settle(
                level, new_lr, clamped, decision, loss0, first, control, guard=guard,
                guard_on=signal_on, tolerance=guard_tolerance, backoff=backoff,
                memory_len=guard_memory, bounds=(min_lr, max_lr, floor, ceiling),
            )  # fmt: skip
            telemetry = AutoLRTelemetry(
                losses=losses,
                scores=scores,
                multiplier=multiplier,
                num_probes=optax.safe_increment(num_probes),
                clamped=clamped | (level != lr),
                decision=decision.astype(jnp.int32),
                loss0=loss0,
                level=new_lr,
                search_losses=search_losses,
            )
            return new_lr, telemetry, new_control

        def skip(_):
            # Both branches of the cond must return the same dtypes (a restored state may
            # hold NumPy arrays or Python scalars).
            return (
                lr,
                _cast(tel, _TELEMETRY_DTYPES),
                _cast(control, _CONTROL_DTYPES)._replace(level=lr),
            )

        # After a search whose every candidate was non-finite, every update probes (and
        # applies nothing) until a search finds a finite candidate.
        searching_down = jnp.asarray(tel.decision, jnp.int32) == DECISIONS["search_down"]
        is_probe = (count % every == 0) | searching_down
        if shape_t is not None and not probe_during_decay:
            # The cooldown: the shape has been at its peak and is below it now.
            is_probe = is_probe & ~(jnp.asarray(control.peaked, jnp.bool_) & (shape_t < 1))
        new_lr, telemetry, new_control = lax.cond(is_probe, probe, skip, None)
        if shape_t is None:
            applied = new_lr
        else:
            applied = (new_lr * shape_t).astype(jnp.float32)
            new_control = new_control._replace(peaked=new_control.peaked | (shape_t >= 1))
        new_updates, new_inject_state = inner_update(applied)
        # The float32 learning rate promotes bf16 updates to float32 (as in
        # optax.inject_hyperparams); hand them back in the dtype they came in.
        new_updates = optax.tree_utils.tree_cast_like(new_updates, updates)
        # No step at a level whose every search candidate was non-finite (the level is
        # already 10**4 times lower, and the next update searches again).
        down = telemetry.decision == DECISIONS["search_down"]
        new_updates = jax.tree.map(lambda u: jnp.where(down, jnp.zeros_like(u), u), new_updates)
        probe_state = None
        if twin is not None and not shares_state:
            # The twin's own statistics follow every gradient, as the wrapped optimizer's do.
            _, probe_state = twin(learning_rate=new_lr).update(updates, state.probe_state, params)
        return new_updates, AutoLRState(
            inject_state=new_inject_state,
            telemetry=telemetry,
            control=new_control,
            probe_state=probe_state,
        )

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
