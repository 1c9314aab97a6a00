"""Canonical run keys: one key means one computation, however the study spelled it.

The key of a run is the SHA-256 (first 16 hex digits) of a canonical JSON of what the run
computes. The rule (docs/architecture.md, "Run keys"):

1. **Typed values.** Every parameter is converted to its declared type first (the section's
   pydantic field, or the component's signature: ``gamma: 2`` and ``gamma: 2.0`` are one
   value, ``"3"`` for an int parameter is 3); a float with an integral value is then written
   as that integer, so untyped values (``model.options``) compare by value too.
2. **Defaults left out.** A value equal to its current default is not hashed, so adding a new
   parameter with a default to a loss, scheme, dataset or section keeps every existing key.
3. **Versions in.** Each loss, scheme and dataset contributes its registry ``version``; a
   developer bumps it when the component's computation changes meaning (also when a default
   changes). ``KEY_SCHEMA`` is bumped when the harness itself changes what every run computes.
4. **Order and runtime out.** Mappings are sorted; runtime-only keys (``spec.RUNTIME_KEYS``:
   where the data lives, loader workers, device, threads, checkpointing) are excluded.
5. **Seeds by source.** A run whose study gives seeds by source keys with each source's seed
   (``"seeds": {init, data, aug, method}``), except when all four are one seed ``s``: that run
   computes what plain seed ``s`` computes, so it keys as ``"seed": s`` (a plain key is unchanged).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from pydantic import BaseModel

from studybench.registry import RegistryError
from studybench.study.spec import RUNTIME_KEYS, SOURCES, RunConfig, RunSpec, seed_id

#: Bumped when the harness changes what every run computes (2: per-purpose RNG streams,
#: native-resolution evaluation and float32 losses; canonical keys).
KEY_SCHEMA = 2


def keyed_spec(config: RunConfig, seed: int, sources: dict[str, int] | None = None, **fields: Any) -> RunSpec:
    """The ``RunSpec`` of ``config`` and ``seed`` (and its other ``fields``) with its key computed once, here.

    ``sources``: the seed of each source (``spec.SOURCES``) of a study that gives seeds by source;
    ``seed`` is then ignored and the run's seed is ``spec.seed_id(sources)``.
    """
    if sources is not None:
        sources = {name: int(sources[name]) for name in SOURCES}
        seed = seed_id(sources)
    return RunSpec(config=config, seed=seed, sources=sources, key=run_key(config, seed, sources), **fields)


def run_key(config: Any, seed: int, sources: dict[str, int] | None = None) -> str:
    """The stable key of ``config`` (a ``spec.RunConfig``) trained with ``seed``, or with a seed per source.

    One key, one computation: sources that are all one seed ``s`` are plain seed ``s`` (the same
    streams), so they key as ``[s]`` does; any other tuple keys with every source's seed. A plain
    seed's key material is unchanged (no existing key moves).
    """
    if sources is not None and len({sources[name] for name in SOURCES}) == 1:
        seed, sources = sources[SOURCES[0]], None
    if sources is not None:
        material = {
            "schema": KEY_SCHEMA,
            "seeds": {n: int(sources[n]) for n in SOURCES},
            "config": canonical_config(config),
        }
    else:
        material = {"schema": KEY_SCHEMA, "seed": int(seed), "config": canonical_config(config)}
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def canonical_config(config: Any) -> dict[str, Any]:
    """What ``config`` computes, in canonical form (see the module docstring)."""
    from studybench.data import DATASETS
    from studybench.losses import LOSSES
    from studybench.schemes import SCHEMES

    runtime = {tuple(k.split(".", 1)) for k in RUNTIME_KEYS}
    sections = {}
    for section in ("data", "model", "train"):
        fields = getattr(config, section).model_dump(mode="python", exclude_defaults=True)
        fields = {k: v for k, v in fields.items() if (section, k) not in runtime}
        sections[section] = fields
    data = sections["data"]
    data.pop("options", None)
    dataset = canonical_component(DATASETS, config.data.dataset, config.data.options)
    data["dataset"] = dataset
    sections["loss"] = canonical_component(LOSSES, config.loss.name, config.loss.params)
    sections["scheme"] = canonical_component(SCHEMES, config.scheme.name, config.scheme.params)
    return plain(sections)


def canonical_component(registry: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``{name, version, params}`` of a registry component, params typed and defaults dropped.

    A factory whose parameters nest other components (the ``sum`` loss's ``terms``) defines
    ``key_params(params) -> params`` to canonicalise them in turn.
    """
    name = registry.canonical(name)
    defaults = _typed(registry, name, registry.defaults(name))
    kept = {}
    for key, value in _typed(registry, name, params).items():
        value = plain(value)
        if key in defaults and value == plain(defaults[key]):
            continue
        kept[key] = value
    hook = getattr(registry.get(name), "key_params", None)
    if hook is not None:
        kept = hook(kept)
    return {"name": name, "version": registry.version(name), "params": plain(kept)}


def plain(value: Any) -> Any:
    """JSON-ready canonical value: sorted mappings, lists for tuples, integral floats as ints."""
    if isinstance(value, BaseModel):
        return plain(value.model_dump(mode="python", exclude_defaults=True))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _typed(registry: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Each value as the registry types it (``Registry.typed``); one that does not fit is kept as
    written: refusing it is validation's job, with a message naming the run."""
    out = {}
    for key, value in params.items():
        try:
            out.update(registry.typed(name, {key: value}, partial=True))
        except RegistryError:
            out[key] = value
    return out
