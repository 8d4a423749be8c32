"""Trains ResNet-18 on CIFAR-10 with any autolr_jax learning-rate scheduler.

  python examples/cifar10/main.py --config cpu --data-dir ../shared/data/cifar10-jpg.tar.gz \\
      --workdir /tmp/cifar_cpu --schedule auto

``--config`` picks a preset (seed, tuned, cpu, gpu-short, default); every field of the
configuration is a flag of its own (``--learning-rate 0.01``, ``--milestones 30,60``,
``--no-augment``, ...) overriding the preset. ``--help`` lists them all.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path

# Runs as a script: its directory holds the modules it imports.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import configs  # noqa: E402
import input_pipeline  # noqa: E402
import train  # noqa: E402
from configs.default import SCHEDULES, Config  # noqa: E402

_CHOICES = {
    "schedule": SCHEDULES,
    "lr_update": ("epoch", "step"),
    "plateau_metric": ("test_loss", "test_accuracy", "train_loss"),
    "plateau_mode": ("min", "max"),
    "plateau_threshold_mode": ("rel", "abs"),
    "one_cycle_anneal_strategy": ("cos", "linear"),
    "auto_strategy": ("auto", "map", "vmap"),
    "alr_rank_by": ("mean", "last"),
    "alr_strategy": ("auto", "map", "vmap"),
    "probe_source": ("random", "train"),
}


def _parse_value(text: str, annotation: str):
    """Parses a flag's text for a Config field of the given annotation."""
    is_optional = "None" in annotation
    if is_optional and text.lower() in ("none", ""):
        return None
    base = annotation.replace("| None", "").strip()
    if base.startswith("tuple["):
        elem = float if "float" in base else int
        return tuple(elem(v) for v in text.replace(" ", "").split(",") if v)
    if base == "int":
        return int(text)
    if base == "float":
        return float(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default="cpu", choices=configs.preset_names(), help="preset (default: cpu)"
    )
    parser.add_argument(
        "--workdir", required=True, help="directory for metrics, checkpoints, plots"
    )
    hints = typing.get_type_hints(Config)
    for field in dataclasses.fields(Config):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        annotation = str(field.type)
        if hints[field.name] is bool:
            parser.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
            continue
        kwargs = {}
        if field.name in _CHOICES:
            kwargs["choices"] = _CHOICES[field.name]
        else:
            parse = lambda text, a=annotation: _parse_value(text, a)  # noqa: E731
            parse.__name__ = annotation  # argparse names it in "invalid ... value"
            kwargs["type"] = parse
        if annotation.startswith("tuple"):
            help_text += " (comma-separated)"
        parser.add_argument(flag, dest=field.name, default=None, help=help_text, **kwargs)
    return parser


def config_from_args(args: argparse.Namespace | types.SimpleNamespace) -> Config:
    """The preset named by ``args.config`` with every flag that was given applied."""
    config = configs.get_config(args.config)
    for field in dataclasses.fields(Config):
        value = getattr(args, field.name, None)
        if value is not None:
            setattr(config, field.name, value)
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    try:
        train.train_and_evaluate(config, args.workdir)
    except (input_pipeline.DataError, train.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
