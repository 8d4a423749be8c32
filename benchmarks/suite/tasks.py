"""The suite's tasks: data, model, loss, optimizer and metric of each, in plain JAX.

Every task is small enough for a 2-core CPU and splits its data three ways:
train (gradient steps), validation (every choice: grids, defaults) and test
(read once, for the report). Seeds vary the initialisation and the batch order;
the split is fixed per task (seed 0), so every seed is scored on the same data.

* ``digits``: scikit-learn's bundled 8x8 digits, a 64-128-128-10 ReLU MLP,
  Adam, batch 128, 40 epochs; validation cross-entropy.
* ``diabetes``: scikit-learn's bundled diabetes regression (442 patients, 10
  features), a 10-64-64-1 ReLU MLP, SGD with Nesterov momentum 0.9, batch 32,
  60 epochs; validation mean squared error over the target's variance.
* ``bytelm``: a byte-level causal transformer (2 layers, width 64, 4 heads,
  context 64) on the English prose of CPython's bundled documentation topics
  (``pydoc_data.topics``; indented code examples removed), AdamW with weight
  decay 0.1 and global-norm clipping at 1, batch 32, 800 steps, linear warmup over
  the first 5 %; validation bits per byte.
* ``cifar-sgd`` and ``cifar-momentum``: real CIFAR-10 (``../shared/data``; a
  class-balanced 5,000-image training subset, 1,000 validation images carved from
  the rest of the training set, 2,000 test images), a small CNN (three 3x3
  convolutions of 8, 16 and 32 channels, each with ReLU and 2x2 max-pooling, then a
  linear layer), plain SGD or SGD with momentum 0.9, batch 32, 5 epochs;
  validation accuracy. A stand-in for the example's ``cpu`` protocol (ResNet-18 at
  width 1/8, 15 epochs, ~4 min a run here), small enough for a tuned sweep on a
  2-core CPU; run as a Python loop over one jitted step, since XLA:CPU runs
  convolutions inside ``lax.scan`` many times slower.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["TASKS", "Data", "Task", "get_task"]


@dataclasses.dataclass(frozen=True)
class Data:
    """Arrays of one task: ``train``, ``val`` and ``test`` are ``(inputs, targets)`` pairs."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of the suite.

    Attributes:
      name: the task's name in the plan and the report.
      optimizer: ``optimizer(learning_rate) -> GradientTransformation``, the task's
        optimizer at a rate or schedule (clipping and weight decay included).
      optimizer_name: how the report names it.
      factory: the Optax factory ``auto_lr`` and ``lr_find`` wrap, and its keywords.
      pre: transformations that come before the scaled step (e.g. clipping), as
        a tuple of ``GradientTransformation``; ``auto_lr`` is chained after them.
      lr_free: the learning-rate-free comparators' family: ``"adam"`` or ``"sgd"``.
      metric: the validation metric's name; ``higher_is_better`` its direction.
      batch_size, steps, warmup: the budget (warmup: steps of linear warmup the
        fixed schedules and auto's shape start with).
      every: auto_lr's probe interval, in updates.
      grid: the fixed schedules' first peak-rate grid (half-decade steps); the
        runner extends it until the best rate is interior.
      starts: auto_lr's five initial rates, spanning four decades.
      load: ``() -> Data``.
      init: ``(key) -> params``.
      loss_fn: ``(params, batch) -> scalar`` training loss.
      evaluate: ``(params, inputs, targets) -> {metric: value, ...}``.
      scan: whether a run is one ``lax.scan`` (else a Python loop over a jitted step).
    """

    name: str
    optimizer: Callable[[Any], optax.GradientTransformation]
    optimizer_name: str
    factory: tuple[Callable[..., optax.GradientTransformation], dict]
    pre: Callable[[], tuple]
    lr_free: str
    metric: str
    higher_is_better: bool
    batch_size: int
    steps: int
    warmup: int
    every: int
    grid: tuple[float, ...]
    starts: tuple[float, ...]
    load: Callable[[], Data]
    init: Callable[[jax.Array], Any]
    loss_fn: Callable[[Any, Any], jax.Array]
    evaluate: Callable[[Any, Any, Any], dict]
    scan: bool = True

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.load().train[1]) // self.batch_size)


def half_decades(lo_exp2: int, hi_exp2: int) -> tuple[float, ...]:
    """``10 ** (k / 2)`` for ``k`` in ``[lo_exp2, hi_exp2]``: a grid in x sqrt(10) steps."""
    return tuple(float(10.0 ** (k / 2)) for k in range(lo_exp2, hi_exp2 + 1))


def _split(n: int, test: float = 0.2, val: float = 0.2, seed: int = 0):
    """Index arrays of a fixed train / validation / test split of ``n`` examples."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test * n))
    n_val = int(round(val * (n - n_test)))
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


# --- MLPs (digits, diabetes) --------------------------------------------------------------


def _mlp_init(key, sizes):
    params = []
    keys = jax.random.split(key, len(sizes) - 1)
    for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True):
        # He initialisation for ReLU layers, zero biases.
        params.append(
            {"w": jax.random.normal(k, (a, b)) * math.sqrt(2.0 / a), "b": jnp.zeros((b,))}
        )
    return params


def _mlp(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


@functools.cache
def _digits() -> Data:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    tr, va, te = _split(len(y))
    y = y.astype(np.int32)
    return Data((x[tr], y[tr]), (x[va], y[va]), (x[te], y[te]))


def _xent(params, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(_mlp(params, x), y).mean()


def _eval_classifier(params, x, y):
    logits = _mlp(params, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return {"loss": loss, "accuracy": 100.0 * jnp.mean(jnp.argmax(logits, -1) == y)}


@functools.cache
def _diabetes() -> Data:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    tr, va, te = _split(len(y))
    # Standardised on the training split: the MSE is then in units of the target's variance.
    mx, sx = x[tr].mean(0), x[tr].std(0)
    my, sy = y[tr].mean(), y[tr].std()
    x = ((x - mx) / sx).astype(np.float32)
    y = ((y - my) / sy).astype(np.float32)
    return Data((x[tr], y[tr]), (x[va], y[va]), (x[te], y[te]))


def _mse(params, batch):
    x, y = batch
    return jnp.mean((_mlp(params, x)[:, 0] - y) ** 2)


def _eval_regression(params, x, y):
    return {"mse": jnp.mean((_mlp(params, x)[:, 0] - y) ** 2)}


# --- byte-level transformer LM --------------------------------------------------------------

CTX, WIDTH, HEADS, LAYERS = 64, 64, 4, 2


def english_corpus() -> bytes:
    """The prose of CPython's documentation topics (bundled with every Python), as ASCII bytes.

    Indented blocks (code examples, grammar) and reStructuredText markup lines are
    dropped, so what is left is English text, not source code.
    """
    from pydoc_data import topics

    lines = []
    for key in sorted(topics.topics):
        for line in topics.topics[key].splitlines():
            if not line.strip() or line.startswith((" ", "\t")) or line.startswith((">>>", "...")):
                continue
            if re.fullmatch(r"[\W_]+", line.strip()):  # underlines of headings
                continue
            lines.append(line.strip())
    return "\n".join(lines).encode("ascii", "ignore")


def _windows(data: np.ndarray, n: int, seed: int) -> np.ndarray:
    starts = np.random.default_rng(seed).integers(0, len(data) - CTX - 1, n)
    return np.stack([data[s : s + CTX + 1] for s in starts])


@functools.cache
def _bytelm() -> Data:
    data = np.frombuffer(english_corpus(), np.uint8).astype(np.int32)
    n = len(data)
    a, b = int(0.9 * n), int(0.95 * n)
    train, val, test = data[:a], data[a:b], data[b:]
    # Training "examples": 32,768 fixed windows, batches drawn from them; validation and
    # test: 512 fixed windows each.
    tr = _windows(train, 32768, 0)
    va, te = _windows(val, 512, 1), _windows(test, 512, 2)
    return Data((tr[:, :-1], tr[:, 1:]), (va[:, :-1], va[:, 1:]), (te[:, :-1], te[:, 1:]))


def _lm_init(key):
    ks = iter(jax.random.split(key, 4 + 4 * LAYERS))
    d = WIDTH

    def dense(k, a, b, scale=1.0):
        return jax.random.normal(k, (a, b)) * (scale / math.sqrt(a))

    params = {
        "embed": jax.random.normal(next(ks), (256, d)) * 0.02,
        "pos": jax.random.normal(next(ks), (CTX, d)) * 0.02,
        "blocks": [],
        "ln": {"g": jnp.ones(d), "b": jnp.zeros(d)},
        "out": dense(next(ks), d, 256),
    }
    for _ in range(LAYERS):
        params["blocks"].append(
            {
                "ln1": {"g": jnp.ones(d), "b": jnp.zeros(d)},
                "qkv": dense(next(ks), d, 3 * d),
                "proj": dense(next(ks), d, d, 1.0 / math.sqrt(2 * LAYERS)),
                "ln2": {"g": jnp.ones(d), "b": jnp.zeros(d)},
                "fc": dense(next(ks), d, 4 * d),
                "fc2": dense(next(ks), 4 * d, d, 1.0 / math.sqrt(2 * LAYERS)),
            }
        )
    return params


def _ln(p, x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + 1e-5) * p["g"] + p["b"]


def _lm_logits(params, tokens):
    b, t = tokens.shape
    x = params["embed"][tokens] + params["pos"][:t]
    mask = jnp.tril(jnp.ones((t, t), bool))
    hd = WIDTH // HEADS
    for blk in params["blocks"]:
        q, k, v = jnp.split(_ln(blk["ln1"], x) @ blk["qkv"], 3, axis=-1)
        q, k, v = (z.reshape(b, t, HEADS, hd) for z in (q, k, v))
        att = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        att = jax.nn.softmax(jnp.where(mask, att, -1e9), axis=-1)
        y = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, WIDTH)
        x = x + y @ blk["proj"]
        x = x + jax.nn.gelu(_ln(blk["ln2"], x) @ blk["fc"]) @ blk["fc2"]
    return _ln(params["ln"], x) @ params["out"]


def _lm_loss(params, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(_lm_logits(params, x), y).mean()


def _eval_lm(params, x, y):
    return {"bpb": _lm_loss(params, (x, y)) / math.log(2.0)}


# --- CIFAR-10, small CNN -------------------------------------------------------------------

CIFAR_ARCHIVE = (
    pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / ("cifar10-jpg.tar.gz")
)
CNN_CHANNELS = (8, 16, 32)


def _balanced(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices, the same number per class (labels 0-9), in a random order."""
    per = n // 10
    idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in range(10)])
    return rng.permutation(idx)


@functools.cache
def _cifar() -> Data:
    # The example's loader: decodes the JPEG archive once, caches the arrays outside the repo.
    from examples.cifar10.input_pipeline import load_image_folder

    if not CIFAR_ARCHIVE.exists():
        raise FileNotFoundError(f"the CIFAR-10 tasks need {CIFAR_ARCHIVE} (see shared/README.md)")
    ds = load_image_folder(CIFAR_ARCHIVE)
    rng = np.random.default_rng(0)
    pool = _balanced(ds.train.labels, 6000, rng)
    tr, va = pool[:5000], pool[5000:]
    te = _balanced(ds.test.labels, 2000, rng)
    mean = ds.train.images[tr].reshape(-1, 3).mean(0) / 255.0
    std = ds.train.images[tr].reshape(-1, 3).std(0) / 255.0

    def prep(images):
        return ((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)

    return Data(
        (prep(ds.train.images[tr]), ds.train.labels[tr].astype(np.int32)),
        (prep(ds.train.images[va]), ds.train.labels[va].astype(np.int32)),
        (prep(ds.test.images[te]), ds.test.labels[te].astype(np.int32)),
    )


def _cnn_init(key):
    keys = jax.random.split(key, len(CNN_CHANNELS) + 1)
    params, c_in = [], 3
    for k, c in zip(keys[:-1], CNN_CHANNELS, strict=True):
        params.append(
            {"w": jax.random.normal(k, (3, 3, c_in, c)) * math.sqrt(2.0 / (9 * c_in)),
             "b": jnp.zeros((c,))}
        )  # fmt: skip
        c_in = c
    flat = 4 * 4 * CNN_CHANNELS[-1]
    params.append(
        {"w": jax.random.normal(keys[-1], (flat, 10)) / math.sqrt(flat), "b": jnp.zeros((10,))}
    )
    return params


def _cnn(params, x):
    for layer in params[:-1]:
        x = jax.lax.conv_general_dilated(
            x, layer["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        x = jax.nn.relu(x + layer["b"])
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return x.reshape(x.shape[0], -1) @ params[-1]["w"] + params[-1]["b"]


def _cnn_xent(params, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(_cnn(params, x), y).mean()


def _eval_cnn(params, x, y):
    logits = jnp.concatenate([_cnn(params, x[i : i + 500]) for i in range(0, len(y), 500)])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return {"accuracy": 100.0 * jnp.mean(jnp.argmax(logits, -1) == y), "loss": loss}


def _cifar_task(name: str, momentum: float | None, grid, starts, adam: bool = False) -> Task:
    kwargs = {} if momentum is None else {"momentum": momentum}
    factory = optax.adam if adam else optax.sgd
    return Task(
        name=name,
        optimizer=lambda lr: factory(lr, **kwargs),
        optimizer_name="Adam"
        if adam
        else "SGD" + ("" if momentum is None else f", momentum {momentum}"),
        factory=(factory, kwargs),
        pre=lambda: (),
        lr_free="adam" if adam else "sgd",
        metric="accuracy",
        higher_is_better=True,
        batch_size=32,
        steps=5 * 156,
        warmup=0,
        every=39,  # four probes an epoch
        grid=grid,
        starts=starts,
        load=_cifar,
        init=_cnn_init,
        loss_fn=_cnn_xent,
        evaluate=_eval_cnn,
        scan=False,
    )


# --- the table ------------------------------------------------------------------------------


def _adamw_clipped(learning_rate):
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(learning_rate, weight_decay=0.1))


TASKS: dict[str, Task] = {
    "digits": Task(
        name="digits",
        optimizer=lambda lr: optax.adam(lr),
        optimizer_name="Adam",
        factory=(optax.adam, {}),
        pre=lambda: (),
        lr_free="adam",
        metric="loss",
        higher_is_better=False,
        batch_size=128,
        steps=40 * 8,
        warmup=0,
        every=8,
        grid=half_decades(-8, -2),  # 1e-4 .. 1e-1
        starts=(1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
        load=_digits,
        init=lambda key: _mlp_init(key, (64, 128, 128, 10)),
        loss_fn=_xent,
        evaluate=_eval_classifier,
    ),
    "diabetes": Task(
        name="diabetes",
        optimizer=lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
        optimizer_name="SGD, Nesterov momentum 0.9",
        factory=(optax.sgd, {"momentum": 0.9, "nesterov": True}),
        pre=lambda: (),
        lr_free="sgd",
        metric="mse",
        higher_is_better=False,
        batch_size=32,
        steps=60 * 8,
        warmup=0,
        every=8,
        grid=half_decades(-8, -2),  # 1e-4 .. 1e-1
        starts=(1e-4, 1e-3, 1e-2, 1e-1, 1.0),
        load=_diabetes,
        init=lambda key: _mlp_init(key, (10, 64, 64, 1)),
        loss_fn=_mse,
        evaluate=_eval_regression,
    ),
    "bytelm": Task(
        name="bytelm",
        optimizer=_adamw_clipped,
        optimizer_name="AdamW (weight decay 0.1), global-norm clipping 1",
        factory=(optax.adamw, {"weight_decay": 0.1}),
        pre=lambda: (optax.clip_by_global_norm(1.0),),
        lr_free="adam",
        metric="bpb",
        higher_is_better=False,
        batch_size=32,
        steps=800,
        warmup=40,
        every=20,
        grid=half_decades(-8, -3),  # 1e-4 .. 3e-2
        starts=(1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
        load=_bytelm,
        init=_lm_init,
        loss_fn=_lm_loss,
        evaluate=_eval_lm,
    ),
    "cifar-sgd": _cifar_task("cifar-sgd", None, half_decades(-4, 0), (1e-4, 1e-3, 1e-2, 1e-1, 1.0)),
    "cifar-momentum": _cifar_task(
        "cifar-momentum", 0.9, half_decades(-6, -2), (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    ),
    # Registered after the auto-matched runs, as a task none of the level rules was chosen on.
    "cifar-adam": _cifar_task(
        "cifar-adam", None, half_decades(-8, -3), (1e-5, 1e-4, 1e-3, 1e-2, 1e-1), adam=True
    ),
}


def get_task(name: str) -> Task:
    """The task called ``name``; ``ValueError`` naming the known ones otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; the suite's tasks are {sorted(TASKS)}")
    return TASKS[name]
