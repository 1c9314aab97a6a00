"""A tuned study's two phases as ordinary RunSpecs: tuning trials, then final seeds.

Why ordinary specs: a trial is a run with a canonical key like any other, so resume after a
crash, claims, every executor, retries and ``status`` work on it unchanged. The trials of a
(method, cell) fold are generated up front from the fold's default-setting spec; the final
seeds are that same spec with the chosen setting, chosen from the store's scores alone.

A fold is one method in one cell (dataset x arch x other axes): every fold gets exactly
``tune.budget`` trials, whatever the method, so the budget is equal by construction.
"""

from __future__ import annotations

import typing
from typing import Any, Literal, NamedTuple

from studybench.study.keys import keyed_spec
from studybench.study.spec import NAME_SEPARATOR, CarveCfg, RunConfig, RunSpec
from studybench.study.tuning import Knob, TuneCfg, check_tpe, choose_trial, sobol_trials, tuned_knobs

PHASE_TUNE, PHASE_FINAL = "tune", "final"
GROUP_TUNE = "tune"


def fold_of(spec: RunSpec) -> str:
    """The (method, cell) a run belongs to (``RunSpec.fold``)."""
    return spec.fold


def knob_kind(config: RunConfig, key: str) -> type:
    """The declared type (``int``, ``float``, ``bool``, ``str``) of the parameter ``key`` names in ``config``."""
    section, name = key.split(".", 1)
    if section in ("loss", "scheme"):
        hint = _component_hints(section, getattr(config, section).name).get(name)
        owner = f"{section} {getattr(config, section).name!r}"
    else:
        field = type(getattr(config, section)).model_fields.get(name)
        hint, owner = (field.annotation if field else None), f"section {section!r}"
    if hint is None:
        raise ValueError(f"tuned knob {key!r}: {owner} has no parameter {name!r}")
    return _plain_type(hint, key)


def _component_hints(section: str, name: str) -> dict[str, Any]:
    if section == "loss":
        from studybench.losses import LOSSES as registry
    else:
        from studybench.schemes import SCHEMES as registry
    return registry.type_hints(name)


def _plain_type(hint: Any, key: str) -> type:
    """``float | None`` -> float, ``int`` -> int, ``Literal[...]`` -> str; anything else is refused."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) else [hint]
    if typing.get_origin(hint) is Literal:
        return str
    for kind in (bool, float, int, str):
        if kind in args:
            return kind
    raise ValueError(f"tuned knob {key!r}: its type {hint} cannot be tuned (numbers, booleans and choices can)")


def knob_value(config: RunConfig, key: str) -> Any:
    """The configured value of ``key`` in ``config`` (trial 0 of every fold)."""
    section, name = key.split(".", 1)
    part = getattr(config, section)
    return part.params.get(name) if section in ("loss", "scheme") else getattr(part, name)


def with_values(config: RunConfig, values: dict[str, Any], carve: CarveCfg | None) -> RunConfig:
    """``config`` with each dotted ``values`` key set (loss/scheme parameters included) and ``data.carve``."""
    tree = config.model_dump(mode="python")
    for key, value in values.items():
        section, name = key.split(".", 1)
        tree[section][name] = value
    tree["data"]["carve"] = carve.model_dump() if carve is not None else None
    return RunConfig.model_validate(tree)


def check_knobs(spec: RunSpec, knobs: dict[str, Knob]) -> dict[str, type]:
    """Each knob's declared type; ``ValueError`` naming the knob if it is unknown or its range does not fit."""
    kinds = {key: knob_kind(spec.config, key) for key in knobs}
    for key, knob in knobs.items():
        knob.check_type(kinds[key], f"tuned knob {key!r}")
    return kinds


def trial_specs(spec: RunSpec, tune: TuneCfg, method_knobs: dict[str, Knob]) -> list[RunSpec]:
    """The ``tune.budget`` trials of ``spec``'s fold: trial 0 its setting, then Sobol points of the knobs
    (TPE: trial 0 only, after checking that Optuna can take the knobs)."""
    knobs = {**tune.space, **method_knobs}
    kinds = check_knobs(spec, knobs)
    default = {key: knob_value(spec.config, key) for key in knobs}
    if tune.sampler == "tpe":  # only trial 0 is known before any score: phased.run_phases asks TPE for the rest
        check_tpe(knobs, kinds, default)
        return [trial_spec(spec, tune, default, 0)]
    settings = sobol_trials(tune.budget, knobs, kinds, default, tune.seed)
    return [trial_spec(spec, tune, values, index) for index, values in enumerate(settings)]


def trial_spec(spec: RunSpec, tune: TuneCfg, values: dict[str, Any], index: int) -> RunSpec:
    """Trial ``index`` of ``spec``'s fold: ``spec`` with the knob ``values``, trained and scored on the carve."""
    config = with_values(spec.config, values, tuning_carve(tune, score_on="carved"))
    fields = {"study": spec.study, "method": spec.method, "axes": spec.axes, "named_by": spec.named_by}
    return keyed_spec(config, spec.seed, groups=(GROUP_TUNE,), phase=PHASE_TUNE, trial=index, **fields)


def chosen_values(trials: list[RunSpec], scores: dict[str, list[float]], knobs: list[str]) -> tuple[int, dict]:
    """The chosen trial of one fold and its knob values, from ``scores`` (run key -> finished scores)."""
    by_trial: dict[int, list[float]] = {}
    for t in trials:  # a trial re-run with extra seeds (tune.select) has one spec per seed
        by_trial.setdefault(t.trial, []).extend(scores.get(t.key, []))
    best = choose_trial(by_trial)
    spec = next(t for t in trials if t.trial == best)
    return best, {key: knob_value(spec.config, key) for key in knobs}


def final_specs(defaults: list[RunSpec], chosen: dict[str, dict[str, Any]], carve: CarveCfg | None) -> list[RunSpec]:
    """Every seed of every fold at its ``chosen`` setting (``fold_of`` -> knob values), phase ``final``.

    ``carve`` (``score_on: val``) trains the final seeds without the tuning images; ``None``
    trains them on the whole training split.
    """
    out = []
    for spec in defaults:
        config = with_values(spec.config, chosen[fold_of(spec)], carve)
        fields = {"study": spec.study, "method": spec.method, "axes": spec.axes, "named_by": spec.named_by}
        out.append(keyed_spec(config, spec.seed, groups=spec.groups, phase=PHASE_FINAL, **fields))
    return out


def method_knobs(study: Any, source: str) -> dict[str, dict[str, Knob]]:
    """Each method's own knobs (``grid.method[i].tune``), typed; ``StudyError`` naming the key if wrong."""
    from pydantic import TypeAdapter, ValidationError

    from studybench.study.config import StudyError, format_validation
    from studybench.study.tuning import check_knob_key

    out: dict[str, dict[str, Knob]] = {}
    for i, value in enumerate((study.grid or {}).get("method") or []):
        if not (isinstance(value, dict) and "tune" in value):
            continue
        where = f"grid.method[{i}].tune"
        if study.tune is None and not any(p.tune for p in study.profiles.values()):
            raise StudyError(
                f"{source}: {where}: tuned knobs need a study-level tune: section (budget, space, ...) "
                "or a profile's (profiles.NAME.tune, used with --profile NAME)"
            )
        try:
            knobs = TypeAdapter(dict[str, Knob]).validate_python(value["tune"])
            for key in knobs:
                check_knob_key(key)
        except ValidationError as err:
            raise StudyError(format_validation(err, source, prefix=f"{where}.")) from None
        except ValueError as err:
            raise StudyError(f"{source}: {where}: {err}") from None
        out[value["name"]] = knobs
    return out


def tuning_trials(study: Any, defaults: list[RunSpec], source: str) -> list[RunSpec]:
    """Every trial of every fold of a study with ``tune:`` (one seed: the first of the study's seeds)."""
    from studybench.study.config import StudyError

    knobs = method_knobs(study, source)
    check_untuned_axes(study, source)
    first = defaults[0].seed
    trials = []
    for spec in (s for s in defaults if s.seed == first):  # an ablation point is a fold of its own
        if not study.tune.space and not knobs.get(spec.method):
            raise StudyError(
                f"{source}: tune: method {spec.method!r} tunes no knob, so its {study.tune.budget} trials would be "
                "one run; add a shared knob (tune.space, e.g. train.lr) or the method's own (grid.method[i].tune)"
            )
        try:
            trials += trial_specs(spec, study.tune, knobs.get(spec.method, {}))
        except ValueError as err:
            raise StudyError(f"{source}: tune: {err}  [in method {spec.method!r}]") from None
    _check_distinct(trials, source)
    return trials


def knob_sources(study: Any) -> dict[str, dict[str, str]]:
    """method -> {tuned knob: where the study declares it} (``tune.space.K`` or ``grid.method[i].tune.K``)."""
    shared = {key: f"tune.space.{key}" for key in study.tune.space}
    out: dict[str, dict[str, str]] = {}
    for i, value in enumerate((study.grid or {}).get("method") or []):
        name = value if isinstance(value, str) else value.get("name") if isinstance(value, dict) else None
        own = value.get("tune") or {} if isinstance(value, dict) else {}
        out[name] = {**shared, **{k: f"grid.method[{i}].tune.{k}" for k in own if k not in shared}}
    return out


def check_untuned_axes(study: Any, source: str) -> None:
    """``StudyError`` when an ablation or a grid axis varies a knob that tuning also sets.

    Why: tuning overwrites the knob in every trial and final seed, so the runs would claim an
    ablated (or grid) value they never trained with.
    """
    from studybench.study.config import StudyError

    sources = knob_sources(study)
    every = {k: w for knobs in sources.values() for k, w in knobs.items()}
    axes = {k: v for k, v in (study.grid or {}).items() if k not in ("dataset", "method")}
    varied = [(f"grid.{key}", key, values, every) for key, values in axes.items()]
    for name, abl in study.ablations.items():
        varied += [(f"ablations.{name}.vary.{k}", k, v, sources.get(abl.of, {})) for k, v in abl.vary.items()]
    for where, key, values, tuned in varied:
        for path in sorted({p for value in values for p in _leaf_keys(key, value)}):
            clash = next((w for k, w in tuned.items() if _overlaps(k, path)), None)
            if clash is not None:
                raise StudyError(
                    f"{source}: {where}: varies {path}, which tuning also sets ({clash}); the tuned value would "
                    "overwrite the varied one in every trial and final seed: drop one of the two"
                )


def _leaf_keys(key: str, value: Any) -> list[str]:
    """The dotted keys an axis value sets: ``key`` itself, or each leaf of a mapping (``model: {arch: ...}``)."""
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _leaf_keys(f"{key}.{k}", v)]
    return [key]


def _overlaps(knob: str, key: str) -> bool:
    """Whether setting dotted ``knob`` changes what dotted ``key`` names (equal, or one inside the other)."""
    return knob == key or knob.startswith(key + ".") or key.startswith(knob + ".")


def _check_distinct(trials: list[RunSpec], source: str) -> None:
    """``StudyError`` when two trials are one computation: of one fold (integer or choice knobs that hold
    fewer settings than the budget), or of two folds (that differ only in a tuned knob)."""
    from studybench.study.config import StudyError

    seen: dict[str, RunSpec] = {}
    for trial in trials:
        other = seen.setdefault(trial.key, trial)
        if other is not trial and other.fold == trial.fold:
            raise StudyError(
                f"{source}: tune: trials {other.name!r} and {trial.name!r} draw the same setting: with only "
                "integer or choice knobs a fold may not hold tune.budget distinct settings; widen a range, list "
                "more choices, tune a continuous knob too (e.g. train.lr) or lower the budget"
            )
        if other is not trial:
            raise StudyError(
                f"{source}: tune: trials {other.name!r} and {trial.name!r} are the same computation (key "
                f"{trial.key}): their methods or cells differ only in a tuned knob; tune it in one place only"
            )


class Choice(NamedTuple):
    """What tuning chose for one fold: the trial and its knob values (on the fold's parent run too)."""

    trial: int
    values: dict[str, Any]


def choose_settings(study: Any, trials: list[RunSpec], scores: dict[str, list[float]]) -> dict[str, Choice]:
    """fold -> its ``Choice``, from ``scores`` (run key -> finished tuning scores); ``ValueError`` naming
    the folds none of whose trials finished (their final seeds cannot run yet)."""
    folds: dict[str, list[RunSpec]] = {}
    for trial in trials:
        folds.setdefault(trial.fold, []).append(trial)
    choices, missing = {}, []
    for fold, members in folds.items():
        try:
            choices[fold] = Choice(*chosen_values(members, scores, tuned_knobs(study, members[0].method)))
        except ValueError:
            missing.append(members[0].name.rsplit(NAME_SEPARATOR, 2)[0])
    if missing:
        raise ValueError(
            f"no tuning trial finished in {len(missing)} fold(s) ({', '.join(missing[:5])}): "
            "the final seeds need a chosen setting; rerun to retry the failed trials"
        )
    return choices


def tune_split_digests(specs: list[RunSpec]) -> dict[str, str]:
    """run key -> SHA-256 (16 hex) of the tuning split's ids, for each run that carves one (one file
    listing per distinct data section; no data is read)."""
    carving = [s for s in specs if s.config.data.carve is not None]
    if not carving:
        return {}
    from studybench.data.carve import tuning_split_digest  # torch: datasets

    by_data: dict[str, str] = {}
    out = {}
    for spec in carving:
        section = spec.config.data.model_dump_json(exclude={"carve": {"score_on"}})
        if section not in by_data:
            by_data[section] = tuning_split_digest(spec.config.data)
        out[spec.key] = by_data[section]
    return out


def final_carve(tune: TuneCfg) -> CarveCfg | None:
    """The final seeds' training split: all of it (``None``), or without the tuning images."""
    return None if tune.final_train == "all" else tuning_carve(tune, score_on="val")


def tuning_carve(tune: TuneCfg, score_on: Literal["carved", "val"]) -> CarveCfg:
    """``tune.split`` as a run's ``data.carve``: the same images for every trial and final seed."""
    return tune.split.model_copy(update={"score_on": score_on})
