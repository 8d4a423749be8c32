"""Digits (MLP + Adam): a second development task for ``auto_lr``, unlike CIFAR in kind.

scikit-learn's bundled ``load_digits`` (1797 8x8 images, no download), a
64-128-128-10 ReLU MLP trained with Adam on mini-batches of 128, every run one
jitted ``lax.scan``. The test split (20 %, stratified) is held out; a validation
split (20 % of the rest) is carved from the training split, and every choice
(rule, search, budget) is made on validation; test accuracy and loss are
reported once per run, at its end.

Methods: Adam with a constant and with a cosine learning rate from each initial
learning rate of ``LRS``; ``auto_lr(optax.adam, ...)`` with each rule, with and
without ``initial_search`` and with and without the budget shape
``warmup_stable_decay(1.0, total_steps)``, from the same initial learning rates;
variants of the guard, of Armijo's c, of the probed factors and probes per epoch, and
probes scored on held-out data (see :func:`plan`); prodigy at its defaults; as a
diagnostic outside the sweep, constant Adam between the decade grid's points; and the same
task with other optimizers: plain SGD, SGD with momentum 0.9, RMSprop and Adam with b1 = 0
and 0.5 (rows ``sgd-*``, ``momentum-*``, ``rmsprop-*``, ``adam(b1=0)-*``, ``adam(b1=0.5)-*``:
each its own constant/cosine sweep, whose best run those rows are held to, and the default
around it); and probes along the momentum-free step (``probe_optimizer``, rows
``*-twin``). Three seeds each (initialisation and batch order).

    python -m benchmarks.digits                # plan, run, report (~5 min on 2 CPU cores)
    python -m benchmarks.digits plan           # list the runs
    python -m benchmarks.digits report         # tables from the committed JSON lines
    python -m benchmarks.digits --quick --out /tmp/digits   # smoke test (2 methods, 2 epochs)

Results: ``benchmarks/results/digits/runs.jsonl`` (one JSON line per run, the
first line the machine and versions) and ``report.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import pathlib
import sys
import time
from typing import Any

import numpy as np

LRS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
FINE_LRS = (5e-4, 7e-4, 1.4e-3, 2e-3, 3e-3, 5e-3)
# Optimizers besides Adam: Adam's two halves (momentum; the per-coordinate scaling), neither,
# and Adam with less momentum (b1 = 0, 0.5; Adam's default is 0.9).
OTHER_OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam(b1=0)", "adam(b1=0.5)")
# Momentum-free steps for the probes (auto_lr's probe_optimizer): Adam without b1 (its
# momentum is an average, so the step has the same scale), and SGD at 1 / (1 - 0.9) times the
# rate (heavy-ball momentum 0.9 sums the gradients: its steady step is 10x the rate's).
PROBE_TWINS = ("adam(b1=0)", "sgd(10x)")
SEEDS = (0, 1, 2)
BATCH = 128
EPOCHS = 40
HIDDEN = 128
OUT = pathlib.Path(__file__).parent / "results" / "digits"


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the plan: a method and its settings (every initial lr, every seed)."""

    name: str
    kind: str  # "constant", "cosine", "auto", "prodigy"
    rule: str = "seed"
    initial_search: bool = False
    budget: bool = False
    probe_during_decay: bool = True
    search_safety: float = 4.0
    guard: bool | None = None
    guard_memory: int = 0
    guard_tolerance: float = 0.05
    guard_on: str = "probe"
    armijo_c: float | None = None  # None: armijo_rule's default (0.5)
    # Probe on held-out data: this fraction of the training split is kept out of the
    # gradient steps and every probe scores the candidates on all of it.
    probe_holdout: float = 0.0
    # The probed factors (None: auto_lr's default, (2, 1, 0.5)).
    factors: tuple[float, ...] | None = None
    # Probes per epoch (auto_lr's every = steps per epoch // this).
    probes_per_epoch: int = 1
    # The wrapped optimizer: "adam" (the task's) or one of OTHER_OPTIMIZERS (rows "<name>-*").
    optimizer: str = "adam"
    # auto_lr's probe_optimizer: a name of PROBE_TWINS, "auto" (auto_lr's default: the
    # momentum-free twin where auto_lr knows the momentum) or None (the probes scale the
    # update; what every row measured before "auto" became the default).
    probe_twin: str | None = None
    # Initial learning rates (None: LRS); the finer constant grid only.
    lrs: tuple[float, ...] | None = None

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan(quick: bool = False) -> list[Method]:
    """The methods to run; ``quick``: a handful, for the smoke test."""
    methods = [Method("adam-constant", "constant"), Method("adam-cosine", "cosine")]
    for rule in ("seed", "armijo", "parabola"):
        for search in (False, True):
            for budget in (False, True):
                name = f"auto-{rule}" + ("+search" if search else "") + ("+wsd" if budget else "")
                methods.append(Method(name, "auto", rule, search, budget))
    # The cooldown question: keep probing while the shape decays, or stop.
    for rule in ("armijo", "parabola"):
        methods.append(Method(f"auto-{rule}+search+wsd-noprobe", "auto", rule, True, True, False))
    # The do-no-harm guard, off (it is on by default for the new rules).
    methods.append(
        Method("auto-armijo+search+wsd-noguard", "auto", "armijo", True, True, guard=False)
    )
    # The guard's memory of the level it undid (5 probes), where the plain guard
    # re-tries a failed rise: parabola without a budget, and the default.
    for name, rule, search, budget in (
        ("auto-parabola", "parabola", False, False),
        ("auto-parabola+search", "parabola", True, False),
        ("auto-armijo+search+wsd", "armijo", True, True),
    ):
        methods.append(Method(f"{name}-memory5", "auto", rule, search, budget, guard_memory=5))
    # A guard tolerance above the noise of a probe batch's loss (CIFAR, batch 32).
    methods.append(
        Method("auto-armijo+search+wsd-tol0.5", "auto", "armijo", True, True, guard_tolerance=0.5)
    )
    # The guard on the mean training loss between probes (update's value=) instead of
    # two probe batches' losses.
    for name, rule, search, budget in (
        ("auto-parabola", "parabola", False, False),
        ("auto-parabola+search", "parabola", True, False),
        ("auto-armijo+search+wsd", "armijo", True, True),
    ):
        methods.append(Method(f"{name}-value", "auto", rule, search, budget, guard_on="value"))
    # The search's step back from the best one-step factor.
    for safety in (1.0, 16.0):
        methods.append(
            Method(
                f"auto-armijo+search+wsd-safety{safety:g}",
                "auto",
                "armijo",
                True,
                True,
                search_safety=safety,
            )
        )
    # Armijo's c at Vaswani et al.'s 0.1 (the CIFAR lead), with the value guard, with and
    # without the guard's memory.
    for memory in (0, 5):
        methods.append(
            Method(
                "auto-armijo+search+wsd-value-c0.1" + (f"-memory{memory}" if memory else ""),
                "auto",
                "armijo",
                True,
                True,
                guard_on="value",
                armijo_c=0.1,
                guard_memory=memory,
            )
        )
    # Probes scored on held-out data (20 % of the training split, not trained on): the
    # rule then backs off once a step no longer lowers the held-out loss, i.e. once the
    # model overfits, which no training-batch signal can see.
    for name, rule, guard_on in (
        ("auto-armijo+search+wsd-holdout", "armijo", "probe"),
        ("auto-armijo+search+wsd-holdout-value", "armijo", "value"),
        ("auto-seed+search+wsd-holdout", "seed", "probe"),
    ):
        methods.append(Method(name, "auto", rule, True, True, guard_on=guard_on, probe_holdout=0.2))
    # Finer factors, 2 ** (+-1 / p): the rule moves the level by at most that much a probe,
    # so its limit cycle about the edge of sufficient decrease is narrower than with (2, 1, 0.5).
    for p in (2, 3, 4):
        factors = (2.0 ** (1 / p), 1.0, 2.0 ** (-1 / p))
        for guard_on in ("probe", "value"):
            suffix = f"-f{p}" + ("-value" if guard_on == "value" else "")
            methods.append(
                Method(
                    f"auto-armijo+search+wsd{suffix}",
                    "auto",
                    "armijo",
                    True,
                    True,
                    guard_on=guard_on,
                    factors=factors,
                )
            )
    # Held-out probes with the slower factors.
    for rule in ("seed", "armijo"):
        methods.append(
            Method(
                f"auto-{rule}+search+wsd-holdout-f3",
                "auto",
                rule,
                True,
                True,
                probe_holdout=0.2,
                factors=(2.0 ** (1 / 3), 1.0, 2.0 ** (-1 / 3)),
            )
        )
    # 2 ** (+-1 / 3) probed three times an epoch: the same largest change per epoch (x2)
    # as (2, 1, 0.5) once an epoch, in finer steps.
    for guard_on in ("probe", "value"):
        methods.append(
            Method(
                "auto-armijo+search+wsd-f3x3" + ("-value" if guard_on == "value" else ""),
                "auto",
                "armijo",
                True,
                True,
                guard_on=guard_on,
                factors=(2.0 ** (1 / 3), 1.0, 2.0 ** (-1 / 3)),
                probes_per_epoch=3,
            )
        )
    methods.append(Method("prodigy", "prodigy"))
    # Constant Adam between the decade grid's points: how narrow the test-loss optimum is
    # (a diagnostic; not part of the sweep whose best run the targets use).
    methods.append(Method("adam-constant-fine", "constant", lrs=FINE_LRS))
    # The same task with other optimizers, each with its own constant/cosine sweep and the
    # default: whether the test-loss miss belongs to the task or to the optimizer, and to
    # which half of Adam (momentum, per-coordinate scaling).
    for opt in OTHER_OPTIMIZERS:
        methods += [
            Method(f"{opt}-constant", "constant", optimizer=opt),
            Method(f"{opt}-cosine", "cosine", optimizer=opt),
            Method(f"{opt}-auto-armijo+search+wsd", "auto", "armijo", True, True, optimizer=opt),
        ]
    # Probes along the momentum-free step (auto_lr's probe_optimizer), the level applied to
    # the momentum optimizer: Adam (the task's), and SGD with momentum 0.9.
    for guard_on in ("probe", "value"):
        suffix = "-value" if guard_on == "value" else ""
        methods.append(
            Method(
                "auto-armijo+search+wsd-twin" + suffix,
                "auto",
                "armijo",
                True,
                True,
                guard_on=guard_on,
                probe_twin="adam(b1=0)",
            )
        )
    methods.append(
        Method(
            "auto-armijo+search+wsd-twin-f3",
            "auto",
            "armijo",
            True,
            True,
            probe_twin="adam(b1=0)",
            factors=(2.0 ** (1 / 3), 1.0, 2.0 ** (-1 / 3)),
        )
    )
    methods.append(
        Method(
            "momentum-auto-armijo+search+wsd-twin",
            "auto",
            "armijo",
            True,
            True,
            optimizer="momentum",
            probe_twin="sgd(10x)",
        )
    )
    methods.append(
        Method(
            "sgd-auto-armijo+search+wsd-value",
            "auto",
            "armijo",
            True,
            True,
            guard_on="value",
            optimizer="sgd",
        )
    )
    # auto_lr at its defaults (armijo, search, the budget, the guard on the training loss
    # passed as value=, probe_optimizer="auto") around every optimizer: with Adam, Adam with
    # b1 = 0.5 and momentum SGD the probes scale the momentum-free twin; without momentum
    # (plain SGD, RMSprop, Adam with b1 = 0) the update itself.
    for opt in ("adam", *OTHER_OPTIMIZERS):
        methods.append(
            Method(
                ("" if opt == "adam" else f"{opt}-") + "auto-default",
                "auto",
                "armijo",
                True,
                True,
                guard_on="value",
                optimizer=opt,
                probe_twin="auto",
            )
        )
    if quick:
        keep = {"adam-constant", "auto-armijo+search+wsd", "auto-default"}
        methods = [m for m in methods if m.name in keep]
    return methods


def load_data(seed: int = 0):
    """Train / validation / test splits of load_digits, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int32)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.2, stratify=y_rest, random_state=seed
    )
    return (x_train, y_train), (x_val, y_val), (x_test, y_test)


def _build(method: Method, steps: int, every: int):
    """``(make_tx, set_lr)``: the optimizer for an initial lr, compiled once per method."""
    import jax.numpy as jnp
    import optax

    import autolr_jax as al

    opt = _factory(method.optimizer)
    if method.kind == "constant":
        return lambda lr: opt(lr), True
    if method.kind == "cosine":
        return lambda lr: opt(optax.cosine_decay_schedule(lr, steps)), True
    if method.kind == "prodigy":
        return lambda lr: optax.contrib.prodigy(), True
    schedule = al.warmup_stable_decay(1.0, steps, decay_fraction=0.2) if method.budget else None
    tx = al.auto_lr(
        opt,
        1e-3,
        loss_fn=_loss,
        every=every,
        rule=method.rule if method.armijo_c is None else al.armijo_rule(c=method.armijo_c),
        initial_search=method.initial_search,
        schedule=schedule,
        probe_during_decay=method.probe_during_decay,
        search_safety=method.search_safety,
        guard=method.guard,
        guard_memory=method.guard_memory,
        guard_tolerance=method.guard_tolerance,
        guard_on=method.guard_on,
        **({} if method.factors is None else {"factors": method.factors}),
        probe_optimizer=(
            method.probe_twin
            if method.probe_twin in (None, "auto")
            else _factory(method.probe_twin)
        ),
    )

    def with_lr(state, lr):
        # One compiled run for every initial lr: the level lives in the state.
        lr = jnp.asarray(lr, jnp.float32)
        shape0 = schedule(0) if schedule is not None else 1.0
        hp = dict(state.inject_state.hyperparams)
        hp["learning_rate"] = lr * shape0
        control = state.control._replace(level=lr, before_rise=lr)
        return state._replace(
            inject_state=state.inject_state._replace(hyperparams=hp),
            control=control,
            telemetry=state.telemetry._replace(level=lr),
        )

    return (tx, with_lr), False


def _factory(name: str):
    """The Optax factory of an optimizer name: "adam", OTHER_OPTIMIZERS or PROBE_TWINS."""
    import optax

    factories = {
        "adam": optax.adam,
        "sgd": optax.sgd,
        "momentum": functools.partial(optax.sgd, momentum=0.9),
        "rmsprop": optax.rmsprop,
        "adam(b1=0)": functools.partial(optax.adam, b1=0.0),
        "adam(b1=0.5)": functools.partial(optax.adam, b1=0.5),
        "sgd(10x)": lambda learning_rate: optax.sgd(learning_rate / (1 - 0.9)),
    }
    if name not in factories:
        raise ValueError(f"optimizer name must be one of {sorted(factories)}, got {name!r}")
    return factories[name]


def _init(key, sizes):
    import jax
    import jax.numpy as jnp

    params = []
    shapes = list(zip(sizes[:-1], sizes[1:], strict=False))
    for k, (m, n) in zip(jax.random.split(key, len(shapes)), shapes, strict=True):
        params.append({"w": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)})
    return params


def _logits(params, x):
    import jax

    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def _loss(params, batch):
    import optax

    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(_logits(params, x), y).mean()


def _metrics(params, x, y):
    import jax.numpy as jnp

    loss = _loss(params, (x, y))
    acc = jnp.mean(jnp.argmax(_logits(params, x), -1) == y)
    return loss, acc


def run_method(method: Method, data, epochs: int, seeds, lrs) -> list[dict[str, Any]]:
    """Every (initial lr, seed) run of ``method``: one compilation, then one scan per run."""
    import jax
    import jax.numpy as jnp
    import optax

    import autolr_jax as al

    (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = data
    x_probe = y_probe = None
    if method.probe_holdout:
        from sklearn.model_selection import train_test_split

        x_tr, x_probe, y_tr, y_probe = train_test_split(
            x_tr, y_tr, test_size=method.probe_holdout, stratify=y_tr, random_state=0
        )
        probe_batch = (jnp.asarray(x_probe), jnp.asarray(y_probe))
    per_epoch = len(x_tr) // BATCH
    steps = per_epoch * epochs
    every = max(1, per_epoch // method.probes_per_epoch)
    built, lr_in_tx = _build(method, steps, every)
    x_tr_j, y_tr_j = jnp.asarray(x_tr), jnp.asarray(y_tr)

    def run(lr, key, order):
        params = _init(key, (64, HIDDEN, HIDDEN, 10))
        if lr_in_tx:
            tx = built(lr)
            state = tx.init(params)
        else:
            tx, with_lr = built
            state = with_lr(tx.init(params), lr)

        def step(carry, idx):
            params, state = carry
            batch = (x_tr_j[idx], y_tr_j[idx])
            loss, grads = jax.value_and_grad(_loss)(params, batch)
            if lr_in_tx:
                updates, state = tx.update(grads, state, params)
            else:
                extra = {"value": loss} if method.guard_on == "value" else {}
                scored = probe_batch if x_probe is not None else batch
                updates, state = tx.update(grads, state, params, batch=scored, **extra)
            params = optax.apply_updates(params, updates)
            if lr_in_tx:
                applied = jnp.nan
                probe = (jnp.float32(0), jnp.float32(0), jnp.float32(0))
            else:
                applied = al.current_lr(state)
                t = state.telemetry
                probe = (t.decision.astype(jnp.float32), t.multiplier, t.loss0)
            return (params, state), (loss, jnp.asarray(applied, jnp.float32), probe)

        (params, _), (losses, applied, probe) = jax.lax.scan(step, (params, state), order)
        val = _metrics(params, x_val, y_val)
        test = _metrics(params, x_te, y_te)
        return losses, applied, probe, val, test

    run_j = jax.jit(run)
    compiled = None
    rows = []
    if method.lrs is not None:
        lrs = method.lrs
    for lr in lrs if method.kind != "prodigy" else (1.0,):
        for seed in seeds:
            rng = np.random.default_rng(seed)
            n = len(x_tr)
            order = np.stack(
                [
                    rng.permutation(n)[: per_epoch * BATCH].reshape(per_epoch, BATCH)
                    for _ in range(epochs)
                ]
            ).reshape(steps, BATCH)
            args = (jnp.float32(lr), jax.random.key(seed), jnp.asarray(order))
            if compiled is None:  # once per method; compilation is not timed
                compiled = run_j.lower(*args).compile()
            t0 = time.perf_counter()
            out = jax.device_get(compiled(*args))
            seconds = time.perf_counter() - t0
            losses, applied, (decision, multiplier, loss0), val, test = out
            # One record an epoch (with several probes an epoch, the epoch's first).
            probes = np.arange(0, steps, per_epoch)
            rows.append(
                {
                    "method": method.name,
                    "settings": method.settings(),
                    "lr0": lr if method.kind != "prodigy" else None,
                    "seed": seed,
                    "steps": steps,
                    "every": every,
                    "steps_per_epoch": per_epoch,
                    "seconds": round(seconds, 3),
                    "val_loss": float(val[0]),
                    "val_acc": float(val[1]),
                    "test_loss": float(test[0]),
                    "test_acc": float(test[1]),
                    "final_train_loss": float(np.mean(losses[-per_epoch:])),
                    "train_loss_per_epoch": [float(x) for x in losses[probes]],
                    "lr_per_epoch": [float(x) for x in applied[probes]],
                    "decision_per_probe": [int(x) for x in decision[probes]],
                    "multiplier_per_probe": [float(x) for x in multiplier[probes]],
                    "loss0_per_probe": [float(x) for x in loss0[probes]],
                }
            )
    return rows


def run_all(
    out: pathlib.Path,
    quick: bool = False,
    seeds: tuple[int, ...] | None = None,
    methods: tuple[str, ...] | None = None,
) -> pathlib.Path:
    """Runs the plan and writes ``runs.jsonl`` (first line: the machine and versions).

    ``seeds`` replaces :data:`SEEDS` and ``methods`` keeps only the plan's rows of those
    names (both ``None``: the whole plan over three seeds).
    """
    from benchmarks._common import machine_facts

    epochs = 2 if quick else EPOCHS
    if seeds is None:
        seeds = SEEDS[:1] if quick else SEEDS
    todo = plan(quick)
    if methods is not None:
        unknown = sorted(set(methods) - {m.name for m in todo})
        if unknown:
            raise ValueError(
                f"methods: {unknown} are not rows of the plan "
                "(`python -m benchmarks.digits plan` lists them)"
            )
        todo = [m for m in todo if m.name in methods]
    lrs = (1e-3, 1.0) if quick else LRS
    data = load_data()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    facts = machine_facts()
    facts.update(
        {"epochs": epochs, "batch": BATCH, "hidden": HIDDEN, "quick": quick, "seeds": list(seeds)}
    )
    for dist in ("scikit-learn",):
        from benchmarks._common import _version

        facts["versions"][dist] = _version(dist)
    t0 = time.perf_counter()
    with open(path, "w") as f:
        f.write(json.dumps({"machine": facts}) + "\n")
        for method in todo:
            m0 = time.perf_counter()
            rows = run_method(method, data, epochs, seeds, lrs)
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()
            print(f"{method.name}: {len(rows)} runs, {time.perf_counter() - m0:.1f} s", flush=True)
    print(f"total {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def read_runs(path: pathlib.Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(x) for x in pathlib.Path(path).read_text().splitlines() if x.strip()]
    return lines[0]["machine"], lines[1:]


def _pm(values, scale=1.0, digits=2) -> str:
    values = np.asarray(values, np.float64) * scale
    if not np.all(np.isfinite(values)):
        return (
            "diverged" if not np.any(np.isfinite(values)) else f"{np.nanmean(values):.{digits}f}*"
        )
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def fit_table(df):
    """Runs above 95 % test accuracy by final training loss: count, mean and min test loss."""
    import pandas as pd

    ok = df[df["test_acc"] > 0.95]
    edges = [0.0, 1e-4, 1e-3, 5e-3, 2e-2, np.inf]
    labels = ["< 1e-4", "1e-4 - 1e-3", "1e-3 - 5e-3", "5e-3 - 0.02", ">= 0.02"]
    bins = pd.cut(ok["final_train_loss"], edges, labels=labels, right=False)
    table = ok.groupby(bins, observed=False)["test_loss"].agg(["count", "mean", "min"])
    table.index.name = "final training loss"
    table = table.rename(columns={"count": "runs", "mean": "mean test loss", "min": "min"})
    table.attrs["spearman"] = float(ok["final_train_loss"].rank().corr(ok["test_loss"].rank()))
    table.attrs["runs"] = len(ok)
    return table


def optimizer_of(method: str) -> str:
    """The optimizer of a row by its name: ``"<optimizer>-..."``, else Adam."""
    prefix = method.split("-", 1)[0]
    return prefix if prefix in OTHER_OPTIMIZERS else "adam"


def level_table(df):
    """Per automated method: the applied lr at the probes before the cooldown, median and spread.

    From the second probe (the first is the search) to the last before the budget shape's
    cooldown (the last 20 % of the updates), so that the shape does not count as a swing.
    """
    import pandas as pd

    rows = {}
    for method, g in df[df["method"].str.contains("auto-")].groupby("method", sort=False):
        lrs = np.concatenate(
            [np.asarray(x[1 : int(0.8 * len(x))], np.float64) for x in g["lr_per_epoch"]]
        )
        lrs = lrs[np.isfinite(lrs)]
        if len(lrs):
            rows[method] = {
                "median lr": np.median(lrs),
                "p10": np.percentile(lrs, 10),
                "p90": np.percentile(lrs, 90),
            }
    table = pd.DataFrame(rows).T
    table.index.name = "method"
    return table


def fine_constant_table(df, fine, best_loss):
    """Constant Adam on the finer grid (and the decade grid's points inside it), by lr."""
    import pandas as pd

    runs = pd.concat([df[df["method"] == "adam-constant"], fine])
    runs = runs[(runs["lr0"] >= min(FINE_LRS)) & (runs["lr0"] <= max(FINE_LRS))]
    table = runs.groupby("lr0").agg(
        runs=("test_loss", "size"),
        val_loss=("val_loss", "mean"),
        test_loss=("test_loss", "mean"),
        test_acc=("test_acc", lambda x: 100 * x.mean()),
        final_train_loss=("final_train_loss", "mean"),
    )
    table["test loss vs best"] = [f"{(x / best_loss - 1) * 100:+.0f} %" for x in table["test_loss"]]
    # Strings, so that the table's float format does not round the learning rates.
    for key, fmt in (("val_loss", ".3f"), ("test_loss", ".3f"), ("test_acc", ".1f")):
        table[key] = [format(x, fmt) for x in table[key]]
    table["final_train_loss"] = [f"{x:.1e}" for x in table["final_train_loss"]]
    table.index = [f"lr {x:g}" for x in table.index]
    table.index.name = "constant Adam"
    return table


def report(path: pathlib.Path) -> str:
    """The Markdown report: per method and initial lr, mean ± std over seeds."""
    import pandas as pd

    machine, runs = read_runs(path)
    df_all = pd.DataFrame(runs)
    df_all["lr0"] = df_all["lr0"].fillna(-1.0)
    fine = df_all[df_all["method"] == "adam-constant-fine"]
    df = df_all[df_all["method"] != "adam-constant-fine"]
    groups = df.groupby(["method", "lr0"], sort=False)
    agg = groups.agg(
        val_loss=("val_loss", "mean"),
        val_acc=("val_acc", "mean"),
        test_loss=("test_loss", "mean"),
        test_acc=("test_acc", "mean"),
    ).reset_index()
    # Each optimizer's rows are held to the best run of its own constant/cosine sweep.
    bests = {}
    for opt in ("adam", *OTHER_OPTIMIZERS):
        sweep = agg[agg["method"].isin([f"{opt}-constant", f"{opt}-cosine"])]
        if len(sweep):
            bests[opt] = sweep.loc[sweep["val_loss"].idxmin()]
    best = bests["adam"]
    best_loss = float(best["test_loss"])  # the finer constant grid's reference

    def best_for(method):
        row = bests.get(optimizer_of(method), best)
        return float(row["test_acc"]), float(row["test_loss"])

    def cell(g, key, scale, digits):
        return _pm(g[key].to_numpy(), scale, digits)

    table = {}
    for (method, lr0), g in groups:
        col = "any" if lr0 < 0 else f"{lr0:g}"
        table.setdefault(method, {})[col] = (
            f"{cell(g, 'test_acc', 100, 1)} / {cell(g, 'test_loss', 1, 3)}"
        )
    cols = ["any"] + [f"{x:g}" for x in LRS]
    present = pd.DataFrame(table).T
    test_table = present.reindex(columns=[c for c in cols if c in present]).fillna("")

    vtable = {}
    targets = {}
    for (method, lr0), g in groups:
        col = "any" if lr0 < 0 else f"{lr0:g}"
        vtable.setdefault(method, {})[col] = (
            f"{cell(g, 'val_acc', 100, 1)} / {cell(g, 'val_loss', 1, 3)}"
        )
        acc, loss = g["test_acc"].mean(), g["test_loss"].mean()
        ref_acc, ref_loss = best_for(method)
        ok = bool(acc * 100 >= ref_acc * 100 - 1.0 and loss <= ref_loss * 1.05)
        targets.setdefault(method, {})[col] = ("PASS" if ok else "miss") + (
            f" ({(acc - ref_acc) * 100:+.1f} pt, {(loss / ref_loss - 1) * 100:+.0f} %)"
        )
    val_table = pd.DataFrame(vtable).T.reindex(columns=test_table.columns).fillna("")
    target_table = pd.DataFrame(targets).T.reindex(columns=test_table.columns).fillna("")

    # The recommended setting: the auto method of lowest mean validation loss,
    # averaged over every initial lr (the goal is "good from any start").
    auto = agg[agg["method"].str.startswith("auto")]
    by_method = auto.groupby("method")[["val_loss", "val_acc"]].mean().sort_values("val_loss")
    secs = df_all.groupby("method")["seconds"].sum()
    fit = fit_table(df_all[df_all["method"].map(optimizer_of) == "adam"])
    levels = level_table(df)
    fine_table = fine_constant_table(df, fine, best_loss)
    inside = fine_table.index[fine_table["test_loss"].astype(float) <= 1.05 * best_loss]
    window = ", ".join(x.removeprefix("lr ") for x in inside) if len(inside) else "none"

    lines = [
        "# Digits (MLP + Adam)",
        "",
        f"Machine: {machine['cpu_model']} ({machine['cpu_cores']} cores), backend "
        f"{machine['backend']}; jax {machine['versions'].get('jax')}, optax "
        f"{machine['versions'].get('optax')}, scikit-learn "
        f"{machine['versions'].get('scikit-learn')}; {machine['date']}.",
        f"Command: `{machine['command']}`; {machine['epochs']} epochs of "
        f"{runs[0].get('steps_per_epoch', runs[0]['every'])} steps (batch {machine['batch']}), "
        f"{len(runs)} runs, "
        f"{df['seconds'].sum():.0f} s of runs (compilation excluded).",
        "",
        "## Test accuracy (%) / test loss, mean ± std over seeds, by initial learning rate",
        "",
        test_table.to_markdown(),
        "",
        "Best of the constant/cosine sweep (chosen on validation loss): "
        + "; ".join(
            f"{row['method']} at lr {row['lr0']:g}: test accuracy "
            f"{float(row['test_acc']) * 100:.1f} %, test loss {float(row['test_loss']):.3f}"
            for row in bests.values()
        )
        + " (the rows of another optimizer are held to its own sweep's best, every other row "
        "to Adam's).",
        "",
        "## Target: test accuracy within 1 point and test loss within 5 % of that best run",
        "",
        target_table.to_markdown(),
        "",
        "## Validation accuracy (%) / validation loss (what the settings are chosen on)",
        "",
        val_table.to_markdown(),
        "",
        "## auto_lr settings ranked by validation loss averaged over every initial lr",
        "",
        by_method.to_markdown(floatfmt=".4f"),
        "",
        "## How far a run fits the training set against its test loss",
        "",
        "Every Adam run above 95 % test accuracy, binned by its final training loss (the mean "
        "over the last epoch): the lower the training loss, the higher the test loss "
        f"(Spearman rank correlation {fit.attrs['spearman']:+.2f} over {fit.attrs['runs']} "
        "runs).",
        "",
        fit.to_markdown(floatfmt=("", ".0f", ".3f", ".3f")),
        "",
        "## Constant Adam between the grid's points (a diagnostic, not part of the sweep)",
        "",
        "The sweep's grid is decades. The constant rates whose mean test loss is within 5 % "
        f"of the best run's: {window}; an automated level has to stay there.",
        "",
        fine_table.to_markdown(disable_numparse=True) if len(fine_table) else "(not run)",
        "",
        "## The level each automated setting holds",
        "",
        "The applied learning rate at the probes (every epoch) over all seeds and starts, "
        "from the second probe (after the search) to the cooldown: median, and the 10th and "
        "90th percentiles (how far it swings).",
        "",
        levels.to_markdown(floatfmt=".2e"),
        "",
        "## Seconds of runs per method (all initial lrs and seeds)",
        "",
        secs.to_frame("seconds").to_markdown(floatfmt=".1f"),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.digits", description=__doc__)
    parser.add_argument("what", nargs="?", default="all", choices=("all", "plan", "run", "report"))
    parser.add_argument("--quick", action="store_true", help="a few runs of 4 epochs")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    parser.add_argument(
        "--seeds", type=int, default=None, help=f"run seeds 0 .. N-1 (default {len(SEEDS)})"
    )
    parser.add_argument(
        "--methods", default=None, help="comma-separated plan rows to run (default: all)"
    )
    args = parser.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.what == "plan":
        for m in plan(args.quick):
            print(m.name, json.dumps(m.settings()))
        return 0
    if args.what in ("all", "run"):
        seeds = None if args.seeds is None else tuple(range(args.seeds))
        methods = None if args.methods is None else tuple(args.methods.split(","))
        run_all(args.out, args.quick, seeds, methods)
    if args.what in ("all", "report"):
        text = report(args.out / "runs.jsonl")
        (args.out / "report.md").write_text(text)
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
