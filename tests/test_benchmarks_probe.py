"""The probe-overhead benchmark runs end to end and writes what it promises.

Speed targets are the benchmark's output, not assertions here: these tests check
that `benchmarks/probe_overhead.py --quick` produces a complete JSON record and
Markdown table, that its PyTorch peer is the same network as the JAX model, and
that the peer runs the same algorithm (same new learning rate on the same problem).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import probe_overhead  # noqa: E402

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

    for key in ("forward", "train_step", "probe"):
        assert _positive(t[key]["median_s"]), key
    assert t["probe_x_train_step"] == pytest.approx(
        t["probe"]["median_s"] / t["train_step"]["median_s"]
    )

    targets = res["targets"]
    for key in ("probe_x_floor", "probe_step_ratio_vs_torch", "epoch_overhead"):
        assert isinstance(targets[key]["pass"], bool), key
        assert math.isfinite(targets[key]["value"]), key


def test_markdown_table(quick_run):
    out, _, _ = quick_run
    md = (out / "probe_overhead.md").read_text()
    for column in (
        "time (ms)",
        "× N-forward floor",
        "× train step",
        "temp memory (MiB)",
        "JAX ÷ PyTorch",
        "epoch overhead",
    ):
        assert column in md, column
    for row in (
        "JAX forward (loss)",
        "JAX train step",
        "JAX probe, vmap",
        "JAX probe, map chunk 2",
        "JAX probe, auto (→ ",
        "PyTorch Alg. 1 probe (deepcopy × 7)",
        "JAX epoch overhead",
    ):
        assert row in md, row
    targets = md[md.index("Targets") :]
    (row,) = [ln for ln in targets.splitlines() if ln.startswith("| small_cnn |")]
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
    import torch_alg1

    from autolr_jax.auto import auto_lr

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
    tx = auto_lr(optax.sgd, learning_rate=lr, loss_fn=loss_fn, factors=factors, every=1)
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
