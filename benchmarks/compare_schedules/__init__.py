"""Does the automated scheduler pay off? Schedules compared on the CIFAR-10 example (issue 6).

What it measures: final and best test accuracy, final training loss, time per run and per
epoch of every schedule of the example, each one call of
``examples.cifar10.train.train_and_evaluate(config, workdir, resume=True)`` with ``config``
= the protocol's preset (``cpu``, ``seed`` or ``gpu-short``) plus the variant's settings
(plus ``--set``'s), mean ± std over seeds; whether the automated learning rate drifts away
from the best constant one; and what each probe of the automated scheduler decided.

Last measured (``benchmarks/results/compare_cpu/``, protocol ``cpu``: ResNet-18 width 1/8
on a 10,000-image subset, 15 epochs, batch 32, lr 0.05; seeds 0 and 1, 76 runs, 6.2 h on
an AMD EPYC, 2 cores, JAX 0.10.2 on the CPU, December 2026): the automated scheduler did
not pay off. Final test accuracy: constant 59.8 ± 1.0%, cosine 58.3 ± 1.5%, automated
with 3 / 5 / 7 factors 58.2 ± 2.7% / 50.4 ± 1.5% / 52.7 ± 2.5%, prodigy 62.6 ± 0.6% (the
best of ``main``); cosine from lr 1 65.5 ± 2.0% (the best overall). Scored on a separate
batch, the automated lr drifts down (auto7: late median 0.09x the best constant lr, 0.1);
scored on the training batch it drifts up (1.71x).

  python -m benchmarks.compare_schedules --protocol cpu --seeds 0,1 \\
      --data-dir ../shared/data/cifar10-jpg.tar.gz    # hours on 2 CPU cores; resumable
  python -m benchmarks.compare_schedules --protocol cpu --dry-run        # the plan, run keys
  python -m benchmarks.compare_schedules --protocol cpu --report-only    # tables + plots again

Four groups of variants (``plan.py``):

* ``main``: constant, linear, cosine, step (PyTorch's defaults apart from the initial
  learning rate, durations scaled to the preset's epochs by the preset), automated with
  the seed's factor sets 3, 5 and 7, plateau, the ALR tree (M=2, N=3), and the
  learning-rate-free optimizers prodigy, dog, mechanize (around SGD) and schedule-free SGD;
* ``sensitivity``: initial learning rate in {1e-4, 1e-3, 1e-2, 1e-1, 1} for constant,
  cosine and automated (factor set 7, the seed's diverging case), and, at lr = 1, the
  options that might remove the seed's divergence: a ``max_lr`` bound, a wider factor set
  (8 ... 1/64) and the softmax score;
* ``score``: min-max + exp(-x) (the seed's) vs softmax (T = 1) vs softmax (T = 0.25) vs a
  rank-based score, with factor set 7;
* ``probe``: candidates scored on the training batch itself vs on a separate random batch
  of the same size vs after a 10-update look-ahead vs on a separate batch 8x larger, with
  the seed's score and with the rank score (factor set 7).

A run is identified by its key (``plan.run_key``: protocol, seed and the settings that
differ from the preset), so a configuration shared by two groups (``main:auto7`` is
``score:minmax_exp``) runs once. ``runner.py`` appends one JSON line per finished run to
``<out>/results.jsonl``, skips finished keys on restart and continues an interrupted run
from its last per-epoch checkpoint in ``<out>/runs/<key>/``. ``report.py`` rewrites, after
runs and with ``--report-only``, ``<out>/README.md`` (tables: mean ± std over seeds, n per
row, rows with missing runs marked), ``<out>/plots/*.png`` (test accuracy and learning
rate per epoch, one panel per group), ``<out>/environment.json`` (machine, versions,
commands) and ``<out>/data.json`` (the data copy: path, sha256, subset sizes).
"""
