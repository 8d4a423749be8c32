"""Prints and plots autolr_jax's schedules side by side.

    python examples/plot_schedules.py --steps 100 --out schedules.png

Every curve is the learning rate PyTorch's scheduler would hold after ``t``
calls of ``scheduler.step()``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import autolr_jax as al


def gallery(steps: int, lr: float = 0.1) -> dict:
    """Name -> schedule, each over ``steps`` steps."""
    return {
        "step_lr(step_size=steps/4)": al.step_lr(lr, max(1, steps // 4), 0.5),
        "multistep_lr([.5, .75])": al.multistep_lr(lr, [steps // 2, 3 * steps // 4]),
        "exponential_lr(0.97)": al.exponential_lr(lr, 0.97),
        "linear_lr(1/3 -> 1, steps/5)": al.linear_lr(lr, total_iters=max(1, steps // 5)),
        "cosine_annealing_lr(steps)": al.cosine_annealing_lr(lr, steps),
        "warm_restarts(t_0=steps/8, t_mult=2)": al.cosine_annealing_warm_restarts(
            lr, max(1, steps // 8), 2
        ),
        "cyclic_lr(triangular2)": al.cyclic_lr(lr / 10, lr, max(1, steps // 8), mode="triangular2"),
        "one_cycle_lr(steps)": al.one_cycle_lr(lr, steps),
        "warmup_cosine(steps/10, steps)": al.warmup_cosine(lr, max(1, steps // 10), steps),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="number of steps to show")
    parser.add_argument("--lr", type=float, default=0.1, help="initial / peak learning rate")
    parser.add_argument("--out", default="schedules.png", help="PNG to write ('' for none)")
    args = parser.parse_args(argv)
    if args.steps < 8:
        parser.error(f"--steps must be >= 8, got {args.steps}")

    counts = jnp.arange(args.steps + 1, dtype=jnp.int32)
    curves = {
        name: np.asarray(jax.jit(jax.vmap(s))(counts))
        for name, s in gallery(args.steps, args.lr).items()
    }
    marks = sorted({0, args.steps // 4, args.steps // 2, 3 * args.steps // 4, args.steps})
    width = max(len(n) for n in curves)
    print(f"{'schedule':<{width}}  " + "  ".join(f"t={t:<8d}" for t in marks))
    for name, values in curves.items():
        print(f"{name:<{width}}  " + "  ".join(f"{values[t]:<10.5g}" for t in marks))

    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(3, 3, figsize=(12, 9), sharex=True)
        for ax, (name, values) in zip(axes.flat, curves.items(), strict=True):
            ax.plot(np.asarray(counts), values)
            ax.set_title(name, fontsize=9)
            ax.set_ylabel("learning rate")
            ax.grid(alpha=0.3)
        for ax in axes[-1]:
            ax.set_xlabel("scheduler.step() calls")
        fig.tight_layout()
        fig.savefig(args.out, dpi=90)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
