"""A run's directory: per-epoch records, Orbax checkpoints of the pure state, resume.

``metrics.jsonl`` (one JSON object per epoch), ``config.json`` (the flattened
configuration) and ``checkpoints/`` (Orbax: per epoch, the pure NNX state and the
run's metadata, with a digest of every array) are written here for both training
loops (``train.py`` and ``alr.py``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from examples.cifar10 import plots
from examples.cifar10.optimizers import ConfigError

METRICS_FILE = "metrics.jsonl"

# Settings that may change when a run is resumed; any other difference is an error,
# since the state saved in the checkpoint would not fit or the run would change meaning.
RESUMABLE_CHANGES = {
    "epochs",
    "progress",
    "checkpoint",
    "stop_after_epoch",
    "plots",
    "data.data_dir",
    "data.tfds_data_dir",
    "data.cache_dir",
}


def prepare_workdir(workdir: str | Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Creates ``workdir`` and checks that a file can be written there and that it holds no
    other run's outputs unless ``resume`` or ``overwrite`` (before any data; ConfigError)."""
    path = Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ConfigError(f"--workdir {path} cannot be created or written: {e}") from e
    check_workdir(path, resume, overwrite)
    return path


def run_outputs(path: Path) -> list[str]:
    """What of a run's outputs ``path`` holds: ``metrics.jsonl``, ``config.json``,
    ``checkpoints/`` (not empty; with its newest epoch)."""
    found = [name for name in (METRICS_FILE, "config.json") if (path / name).exists()]
    ckpts = path / "checkpoints"
    if ckpts.is_dir() and any(ckpts.iterdir()):
        epochs = [int(p.name) for p in ckpts.iterdir() if p.name.isdigit()]
        found.append(f"checkpoints/ (epoch {max(epochs)})" if epochs else "checkpoints/")
    return found


def check_workdir(path: Path, resume: bool, overwrite: bool) -> None:
    """Refuses (ConfigError) a workdir holding a run's outputs, unless ``resume`` or
    ``overwrite``: a new run would truncate the metrics and replace the configuration,
    leaving checkpoints that no longer match them (whatever ``config.checkpoint``)."""
    if resume and overwrite:
        raise ConfigError(
            "--resume and --overwrite contradict each other: pass --resume to continue the "
            f"run in {path}, or --overwrite to replace it"
        )
    found = run_outputs(path)
    if found and not (resume or overwrite):
        raise ConfigError(
            f"{path} already holds a run's outputs ({', '.join(found)}); pass --resume to "
            "continue that run, --overwrite to delete them and start afresh, or choose an "
            "empty --workdir"
        )


def clear_outputs(path: Path) -> None:
    """Deletes a run's outputs from ``path`` (``--overwrite``); anything else stays."""
    for name in (METRICS_FILE, "config.json"):
        (path / name).unlink(missing_ok=True)
    for name in ("checkpoints", "plots"):
        shutil.rmtree(path / name, ignore_errors=True)


def _host_leaves(tree) -> list[tuple[str, np.ndarray]]:
    """``tree``'s arrays as NumPy arrays on this host, with their paths."""
    paths, leaves = [], []
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(x, jax.Array):
            if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
                x = jax.random.key_data(x)
            if not x.is_fully_addressable:  # replicated over processes: this one's copy
                x = x.addressable_data(0)
        paths.append(jax.tree_util.keystr(path))
        leaves.append(x)
    return list(zip(paths, map(np.asarray, jax.device_get(leaves)), strict=True))


def digests(tree) -> dict[str, str]:
    """``{path: digest}`` of every array of ``tree``: its dtype, shape and bytes (BLAKE2b)."""
    out = {}
    for path, x in _host_leaves(tree):
        h = hashlib.blake2b(f"{x.dtype}{x.shape}".encode(), digest_size=16)
        h.update(np.ascontiguousarray(x).tobytes())
        out[path] = h.hexdigest()
    return out


def nonfinite_arrays(tree) -> list[str]:
    """The paths of ``tree``'s floating-point arrays that hold a NaN or an infinity."""
    return [
        path
        for path, x in _host_leaves(tree)
        if np.issubdtype(x.dtype, np.inexact) and not np.isfinite(x).all()
    ]


def verify(state, saved_digests: dict | None, finite_part=None) -> str | None:
    """Why a restored ``state`` is not the one saved, or None: an array whose digest differs
    from ``saved_digests`` (None: a checkpoint written before digests were), or a NaN or an
    infinity in ``finite_part(state)``."""
    if saved_digests is not None:
        now = digests(state)
        bad = [k for k in saved_digests if now.get(k) != saved_digests[k]]
        bad += [k for k in now if k not in saved_digests]
        if bad:
            n = len(saved_digests)
            return f"{len(bad)} of {n} arrays differ from their digest ({bad[0]}, ...)"
    if finite_part is not None:
        bad = nonfinite_arrays(finite_part(state))
        if bad:
            return f"{len(bad)} arrays hold NaN or inf ({bad[0]}, ...)"
    return None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, after its checkpoints were written: ``epoch`` is the last
    epoch completed (0 if none)."""

    def __init__(self, epoch: int):
        super().__init__(f"interrupted after epoch {epoch}")
        self.epoch = epoch


def flat_config(config) -> dict[str, Any]:
    """The configuration as ``{'dotted.name': JSON value}``: what config.json holds."""
    flat = {}

    def walk(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            else:
                flat[prefix + k] = list(v) if isinstance(v, tuple) else v

    walk("", config.to_dict())
    return flat


class RunLog:
    """A run's directory: per-epoch records, Orbax checkpoints of the pure state, resume.

    ``checkpoints/`` holds, per epoch, the pure state (``state``) and the run's
    metadata (``meta``: epoch, history, wall time, configuration, a digest of every
    array of the state). ``metrics.jsonl`` always equals the checkpointed history
    plus what this run adds.
    """

    def __init__(
        self, config, workdir: str | Path, resume: bool, epochs_shape_schedule: bool = False,
        data_summary: dict | None = None, overwrite: bool = False,
    ):  # fmt: skip
        """Args: ``epochs_shape_schedule``: the method's schedule depends on ``config.epochs``
        (cosine's period, ...), so a resume may not change it; ``data_summary``: written to
        ``config.json`` beside the configuration (the source, the images per class);
        ``overwrite``: delete the outputs of a run already in ``workdir`` (without it, and
        without ``resume``, such a workdir is refused)."""
        self.config, self.workdir, self.resume = config, Path(workdir), resume
        check_workdir(self.workdir, resume, overwrite)
        if overwrite:
            clear_outputs(self.workdir)
        if jax.process_count() > 1:
            # Process 0 writes config.json soon after: every process must have seen the
            # workdir before (or one would refuse the run the others go on with).
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("run_log: workdir checked")
        self.resumable = RESUMABLE_CHANGES - ({"epochs"} if epochs_shape_schedule else set())
        self.data_summary = data_summary or {}
        self.metrics_path = self.workdir / METRICS_FILE
        self.history: list[dict] = []
        self.start_epoch, self.wall_before, self.t_start = 0, 0.0, time.time()
        self.manager = None
        if config.checkpoint or resume:
            import orbax.checkpoint as ocp

            self._ocp = ocp
            self.manager = ocp.CheckpointManager(
                (self.workdir / "checkpoints").absolute(),
                # Asynchronous: the next epoch trains while the last one is written.
                options=ocp.CheckpointManagerOptions(max_to_keep=2),
            )

    def restore(self, like, finite_part=None):
        """The saved state shaped like ``like`` (or ``like`` itself when starting afresh).

        ``like`` may be a function of the saved metadata (the ALR beam changes size).
        The newest checkpoint that restores and verifies is used: a damaged one (an
        interrupted copy, a full disk, changed bytes: an array whose digest differs
        from the one saved with it, or a NaN or an infinity in ``finite_part(state)``)
        is reported and the one before it is tried.
        """
        steps = sorted(self.manager.all_steps(), reverse=True) if self.resume else []
        if not steps:
            if self.resume:
                print(f"--resume: no checkpoint in {self.workdir}, starting from scratch")
            self._write_start()
            return like({}) if callable(like) else like
        ocp, failures = self._ocp, []

        def reject(step, why, said="does not restore"):
            failures.append(f"epoch {step}: {why}")
            print(f"--resume: checkpoint of epoch {step} {said}; trying older")

        for step in steps:
            try:
                meta = self.manager.restore(
                    step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                )["meta"]
            except Exception as e:  # Orbax raises many kinds for a damaged directory
                reject(step, f"{type(e).__name__}: {str(e)[:200]}")
                continue
            self._check_same_config(meta["config"])
            shaped = like(meta) if callable(like) else like
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, shaped)
            try:
                state = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
                )["state"]
            except Exception as e:
                reject(step, f"{type(e).__name__}: {str(e)[:200]}")
                continue
            # Orbax reads changed bytes of an array back without complaint.
            why = verify(state, meta.get("digests"), finite_part)
            if why:
                reject(step, why, f"is damaged ({why})")
                continue
            self.history, self.start_epoch = meta["history"], meta["epoch"]
            self.wall_before = meta["wall_time_s"]
            print(f"resuming {self.workdir} after epoch {self.start_epoch} (checkpoint {step})")
            self._write_start()
            return state
        self.close()
        raise ConfigError(
            f"--resume: no checkpoint in {self.workdir / 'checkpoints'} restores ("
            + "; ".join(failures)
            + ")"
        )

    def _check_same_config(self, saved: dict) -> None:
        now = flat_config(self.config)
        # A setting added since the run was saved has been at its default all along.
        from examples.cifar10.configs import default

        defaults = flat_config(default.get_config())
        saved = {**{k: v for k, v in defaults.items() if k not in saved}, **saved}
        changed = {
            k: (saved.get(k), v)
            for k, v in now.items()
            if k not in self.resumable and saved.get(k) != v
        }
        if changed:
            self.close()
            diffs = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            why = ""
            if "epochs" in changed:
                why = (
                    f" (schedule {self.config.schedule!r} is shaped by the number of epochs: "
                    "a resumed run would follow neither schedule)"
                )
            raise ConfigError(f"--resume with a different configuration ({diffs}){why}")

    def _write_start(self) -> None:
        if jax.process_index() != 0:  # several processes (--distributed): one writes the files
            return
        with open(self.metrics_path, "w") as f:
            f.writelines(json.dumps(rec) + "\n" for rec in self.history)
        flat = {
            **flat_config(self.config),
            **{f"_data.{k}": v for k, v in self.data_summary.items()},
        }
        (self.workdir / "config.json").write_text(json.dumps(flat, indent=2) + "\n")

    def wall_time(self) -> float:
        return self.wall_before + time.time() - self.t_start

    def end_epoch(self, state, rec: dict) -> None:
        """Appends the record, prints its summary and checkpoints the state after it.

        With ``config.select_by_val``, the record first gains :func:`select_by_val`'s
        fields over the history up to it."""
        if self.config.get("select_by_val"):
            rec.update(select_by_val([*self.history, rec]))
        # The checkpoint's (asynchronous) save starts before the epoch's line is written and
        # printed: a Ctrl-C after the line finds it pending (see interrupted).
        if self.manager and self.config.checkpoint:
            ocp = self._ocp
            meta = {
                "epoch": rec["epoch"],
                "history": [*self.history, rec],
                "wall_time_s": rec["wall_time_s"],
                "config": flat_config(self.config),
                "digests": digests(state),
            }
            self.manager.save(
                rec["epoch"],
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
            )
        self.history.append(rec)
        if jax.process_index() == 0:  # every process saves the checkpoint (Orbax needs all)
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        from tqdm.auto import tqdm

        tqdm.write(summary_line(rec, self.config.epochs))

    def close(self) -> None:
        if self.manager:
            self.manager.wait_until_finished()
            self.manager.close()
            self.manager = None

    def interrupted(self) -> Interrupted:
        """After a Ctrl-C: waits for the pending checkpoint, closes; the exception to raise.

        Without the wait, the interpreter exits while Orbax is still writing the last
        epoch's checkpoint, which then stays a temporary directory that ``--resume``
        does not read."""
        self.close()
        return Interrupted(self.history[-1]["epoch"] if self.history else 0)

    def finish(self, lr_label: str) -> list[dict]:
        self.close()
        if self.config.plots and self.history and jax.process_index() == 0:
            paths = plots.write_plots(self.history, self.workdir / "plots", lr_label)
            print(f"plots: {', '.join(str(p) for p in paths)}")
        if self.history and self.history[-1]["epoch"] == self.config.epochs:
            last = self.history[-1]
            print(
                f"done: test accuracy {100 * last['test_accuracy']:.2f}% after {last['epoch']} "
                f"epochs, {last['wall_time_s']:.0f} s"
            )
            if "best_val_epoch" in last:
                print(
                    f"selected by validation loss: epoch {last['best_val_epoch']} (val loss "
                    f"{last['best_val_loss']:.4f}), test accuracy "
                    f"{100 * last['best_val_test_accuracy']:.2f}%, test loss "
                    f"{last['best_val_test_loss']:.4f}"
                )
        elif self.history:
            print(f"stopped after epoch {self.history[-1]['epoch']}; continue with --resume")
        return self.history


def epoch_record(epoch, steps_per_epoch, partial: dict, test, times, wall_time) -> dict:
    """One line of metrics.jsonl: ``partial`` (train_loss, train_accuracy, lr, lr_first,
    val_loss and val_accuracy with a validation split, and the method's own entries)
    completed with the test metrics and the times."""
    t0, train_time, eval_time = times
    val = {k: partial.pop(k) for k in ("val_loss", "val_accuracy") if k in partial}
    rec = {
        "epoch": epoch + 1,
        "steps": (epoch + 1) * steps_per_epoch,
        "train_loss": partial.pop("train_loss"),
        "train_accuracy": partial.pop("train_accuracy"),
        **val,
        "test_loss": test[0],
        "test_accuracy": test[1],
        "lr": partial.pop("lr"),
        "lr_first": partial.pop("lr_first"),
        "epoch_time_s": time.time() - t0,
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "steps_per_s": steps_per_epoch / train_time,
        "wall_time_s": wall_time,
    }
    return {**rec, **partial}


def select_by_val(history: list[dict]) -> dict:
    """The epoch of the lowest ``val_loss`` in ``history`` and its test metrics.

    The first of equal minima, as the published code keeps a checkpoint only when
    the validation loss strictly improves. The records hold every epoch's test
    metrics already, so selecting the checkpoint by validation is a read of them.

    Returns:
      ``{'best_val_epoch', 'best_val_loss', 'best_val_test_loss',
      'best_val_test_accuracy'}``.
    """
    best = None
    for r in history:
        # A non-finite validation loss is never the best (NaN compares as False).
        if best is None or r["val_loss"] < best["val_loss"] or best["val_loss"] != best["val_loss"]:
            best = r
    if best is None:
        raise ValueError("select_by_val needs at least one record with val_loss")
    return {
        "best_val_epoch": best["epoch"],
        "best_val_loss": best["val_loss"],
        "best_val_test_loss": best["test_loss"],
        "best_val_test_accuracy": best["test_accuracy"],
    }


def summary_line(rec: dict, epochs: int) -> str:
    val = ""
    if "val_loss" in rec:
        val = f"val loss {rec['val_loss']:.4f} acc {100 * rec['val_accuracy']:5.2f}% | "
    line = (
        f"epoch {rec['epoch']:>{len(str(epochs))}}/{epochs} | "
        f"train loss {rec['train_loss']:.4f} acc {100 * rec['train_accuracy']:5.2f}% | "
        f"{val}test loss {rec['test_loss']:.4f} acc {100 * rec['test_accuracy']:5.2f}% | "
        f"lr {rec['lr']:.4g} | {rec['epoch_time_s']:.1f} s ({rec['steps_per_s']:.1f} steps/s)"
    )
    if rec.get("probes"):
        line += " | probe " + ", ".join(f"x{p['multiplier']:.3g}" for p in rec["probes"])
    if "alr" in rec:
        line += f" | alr: {rec['child_epochs']} child-epochs"
    return line


def progress_bar(config, epoch: int, total: int, unit: str, desc: str = ""):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=f"epoch {epoch + 1}/{config.epochs}{desc}",
        unit=unit,
        disable=not config.progress,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )
