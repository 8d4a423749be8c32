"""Trains ResNet-18 on CIFAR-10 with any autolr_jax learning-rate scheduler.

  python -m examples.cifar10.main --config=examples/cifar10/configs/cpu.py \\
      --config.schedule=auto --config.data.data_dir=../shared/data/cifar10-jpg.tar.gz \\
      --workdir=/tmp/cifar_cpu

``--config`` is a preset file (``configs/{cpu,seed,tuned,gpu_short,default}.py``);
any setting is overridden with ``--config.<name>=<value>`` (``--config.auto.factors=
'(4., 1., 0.25)'``, ``--config.data.augment=False``). ``--resume`` continues the run
whose checkpoints are in ``--workdir``; ``--overwrite`` deletes a finished or stopped
run's outputs there and starts afresh (without either, such a workdir is refused).
Ctrl-C waits for the checkpoint being written and exits with status 130. On several
hosts, call it on each after ``jax.distributed.initialize()`` (``--distributed``).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from examples.cifar10 import input_pipeline, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "a preset file, e.g. examples/cifar10/configs/cpu.py", lock_config=True
)
flags.DEFINE_string("workdir", None, "directory for metrics, checkpoints and plots")
flags.DEFINE_bool("resume", False, "continue the run whose checkpoints are in --workdir")
flags.DEFINE_bool("overwrite", False, "delete the outputs of a run already in --workdir first")
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() first (multi-host)")
# jax.distributed.initialize reads the coordinator from $JAX_COORDINATOR_ADDRESS and all three
# from a cluster manager (SLURM, Open MPI, Kubernetes); on plain hosts they have to be given.
flags.DEFINE_string("coordinator_address", None, "with --distributed: host:port of process 0")
flags.DEFINE_integer("num_processes", None, "with --distributed: how many processes run")
flags.DEFINE_integer("process_id", None, "with --distributed: this one's, 0 to num_processes-1")
flags.mark_flags_as_required(["config", "workdir"])


def flag_error(e: Exception) -> str:
    """One line for a bad flag: ml_collections reports an unknown field as an AttributeError
    wrapping the KeyError whose text holds its "Did you mean" suggestion."""
    inner = e.args[0] if isinstance(e, AttributeError) and e.args else None
    if isinstance(inner, KeyError) and inner.args:
        suggestion = " ".join(str(inner.args[0]).split("\n")[1:])
        field = str(inner.args[0]).split("\n")[0]
        return (
            f"--config.<field>: no configuration field {field}"
            + (f"; {suggestion}" if suggestion else "")
            + " (every field: examples/cifar10/configs/default.py)"
        )
    return " ".join(str(e).split())


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with a bad flag reported as every other bad setting: ``error: ...``
    and exit status 2 (absl says FATAL and exits 1; ml_collections raises an unknown field
    or an unreadable preset file as a chain of tracebacks)."""
    try:
        args = FLAGS(argv)
        # A preset that failed to load is a placeholder that raises when first read.
        if FLAGS.config is not None:
            FLAGS.config.keys()
        return args
    except (flags.Error, AttributeError, KeyError, OSError) as e:
        print(f"error: {flag_error(e)}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS["verbosity"].present:  # Orbax logs every checkpoint step at INFO
        logging.set_verbosity(logging.WARNING)
    if FLAGS.distributed:
        import jax

        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    try:
        train.train_and_evaluate(
            FLAGS.config, FLAGS.workdir, resume=FLAGS.resume, overwrite=FLAGS.overwrite
        )
    except KeyboardInterrupt as e:  # run_log.Interrupted once the run has begun its epochs
        epoch = getattr(e, "epoch", 0)
        print(f"interrupted after epoch {epoch}; continue with --resume", file=sys.stderr)
        return 130
    except (input_pipeline.DataError, train.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except train.Diverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
