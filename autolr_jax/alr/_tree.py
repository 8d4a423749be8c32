"""The ALR tree: beam search over learning rates, one epoch at a time.

The Adaptive Learning Rate tree of Takase et al. (2018) keeps a beam of ``M``
members, each a learning rate with its own parameters. Every epoch, each member
branches into ``N`` children with learning rates ``eta_m * r_n``; every child
trains a full epoch from its parent, and the ``M`` children with the lowest
training loss form the next beam. It is the baseline that
:func:`autolr_jax.auto_lr` replaces: it costs ``M * N`` epochs of training per
epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from autolr_jax._candidates import PROBE_STRATEGIES, evaluate_candidates, resolve_probe_strategy
from autolr_jax._state_utils import with_learning_rate
from autolr_jax._validation import (
    F32_MAX,
    F32_TINY,
    check_choice,
    check_int,
    check_positive_sequence,
    check_strategy,
)

__all__ = [
    "ALREpochInfo",
    "ALRState",
    "ALRTree",
    "alr_tree",
    "best_lr",
    "best_model_state",
    "best_opt_state",
    "best_params",
]

RANK_BY = ("mean", "last")


class ALRState(NamedTuple):
    """The beam of an ALR tree: ``K`` members stacked on a leading axis, best first.

    A plain pytree of arrays (``NamedTuple``, dicts, tuples): it checkpoints
    with any pytree checkpointer and resumes exactly.

    Attributes:
      params: the members' parameters, every leaf with a leading axis ``K``.
      opt_state: the members' optimizer states (each holds its learning rate in
        ``hyperparams["learning_rate"]``), leading axis ``K``.
      model_state: the members' model states (e.g. BatchNorm statistics),
        leading axis ``K``; ``None`` when the loss has no model state.
      learning_rates: float32 ``[K]``, the members' learning rates.
      epoch: int32, the number of ALR epochs run (saturating at 2**31 - 1).

    Member 0 is always the best one (the lowest ranking loss of the last
    epoch; at initialisation, the first learning rate given):
    :func:`best_params`, :func:`best_lr`, :func:`best_opt_state` and
    :func:`best_model_state` read it.
    """

    params: Any
    opt_state: Any
    model_state: Any
    learning_rates: jax.Array
    epoch: jax.Array


class ALREpochInfo(NamedTuple):
    """What one ALR epoch saw, for logging. Children are indexed ``[m, n]``.

    Attributes:
      losses: float32 ``[M, N]``, each child's ranking loss (see ``rank_by``);
        non-finite for a child that diverged.
      batch_losses: float32 ``[M, N, B]``, each child's training loss on each
        batch, computed before the update on that batch.
      learning_rates: float32 ``[M, N]``, the children's learning rates
        ``eta_m * r_n``.
      diverged: bool ``[M, N]``, children whose ranking loss, parameters or
        model state are not finite; they rank after every finite child.
      parents: int32 ``[K]``, the parent ``m`` of each member of the new beam.
      branches: int32 ``[K]``, the branch ``n`` of each member of the new beam.
      all_diverged: bool scalar; if True, every child diverged and the new beam
        is the previous one (see :func:`alr_tree`); ``parents`` then give the
        previous members kept and ``branches`` are -1.
    """

    losses: jax.Array
    batch_losses: jax.Array
    learning_rates: jax.Array
    diverged: jax.Array
    parents: jax.Array
    branches: jax.Array
    all_diverged: jax.Array


class ALRTree(NamedTuple):
    """The functions of an ALR tree; see :func:`alr_tree`.

    Attributes:
      init: ``init(params, learning_rates, model_state=None) -> ALRState``.
      epoch: ``epoch(state, batches) -> (ALRState, ALREpochInfo)``, pure and
        jittable.
      optimizer: the per-member optimizer,
        ``optax.inject_hyperparams(optimizer_factory, hyperparam_dtype=float32)
        (learning_rate=..., **inner_kwargs)``; ``best_opt_state(state)`` is a
        state of it, so training can continue from the best member.
    """

    init: Callable[..., ALRState]
    epoch: Callable[[ALRState, Any], tuple[ALRState, ALREpochInfo]]
    optimizer: optax.GradientTransformationExtraArgs


def _member(tree: Any, i: int = 0) -> Any:
    return jax.tree.map(lambda x: x[i], tree)


def best_params(state: ALRState) -> Any:
    """The parameters of the best member (member 0) of an ALR beam.

    Example: see :func:`best_lr`.
    """
    return _member(state.params)


def best_opt_state(state: ALRState) -> Any:
    """The optimizer state of the best member (member 0) of an ALR beam.

    Example: see :func:`best_lr`.
    """
    return _member(state.opt_state)


def best_model_state(state: ALRState) -> Any:
    """The model state of the best member (member 0) of an ALR beam.

    Example: see :func:`best_lr`.
    """
    return _member(state.model_state)


def best_lr(state: ALRState) -> jax.Array:
    """The learning rate of the best member (member 0) of an ALR beam (float32).

    Example:
      >>> import jax, jax.numpy as jnp, optax, autolr_jax
      >>> loss = lambda p, b: jnp.mean((b[0] * p - b[1]) ** 2)
      >>> tree = autolr_jax.alr_tree(loss, optax.sgd, factors=(2.0, 0.5))
      >>> state = tree.init(jnp.float32(0.0), learning_rates=(0.1,))
      >>> batches = (jnp.ones((4, 8)), 3 * jnp.ones((4, 8)))  # 4 batches of 8
      >>> state, info = jax.jit(tree.epoch)(state, batches)
      >>> round(float(autolr_jax.best_lr(state)), 6), autolr_jax.best_params(state).shape
      (0.2, ())
      >>> autolr_jax.best_model_state(state) is None  # no has_aux, no model state
      True
    """
    return state.learning_rates[0]


def _all_finite(tree: Any) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _check_children_rates(lrs: np.ndarray, factors: np.ndarray) -> None:
    """Checks that every child's learning rate ``eta_m * r_n`` is a normal, finite float32."""
    for i, lr in enumerate(lrs):
        low, high = lr * factors.min(), lr * factors.max()
        if not (low >= F32_TINY and high <= F32_MAX):
            raise ValueError(
                f"learning_rates[{i}] times every factor must be a normal, finite float32 "
                f"(in [{F32_TINY}, {F32_MAX}]), got learning_rates[{i}]={lr!r} with factors "
                f"{factors.tolist()!r}: {low!r} to {high!r}"
            )


def alr_tree(
    loss_fn: Callable[..., Any],
    optimizer_factory: Callable[..., optax.GradientTransformation],
    factors: Sequence[float],
    *,
    beam_size: int | None = None,
    rank_by: str = "mean",
    strategy: str = "auto",
    chunk_size: int | None = None,
    has_aux: bool = False,
    **inner_kwargs: Any,
) -> ALRTree:
    """The ALR tree (Takase et al., 2018): beam search over learning rates, per epoch.

    The beam holds ``M`` members ``(eta_m, params_m, opt_state_m, model_state_m)``,
    best first. One call of ``epoch(state, batches)``:

    1. branches member ``m`` into ``N`` children with learning rates
       ``eta_m * r_n`` (``r = factors``); a child starts from a copy of its
       parent's parameters, optimizer state (e.g. momentum) and model state,
       only its learning rate is replaced;
    2. trains every child one epoch on the same batches, in the same order
       (``lax.scan`` over the leading axis of ``batches``): at batch ``b`` it
       computes the loss and gradient at its current parameters, then applies
       the optimizer update (the seed's ``E_{m,n} <- E(theta_{m,n}; x_b)``
       followed by the step);
    3. sorts the ``M * N`` children by ranking loss, ascending, and keeps the
       first ``K = beam_size`` as the new beam; member 0, the best child, is the
       model to use.

    All ``M * N`` children train in one computation over stacked parameter
    copies (jit ``epoch``). Memory holds ``M * N`` copies of the parameters,
    optimizer and model states.

    Ranking loss (``rank_by``):

    * ``"mean"`` (default): the mean over the epoch's ``B`` batches of the
      child's per-batch training loss, each computed before the update on that
      batch, i.e. the epoch training loss as training loops report it. It is
      chosen because a single batch is a noisy estimate of the training loss
      and because it sees the whole epoch: a child that spiked mid-epoch is
      charged for it, and one that went non-finite anywhere ranks last.
    * ``"last"``: the loss on the epoch's last batch (before its update), the
      seed's pseudo-code read literally (``E_{m,n}`` is overwritten at every
      batch, so its last value is what the argmin sees).

    Divergence and ties: a child *diverged* if its ranking loss, or any
    floating leaf of its final parameters or model state, is NaN or infinite.
    Diverged children rank after every finite child; they enter the beam only
    if fewer than ``K`` children are finite (they are then its last members and
    their own children diverge again, ranking last). Ties, among equal losses
    and among diverged children, are broken by the lower flat index
    ``m * N + n`` (stable sort: lower parent first, then lower branch). If
    *every* child diverged, the epoch changes nothing but the epoch count: the
    new beam is the previous beam (member ``i`` is previous member
    ``i mod M``; the same members when ``K == M``), and
    ``info.all_diverged`` is True. Check it on the host; nothing is raised
    inside jit.

    Args:
      loss_fn: the per-batch training loss. With ``has_aux=False``,
        ``loss_fn(params, batch) -> loss``; with ``has_aux=True``,
        ``loss_fn(params, model_state, batch) -> (loss, new_model_state)``,
        where ``new_model_state`` has the structure of ``model_state`` (e.g.
        Flax ``batch_stats`` updated in training mode) and is not
        differentiated. ``loss`` is a real scalar. Per-step randomness (dropout
        keys) belongs in ``batch``: every child then sees the same keys.
      optimizer_factory: an Optax optimizer factory taking ``learning_rate`` as
        a keyword, e.g. ``optax.sgd`` or ``optax.adam``. It is wrapped as
        ``optax.inject_hyperparams(optimizer_factory, hyperparam_dtype=float32)
        (learning_rate=..., **inner_kwargs)`` so each child's learning rate is
        an array in its optimizer state.
      factors: the ``N`` scale factors ``r_n``, a 1-D sequence of numbers > 0
        that are finite and normal in float32 (e.g. ``(2.0, 1.0, 0.5)``).
      beam_size: ``K``, the number of children kept, in ``[1, M * N]``;
        ``None`` keeps as many as the beam has (``M = len(learning_rates)`` given
        to ``init``). With ``K != M`` the beam changes size after the first
        epoch (``epoch`` then traces once more).
      rank_by: ``"mean"`` or ``"last"``, see above.
      strategy: how the children run inside the one computation: ``"vmap"``
        (``jax.vmap`` over children), ``"map"`` (``lax.map``, children one after
        another, or ``chunk_size`` at a time) or ``"auto"`` (``"map"`` on CPU,
        where vmapping convolutions over weights is slow, ``"vmap"`` on GPU and
        TPU; see :func:`autolr_jax.auto.default_probe_strategy`). On XLA:CPU
        (jax 0.10), the convolution *gradients* of a model trained inside the
        epoch's ``lax.scan`` ran 20-50x slower than the same step outside a loop;
        ``examples/cifar10/models.py`` (``loop_safe_conv``) shows a custom-VJP
        convolution that restores normal speed.
      chunk_size: with ``"map"`` (or ``"auto"``, which it turns into ``"map"``),
        the number of children vmapped at a time, >= 1; ``None`` means 1.
        Not allowed with ``strategy="vmap"``.
      has_aux: whether ``loss_fn`` takes and returns a model state.
      **inner_kwargs: further arguments of ``optimizer_factory`` (e.g.
        ``momentum=0.9``), shared by every child.

    Returns:
      An :class:`ALRTree` ``(init, epoch, optimizer)``:

      * ``init(params, learning_rates, model_state=None) -> ALRState``: the
        initial beam, one member per entry of ``learning_rates`` (``M`` finite
        reals > 0 whose products with every factor are normal, finite
        float32s; best-first order is the order given), each with a copy of
        ``params`` and ``model_state`` and a fresh optimizer state.
      * ``epoch(state, batches) -> (ALRState, ALREpochInfo)``: one ALR epoch.
        ``batches`` is a pytree whose leaves share a leading axis ``B >= 1``,
        one batch per step.

    Raises:
      ValueError: on a bad argument (empty or non-positive factors or learning
        rates, ``beam_size`` outside ``[1, M * N]``, unknown ``rank_by`` or
        ``strategy``, ``chunk_size < 1``), naming it, its value and the allowed
        range; before any tracing.

    Example:
      >>> import jax, jax.numpy as jnp, optax, autolr_jax
      >>> def loss_fn(w, batch):
      ...   x, y = batch
      ...   return jnp.mean((x @ w - y) ** 2)
      >>> x = jnp.ones((4, 8, 2)); y = jnp.full((4, 8), 3.0)   # 4 batches of 8
      >>> tree = autolr_jax.alr_tree(loss_fn, optax.sgd, factors=(2.0, 1.0, 0.5))
      >>> state = tree.init(jnp.zeros(2), learning_rates=(0.1, 0.01))   # M = 2
      >>> epoch = jax.jit(tree.epoch)
      >>> for _ in range(3):
      ...   state, info = epoch(state, (x, y))
      >>> info.losses.shape, state.learning_rates.shape
      ((2, 3), (2,))
      >>> round(float(autolr_jax.best_lr(state)), 4)
      0.2
      >>> bool(info.losses.min() < 0.1)
      True

    References:
      T. Takase, S. Oyama, M. Kurihara, "Effective neural network training with
      adaptive learning rate based on training loss", Neural Networks 101
      (2018), Algorithm 1.
    """
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
    if not callable(optimizer_factory):
        raise ValueError(f"optimizer_factory must be callable, got {optimizer_factory!r}")
    factors_arr = np.asarray(check_positive_sequence("factors", factors), np.float64)
    n_branches = factors_arr.size
    if beam_size is not None:
        beam_size = check_int("beam_size", beam_size, lo=1)
    check_choice("rank_by", rank_by, RANK_BY)
    chunk_size = check_strategy(
        strategy, chunk_size, choices=PROBE_STRATEGIES, candidates="children"
    )
    if not isinstance(has_aux, bool):
        raise ValueError(f"has_aux must be True or False, got {has_aux!r}")
    if "learning_rate" in inner_kwargs:
        raise ValueError(
            "learning_rate must not be passed to alr_tree: each member's learning rate "
            "comes from init(params, learning_rates) and the factors"
        )

    optimizer = optax.inject_hyperparams(optimizer_factory, hyperparam_dtype=jnp.float32)(
        learning_rate=1.0, **inner_kwargs
    )
    factors_f32 = np.asarray(factors_arr, np.float32)

    def _check_beam(name: str, m: int) -> int:
        k = m if beam_size is None else beam_size
        if k > m * n_branches:
            raise ValueError(
                f"beam_size must be an integer in [1, M * N] = [1, {m * n_branches}] "
                f"(M = {m} learning rates, N = {n_branches} factors), got {k!r}"
            )
        return k

    def init_fn(params: Any, learning_rates: Sequence[float], model_state: Any = None) -> ALRState:
        lrs = np.asarray(check_positive_sequence("learning_rates", learning_rates), np.float64)
        _check_children_rates(lrs, factors_arr)
        m = lrs.size
        _check_beam("beam_size", m)
        if not has_aux and model_state is not None:
            raise ValueError(
                "model_state must be None when has_aux=False (loss_fn(params, batch) takes "
                "no model state); pass has_aux=True to alr_tree to use one"
            )
        params = jax.tree.map(jnp.asarray, params)
        lrs32 = jnp.asarray(lrs, jnp.float32)

        def stack(x):
            x = jnp.asarray(x)
            return jnp.broadcast_to(x, (m,) + x.shape)

        opt_state = jax.vmap(lambda lr: with_learning_rate(optimizer.init(params), lr))(lrs32)
        return ALRState(
            params=jax.tree.map(stack, params),
            opt_state=opt_state,
            model_state=jax.tree.map(stack, model_state),
            learning_rates=lrs32,
            epoch=jnp.zeros([], jnp.int32),
        )

    def grad_step(params, model_state, batch):
        if has_aux:
            (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                params, model_state, batch
            )
        else:
            loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        return loss, grads, model_state

    def train_one(params, opt_state, model_state, batches):
        def step(carry, batch):
            p, o, s = carry
            loss, grads, s = grad_step(p, s, batch)
            updates, o = optimizer.update(grads, o, p)
            p = optax.apply_updates(p, updates)
            return (p, o, s), jnp.asarray(loss, jnp.float32)

        (p, o, s), losses = lax.scan(step, (params, opt_state, model_state), batches)
        return p, o, s, losses

    def epoch_fn(state: ALRState, batches: Any) -> tuple[ALRState, ALREpochInfo]:
        m = state.learning_rates.shape[0]
        k = _check_beam("beam_size", m)
        leaves = jax.tree.leaves(batches)
        lengths = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
        if not leaves or len(lengths) != 1 or None in lengths or 0 in lengths:
            raise ValueError(
                "batches must be a pytree whose leaves share a leading axis B >= 1 "
                f"(one batch per step), got leading axes {sorted(map(str, lengths))}"
            )
        n = n_branches
        c = m * n
        child_lrs = state.learning_rates[:, None] * jnp.asarray(factors_f32)[None, :]
        flat_lrs = child_lrs.reshape(c)

        def train_child(i):
            # Children read their parent's slice directly: no M*N copy of the inputs.
            parent = i // n
            params = _member(state.params, parent)
            opt_state = with_learning_rate(_member(state.opt_state, parent), flat_lrs[i])
            model_state = _member(state.model_state, parent)
            p, o, s, losses = train_one(params, opt_state, model_state, batches)
            finite = _all_finite(p) & _all_finite(s)
            return p, o, s, losses, finite

        resolved = resolve_probe_strategy(strategy, chunk_size)
        p, o, s, batch_losses, finite = evaluate_candidates(
            train_child, jnp.arange(c, dtype=jnp.int32), resolved, chunk_size
        )

        rank = jnp.mean(batch_losses, axis=1) if rank_by == "mean" else batch_losses[:, -1]
        diverged = ~(finite & jnp.isfinite(rank))
        key = jnp.where(diverged, jnp.inf, rank)
        order = jnp.argsort(key, stable=True)[:k].astype(jnp.int32)
        all_diverged = jnp.all(diverged)

        # All diverged: keep the previous beam (member i <- previous member i mod M).
        prev = jnp.arange(k, dtype=jnp.int32) % m

        def pick(new, old):
            return jnp.where(all_diverged, old[prev], new[order])

        new_state = ALRState(
            params=jax.tree.map(pick, p, state.params),
            opt_state=jax.tree.map(pick, o, state.opt_state),
            model_state=jax.tree.map(pick, s, state.model_state),
            learning_rates=pick(flat_lrs, state.learning_rates),
            epoch=optax.safe_increment(state.epoch),
        )
        info = ALREpochInfo(
            losses=rank.reshape(m, n),
            batch_losses=batch_losses.reshape(m, n, -1),
            learning_rates=child_lrs,
            diverged=diverged.reshape(m, n),
            parents=jnp.where(all_diverged, prev, order // n),
            branches=jnp.where(all_diverged, -1, order % n),
            all_diverged=all_diverged,
        )
        return new_state, info

    return ALRTree(init=init_fn, epoch=epoch_fn, optimizer=optimizer)
