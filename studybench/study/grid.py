"""Study -> frozen, fully resolved RunSpecs: grid x ablations x seeds, validated up front.

Merge order for each run (later wins): ``base`` < dataset entry < method variant <
profile < grid axis values < ablation value. A ``loss`` or ``scheme`` section whose
``name`` changes replaces the earlier section instead of merging into it (parameters of
one loss never leak into another). Runs with equal keys are merged (an ablation point
equal to a main-grid run is trained once and belongs to both).

Everything that can be checked without training is checked here — section keys and types,
registry names and parameters, and that each dataset's files are present — so a bad
study fails with exit code 2 before anything is written to MLflow.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
from typing import Any

from pydantic import ValidationError

from studybench.study.checks import check_runs
from studybench.study.config import (
    SECTIONS,
    SeedsBySource,
    Study,
    StudyError,
    brief,
    check_name,
    cut,
    format_validation,
    seed_runs,
)
from studybench.study.keys import keyed_spec
from studybench.study.only import run_fields
from studybench.study.phases import method_knobs, tuning_trials
from studybench.study.spec import NAMED_ALWAYS, DataCfg, LossCfg, RunConfig, RunSpec, SchemeCfg, axis_leaves, run_name


def expand(study: Study, profile: str | None = None, source: str = "<study>", check_data: bool = True) -> list[RunSpec]:
    """All runs of ``study`` (under ``profile``), validated; raises ``StudyError``."""
    prof = _profile(study, profile, source)
    study = study.under(profile)  # idempotent: callers that keep the study resolve it too (api.load_runs)
    prof_sections = prof.sections() if prof else {}
    seeds = _seeds(study, prof, profile, source)  # ints, or one mapping source -> seed per run
    base = _validated_partial(study.base, source, "base")
    for prof_name, other in study.profiles.items():  # every profile, not only the active one
        _validated_partial(other.sections(), source, f"profiles.{prof_name}")

    axes = dict(study.grid or {})
    datasets = _datasets(axes.pop("dataset", None), prof, source)
    methods = _methods(axes.pop("method", None), base, source)
    dotted = list(axes.items())
    _check_baseline(study.baseline, methods, source)
    _check_grid_size(study, len(datasets), len(methods), dotted, len(seeds), source)

    points: list[
        tuple[tuple[str, ...], dict[str, Any], dict[str, Any], dict[str, Any]]
    ] = []  # (groups, dataset, method, axis values)
    for ds, method in itertools.product(datasets, methods):
        for values in itertools.product(*(v for _, v in dotted)):
            points.append((("main",), ds, method, dict(zip((k for k, _ in dotted), values))))
    by_name = {m["name"]: m for m in methods}
    for abl_name, abl in study.ablations.items():
        if abl_name == "main":
            raise StudyError(f"{source}: ablations.main: 'main' names the grid itself; choose another ablation name")
        if abl.of not in by_name:
            raise StudyError(
                f"{source}: ablations.{abl_name}.of: unknown method {abl.of!r}; methods: {', '.join(by_name)}"
            )
        for key, values in abl.vary.items():
            _check_axis_key(key, source, f"ablations.{abl_name}.vary")
            if not values:
                raise StudyError(f"{source}: ablations.{abl_name}.vary.{key}: no values")
            others = [(k, v) for k, v in dotted if k != key]
            for ds, value in itertools.product(datasets, values):
                for rest in itertools.product(*(v for _, v in others)):
                    axis_values = {**dict(zip((k for k, _ in others), rest)), key: value}
                    points.append(((abl_name,), ds, by_name[abl.of], axis_values))

    specs: dict[str, RunSpec] = {}
    for groups, ds, method, axis_values in points:
        merged = _merge(base, ds["sections"])
        merged = _merge(merged, method["sections"])
        merged = _merge(merged, prof_sections)
        if prof is not None and prof.iterations_scale and merged.get("train", {}).get("iterations"):
            merged["train"]["iterations"] = max(1, math.ceil(merged["train"]["iterations"] * prof.iterations_scale))
        for key, value in axis_values.items():
            merged = _merge(merged, _dotted(key, value))
        config = _run_config(merged, source, "run " + "/".join(n for n in (ds["name"], method["name"]) if n))
        axes_named = {"dataset": ds["name"], "method": method["name"], **axis_values}
        for seed in seeds:
            by_source = seed if isinstance(seed, dict) else None
            spec = keyed_spec(
                study=study.study,
                method=method["name"],
                seed=-1 if by_source else seed,  # by source: keyed_spec gives the run its seed id
                sources=by_source,
                config=config,
                axes=axes_named,
                groups=groups,
            )
            if spec.key in specs:
                old = specs[spec.key]
                specs[spec.key] = old.model_copy(update={"groups": tuple(dict.fromkeys(old.groups + groups))})
            else:
                specs[spec.key] = spec
    result = list(specs.values())
    if not result:
        raise StudyError(f"{source}: the study expands to no runs")
    named_by = _named_by(result, source)
    result = [s.model_copy(update={"named_by": named_by}) for s in result]
    _check_components(result, source, check_data)
    if study.tune is not None:  # every knob checked against every fold, and the trials as runs, before any runs
        _check_trials(tuning_trials(study, result, source), source, check_data)
    else:
        method_knobs(study, source)  # a method's own knobs without a tune: section are an error
    return result


def select(specs: list[RunSpec], only: str | None) -> list[RunSpec]:
    """Keep runs matching every comma-separated term: ``key=value`` on axes/method/dataset/seed,
    or a substring of the run name (e.g. ``--only method=rmi,seed=0`` or ``--only deeplabv3``)."""
    if not only:
        return specs
    terms = [t.strip() for t in only.split(",") if t.strip()]
    if not terms:
        raise StudyError(f"--only {only!r} has no filter term; e.g. --only method=rmi,seed=0 (or leave it out)")

    def matches(spec: RunSpec, term: str) -> bool:
        if "=" not in term:
            return term in spec.name
        key, value = (s.strip() for s in term.split("=", 1))
        return run_fields(spec).get(key) == value

    return [s for s in specs if all(matches(s, t) for t in terms)]


# --------------------------------------------------------------------------- helpers
#: Most runs one study may expand to (a typo such as a 1000-value axis should not start a year of training).
MAX_RUNS_ENV = "STUDYBENCH_MAX_RUNS"
MAX_RUNS = 10_000


def _check_grid_size(
    study: Study, datasets: int, methods: int, dotted: list[tuple[str, list[Any]]], seeds: int, source: str
) -> None:
    """Count the runs before building any: raise if above ``$STUDYBENCH_MAX_RUNS`` (default ``MAX_RUNS``)."""
    limit = int(os.environ.get(MAX_RUNS_ENV) or MAX_RUNS)
    main = datasets * methods * math.prod(len(v) for _, v in dotted)
    ablations = sum(
        datasets * len(values) * math.prod(len(v) for k, v in dotted if k != key)
        for abl in study.ablations.values()
        for key, values in abl.vary.items()
    )
    trials = (main + ablations) * study.tune.budget if study.tune is not None else 0  # one seed per trial
    total = (main + ablations) * seeds + trials
    if total > limit:
        raise StudyError(
            f"{source}: grid: the study expands to {total} runs ({main} grid points + {ablations} ablation points, "
            f"x {seeds} seeds{f', + {trials} tuning trials' if trials else ''}), more than the limit of {limit}; shrink the grid or raise the limit with "
            f"{MAX_RUNS_ENV}=N"
        )


def _seeds(study: Study, prof: Any, profile: str | None, source: str) -> list[int] | list[dict[str, int]]:
    """The runs' seeds (the profile's if it has any); seeds by source are refused in a tuned study,
    whose trials and final seeds are keyed by one seed each (``study.phases``)."""
    where, seeds = ("seeds", study.seeds)
    if prof is not None and prof.seeds:
        where, seeds = f"profiles.{profile}.seeds", prof.seeds
    if study.tune is not None and isinstance(seeds, SeedsBySource):
        raise StudyError(f"{source}: {where}: seeds by source are not supported with tune: yet; give a list of seeds")
    return seed_runs(seeds)


def _named_by(specs: list[RunSpec], source: str) -> tuple[tuple[str, ...], ...]:
    """The axis values run names show, as paths into ``RunSpec.axes`` (see ``spec.run_name``).

    Every axis whose value differs between runs (absent counts as a value): one all runs share
    tells none apart, and MLflow's runs table cuts long names. Of a mapping-valued axis
    (``model: [{arch: unet, options: ...}, ...]``) only the leaves still needed to tell runs
    apart, so the quick start's runs read ``ce · fpn · s0``, not their decoder channels.
    """
    leaves = [axis_leaves(s.axes) for s in specs]
    axes = list(dict.fromkeys(key for spec in specs for key in spec.axes))  # grid order, then ablations
    paths = sorted(
        dict.fromkeys(p for found in leaves for p in found if p not in NAMED_ALWAYS), key=lambda p: axes.index(p[0])
    )
    named = [p for p in paths if len({(p in f, json.dumps(f.get(p), sort_keys=True, default=str)) for f in leaves}) > 1]

    def clash(shown: list[tuple[str, ...]]) -> tuple[RunSpec, RunSpec] | None:
        seen: dict[str, RunSpec] = {}
        for spec in specs:
            other = seen.setdefault(run_name(spec.method, spec.arch, spec.seed, spec.axes, tuple(shown)), spec)
            if other is not spec:
                return other, spec
        return None

    same = clash(named)
    if same:
        raise StudyError(
            f"{source}: two different runs (keys {same[0].key} and {same[1].key}) would both be named "
            f"{same[0].name!r}; spell their axis values differently"
        )
    for path in reversed([p for p in named if len(p) > 1]):
        fewer = [p for p in named if p != path]
        if clash(fewer) is None:
            named = fewer
    return tuple(named)


def _check_baseline(baseline: str | None, methods: list[dict[str, Any]], source: str) -> None:
    names = [m["name"] for m in methods]
    if baseline is not None and baseline not in names:
        raise StudyError(
            f"{source}: baseline: {brief(baseline)} is not a method of the study; methods: {', '.join(names)}"
        )


def _safe_name(name: str, source: str, where: str) -> str:
    try:
        return check_name(name)
    except ValueError as err:
        raise StudyError(f"{source}: {where}: {err}") from None


def _profile(study: Study, name: str | None, source: str):
    if name is None:
        return None
    if name not in study.profiles:
        available = ", ".join(study.profiles) or "(none defined)"
        raise StudyError(f"{source}: unknown profile {name!r}; profiles: {available}")
    return study.profiles[name]


def _datasets(values: list[Any] | None, prof, source: str) -> list[dict[str, Any]]:
    if prof is not None and prof.dataset is not None:
        values = [prof.dataset] if isinstance(prof.dataset, str) else list(prof.dataset)
    if values is None:
        return [{"name": None, "sections": {}}]
    out: list[dict[str, Any]] = []
    for i, value in enumerate(values):
        named = value if isinstance(value, str) else value.get("name") if isinstance(value, dict) else None
        if named is not None and named in (d["name"] for d in out):
            raise StudyError(f"{source}: grid.dataset[{i}]: duplicate dataset name {named!r}")
        if isinstance(value, str):
            _safe_name(value, source, f"grid.dataset[{i}]")
            out.append({"name": value, "sections": {"data": {"dataset": value}}})
        elif isinstance(value, dict) and isinstance(value.get("name"), str):
            _safe_name(value["name"], source, f"grid.dataset[{i}].name")
            data = {k: v for k, v in value.items() if k != "name"}
            out.append({"name": value["name"], "sections": {"data": {**data, "dataset": value["name"]}}})
        else:
            raise StudyError(
                f"{source}: grid.dataset[{i}]: expected a dataset name or {{name: ..., root: ...}}, got {brief(value)}"
            )
    return out


def _methods(values: list[Any] | None, base: dict[str, Any], source: str) -> list[dict[str, Any]]:
    if values is None:
        loss = base.get("loss", {}).get("name", "ce")
        return [{"name": loss, "sections": {}}]
    out, seen = [], set()
    for i, value in enumerate(values):
        where = f"grid.method[{i}]"
        if isinstance(value, str):  # shorthand: a loss name
            _check_loss_name(value, source, where)
            value = {"name": value, "loss": {"name": value}}
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise StudyError(
                f"{source}: {where}: a method is a loss name or a mapping with 'name' and sections, got {brief(value)}"
            )
        _safe_name(value["name"], source, f"{where}.name")
        sections = {k: v for k, v in value.items() if k not in ("name", "tune")}  # tune: see phases.method_knobs
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise StudyError(f"{source}: {where}.{unknown[0]}: unknown key; allowed: name, tune, {', '.join(SECTIONS)}")
        if value["name"] in seen:
            raise StudyError(f"{source}: {where}.name: duplicate method name {value['name']!r}")
        seen.add(value["name"])
        _validated_partial(sections, source, where)
        out.append({"name": value["name"], "sections": sections})
    return out


def _validated_partial(sections: dict[str, Any], source: str, where: str) -> dict[str, Any]:
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise StudyError(f"{source}: {where}.{name}: expected a mapping, got {brief(section)}")
    try:
        RunConfig.model_validate(sections)
    except ValidationError as err:
        raise StudyError(format_validation(err, source, RunConfig, prefix=f"{where}.")) from None
    return sections


def _check_loss_name(name: str, source: str, where: str) -> None:
    """A method written as a bare loss name is checked where it is written, not where an ablation names it."""
    from studybench.losses import LOSSES
    from studybench.registry import RegistryError

    try:
        LOSSES.canonical(name)
    except RegistryError as err:
        raise StudyError(f"{source}: {where}: {err}") from None


def _check_axis_key(key: str, source: str, where: str) -> None:
    if key.split(".", 1)[0] not in SECTIONS or "." not in key:
        raise StudyError(f"{source}: {where}.{key}: not a dotted key into {', '.join(SECTIONS)} (e.g. loss.radius)")


def _run_config(merged: dict[str, Any], source: str, where: str) -> RunConfig:
    try:
        config = RunConfig.model_validate(merged)
    except ValidationError as err:
        raise StudyError(format_validation(err, source, RunConfig) + f"  [in {where}]") from None
    return _with_defaults(config, source, where)


def _with_defaults(config: RunConfig, source: str, where: str) -> RunConfig:
    """Canonical component names, every default parameter made explicit and every value of its
    declared type (``Registry.typed``), so that two spellings of the same computation
    (``{name: dice}``, ``{name: dice, smooth: 0.0}``, ``smooth: "0"``) resolve to the same spec
    and run key, and the trainer builds what the key says."""
    from studybench.data import DATASETS
    from studybench.losses import LOSSES
    from studybench.registry import RegistryError
    from studybench.schemes import SCHEMES

    def resolved(registry, section: str, name: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        try:
            canonical = registry.canonical(name)
        except RegistryError as err:
            raise StudyError(f"{source}: {section}: {err}  [in {where}]") from None
        params = {**registry.defaults(canonical), **params}
        try:
            return canonical, registry.typed(canonical, params)
        except RegistryError:  # refused with the run's name by the component checks
            return canonical, params

    loss_name, loss_params = resolved(LOSSES, "loss.name", config.loss.name, config.loss.params)
    scheme_name, scheme_params = resolved(SCHEMES, "scheme.name", config.scheme.name, config.scheme.params)
    dataset, options = resolved(DATASETS, "data.dataset", config.data.dataset, config.data.options)
    return config.model_copy(
        update={
            "loss": LossCfg(name=loss_name, **loss_params),
            "scheme": SchemeCfg(name=scheme_name, **scheme_params),
            "data": config.data.model_copy(update={"dataset": dataset, "options": options}),
        }
    )


def _dotted(key: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _merge(base: dict[str, Any], override: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """Deep merge; a loss/scheme section with a different ``name`` replaces the old one."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        renamed = (
            depth == 0
            and key in ("loss", "scheme")
            and isinstance(value, dict)
            and "name" in value
            and isinstance(old, dict)
            and old.get("name") != value["name"]
        )
        if isinstance(old, dict) and isinstance(value, dict) and not renamed:
            out[key] = _merge(old, value, depth + 1)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_components(specs: list[RunSpec], source: str, check_data: bool) -> None:
    """Registry names/params of every loss, scheme, model and dataset; data presence."""
    from studybench.data import DATASETS, verify_dataset
    from studybench.losses import build_loss
    from studybench.models import check_model
    from studybench.schemes import SCHEMES

    seen: set[tuple[str, str]] = set()
    losses: dict[str, Any] = {}  # built once here, asked about their input size by check_runs
    for spec in specs:
        cfg = spec.config
        for section, part in (
            ("loss", cfg.loss),
            ("scheme", cfg.scheme),
            ("model", cfg.model),
            ("data.options", cfg.data),
        ):
            if (section, repr(part)) in seen:
                continue
            seen.add((section, repr(part)))
            try:
                if section == "loss":
                    losses[repr(part)] = build_loss(part.name, **part.params)  # runs the loss's own checks
                elif section == "scheme":
                    SCHEMES.check(part.name, part.params)
                elif section == "model":
                    check_model(part)
                else:
                    DATASETS.check(part.dataset, part.options)
            except (ValueError, TypeError) as err:
                raise StudyError(f"{source}: {section}: {cut(str(err))}  [in run {spec.name}]") from None
    if check_data:
        for data in {_data_memo(s.config.data): s.config.data for s in specs}.values():
            for split in (data.train_split, data.val_split):
                try:
                    verify_dataset(data, split)
                except (FileNotFoundError, ValueError) as err:
                    raise StudyError(
                        f"{source}: data ({data.dataset}, split {split!r}): {cut(str(err), 4000)}"
                    ) from None
    check_runs(specs, source, check_data, losses)  # batch vs data, classes, loss vs input size, model options


def _check_trials(trials: list[RunSpec], source: str, check_data: bool) -> None:
    """The trials' components and cross-section checks (a knob's value, the batch against the images
    left after the carve) and, with the data, the carve itself (``by: city`` on a dataset without cities)."""
    from studybench.study.phases import tune_split_digests

    _check_components(trials, source, check_data)
    if check_data:
        try:
            tune_split_digests(trials)
        except (FileNotFoundError, ValueError) as err:
            raise StudyError(f"{source}: tune.split: {cut(str(err))}") from None


def _data_memo(data: DataCfg) -> str:
    return data.model_dump_json()
