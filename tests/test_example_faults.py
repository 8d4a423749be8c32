"""The CIFAR-10 example under faults: a model that blows up while its losses stay finite,
a checkpoint with changed bytes, a workdir that holds a run already, Ctrl-C, an unknown
configuration field (issue 29, items 1-4 and 7).

Each run is the tiny configuration of test_cifar10_example.py (seconds, mostly
compilation, shared through the session's compilation cache). Ctrl-C is a KeyboardInterrupt
raised in the run that the command line's main makes, in this process (its exit status and
its one line; the checkpoints it leaves are then damaged and resumed); the command line is
run as a subprocess only where absl's own flag parsing is what is tested.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cifar10_data import write_folder
from test_cifar10_example import (
    ROOT,
    _final_state,
    _tiny_flags,
    main_in_process,
    read_metrics,
    tiny_config,
)

from examples.cifar10 import main, run_log, train


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """test_cifar10_example.py's image folder: 40 train / 20 test images."""
    return write_folder(tmp_path_factory.mktemp("data") / "cifar10")


def _checkpoints(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "checkpoints").iterdir())


# --------------------------------------------------------------------------------------
# 1. A model that became non-finite is never checkpointed.


def test_a_model_that_became_nonfinite_stops_the_run_unsaved(tiny_folder, tmp_path):
    """lr 300: epoch 1 is finite; in epoch 2, 25 of the 32 model arrays become inf or NaN
    while both losses stay finite (train-mode BatchNorm; measured on XLA:CPU, where lr 200
    to 500 do the same and 1000 makes epoch 1's loss non-finite)."""
    config = tiny_config(tiny_folder, schedule="constant", learning_rate=300.0, epochs=2,
                         plots=False)  # fmt: skip
    with pytest.raises(train.Diverged, match="non-finite in epoch 2") as info:
        train.train_and_evaluate(config, tmp_path)
    assert "the model became non-finite in epoch 2" in str(info.value), info.value
    assert "last good checkpoint is epoch 1" in str(info.value)
    assert [r["epoch"] for r in info.value.history] == [1] and info.value.record["epoch"] == 2
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    assert _checkpoints(tmp_path) == ["1"]
    for path, x in _final_state(tmp_path, 1):
        assert np.isfinite(np.asarray(x, np.float64)).all() or not np.issubdtype(
            np.asarray(x).dtype, np.inexact
        ), path


# --------------------------------------------------------------------------------------
# 4 and 2: Ctrl-C after an epoch leaves its checkpoint and one line; changed bytes in that
# checkpoint are found and an older checkpoint is used.


@pytest.fixture(scope="module")
def interrupted_run(tiny_folder, tmp_path_factory):
    """The command line's main, run in this process on a 3-epoch run that Ctrl-C (a
    KeyboardInterrupt) stops right after epoch 2's line: workdir, exit status, stderr, config."""
    workdir = tmp_path_factory.mktemp("interrupted") / "wd"
    end_epoch = run_log.RunLog.end_epoch

    def end_epoch_then_ctrl_c(self, state, rec):
        end_epoch(self, state, rec)  # starts the asynchronous save, then prints the line
        if rec["epoch"] == 2:
            raise KeyboardInterrupt

    flags = [*_tiny_flags(tiny_folder, workdir), "--config.schedule=constant",
             "--config.epochs=3", "--config.checkpoint=True"]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_log.RunLog, "end_epoch", end_epoch_then_ctrl_c)
        status, err, config = main_in_process(flags)
    return workdir, status, err, config


def test_ctrl_c_waits_for_the_pending_checkpoint_and_exits_130_in_one_line(interrupted_run):
    workdir, status, err, _ = interrupted_run
    # train raised run_log.Interrupted(2) (a bare KeyboardInterrupt would say epoch 0).
    assert status == 130
    assert err == "interrupted after epoch 2; continue with --resume\n"
    # Both saves finished (no *.orbax-checkpoint-tmp-* left), as the metrics say.
    assert _checkpoints(workdir) == ["1", "2"]
    assert [r["epoch"] for r in read_metrics(workdir)] == [1, 2]


def _flip_bytes_of_the_largest_file(state_dir: Path) -> None:
    """400 bytes flipped in the middle of the largest file (as a bad disk or copy would)."""
    largest = max((f for f in state_dir.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    data = bytearray(largest.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 400] = bytes(b ^ 0xFF for b in data[mid : mid + 400])
    largest.write_bytes(bytes(data))


def _change_one_value(state_dir: Path) -> None:
    """The state rewritten as valid Orbax data with one value changed: what flipped bytes
    give when they decode (the issue's case: 4,816 wrong values read back silently)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(state_dir.absolute())
        kernel = state["model"]["blocks"]["1"]["conv2"]["kernel"]
        kernel["value"] = np.array(kernel["value"])
        kernel["value"].flat[0] += 0.5
        shutil.rmtree(state_dir)
        ckptr.save(state_dir.absolute(), state)


@pytest.mark.parametrize("damage", [_flip_bytes_of_the_largest_file, _change_one_value])
def test_a_checkpoint_with_changed_bytes_is_rejected_for_the_one_before(
    interrupted_run, tmp_path, capsys, damage
):
    workdir = tmp_path / "wd"
    shutil.copytree(interrupted_run[0], workdir)
    damage(workdir / "checkpoints" / "2" / "state")
    capsys.readouterr()
    # The run's configuration, epochs=1: the resume restores (and verifies) without training.
    config = copy.deepcopy(interrupted_run[3])
    config.epochs = 1
    history = train.train_and_evaluate(config, workdir, resume=True)
    out = capsys.readouterr().out
    assert "after epoch 1 (checkpoint 1)" in out and [r["epoch"] for r in history] == [1], out
    # Flipped bytes inside Orbax's zstd frames fail to decode or decode to other values,
    # depending on where they fall; read back without an error, only the digest tells.
    if damage is _change_one_value:
        n = len(_final_state(workdir, 2))  # the state's arrays, each with its digest
        assert f"checkpoint of epoch 2 is damaged (1 of {n} arrays differ from their digest" in out
    elif "checkpoint of epoch 2 does not restore" not in out:
        assert "checkpoint of epoch 2 is damaged (" in out and "from their digest" in out, out


def test_verify_names_a_changed_or_nonfinite_array():
    state = {"model": {"w": np.arange(3.0)}, "rng": np.zeros(2, np.uint32)}
    saved = run_log.digests(state)
    assert run_log.verify(state, saved, lambda s: s["model"]) is None
    changed = {**state, "model": {"w": np.array([0.0, 1.0, 2.5])}}
    assert "1 of 2 arrays differ from their digest (['model']['w']" in run_log.verify(
        changed, saved
    )
    # A checkpoint written before digests were: the finiteness check still applies.
    nan = {**state, "model": {"w": np.array([0.0, np.nan, 2.0])}}
    assert "1 arrays hold NaN or inf (['w']" in run_log.verify(nan, None, lambda s: s["model"])


# --------------------------------------------------------------------------------------
# 3. A workdir that holds a run is refused without --resume or --overwrite.


@pytest.mark.parametrize("output", ["metrics.jsonl", "config.json", "checkpoints/1/x"])
def test_a_workdir_holding_a_run_is_refused_before_any_data(tmp_path, output):
    workdir = tmp_path / "wd"
    (workdir / output).parent.mkdir(parents=True, exist_ok=True)
    (workdir / output).write_text("old\n")
    # checkpoint=False too: the metrics and configuration would be replaced all the same.
    config = tiny_config(tmp_path / "no_data", schedule="constant", checkpoint=False)
    with pytest.raises(train.ConfigError, match="pass --resume .* --overwrite .* empty --workdir"):
        train.train_and_evaluate(config, workdir)
    with pytest.raises(train.ConfigError, match="--resume and --overwrite contradict"):
        train.train_and_evaluate(config, workdir, resume=True, overwrite=True)
    assert (workdir / output).read_text() == "old\n"


def test_overwrite_deletes_the_old_run_only(tmp_path):
    workdir = tmp_path / "wd"
    for name in ("metrics.jsonl", "config.json", "checkpoints/1/x", "plots/lr.png",
                 "notes.txt", "cache/data.npz"):  # fmt: skip
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text("old\n")
    config = tiny_config(tmp_path / "no_data", schedule="constant")
    log = run_log.RunLog(config, workdir, resume=False, overwrite=True)
    log.close()
    left = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*") if p.is_file())
    assert left == ["cache/data.npz", "notes.txt"]


# --------------------------------------------------------------------------------------
# The command line: --overwrite, Ctrl-C (exit 130, one line), an unknown field (exit 2).


@pytest.fixture
def parsed_flags(tmp_path):
    """main's flags parsed in this process (main.main reads them), reset afterwards."""

    def parse(*extra):
        main.FLAGS(["main", f"--config={ROOT / 'examples/cifar10/configs/cpu.py'}",
                    f"--workdir={tmp_path / 'wd'}", *extra])  # fmt: skip

    yield parse
    main.FLAGS.unparse_flags()


def test_main_passes_overwrite_and_reports_ctrl_c_in_one_line(parsed_flags, monkeypatch, capsys):
    calls = []

    def fake_train(config, workdir, resume=False, overwrite=False, raises=None):
        calls.append((resume, overwrite))
        raise raises

    for raised, epoch in ((run_log.Interrupted(2), 2), (KeyboardInterrupt(), 0)):
        monkeypatch.setattr(
            train, "train_and_evaluate", lambda *a, r=raised, **k: fake_train(*a, **k, raises=r)
        )
        parsed_flags("--overwrite")
        assert main.main(["main"]) == 130
        captured = capsys.readouterr()
        assert captured.err == f"interrupted after epoch {epoch}; continue with --resume\n"
        assert captured.out == ""
    assert calls == [(False, True)] * 2


def test_unknown_config_field_is_one_line_and_exit_status_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "examples.cifar10.main",
         f"--config={ROOT / 'examples/cifar10/configs/cpu.py'}", "--config.schedul=auto",
         f"--workdir={tmp_path / 'wd'}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert 'Did you mean "schedule" instead of "schedul"?' in lines[0]
