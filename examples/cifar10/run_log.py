"""A run's directory: per-epoch records, Orbax checkpoints of the pure state, resume.

``metrics.jsonl`` (one JSON object per epoch), ``config.json`` (the flattened
configuration) and ``checkpoints/`` (Orbax: per epoch, the pure NNX state and the
run's metadata) are written here for both training loops (``train.py`` and
``alr.py``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import jax

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
    metadata (``meta``: epoch, history, wall time, configuration). ``metrics.jsonl``
    always equals the checkpointed history plus what this run adds.
    """

    def __init__(self, config, workdir: str | Path, resume: bool):
        self.config, self.workdir, self.resume = config, Path(workdir), resume
        self.workdir.mkdir(parents=True, exist_ok=True)
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
        latest = self.manager.latest_step() if self.manager else None
        if latest is not None and not resume:
            self.close()
            raise ConfigError(
                f"{self.workdir} already holds checkpoints (epoch {latest}); pass --resume to "
                "continue that run, or choose an empty --workdir"
            )
        self._latest = latest

    def restore(self, like):
        """The saved state shaped like ``like`` (or ``like`` itself when starting afresh).

        ``like`` may be a function of the saved metadata (the ALR beam changes size).
        """
        if not self.resume or self._latest is None:
            if self.resume:
                print(f"--resume: no checkpoint in {self.workdir}, starting from scratch")
            self._write_start()
            return like({}) if callable(like) else like
        ocp = self._ocp
        meta = self.manager.restore(
            self._latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
        )["meta"]
        self._check_same_config(meta["config"])
        like = like(meta) if callable(like) else like
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        state = self.manager.restore(
            self._latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )["state"]
        self.history, self.start_epoch = meta["history"], meta["epoch"]
        self.wall_before = meta["wall_time_s"]
        print(f"resuming {self.workdir} after epoch {self.start_epoch}")
        self._write_start()
        return state

    def _check_same_config(self, saved: dict) -> None:
        now = flat_config(self.config)
        changed = {
            k: (saved.get(k), v)
            for k, v in now.items()
            if k not in RESUMABLE_CHANGES and saved.get(k) != v
        }
        if changed:
            self.close()
            diffs = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(f"--resume with a different configuration ({diffs})")

    def _write_start(self) -> None:
        with open(self.metrics_path, "w") as f:
            f.writelines(json.dumps(rec) + "\n" for rec in self.history)
        text = json.dumps(flat_config(self.config), indent=2) + "\n"
        (self.workdir / "config.json").write_text(text)

    def wall_time(self) -> float:
        return self.wall_before + time.time() - self.t_start

    def end_epoch(self, state, rec: dict) -> None:
        """Appends the record, prints its summary and checkpoints the state after it."""
        self.history.append(rec)
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        from tqdm.auto import tqdm

        tqdm.write(summary_line(rec, self.config.epochs))
        if self.manager and self.config.checkpoint:
            ocp = self._ocp
            meta = {
                "epoch": rec["epoch"],
                "history": self.history,
                "wall_time_s": rec["wall_time_s"],
                "config": flat_config(self.config),
            }
            self.manager.save(
                rec["epoch"],
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
            )

    def close(self) -> None:
        if self.manager:
            self.manager.wait_until_finished()
            self.manager.close()
            self.manager = None

    def finish(self, lr_label: str) -> list[dict]:
        self.close()
        if self.config.plots and self.history:
            paths = plots.write_plots(self.history, self.workdir / "plots", lr_label)
            print(f"plots: {', '.join(str(p) for p in paths)}")
        if self.history and self.history[-1]["epoch"] == self.config.epochs:
            last = self.history[-1]
            print(
                f"done: test accuracy {100 * last['test_accuracy']:.2f}% after {last['epoch']} "
                f"epochs, {last['wall_time_s']:.0f} s"
            )
        elif self.history:
            print(f"stopped after epoch {self.history[-1]['epoch']}; continue with --resume")
        return self.history


def epoch_record(epoch, steps_per_epoch, partial: dict, test, times, wall_time) -> dict:
    """One line of metrics.jsonl: ``partial`` (train_loss, train_accuracy, lr, lr_first
    and the method's own entries) completed with the test metrics and the times."""
    t0, train_time, eval_time = times
    rec = {
        "epoch": epoch + 1,
        "steps": (epoch + 1) * steps_per_epoch,
        "train_loss": partial.pop("train_loss"),
        "train_accuracy": partial.pop("train_accuracy"),
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


def summary_line(rec: dict, epochs: int) -> str:
    line = (
        f"epoch {rec['epoch']:>{len(str(epochs))}}/{epochs} | "
        f"train loss {rec['train_loss']:.4f} acc {100 * rec['train_accuracy']:5.2f}% | "
        f"test loss {rec['test_loss']:.4f} acc {100 * rec['test_accuracy']:5.2f}% | "
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
