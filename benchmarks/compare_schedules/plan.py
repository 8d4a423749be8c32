"""The plan: protocols, groups and their variants, the runs they make, and each run's key.

A *variant* is a row of a group's table: a name and the example's config settings it
changes (nested names: ``auto.factors``). A *run* is one configuration at one seed;
variants of several groups that come to the same configuration share a run. A run's
*key* is a function of what it computes: the protocol, the seed and the settings that
differ from the protocol's preset, by the example's old flat names (``auto_factors``,
``learning_rate``): the results committed before the example moved to nested configs
are keyed that way, so :data:`LEGACY_PREFIXED`, :data:`LEGACY_BARE` and
:data:`LEGACY_EXCEPTIONS` translate a nested name to its flat one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable
from typing import Any

from ml_collections import config_dict

from benchmarks._declarations import FACTORS, LR_FREE, LR_GRID, WIDE_FACTORS

PROTOCOLS = ("cpu", "seed", "gpu-short")  # the example's presets the benchmark runs
# The comparison of the automated scheduler as published (committed results), and the
# budget-aware candidates that followed it.
COMPARISON_GROUPS = ("main", "sensitivity", "score", "probe")
GROUPS = (*COMPARISON_GROUPS, "budget")
MAX_LR_BOUND = 0.1  # the auto.max_lr tried at lr = 1: the largest grid lr below 1
LOOKAHEAD = 10  # the probe group's longer horizon (auto_lr(lookahead=...))
# The probe group's larger scoring batch: if the separate-batch probe's downward drift were
# batch noise, 8x the examples (about 2.8x less noise in each candidate loss) would shrink it.
BIG_PROBE_BATCH = 256

# Settings that do not change what a run computes; they never enter its key.
NOT_IN_KEY = frozenset(
    {"data.data_dir", "data.tfds_data_dir", "data.cache_dir", "progress", "checkpoint", "plots",
     "stop_after_epoch", "seed"}
)  # fmt: skip
# Nested name -> the flat name of the example's former Config (the keys are made of those):
# the fields of these sub-configs had its name as a prefix (auto.factors -> auto_factors),
LEGACY_PREFIXED = ("linear", "one_cycle", "plateau", "auto", "alr", "dog", "mechanize",
                   "schedule_free")  # fmt: skip
# those of these their bare names (model.width -> width, step.gamma -> gamma),
LEGACY_BARE = ("model", "data", "step", "multistep", "exponential", "cosine", "warmup_cosine")
# and these are the exceptions. Top-level settings kept their names; a sub-config not
# listed is new and keeps its nested names.
LEGACY_EXCEPTIONS = {
    "auto.probe_batch_size": "probe_batch_size",
    "auto.probe_source": "probe_source",
    "prodigy.learning_rate": "lr_free_learning_rate",
    "dog.learning_rate": "lr_free_learning_rate",
}
# Short forms of the flat names in a key's readable part.
_SHORT = {
    "learning_rate": "lr",
    "auto_factors": "f",
    "auto_score": "",
    "auto_max_lr": "maxlr",
    "auto_min_lr": "minlr",
    "probe_source": "probe-",
    "probe_batch_size": "pb",
    "alr_factors": "f",
    "alr_beam_size": "M",
    "auto_lookahead": "la",
}


def legacy_name(path: str) -> str:
    """The former flat name of the nested setting ``path``."""
    if path in LEGACY_EXCEPTIONS:
        return LEGACY_EXCEPTIONS[path]
    head, _, rest = path.partition(".")
    if head in LEGACY_PREFIXED and rest:
        return f"{head}_{rest}"
    if head in LEGACY_BARE and rest:
        return rest
    return path


# --------------------------------------------------------------------------------------
# The example's presets and --set.


# The auto settings every group was planned against: the example's defaults when the
# comparison was measured (Algorithm 1 on a separate random batch, no search, no budget).
# The example's defaults have since become the budget group's best; pinning the former
# ones keeps every run's computation and key, and each variant names what it changes.
BASELINE_AUTO = {
    "rule": "seed",
    "initial_search": False,
    "probe_source": "random",
    "budget": None,
    # Every committed run's guard compared the probe batch's L(0) (the example's default
    # until guard_on='value' measured better): pinned, so a key still names its computation.
    "guard_on": "probe",
}


def preset_config(protocol: str) -> tuple[str, config_dict.ConfigDict]:
    """(preset name, config) of a protocol; ``gpu-short`` and ``gpu_short`` are the same.

    The config is the example's preset with ``auto`` at :data:`BASELINE_AUTO`.
    """
    from examples.cifar10 import configs

    name = protocol.replace("-", "_")
    if name not in configs.PRESETS:
        raise SystemExit(
            f"error: the example has no preset for protocol {protocol!r} "
            f"(presets: {', '.join(configs.PRESETS)})"
        )
    config = configs.get_config(name)
    config.auto.update(BASELINE_AUTO)
    return name, config


def parse_sets(preset: config_dict.ConfigDict, items: Iterable[str]) -> dict[str, Any]:
    """``--set path=value`` items as {path: value}, parsed by ml_collections' config flags.

    Each item goes through ``config_flags`` exactly as ``--config.path=value`` does on the
    example's command line: the value is parsed by the type of the setting in ``preset``
    (``epochs=2``, ``auto.factors='(4., 1., .25)'``, ``data.augment=false``); an unknown
    path or a value of the wrong type is an error.
    """
    from absl import flags
    from ml_collections import config_flags

    flat = flatten(preset)
    argv = ["--set"]
    for item in items:
        if "=" not in item:
            raise SystemExit(f"error: --set {item!r}: expected PATH=VALUE (e.g. epochs=2)")
        path, value = (x.strip() for x in item.split("=", 1))
        if path not in flat and not any(p.startswith(path + ".") for p in flat):
            was = {legacy_name(p): p for p in flat}
            hint = f" (now {was[path]})" if path in was else ""
            raise SystemExit(
                f"error: --set {item}: the example's config has no field {path!r}{hint}"
            )
        argv.append(f"--config.{path}={value}")
    values = flags.FlagValues()
    config_flags.DEFINE_config_dict(
        "config", copy.deepcopy(preset), flag_values=values, sys_argv=argv
    )
    try:
        values(argv)
    except flags.Error as e:
        raise SystemExit(f"error: --set: {e}") from None
    return dict(values["config"].override_values)


def flatten(config: config_dict.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """{dotted path: value} of every setting."""
    out: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, config_dict.ConfigDict):
            out.update(flatten(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def build_config(preset, overrides: Iterable[tuple[str, Any]], sets: dict[str, Any]):
    """A copy of ``preset`` with the variant's overrides, then ``--set``'s, applied."""
    config = copy.deepcopy(preset)
    config.update_from_flattened_dict(dict(overrides))
    config.update_from_flattened_dict(sets)
    return config


# --------------------------------------------------------------------------------------
# Variants.


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of a group's table: a name and the settings it changes (nested paths)."""

    group: str
    name: str
    overrides: tuple[tuple[str, Any], ...]

    @property
    def label(self) -> str:
        return f"{self.group}:{self.name}"


@dataclasses.dataclass
class Run:
    """One training run: a configuration (as its difference from the preset) and a seed.

    ``diff`` is by flat names (:func:`config_diff`), as the key and the records' ``overrides``.
    """

    key: str
    seed: int
    diff: dict[str, Any]
    variants: list[Variant]
    supported: bool = True


def _v(group: str, name: str, overrides: dict[str, Any]) -> Variant:
    return Variant(group, name, tuple(sorted(overrides.items())))


def _auto(factors: int | tuple[float, ...], **settings) -> dict[str, Any]:
    """The automated scheduler with the seed's factor set ``factors`` (its size) or these
    factors, and ``auto.<setting>`` for each of ``settings``."""
    return {
        "schedule": "auto",
        "auto.factors": FACTORS[factors] if isinstance(factors, int) else factors,
        **{f"auto.{k}": v for k, v in settings.items()},
    }


def variants(groups: Iterable[str], preset) -> list[Variant]:
    """The variants of the chosen groups, in table order."""
    out: list[Variant] = []
    for group in groups:
        if group == "main":
            out += [_v(group, s, {"schedule": s}) for s in ("constant", "linear", "cosine", "step")]
            out += [_v(group, f"auto{n}", _auto(n)) for n in (3, 5, 7)]
            out += [_v(group, "plateau", {"schedule": "plateau"})]
            # The ALR tree at M = 2, N = 3: the example's beam (lr, lr / 2), the factors 3.
            out += [_v(group, "alr", {"schedule": "alr", "alr.factors": FACTORS[3]})]
            out += [_v(group, s, {"schedule": s}) for s in LR_FREE]
        elif group == "sensitivity":
            for name, kw in (
                ("constant", {"schedule": "constant"}),
                ("cosine", {"schedule": "cosine"}),
                ("auto7", _auto(7)),
            ):
                out += [_v(group, f"{name}@{lr:g}", {"learning_rate": lr, **kw}) for lr in LR_GRID]
            at1 = {"learning_rate": 1.0}
            out += [
                _v(group, "auto7+max_lr@1", {**at1, **_auto(7, max_lr=MAX_LR_BOUND)}),
                _v(group, "auto_wide@1", {**at1, **_auto(WIDE_FACTORS)}),
                _v(group, "auto7+softmax@1", {**at1, **_auto(7, score="softmax")}),
            ]
        elif group == "score":
            out += [
                _v(group, "minmax_exp", _auto(7)),
                _v(group, "softmax", _auto(7, score="softmax")),
                _v(group, "softmax_t0.25", _auto(7, score="softmax:0.25")),
                _v(group, "rank_exp", _auto(7, score="rank_exp")),
            ]
        elif group == "probe":
            same = {"probe_batch_size": preset.batch_size}
            big = {"probe_source": "random", "probe_batch_size": BIG_PROBE_BATCH}
            out += [
                _v(group, "train", _auto(7, probe_source="train", **same)),
                _v(group, "random", _auto(7, probe_source="random", **same)),
                _v(
                    group,
                    f"random+lookahead{LOOKAHEAD}",
                    _auto(7, probe_source="random", lookahead=LOOKAHEAD, **same),
                ),
                _v(group, f"random+batch{BIG_PROBE_BATCH}", _auto(7, **big)),
                # The rank score is blind to the gaps: it tests whether the weighted mean's
                # pull towards the small factors (a too-large step costs far more one-step loss
                # than a too-small one) is what moves the lr down, not the probe's noise.
                _v(
                    group,
                    f"random+batch{BIG_PROBE_BATCH}+rank_exp",
                    _auto(7, score="rank_exp", **big),
                ),
            ]
        elif group == "budget":
            # The budget-aware candidates (issue 13): the automated level found by a wide
            # first-probe search and shaped by warmup-stable-decay, against the fixed
            # warmup-stable-decay schedule, from every start; and the ablation at the preset's lr.
            best = _auto(3, initial_search=True, budget="wsd")
            armijo = {**best, "auto.rule": "armijo", "auto.probe_source": "train"}
            for lr in LR_GRID:
                out += [_v(group, f"auto3+search+wsd@{lr:g}", {"learning_rate": lr, **best})]
                out += [
                    _v(group, f"armijo-train+search+wsd@{lr:g}", {"learning_rate": lr, **armijo})
                ]
                out += [_v(group, f"wsd@{lr:g}", {"learning_rate": lr, "schedule": "wsd"})]
            out += [
                _v(group, "auto3+search", _auto(3, initial_search=True)),
                _v(group, "auto3+wsd", _auto(3, budget="wsd")),
                _v(group, "auto3+search+wsd", best),
                _v(group, "armijo+search+wsd", {**best, "auto.rule": "armijo"}),
                # Armijo's sufficient decrease is meant for the batch the gradient came from.
                _v(group, "armijo-train+search+wsd", armijo),
                _v(group, "parabola+search+wsd", {**best, "auto.rule": "parabola"}),
                _v(group, "wsd", {"schedule": "wsd"}),
                # The null model: the published code's rule (losses of the unchanged model).
                _v(group, "null_model", {"schedule": "null_model"}),
            ]
        else:
            raise SystemExit(f"error: unknown group {group!r}; choose from {', '.join(GROUPS)}")
    return out


# --------------------------------------------------------------------------------------
# Keys.


def jsonable(value):
    """Tuples as lists, non-finite floats as None: what a key and a JSON record hold."""
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def config_diff(preset, config) -> dict[str, Any]:
    """The settings of ``config`` that differ from ``preset`` and change the computation,
    by flat name (two nested settings with one flat name that differ keep their paths)."""
    base = flatten(preset)
    by_name: dict[str, list[tuple[str, Any]]] = {}
    for path, value in flatten(config).items():
        if path not in NOT_IN_KEY and value != base.get(path):
            by_name.setdefault(legacy_name(path), []).append((path, jsonable(value)))
    diff = {}
    for name, items in by_name.items():
        if len({json.dumps(v) for _, v in items}) == 1:
            diff[name] = items[0][1]
        else:
            diff.update(items)
    return diff


def _slug(schedule: str, diff: dict[str, Any]) -> str:
    parts = [schedule]
    for k in sorted(diff):
        if k == "schedule":
            continue
        v = diff[k]
        if k in ("auto_factors", "alr_factors") and isinstance(v, list):
            text = f"{_SHORT[k]}{len(v)}"
        elif isinstance(v, float):
            text = f"{_SHORT.get(k, k + '=')}{v:g}"
        elif isinstance(v, list):
            text = f"{_SHORT.get(k, k + '=')}{':'.join(f'{x:g}' for x in v)}"
        else:
            text = f"{_SHORT.get(k, k + '=')}{v}"
        parts.append(text)
    return re.sub(r"[^A-Za-z0-9.=:+-]+", "_", "_".join(parts))[:80]


def run_key(
    protocol: str, seed: int, schedule: str, diff: dict[str, Any], common: Iterable[str] = ()
) -> str:
    """``<protocol>.<slug>.s<seed>.<digest>``: a function of what the run computes.

    The digest covers the protocol and every setting in ``diff``; the readable slug leaves
    out the ``common`` ones (``--set``'s, the same in every run).
    """
    canon = json.dumps({"protocol": protocol, "diff": diff}, sort_keys=True)
    digest = hashlib.sha256(canon.encode()).hexdigest()[:8]
    slug = _slug(schedule, {k: v for k, v in diff.items() if k not in set(common)})
    return f"{protocol}.{slug}.s{seed}.{digest}"


def make_plan(protocol, preset, groups, seeds, sets, methods=None) -> list[Run]:
    """The runs of the chosen groups and seeds, each configuration once, in table order.

    ``sets``: {path: value} applied to every run; ``methods``: the schedules the example
    has (a run of another is planned but not supported).
    """
    common = {legacy_name(p) for p in sets}
    runs: dict[str, Run] = {}
    for variant in variants(groups, preset):
        for seed in seeds:
            config = build_config(preset, variant.overrides, sets)
            diff = config_diff(preset, config)
            key = run_key(protocol, seed, config.schedule, diff, common)
            if key not in runs:
                supported = methods is None or config.schedule in methods
                runs[key] = Run(key, seed, diff, [], supported)
            runs[key].variants.append(variant)
    return list(runs.values())
