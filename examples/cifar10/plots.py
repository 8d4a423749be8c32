"""Plots of a run, drawn from its per-epoch records (``metrics.jsonl``).

python -m examples.cifar10.plots WORKDIR     # (re)draws WORKDIR/plots/*.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """The records of ``metrics.jsonl``, one per epoch."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_plots(
    history: list[dict], plot_dir: Path, lr_label: str = "last update of the epoch"
) -> list[Path]:
    """PNG plots of the learning rate, the losses and the accuracies per epoch."""
    # Figure objects without pyplot: no GUI backend, no global state (Agg renders the PNG).
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    plot_dir.mkdir(parents=True, exist_ok=True)
    epochs = [r["epoch"] for r in history]

    def series(key, scale=1.0):
        return [r[key] * scale for r in history]

    figures = {
        "lr.png": ("learning rate", [(lr_label, series("lr"))]),
        "train_loss.png": (
            "loss",
            [("train", series("train_loss")), ("test", series("test_loss"))],
        ),
        "test_accuracy.png": (
            "accuracy (%)",
            [("test", series("test_accuracy", 100)), ("train", series("train_accuracy", 100))],
        ),
    }
    if any(r["lr_first"] != r["lr"] for r in history):  # the lr moved within epochs
        figures["lr.png"][1].insert(0, ("first update of the epoch", series("lr_first")))
    paths = []
    for fname, (ylabel, lines) in figures.items():
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.subplots()
        for label, ys in lines:
            ax.plot(epochs, ys, marker="o", markersize=3, label=label)
        if fname == "lr.png":
            lrs = [v for _, ys in lines for v in ys]
            if min(lrs) > 0 and max(lrs) / min(lrs) > 20:
                ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = plot_dir / fname
        fig.savefig(path)
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m examples.cifar10.plots WORKDIR", file=sys.stderr)
        return 2
    workdir = Path(argv[0])
    for p in write_plots(read_metrics(workdir / "metrics.jsonl"), workdir / "plots"):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
