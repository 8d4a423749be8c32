"""What one ``auto_lr`` probe costs, against a forward pass, a training step and the seed's way.

One command, one table; every ratio is formed from numbers measured in the same
run, on the same machine::

    python benchmarks/probe_overhead.py          # ResNet-18 + small CNN, full width
    python benchmarks/probe_overhead.py --quick  # tiny widths, 2 repetitions (smoke test)

For each model (ResNet-18 CIFAR variant from ``examples/cifar10/models.py``, and
a small CNN defined here), at batch 32 on 32x32x3 inputs with N factors:

* JAX: one jitted forward (the loss); one jitted training step (forward,
  backward, ``optax.sgd`` update); the N-candidate probe under each strategy
  (``vmap``, ``map``, ``map`` with a chunk size, ``auto`` and what it picked),
  timed through the public API as *jitted* ``tx.update`` *on a probing update
  minus the same call on a non-probing update* (the probe's candidate forwards,
  scoring and the recomputation of the inner update at the new learning rate);
  the probe as a multiple of the floor N x forward and of a training step; the
  probe's extra temporary memory from XLA's ``memory_analysis()`` of the compiled
  update against that of a forward pass (on CPU from a second compilation without
  YNNPACK fusions, whose internal buffers XLA's accounting does not see).
* Epoch overhead of probing once per epoch (``every`` = steps per epoch): measured
  by running a whole epoch of training steps with ``auto_lr`` and with the plain
  optimizer when that fits the time budget, otherwise derived from the measured
  step times (probing step, non-probing step, plain step); the table says which.
* The peer: Algorithm 1 of the seed in PyTorch, one ``copy.deepcopy`` of the
  model per factor (``benchmarks/torch_alg1.py``), on the same CPU and the same
  architecture, with its probe-to-training-step ratio.

Results go to ``<out>/probe_overhead.md`` and ``<out>/probe_overhead.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _common import block, machine_facts, median_time  # noqa: E402

SCHEMA = "autolr_jax/probe_overhead/v1"
SEED_FACTORS = {
    3: (2.0, 1.0, 0.5),
    5: (4.0, 2.0, 1.0, 0.5, 0.125),
    7: (8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125),
}
MODELS = ("resnet18", "small_cnn")
LEARNING_RATE = 0.005  # the seed's initial learning rate
CIFAR10_TRAIN = 50_000
BIG_EVERY = 1_000_000  # "never probes again" for the isolated probe timing

# Targets of issue 3.
TARGET_FLOOR = 1.0  # chosen strategy's probe <= 1.0 x (N x forward)
TARGET_VS_TORCH = 0.5  # JAX probe/step ratio <= half of the PyTorch one
TARGET_EPOCH = 0.01  # probing once per epoch costs <= 1 %


# --------------------------------------------------------------------------- models


class SmallCNN(nnx.Module):
    """Two 3x3 convolutions (the second with stride 2), global mean pool, dense."""

    def __init__(self, c1: int, c2: int, num_classes: int = 10, *, rngs: nnx.Rngs):
        pad = ((1, 1), (1, 1))  # as PyTorch's padding=1, also at stride 2
        self.conv1 = nnx.Conv(3, c1, (3, 3), padding=pad, rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, (3, 3), strides=(2, 2), padding=pad, rngs=rngs)
        self.fc = nnx.Linear(c2, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no batch statistics
        x = nnx.relu(self.conv1(x))
        x = nnx.relu(self.conv2(x))
        return self.fc(jnp.mean(x, axis=(1, 2)))


def _load_cifar_models():
    path = _ROOT / "examples" / "cifar10" / "models.py"
    spec = importlib.util.spec_from_file_location("_cifar10_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_models(name: str, width: float, seed: int = 0, abstract: bool = False):
    """(Flax NNX model, PyTorch model, description) of the same architecture.

    With ``abstract=True`` the NNX model holds shapes only (``nnx.eval_shape``).
    """
    import torch_alg1

    if name == "resnet18":
        make = lambda: _load_cifar_models().resnet18(width=width, rngs=nnx.Rngs(seed))
        base = max(1, round(64 * width))
        widths = tuple(base * 2**i for i in range(4))
        torch_model = torch_alg1.ResNet18(widths)
        desc = f"ResNet-18 (CIFAR variant, BatchNorm), widths {widths}"
    elif name == "small_cnn":
        c1, c2 = max(1, round(32 * width)), max(1, round(64 * width))
        make = lambda: SmallCNN(c1, c2, rngs=nnx.Rngs(seed))
        torch_model = torch_alg1.SmallCNN(c1, c2)
        desc = f"small CNN: conv3x3({c1}) - conv3x3/2({c2}) - mean pool - dense(10)"
    else:
        raise ValueError(f"unknown model {name!r}; choose from resnet18, small_cnn")
    jax_model = nnx.eval_shape(make) if abstract else make()
    return jax_model, torch_model, desc


# --------------------------------------------------------------------------- helpers


def _auto_api():
    """``auto_lr`` and the function telling which strategy ``"auto"`` picks."""
    import autolr_jax

    try:
        from autolr_jax.auto import default_probe_strategy
    except ImportError:
        from autolr_jax.auto._strategy import default_probe_strategy
    auto_lr = getattr(autolr_jax, "auto_lr", None)
    if auto_lr is None:
        try:
            from autolr_jax.auto import auto_lr
        except ImportError:
            from autolr_jax.auto._auto_lr import auto_lr
    return auto_lr, default_probe_strategy


def _factors(n: int) -> tuple[float, ...]:
    if n in SEED_FACTORS:
        return SEED_FACTORS[n]
    # Powers of two around 1, largest first, as the seed's lists.
    return tuple(float(2.0 ** (n // 2 - i)) for i in range(n))


def _mem(compiled) -> dict[str, int] | None:
    try:
        m = compiled.memory_analysis()
    except Exception:  # some backends do not implement it
        return None
    if m is None:
        return None
    out = {
        k: int(getattr(m, k))
        for k in (
            "temp_size_in_bytes",
            "argument_size_in_bytes",
            "output_size_in_bytes",
            "alias_size_in_bytes",
            "generated_code_size_in_bytes",
        )
        if hasattr(m, k)
    }
    if hasattr(m, "peak_memory_in_bytes"):
        out["peak_memory_in_bytes"] = int(m.peak_memory_in_bytes)
    return out


_T0 = time.perf_counter()


def _log(msg: str) -> None:
    print(f"[probe_overhead {time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


# XLA:CPU hands convolution chains to YNNPACK fusions whose intermediate buffers
# it allocates itself, invisible to XLA's buffer assignment: memory_analysis() of
# the program as run then reports a few KiB for a whole CNN forward. Compiling a
# second time with those fusions off puts every buffer in XLA's accounting.
_CPU_ALL_BUFFERS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _compile(fn, *args, memory: bool = True):
    """(compiled, compile seconds, memory record) of ``jax.jit(fn)`` at ``args``.

    The memory record has ``as_run`` (``memory_analysis()`` of the compiled
    program) and, on CPU, ``all_buffers`` (the same program compiled without
    YNNPACK fusions, for memory accounting only); ``temp_bytes`` is the latter
    when available.
    """
    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    compiled = lowered.compile()
    ct = time.perf_counter() - t0
    if not memory:
        return compiled, ct, None
    mem: dict[str, Any] = {"as_run": _mem(compiled), "all_buffers": None}
    if jax.default_backend() == "cpu":
        try:
            mem["all_buffers"] = _mem(lowered.compile(compiler_options=_CPU_ALL_BUFFERS))
        except Exception as e:  # an XLA without this option: keep the as-run numbers
            mem["all_buffers_error"] = f"{type(e).__name__}: {e}"[:300]
    best = mem["all_buffers"] or mem["as_run"]
    mem["temp_bytes"] = None if best is None else best.get("temp_size_in_bytes")
    return compiled, ct, mem


def _reps_for(first_call_s: float, reps: int, budget_s: float) -> int:
    """Repetitions for a call that took ``first_call_s``.

    At least 10 for calls under a second (they are cheap, and noisy); fewer
    than ``reps`` (but at least 2) where the repetitions would exceed ``budget_s``.
    """
    if first_call_s <= 0 or not math.isfinite(budget_s):
        return reps
    want = max(reps, 10) if first_call_s < 1.0 else reps
    return max(2, min(want, int(budget_s // first_call_s)))


def _timed(fn, reps: int, budget_s: float, warmup: int = 1) -> dict[str, Any]:
    for _ in range(warmup - 1):
        fn()
    t0 = time.perf_counter()
    fn()  # warm-up: first-run allocations
    first = time.perf_counter() - t0
    n = _reps_for(first, reps, budget_s)
    med, times = median_time(fn, n, warmup=0)
    return {"median_s": med, "times_s": times, "reps": n}


def _interleaved(fns, reps: int, budget_s: float, warmup: bool = True) -> list[dict]:
    """Times the calls in ``fns`` round-robin (a, b, c, a, b, c, ...) so drift hits all alike."""
    n = reps
    if warmup:
        t0 = time.perf_counter()
        for fn in fns:
            fn()
        n = _reps_for(time.perf_counter() - t0, reps, budget_s)
    times = [[] for _ in fns]
    for _ in range(n):
        for fn, acc in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return [{"median_s": statistics.median(t), "times_s": t, "reps": n} for t in times]


# --------------------------------------------------------------------------- JAX side


def _jax_functions(model: nnx.Module):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply(params, rest, x, train):
        m = nnx.merge(graphdef, params, rest, copy=True)
        logits = m(x, train=train)
        return logits, nnx.split(m, nnx.Param, ...)[2]

    def loss_fn(params, batch):
        # The probe's loss, written as auto_lr's docstring says for NNX with
        # BatchNorm: the non-parameter state travels in the batch, the model is
        # rebuilt in train mode (batch statistics, as the training step), and
        # the running statistics that forward computes are dropped with the copy.
        x, y, rest = batch
        logits, _ = apply(params, rest, x, True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def make_train_step(tx):
        def step(params, rest, opt_state, batch):
            x, y, _ = batch

            def loss_and_stats(p):
                logits, new_rest = apply(p, rest, x, True)
                loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
                return loss, new_rest

            (loss, new_rest), grads = jax.value_and_grad(loss_and_stats, has_aux=True)(params)
            updates, opt_state = tx.update(grads, opt_state, params, batch=(x, y, rest))
            return optax.apply_updates(params, updates), new_rest, opt_state, loss

        return step

    return params, rest, loss_fn, make_train_step


class _ExtraArgsSGD:
    """``optax.sgd`` accepting (and ignoring) ``batch=`` as ``auto_lr`` does: one step body."""

    def __init__(self, lr):
        self.tx = optax.sgd(lr)
        self.init = self.tx.init

    def update(self, grads, state, params=None, **extra):
        del extra
        return self.tx.update(grads, state, params)


def measure_jax(model, batch, factors, strategies, args) -> dict[str, Any]:
    auto_lr, default_probe_strategy = _auto_api()
    params, rest, loss_fn, make_train_step = _jax_functions(model)
    batch = (*batch, rest)  # (x, y, non-parameter state): what loss_fn takes
    n = len(factors)
    budget = args.max_seconds
    steps = args.epoch_steps
    out: dict[str, Any] = {
        "params": int(sum(x.size for x in jax.tree.leaves(params))),
        "auto_picks": default_probe_strategy(),
    }

    # One forward (the loss, as the probe evaluates it).
    fwd, ct, fwd_mem = _compile(loss_fn, params, batch)
    out["forward"] = _timed(lambda: block(fwd(params, batch)), args.reps, budget)
    out["forward"].update(compile_s=ct, memory=fwd_mem)
    _log(f"forward {1e3 * out['forward']['median_s']:.1f} ms (compile {ct:.1f} s)")
    t_fwd = out["forward"]["median_s"]
    out["floor_s"] = n * t_fwd

    # Training steps (forward + backward + update): plain optax.sgd, and auto_lr
    # (strategy "auto") probing once per epoch, where update 0 probes and update
    # 1 does not. Timed round-robin; more repetitions than --reps where they are
    # cheap, because the non-probing step is compared with the plain one to a
    # fraction of a percent.
    plain = _ExtraArgsSGD(LEARNING_RATE)
    plain_state = plain.init(params)
    step_plain, ct_plain, step_mem = _compile(
        make_train_step(plain), params, rest, plain_state, batch
    )
    tx_auto = auto_lr(
        optax.sgd,
        learning_rate=LEARNING_RATE,
        loss_fn=loss_fn,
        factors=factors,
        every=max(steps, 2),
    )
    a0 = tx_auto.init(params)
    step_auto, ct_auto, _ = _compile(
        make_train_step(tx_auto), params, rest, a0, batch, memory=False
    )
    a1 = block(step_auto(params, rest, a0, batch))[2]
    _log(f"compiled train steps (plain {ct_plain:.1f} s, auto_lr {ct_auto:.1f} s)")
    t_plain, t_sp, t_snp = _interleaved(
        [
            lambda: block(step_plain(params, rest, plain_state, batch)),
            lambda: block(step_auto(params, rest, a0, batch)),
            lambda: block(step_auto(params, rest, a1, batch)),
        ],
        max(args.reps, 10),
        budget,
    )
    out["train_step"] = dict(t_plain, compile_s=ct_plain, memory=step_mem)
    out["train_step_auto_probing"] = dict(t_sp, compile_s=ct_auto)
    out["train_step_auto_non_probing"] = t_snp
    t_step = t_plain["median_s"]
    _log(
        f"train step {1e3 * t_step:.1f} ms; auto_lr probing {1e3 * t_sp['median_s']:.1f} ms, "
        f"non-probing {1e3 * t_snp['median_s']:.1f} ms"
    )

    # The plain inner update alone: the baseline the probe's memory is measured against.
    grads = jax.jit(jax.grad(loss_fn))(params, batch)
    sgd = optax.sgd(LEARNING_RATE)
    sgd_state = sgd.init(params)
    _, _, sgd_mem = _compile(lambda g, s, p: sgd.update(g, s, p), grads, sgd_state, params)
    out["inner_update_memory"] = sgd_mem
    fwd_temp = fwd_mem["temp_bytes"]

    # The probe under each strategy: jitted tx.update on a probing call (count 0)
    # minus the same compiled call on a non-probing one (count 1, every huge).
    out["probe"] = {}
    for label, strategy, chunk in strategies:
        tx = auto_lr(
            optax.sgd,
            learning_rate=LEARNING_RATE,
            loss_fn=loss_fn,
            factors=factors,
            every=BIG_EVERY,
            strategy=strategy,
            chunk_size=chunk,
        )
        s0 = tx.init(params)

        def upd_fn(g, s, p, b, tx=tx):
            return tx.update(g, s, p, batch=b)

        upd, ct, mem = _compile(upd_fn, grads, s0, params, batch)
        s1 = block(upd(grads, s0, params, batch))[1]
        t_probe, t_skip = _interleaved(
            [
                lambda upd=upd, s0=s0: block(upd(grads, s0, params, batch)),
                lambda upd=upd, s1=s1: block(upd(grads, s1, params, batch)),
            ],
            args.reps,
            budget,
        )
        # Not clamped at 0: a negative value would be timing noise, and shows as such.
        probe_s = t_probe["median_s"] - t_skip["median_s"]
        extra = None
        if mem["temp_bytes"] is not None and sgd_mem["temp_bytes"] is not None:
            extra = max(mem["temp_bytes"] - sgd_mem["temp_bytes"], 0)
        out["probe"][label] = {
            "strategy": strategy,
            "chunk_size": chunk,
            "resolved": strategy if strategy != "auto" else out["auto_picks"],
            "probe_s": probe_s,
            "x_floor": probe_s / out["floor_s"],
            "x_train_step": probe_s / t_step,
            "update_probing": t_probe,
            "update_non_probing": t_skip,
            "compile_s": ct,
            "memory": mem,
            "extra_temp_bytes": extra,
            "extra_temp_x_forward": (extra / fwd_temp)
            if (extra is not None and fwd_temp)
            else None,
        }
        _log(f"probe {label}: {1e3 * probe_s:.1f} ms (compile {ct:.1f} s)")

    # Epoch overhead of one probe per epoch of `steps` training steps.
    t_p, t_np = t_sp["median_s"], t_snp["median_s"]
    derived = (t_p + (steps - 1) * t_np) / (steps * t_step) - 1.0
    epoch: dict[str, Any] = {
        "steps": steps,
        "derived_overhead": derived,
        "derived_formula": "(t_step_probing + (S-1) t_step_non_probing) / (S t_step_plain) - 1",
        "derived_probe_share": (t_p - t_np) / (steps * t_step),
        "derived_wrapper_share": t_np / t_step - 1.0,
    }
    if steps >= 2 and 2 * steps * t_step <= args.epoch_budget:

        def run_epoch(step_fn, opt_state):
            p, r, s = params, rest, opt_state
            for _ in range(steps):
                p, r, s, loss = step_fn(p, r, s, batch)
            block(loss)

        rounds = max(1, min(3, int(args.epoch_budget // (2 * steps * t_step))))
        _log(f"timing {rounds} epoch(s) of {steps} steps with and without probing")
        t_auto_e, t_plain_e = _interleaved(
            [lambda: run_epoch(step_auto, a0), lambda: run_epoch(step_plain, plain_state)],
            rounds,
            float("inf"),
            warmup=False,
        )
        epoch.update(
            method="measured",
            auto_s=t_auto_e,
            plain_s=t_plain_e,
            overhead=t_auto_e["median_s"] / t_plain_e["median_s"] - 1.0,
        )
    else:
        epoch.update(method="derived", overhead=derived)
    out["epoch"] = epoch
    return out


# --------------------------------------------------------------------------- PyTorch side


def measure_torch(torch_model, batch_np, factors, args) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    import torch_alg1

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    # The peer runs where JAX runs: on the GPU when JAX's backend is one and this
    # PyTorch build has CUDA, else on the CPU.
    use_cuda = jax.default_backend() == "gpu" and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    sync = torch.cuda.synchronize if use_cuda else (lambda: None)
    x = torch.from_numpy(np.ascontiguousarray(batch_np[0].transpose(0, 3, 1, 2))).to(device)
    y = torch.from_numpy(batch_np[1].astype(np.int64)).to(device)
    model = torch_model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    budget = args.max_seconds

    def forward():
        with torch.no_grad():
            loss = F.cross_entropy(model(x), y)
        sync()
        return loss

    def step():
        torch_alg1.train_step(model, opt, x, y)
        sync()

    def probe():
        # Uses the gradients the preceding training step left in .grad.
        torch_alg1.alg1_probe(model, x, y, LEARNING_RATE, factors)
        sync()

    out: dict[str, Any] = {
        "threads": threads,
        "device": str(device),
        "params": torch_alg1.count_params(model),
    }
    # PyTorch's first calls create its oneDNN primitives: warm up a little longer.
    out["forward"] = _timed(forward, args.reps, budget, warmup=3)
    step()
    out["train_step"], out["probe"] = _interleaved([step, probe], args.reps, budget)
    out["floor_s"] = len(factors) * out["forward"]["median_s"]
    out["probe_x_floor"] = out["probe"]["median_s"] / out["floor_s"]
    out["probe_x_train_step"] = out["probe"]["median_s"] / out["train_step"]["median_s"]
    return out


# --------------------------------------------------------------------------- report


def _strategies(chunk: int) -> list[tuple[str, str, int | None]]:
    return [
        ("vmap", "vmap", None),
        ("map", "map", None),
        (f"map_chunk{chunk}", "map", chunk),
        ("auto", "auto", None),
    ]


def _targets(res: dict[str, Any]) -> dict[str, Any]:
    j, t = res["jax"], res["torch"]
    auto = j["probe"]["auto"]
    vs_torch = auto["x_train_step"] / t["probe_x_train_step"]
    best = min(v["probe_s"] for k, v in j["probe"].items() if k in ("vmap", "map"))
    return {
        "probe_x_floor": {
            "value": auto["x_floor"],
            "target": f"<= {TARGET_FLOOR}",
            "pass": auto["x_floor"] <= TARGET_FLOOR,
        },
        "probe_step_ratio_vs_torch": {
            "value": vs_torch,
            "jax_probe_x_train_step": auto["x_train_step"],
            "torch_probe_x_train_step": t["probe_x_train_step"],
            "target": f"<= {TARGET_VS_TORCH}",
            "pass": vs_torch <= TARGET_VS_TORCH,
        },
        "epoch_overhead": {
            "value": j["epoch"]["overhead"],
            "method": j["epoch"]["method"],
            "target": f"<= {TARGET_EPOCH}",
            "pass": j["epoch"]["overhead"] <= TARGET_EPOCH,
        },
        # Not a numbered target, but the rule for "auto": never slower
        # than the better of vmap and map (5 % allowed for timing noise).
        "auto_vs_best_strategy": {
            "value": (auto["probe_s"] / best) if best > 0 else None,
            "target": "<= 1.05",
            "pass": best <= 0 or auto["probe_s"] <= 1.05 * best,
        },
    }


def _ms(s: float | None) -> str:
    return "—" if s is None else f"{1e3 * s:,.1f}"


def _mib(b: int | None) -> str:
    return "—" if b is None else f"{b / 2**20:,.1f}"


def _x(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}×"


def _pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render_markdown(result: dict[str, Any]) -> str:
    cfg, mach = result["config"], result["machine"]
    n = len(cfg["factors"])
    lines = [
        "# Probe overhead of `autolr_jax.auto_lr`",
        "",
        f"`{mach['command']}` — {mach['date']}",
        "",
        f"Machine: {mach['cpu_model']}, {mach['cpu_cores']} cores; JAX backend "
        f"`{mach['backend']}` ({mach['device_kind']}); PyTorch with "
        f"`torch.set_num_threads({result['torch_threads']})`. "
        + ", ".join(f"{k} {v}" for k, v in mach["versions"].items() if v)
        + f", Python {mach['python']}.",
        "",
        f"Batch {cfg['batch']} of 32×32×3, N = {n} factors {list(cfg['factors'])}, width "
        f"{cfg['width']}, learning rate {LEARNING_RATE}, median of up to {cfg['reps']} "
        f"repetitions after a warm-up (training steps: at least 10; fewer where the "
        f"repetitions of one measurement would take over {cfg['max_seconds']:.0f} s, at least "
        "2; the JSON has every sample). JAX probe = jitted `tx.update` of `auto_lr` on a "
        "probing update minus the same compiled call on a non-probing one (the candidate "
        "forwards, the scoring and the recomputed inner update). Memory: XLA "
        "`memory_analysis()` temp bytes of the compiled function (on CPU compiled a second "
        "time without YNNPACK fusions, whose internal buffers XLA does not count; the JSON "
        "has both); for a probe, the compiled `auto_lr` update minus the plain `optax.sgd` "
        "update. PyTorch rows are relative to "
        "PyTorch's own forward floor and training step.",
        "",
        "| model | measurement | time (ms) | × N-forward floor | × train step "
        "| temp memory (MiB) | × forward memory |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, res in result["models"].items():
        j, t = res["jax"], res["torch"]
        fwd, step = j["forward"]["median_s"], j["train_step"]["median_s"]
        fmem = j["forward"]["memory"]["temp_bytes"]
        smem = j["train_step"]["memory"]["temp_bytes"]
        rows = [
            (
                "JAX forward (loss)",
                fwd,
                fwd / j["floor_s"],
                fwd / step,
                fmem,
                1.0 if fmem else None,
            ),
            (
                "JAX train step (fwd+bwd+SGD)",
                step,
                step / j["floor_s"],
                1.0,
                smem,
                (smem / fmem) if (smem and fmem) else None,
            ),
            (
                f"JAX N-forward floor ({n} × forward)",
                j["floor_s"],
                1.0,
                j["floor_s"] / step,
                None,
                None,
            ),
        ]
        for key, what in (
            ("train_step_auto_non_probing", "JAX train step with auto_lr, non-probing update"),
            ("train_step_auto_probing", "JAX train step with auto_lr, probing update"),
        ):
            ts = j[key]["median_s"]
            rows.append((what, ts, ts / j["floor_s"], ts / step, None, None))
        for p in j["probe"].values():
            what = f"JAX probe, {p['strategy']}"
            if p["chunk_size"]:
                what += f" chunk {p['chunk_size']}"
            if p["strategy"] == "auto":
                what += f" (→ {p['resolved']})"
            rows.append(
                (
                    what,
                    p["probe_s"],
                    p["x_floor"],
                    p["x_train_step"],
                    p["extra_temp_bytes"],
                    p["extra_temp_x_forward"],
                )
            )
        tfwd, tstep = t["forward"]["median_s"], t["train_step"]["median_s"]
        rows += [
            ("PyTorch forward (no_grad)", tfwd, tfwd / t["floor_s"], tfwd / tstep, None, None),
            ("PyTorch train step (fwd+bwd+SGD)", tstep, tstep / t["floor_s"], 1.0, None, None),
            (
                f"PyTorch Alg. 1 probe (deepcopy × {n})",
                t["probe"]["median_s"],
                t["probe_x_floor"],
                t["probe_x_train_step"],
                None,
                None,
            ),
        ]
        e = j["epoch"]
        rows.append(
            (
                f"JAX epoch overhead, 1 probe / {e['steps']} steps ("
                + ("" if e["method"] == "derived" else "measured; ")
                + f"derived: probe {100 * e['derived_probe_share']:+.2f} %, non-probing steps "
                f"{100 * e['derived_wrapper_share']:+.2f} %"
                + ("" if e["method"] == "derived" else f" = {100 * e['derived_overhead']:+.2f} %")
                + ")",
                None,
                None,
                None,
                None,
                None,
            )
        )
        for what, s, xf, xs, mem, xm in rows:
            if s is None:
                lines.append(f"| {name} | {what} | {100 * e['overhead']:+.2f} % | | | | |")
                continue
            lines.append(
                f"| {name} | {what} | {_ms(s)} | {_x(xf)} | {_x(xs, 3)} | {_mib(mem)} | {_x(xm)} |"
            )
    lines += [
        "",
        'Targets (issue 3); the chosen strategy is what `strategy="auto"` resolves to.',
        "",
        "| model | auto → | probe ÷ N-forward floor | ≤ 1.0 | JAX probe ÷ step "
        "| PyTorch probe ÷ step | JAX ÷ PyTorch | ≤ 0.5 | epoch overhead | method | ≤ 1 % "
        "| auto ÷ best(vmap, map) | ≤ 1.05 |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---|---|---:|---|",
    ]
    for name, res in result["models"].items():
        tg = res["targets"]
        a, v, e, b = (
            tg["probe_x_floor"],
            tg["probe_step_ratio_vs_torch"],
            tg["epoch_overhead"],
            tg["auto_vs_best_strategy"],
        )
        lines.append(
            f"| {name} | {res['jax']['auto_picks']} | {_x(a['value'])} | {_pf(a['pass'])} "
            f"| {_x(v['jax_probe_x_train_step'], 3)} | {_x(v['torch_probe_x_train_step'], 3)} "
            f"| {_x(v['value'])} | {_pf(v['pass'])} | {100 * e['value']:+.2f} % | {e['method']} "
            f"| {_pf(e['pass'])} | {_x(b['value'])} | {_pf(b['pass'])} |"
        )
    lines += ["", "Models:"]
    for name, res in result["models"].items():
        lines.append(
            f"- {name}: {res['description']}; {res['jax']['params']:,} parameters "
            f"(PyTorch copy: {res['torch']['params']:,})."
        )
    derived = [
        name for name, res in result["models"].items() if res["jax"]["epoch"]["method"] == "derived"
    ]
    if derived:
        lines.append(
            f"- Epoch overhead for {', '.join(derived)} is derived, not timed over a whole epoch: "
            "(t_step_probing + (S−1)·t_step_non_probing) / (S·t_step_plain) − 1 with the three "
            "step times measured above (S = steps per epoch)."
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,small_cnn", help="comma-separated")
    p.add_argument("--width", type=float, default=None, help="width multiplier (default 1.0)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--factors", type=int, default=7, help="number of factors N (seed: 3, 5, 7)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 5)")
    p.add_argument("--chunk", type=int, default=2, help="chunk size of the chunked map row")
    p.add_argument(
        "--epoch-steps",
        type=int,
        default=None,
        help="steps per epoch (default: CIFAR-10, ceil(50000 / batch) = 1563 at batch 32)",
    )
    p.add_argument(
        "--epoch-budget",
        type=float,
        default=None,
        help="seconds allowed to time a whole epoch with and without probing; over it the "
        "epoch overhead is derived from step times (default 120)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="cap on the time of one measurement's repetitions; slower calls get fewer (min 2)",
    )
    p.add_argument("--out", default=str(_HERE / "results"))
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: width 1/16, 2 reps (10 for sub-second calls), epoch budget 20 s",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.width = 1 / 16 if a.width is None else a.width
        a.reps = 2 if a.reps is None else a.reps
        a.epoch_budget = 20.0 if a.epoch_budget is None else a.epoch_budget
    a.width = 1.0 if a.width is None else a.width
    a.reps = 5 if a.reps is None else a.reps
    a.epoch_steps = math.ceil(CIFAR10_TRAIN / a.batch) if a.epoch_steps is None else a.epoch_steps
    a.epoch_budget = 120.0 if a.epoch_budget is None else a.epoch_budget
    a.models = [m.strip() for m in a.models.split(",") if m.strip()]
    unknown = sorted(set(a.models) - set(MODELS))
    if unknown or not a.models:
        p.error(f"--models must be a comma-separated subset of {','.join(MODELS)}, got {unknown}")
    for name, v, lo in (
        ("batch", a.batch, 1),
        ("factors", a.factors, 2),
        ("reps", a.reps, 1),
        ("chunk", a.chunk, 2),
        ("epoch-steps", a.epoch_steps, 1),
    ):
        if v < lo:
            p.error(f"--{name} must be >= {lo}, got {v}")
    if not a.width > 0:
        p.error(f"--width must be > 0, got {a.width}")
    return a


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    factors = _factors(args.factors)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, size=args.batch).astype(np.int32)
    batch = (jnp.asarray(x), jnp.asarray(y))
    argv_full = ["benchmarks/probe_overhead.py"] + (
        list(argv) if argv is not None else sys.argv[1:]
    )
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "machine": machine_facts(argv_full),
        "config": {
            "models": args.models,
            "width": args.width,
            "batch": args.batch,
            "factors": list(factors),
            "reps": args.reps,
            "chunk": args.chunk,
            "epoch_steps": args.epoch_steps,
            "epoch_budget_s": args.epoch_budget,
            "max_seconds": args.max_seconds,
            "learning_rate": LEARNING_RATE,
            "quick": args.quick,
        },
        "torch_threads": os.cpu_count() or 1,
        "models": {},
    }
    t_start = time.perf_counter()
    for name in args.models:
        jax_model, torch_model, desc = build_models(name, args.width)
        _log(f"{name}: {desc}")
        res = {"description": desc}
        res["jax"] = measure_jax(jax_model, batch, factors, _strategies(args.chunk), args)
        res["torch"] = measure_torch(torch_model, (x, y), factors, args)
        _log(f"{name}: PyTorch done")
        res["targets"] = _targets(res)
        result["models"][name] = res
    result["total_s"] = time.perf_counter() - t_start

    md = render_markdown(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "probe_overhead.md").write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
