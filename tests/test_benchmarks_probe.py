"""The probe-overhead benchmark runs end to end and writes what it promises.

Speed targets are the benchmark's output, not assertions here: these tests check
that `python -m benchmarks.probe_overhead --quick` produces a complete JSON record and
Markdown tables, that its plain-SGD baseline is like-for-like with auto_lr's non-probing
step, that its PyTorch peer is the same network as the JAX model, and that the peer runs
the same algorithm (same new learning rate on the same problem).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import probe_overhead

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"

STRATEGIES = ("vmap", "map", "map_chunk2", "auto")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, torch):
    out = tmp_path_factory.mktemp("probe_overhead")
    argv = ["--quick", "--models", "small_cnn", "--epoch-steps", "30", "--out", str(out)]
    returned = probe_overhead.main(argv)
    return out, returned, argv


def _positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_json_record(quick_run):
    out, returned, argv = quick_run
    data = json.loads((out / "probe_overhead.json").read_text())
    assert data == json.loads(json.dumps(returned))
    assert data["schema"] == probe_overhead.SCHEMA

    m = data["machine"]
    for key in ("cpu_model", "cpu_cores", "backend", "device_kind", "python", "date", "command"):
        assert m[key], key
    for lib in ("jax", "jaxlib", "optax", "flax", "torch"):
        assert m["versions"][lib], lib
    assert m["command"].endswith(" ".join(argv))
    assert data["config"]["quick"] is True
    assert len(data["config"]["factors"]) == 7
    assert data["torch_threads"] == m["cpu_cores"]

    res = data["models"]["small_cnn"]
    j, t = res["jax"], res["torch"]
    assert j["params"] == t["params"] > 0
    from autolr_jax.auto import default_probe_strategy

    assert j["auto_picks"] == default_probe_strategy()
    for key in ("forward", "train_step", "train_step_auto_probing", "train_step_auto_non_probing"):
        assert _positive(j[key]["median_s"]), key
        assert len(j[key]["times_s"]) == j[key]["reps"] >= 2
    assert j["floor_s"] == pytest.approx(7 * j["forward"]["median_s"])
    # A forward holds its activations: with every buffer in XLA's accounting the
    # small CNN's first convolution output alone is 32*32*32*c1 floats.
    c1 = max(1, round(32 / 16))
    assert j["forward"]["memory"]["temp_bytes"] >= 32 * 32 * 32 * c1 * 4
    assert j["forward"]["memory"]["as_run"]["temp_size_in_bytes"] >= 0

    assert set(j["probe"]) == set(STRATEGIES)
    for label, p in j["probe"].items():
        assert p["resolved"] in ("vmap", "map"), label
        assert _positive(p["update_probing"]["median_s"]), label
        assert _positive(p["update_non_probing"]["median_s"]), label
        assert p["probe_s"] == pytest.approx(
            p["update_probing"]["median_s"] - p["update_non_probing"]["median_s"]
        )
        assert p["x_floor"] == pytest.approx(p["probe_s"] / j["floor_s"])
        assert p["x_train_step"] == pytest.approx(p["probe_s"] / j["train_step"]["median_s"])
        assert p["memory"]["temp_bytes"] > 0
        assert p["extra_temp_bytes"] >= 0
    # vmap holds all N candidates' activations at once, map one at a time.
    assert j["probe"]["vmap"]["extra_temp_bytes"] > j["probe"]["map"]["extra_temp_bytes"]
    assert j["probe"]["auto"]["resolved"] == j["auto_picks"]
    assert j["probe"]["map_chunk2"]["chunk_size"] == 2

    e = j["epoch"]
    assert e["steps"] == 30
    assert e["method"] == "measured"  # a 30-step epoch of a tiny CNN fits the budget
    assert _positive(e["auto_s"]["median_s"]) and _positive(e["plain_s"]["median_s"])
    assert e["overhead"] == pytest.approx(e["auto_s"]["median_s"] / e["plain_s"]["median_s"] - 1)
    assert math.isfinite(e["derived_overhead"])
    t_p = j["train_step_auto_probing"]["median_s"]
    t_np = j["train_step_auto_non_probing"]["median_s"]
    assert e["probe_cost_s"] == pytest.approx(t_p - t_np)
    assert e["probe_fraction"] == pytest.approx((t_p - t_np) / (30 * t_np))
    assert e["wrapper_fraction"] == pytest.approx(t_np / j["train_step"]["median_s"] - 1)
    (cite,) = data["probe_cost_per_epoch"]
    assert cite["model"] == "small_cnn" and cite["every"] == 30
    assert cite["probe_fraction"] == pytest.approx(e["probe_fraction"])
    assert f"{100 * e['probe_fraction']:.2f} % of the epoch" in cite["cite"]

    for key in ("forward", "train_step", "probe"):
        assert _positive(t[key]["median_s"]), key
    assert t["probe_x_train_step"] == pytest.approx(
        t["probe"]["median_s"] / t["train_step"]["median_s"]
    )

    targets = res["targets"]
    for key in ("probe_x_floor", "probe_step_ratio_vs_torch", "epoch_overhead"):
        assert isinstance(targets[key]["pass"], bool), key
        assert math.isfinite(targets[key]["value"]), key
    assert targets["epoch_overhead"]["value"] == e["probe_fraction"]


def test_markdown_table(quick_run):
    out, _, _ = quick_run
    md = (out / "probe_overhead.md").read_text()
    for column in (
        "time (ms)",
        "× N-forward floor",
        "× train step",
        "temp memory (MiB)",
        "JAX ÷ PyTorch",
        "probe per epoch",
        "ordinary ÷ plain SGD step",
        "epoch overhead, all in",
    ):
        assert column in md, column
    for row in (
        "JAX forward (loss)",
        "JAX train step",
        "JAX probe, vmap",
        "JAX probe, map chunk 2",
        "JAX probe, auto (→ ",
        "PyTorch Alg. 1 probe (deepcopy × 7)",
    ):
        assert row in md, row
    assert "nan" not in md
    tables = [b for b in md.split("\n\n") if b.startswith("| model")]
    assert len(tables) == 3  # measurements, probe cost per epoch, targets
    (epoch_row,) = [ln for ln in tables[1].splitlines() if ln.startswith("| small_cnn ")]
    assert "(measured)" in epoch_row
    (row,) = [ln for ln in tables[2].splitlines() if ln.startswith("| small_cnn ")]
    assert row.count("PASS") + row.count("FAIL") == 4


@pytest.mark.parametrize("name", ["resnet18", "small_cnn"])
@pytest.mark.parametrize("width", [1 / 16, 1.0])
def test_torch_peer_is_the_same_network(name, width, torch):
    from flax import nnx

    jax_model, torch_model, _ = probe_overhead.build_models(name, width, abstract=True)
    n_jax = sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(jax_model, nnx.Param)))
    n_torch = sum(p.numel() for p in torch_model.parameters())
    assert n_jax == n_torch
    if name == "resnet18" and width == 1.0:
        assert n_jax == 11_173_962  # ResNet-18 CIFAR variant, 10 classes


def test_torch_peer_runs_the_same_algorithm(torch):
    """The seed's deepcopy Algorithm 1 and auto_lr's first probe give the same new lr."""
    from autolr_jax.auto import auto_lr
    from benchmarks import torch_alg1

    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 5)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    w = (0.5 * rng.standard_normal((3, 5))).astype(np.float32)
    b = (0.1 * rng.standard_normal(3)).astype(np.float32)
    lr, factors = 0.3, (4.0, 2.0, 1.0, 0.5, 0.125)

    model = torch.nn.Linear(5, 3)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w))
        model.bias.copy_(torch.from_numpy(b))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch.nn.functional.cross_entropy(model(xt), yt).backward()
    torch_lr, torch_losses = torch_alg1.alg1_probe(model, xt, yt, lr, factors)

    def loss_fn(params, batch):
        xb, yb = batch
        logits = xb @ params["w"].T + params["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    params = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
    batch = (jnp.asarray(x), jnp.asarray(y))
    tx = auto_lr(
        optax.sgd,
        learning_rate=lr,
        loss_fn=loss_fn,
        factors=factors,
        every=1,
        rule="seed",
        initial_search=False,
    )
    state = tx.init(params)
    grads = jax.grad(loss_fn)(params, batch)
    update = jax.jit(lambda g, s, p, bt: tx.update(g, s, p, batch=bt))
    _, state = update(grads, state, params, batch)

    np.testing.assert_allclose(np.asarray(state.telemetry.losses), torch_losses, rtol=1e-5)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(torch_lr, rel=1e-5)
    assert torch_lr != pytest.approx(lr)  # the probe moved the learning rate


def test_bad_cli_arguments():
    bad = (
        ["--factors", "1"],
        ["--width", "0"],
        ["--reps", "0"],
        ["--chunk", "1"],
        ["--models", "resnet50"],
    )
    for argv in bad:
        with pytest.raises(SystemExit):
            probe_overhead.parse_args(argv)


def test_plain_baseline_is_like_for_like():
    """The plain SGD step and auto_lr's non-probing step compute the same update.

    Same step function, same inner optimizer (``optax.sgd`` with an injected float32
    learning rate), same arguments: the parameters they return are equal, so a
    difference in their times is the wrapper's (or noise), not a different computation.
    """
    from flax import nnx

    from autolr_jax.auto import auto_lr

    model = probe_overhead.init_model(lambda: probe_overhead.SmallCNN(2, 4, rngs=nnx.Rngs(0)))
    fns = probe_overhead.model_functions(model)
    x, y = probe_overhead.random_batch(8)
    batch = (jnp.asarray(x), jnp.asarray(y), fns.rest)
    plain = probe_overhead.plain_sgd(0.005)
    tx = auto_lr(
        optax.sgd,
        learning_rate=0.005,
        loss_fn=fns.loss_fn,
        factors=(2.0, 1.0, 0.5),
        every=10**6,
        rule="seed",
        initial_search=False,
    )
    s_auto = tx.init(fns.params)
    s_auto = s_auto._replace(
        inject_state=s_auto.inject_state._replace(count=jnp.asarray(1, jnp.int32))
    )
    s_plain = plain.init(fns.params)
    assert s_plain.hyperparams["learning_rate"].dtype == jnp.float32
    p_plain = jax.jit(fns.make_train_step(plain))(fns.params, fns.rest, s_plain, batch)[0]
    p_auto = jax.jit(fns.make_train_step(tx))(fns.params, fns.rest, s_auto, batch)[0]
    for a, b in zip(jax.tree.leaves(p_plain), jax.tree.leaves(p_auto), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_interleaved_rotates_the_order():
    calls = []
    fns = [lambda i=i: calls.append(i) for i in range(3)]
    out = probe_overhead.interleaved(fns, 3, float("inf"), warmup=False)
    assert calls == [0, 1, 2, 1, 2, 0, 2, 0, 1]
    assert [o["reps"] for o in out] == [3, 3, 3]


def test_probe_cost_per_epoch_of_the_committed_results():
    """probe_cost_per_epoch on the committed (v1) results: the probe time over an epoch's."""
    data = json.loads((RESULTS / "probe_overhead.json").read_text())
    cites = {c["model"]: c for c in probe_overhead.probe_cost_per_epoch(data)}
    assert set(cites) == {"resnet18", "small_cnn"}
    assert cites["resnet18"]["every"] == 1563 and cites["resnet18"]["factors"] == 7
    for name, cite in cites.items():
        # The oracle, from the JSON's raw medians: (probing - non-probing auto_lr step) once
        # per epoch of ordinary (non-probing) steps.
        j = data["models"][name]["jax"]
        probing = j["train_step_auto_probing"]["median_s"]
        ordinary = j["train_step_auto_non_probing"]["median_s"]
        want = (probing - ordinary) / (j["epoch"]["steps"] * ordinary)
        assert cite["probe_fraction"] == pytest.approx(want, rel=1e-6)
        assert f"{100 * want:.2f} % of the epoch ({name}" in cite["cite"]
