"""Equal tuning budgets: the ``tune:`` section and the trials it generates up front.

Why up front: a Sobol sequence from ``tune.seed`` is fixed before any run starts, so the
trial list is the same on every machine, for every launch and under any parallelism, and
can be recorded in the study manifest like any other grid. Trial 0 is always the method's
configured setting, so "tuned" can never score below "default" on the tuning split by
construction of the search, only by noise.

A knob is a dotted key into a run section (``train.lr``, ``loss.gamma``) with a range; the
value drawn is of the parameter's declared type: an ``int`` parameter gets integers spread
evenly over ``[low, high]``, a ``float`` one a point on a linear or log scale, a choice one
of the listed values.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from studybench.study.spec import CarveCfg


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Knob(_Strict):
    """One tuned parameter: ``{low, high, log}`` for numbers, ``{choices: [...]}`` otherwise."""

    low: float | None = None
    high: float | None = None
    log: StrictBool = False
    choices: list[Any] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _range_or_choices(self) -> Knob:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices or low/high (and log), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs both low and high (or give choices: [...])")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, got {self.low} and {self.high}")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range must lie above 0, got low = {self.low}")
        return self

    def value(self, u: float, kind: type) -> Any:
        """The knob's value at ``u`` in [0, 1), of the declared type ``kind`` (int, float or other)."""
        if self.choices is not None:
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        lo, hi = float(self.low), float(self.high)
        if kind is int:
            lo_i, hi_i = math.ceil(lo), math.floor(hi)
            return lo_i + min(int(u * (hi_i - lo_i + 1)), hi_i - lo_i)
        if self.log:
            return float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
        return float(lo + u * (hi - lo))

    def check_type(self, kind: type, where: str) -> None:
        """``ValueError`` if this knob cannot produce values of ``kind`` (e.g. an int range holding no int)."""
        if self.choices is not None:
            return
        if kind is int and math.ceil(self.low) > math.floor(self.high):
            raise ValueError(f"{where}: an integer parameter, but [{self.low}, {self.high}] holds no integer")
        if kind not in (int, float):
            raise ValueError(f"{where}: a {kind.__name__} parameter takes choices: [...], not a range")


class SelectCfg(_Strict):
    """``select: {top_k: K, seeds: [...]}``: re-run each fold's K best trials with these extra seeds on the
    tuning split, then choose by the mean over seeds (damps the winner's curse of a single-seed best)."""

    top_k: StrictInt = Field(ge=1)
    seeds: list[StrictInt] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _plain_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds) or any(not 0 <= s <= 2**32 - 1 for s in seeds):
            raise ValueError(f"seeds must be distinct integers in [0, 2**32 - 1], got {seeds}")
        return seeds


class TuneCfg(_Strict):
    budget: StrictInt = Field(ge=1)
    seed: StrictInt = Field(default=0, ge=0, le=2**32 - 1)
    sampler: Literal["sobol", "tpe"] = "sobol"
    split: CarveCfg = Field(default_factory=lambda: CarveCfg(fraction=0.2))
    space: dict[str, Knob] = Field(default_factory=dict)
    #: What the final seeds train on: the whole training split, or the part tuning trained on.
    final_train: Literal["all", "fit"] = "all"
    #: How the setting is chosen: the best single-seed trial (``None``), or the best mean of the top K re-run.
    select: SelectCfg | None = None

    @model_validator(mode="after")
    def _top_k_within_budget(self) -> TuneCfg:
        if self.select is not None and self.select.top_k > self.budget:
            raise ValueError(
                f"select.top_k ({self.select.top_k}) is above the budget ({self.budget}): re-run at most every trial"
            )
        return self

    @field_validator("space")
    @classmethod
    def _dotted_keys(cls, space: dict[str, Knob]) -> dict[str, Knob]:
        for key in space:
            check_knob_key(key)
        return space


def check_knob_key(key: str) -> str:
    """A knob names a parameter of a run section: ``train.lr``, ``loss.gamma``, ``scheme.weight``."""
    section, _, rest = key.partition(".")
    if section not in ("data", "model", "loss", "scheme", "train") or not rest:
        raise ValueError(f"tuned knob {key!r} is not a dotted key into a run section (e.g. train.lr, loss.gamma)")
    return key


def sobol_points(n: int, dims: int, seed: int) -> list[list[float]]:
    """``n`` scrambled Sobol points in ``[0, 1)^dims`` from ``seed`` (scipy's Owen-scrambled sequence)."""
    if n <= 0:
        return []
    if dims == 0:
        return [[] for _ in range(n)]
    from scipy.stats import qmc

    with warnings.catch_warnings():  # balance is a property of 2^m points; any n is still a valid prefix
        warnings.simplefilter("ignore", UserWarning)
        points = qmc.Sobol(d=dims, scramble=True, seed=seed).random(n)
    return points.tolist()


def sobol_trials(
    budget: int, knobs: dict[str, Knob], kinds: dict[str, type], default: dict[str, Any], seed: int
) -> list[dict[str, Any]]:
    """``budget`` settings of ``knobs``: trial 0 = ``default``, then scrambled Sobol points.

    ``kinds`` gives each knob's declared type; ``default`` the method's configured value of each knob.
    """
    names = list(knobs)  # the caller's order (shared, then the method's own) fixes each knob's Sobol dimension
    trials = [{k: default[k] for k in names}]
    for point in sobol_points(budget - 1, len(names), seed):
        trials.append({k: knobs[k].value(u, kinds[k]) for k, u in zip(names, point)})
    return trials


def choose_trial(scores: dict[int, list[float]]) -> int:
    """The trial with the best mean tuning score (ties: the lower index, so the default wins a tie).

    ``scores`` maps trial index -> that trial's finished scores (one per seed); trials without a
    finite score are ignored, and a method none of whose trials finished has no choice (``ValueError``).
    Only the trials with the most scores compete: with ``select.top_k`` those re-run with extra seeds,
    so a single lucky seed of a trial outside the top K cannot win on a mean of one.
    """
    finite = {t: v for t, v in scores.items() if v and all(math.isfinite(x) for x in v)}
    if not finite:
        raise ValueError("no tuning trial finished with a score: nothing to choose from")
    most = max(len(v) for v in finite.values())
    means = {t: sum(v) / len(v) for t, v in finite.items() if len(v) == most}
    return min(means, key=lambda t: (-means[t], t))


def tuned_knobs(study: Any, method: str) -> list[str]:
    """The knobs ``method`` tunes in ``study`` (a ``config.Study``): the shared space, then its own."""
    own: list[str] = []
    for value in (study.grid or {}).get("method") or []:
        if isinstance(value, dict) and value.get("name") == method:
            own = list(value.get("tune") or {})
    return [*study.tune.space, *(k for k in own if k not in study.tune.space)]


# --------------------------------------------------------------------------- sampler: tpe (study/tpe.py), checked up front
TPE_EXTRA = "pip install 'studybench[tune]'"
#: Values Optuna can store as a categorical choice.
_CHOICE_TYPES = (type(None), bool, int, float, str)


class TuneSamplerError(ValueError):
    """The sampler cannot run: Optuna missing (``sampler: tpe``), or see ``tpe.TpeError``."""


def require_optuna() -> None:
    """``TuneSamplerError`` naming the extra to install when Optuna is missing."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise TuneSamplerError(
            f"sampler: tpe needs Optuna, an optional extra: {TPE_EXTRA} (or use sampler: sobol, the default)"
        ) from None


def check_tpe(knobs: dict[str, Knob], kinds: dict[str, type], default: dict[str, Any]) -> None:
    """``ValueError`` if TPE cannot search ``knobs``: Optuna missing, a choice Optuna cannot store, or a
    configured value (trial 0) Optuna cannot record (``kinds``: each knob's declared type, checked already)."""
    require_optuna()
    for key, knob in knobs.items():
        value = default[key]
        if knob.choices is not None:
            bad = next((c for c in knob.choices if not isinstance(c, _CHOICE_TYPES)), None)
            if bad is not None:
                raise ValueError(f"tuned knob {key!r}: TPE takes choices of numbers, strings or booleans, not {bad!r}")
            if value not in knob.choices:
                raise ValueError(
                    f"tuned knob {key!r}: the configured value {value!r} (trial 0) is not among its choices "
                    f"{knob.choices}; add it to them, or configure one of them"
                )
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(
                f"tuned knob {key!r}: the configured value {value!r} (trial 0) is not a number; "
                "configure one in the method or in base"
            )
