"""A tiny name -> factory registry shared by datasets, models, losses and schemes.

Why a class of our own: the YAML names are the public interface, so an unknown name or
parameter must produce an error that lists the valid choices (never a bare ``KeyError``),
a duplicate registration is a bug (raise, do not warn), and parameter types are checked
*before* any training starts, from the factory's own signature.

Parameters are converted to their declared types in one place (``typed``), which validation,
run keys and ``build`` all use: ``gamma: "2"`` is the float 2.0 everywhere, ``radius: 3.0`` the
int 3, and ``radius: 3.5`` is refused. Entries may name their factory as ``"module:Attr"``
(``add``): the module is imported when the entry is first built or inspected, so listing what
a study may name (``study.discover``) needs neither torch nor the factories' modules.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")


class RegistryError(ValueError):
    """A name or parameter that the registry does not know; the message lists valid ones."""


class Registry(Generic[T]):
    """Maps YAML names (and aliases) of one family to their factories."""

    def __init__(self, family: str, reserved: tuple[str, ...] = ()) -> None:
        self.family = family
        # parameters a factory receives from the harness, never from the user's YAML
        self.reserved = frozenset(reserved)
        self._factories: dict[str, Callable[..., T]] = {}
        self._targets: dict[str, str] = {}  # name -> "module:Attr", imported on first use
        self._aliases: dict[str, str] = {}
        self._versions: dict[str, int] = {}
        self._hints: dict[str, dict[str, Any]] = {}  # declared types by name (read once: keys ask per value)

    def register(self, name: str, *, aliases: tuple[str, ...] = (), version: int = 1) -> Callable:
        """Register a factory under ``name``. Bump ``version`` when what the factory computes
        changes meaning (a new formula, a changed default): the version is part of every run key,
        so finished runs of the old meaning are then no longer reused."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            self._claim(name, aliases, version)
            self._factories[name] = factory
            return factory

        return decorate

    def add(self, name: str, target: str, *, aliases: tuple[str, ...] = (), version: int = 1) -> None:
        """Register ``target`` (``"package.module:Attr"``) under ``name`` without importing it yet."""
        self._claim(name, aliases, version)
        self._targets[name] = target

    def _claim(self, name: str, aliases: tuple[str, ...], version: int) -> None:
        for key in (name, *aliases):
            if key in self._factories or key in self._targets or key in self._aliases:
                raise RegistryError(f"{self.family} {key!r} is registered twice")
        self._versions[name] = version
        for alias in aliases:
            self._aliases[alias] = name

    def names(self) -> list[str]:
        return sorted(self._versions)

    def aliases(self) -> dict[str, str]:
        """Alias -> registered name."""
        return dict(self._aliases)

    def target(self, name: str) -> str | None:
        """``"module:Attr"`` of a lazily added entry (``None`` for one registered as an object)."""
        return self._targets.get(self.canonical(name))

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases."""
        if not isinstance(name, str):
            raise RegistryError(f"{self.family} name must be a string, got {name!r}")
        if name in self._versions:
            return name
        if name in self._aliases:
            return self._aliases[name]
        known = [*self.names(), *self._aliases]
        raise RegistryError(
            f"unknown {self.family} {name!r}{did_you_mean(name, known)}; available: {', '.join(self.names())}"
        )

    def get(self, name: str) -> Callable[..., T]:
        name = self.canonical(name)
        if name not in self._factories:
            module, _, attr = self._targets[name].partition(":")
            self._factories[name] = getattr(importlib.import_module(module), attr)
        return self._factories[name]

    def version(self, name: str) -> int:
        """The computation version of ``name`` (see ``register``)."""
        return self._versions[self.canonical(name)]

    def type_hints(self, name: str) -> dict[str, Any]:
        """Declared types of the factory's parameters (what ``check`` validates against)."""
        name = self.canonical(name)
        if name not in self._hints:
            factory = self.get(name)
            self._hints[name] = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
        return self._hints[name]

    def defaults(self, name: str) -> dict[str, Any]:
        """Default value of every user-settable parameter that has one."""
        return {
            k: p.default
            for k, p in self.parameters(name).items()
            if p.default is not inspect.Parameter.empty and p.kind not in _VARIADIC
        }

    def parameters(self, name: str) -> dict[str, inspect.Parameter]:
        """User-settable parameters of ``name`` (reserved harness arguments removed)."""
        factory = self.get(name)
        target = factory.__init__ if inspect.isclass(factory) else factory
        params = dict(inspect.signature(target).parameters)
        params.pop("self", None)
        return {k: p for k, p in params.items() if k not in self.reserved}

    def typed(self, name: str, params: Mapping[str, Any], partial: bool = False) -> dict[str, Any]:
        """``params`` converted to the declared types of ``name``'s factory; ``RegistryError`` unless
        every parameter is known and fits its type and (unless ``partial``) every required one is given."""
        canonical = self.canonical(name)
        known = self.parameters(canonical)
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in known.values())
        named = {k: p for k, p in known.items() if p.kind not in _VARIADIC}
        hints = self.type_hints(canonical)
        out = {}
        for key, value in params.items():
            if key in self.reserved:
                raise RegistryError(f"{self.family} {canonical!r}: {key!r} is set by studybench, not by the study")
            if key not in named and not takes_any:
                valid = ", ".join(named) or "(none)"
                raise RegistryError(
                    f"{self.family} {canonical!r} has no parameter {key!r}{did_you_mean(key, list(named))}; valid: {valid}"
                )
            out[key] = self._convert(canonical, key, hints.get(key) if key in named else None, value)
        missing = [k for k, p in named.items() if p.default is inspect.Parameter.empty and k not in params]
        if missing and not partial:
            raise RegistryError(f"{self.family} {canonical!r} needs parameter(s): {', '.join(missing)}")
        return out

    def _convert(self, name: str, key: str, hint: Any, value: Any) -> Any:
        """``value`` as the declared type ``hint``; a YAML ``true`` is no number (lax pydantic reads it as 1)."""
        if hint is None:
            return value
        if isinstance(value, bool) and _numeric(hint):
            raise RegistryError(f"{self.family} {name!r} parameter {key!r} expects a number, got {value!r}")
        try:
            adapter = _adapter(hint)
        except TypeError:  # a type pydantic cannot check (e.g. a tensor): passed on as written
            return value
        try:
            return adapter.validate_python(value)
        except ValidationError as err:
            raise RegistryError(
                f"{self.family} {name!r} parameter {key!r} expects {_type_name(hint)}, "
                f"got {value!r} ({err.errors()[0]['msg']})"
            ) from None

    def check(self, name: str, params: Mapping[str, Any]) -> None:
        """Raise ``RegistryError`` unless ``params`` are known and well typed for ``name``."""
        self.typed(name, params)

    def build(self, name: str, /, **params: Any) -> T:
        return self.get(name)(**self.typed(name, params))


_VARIADIC = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports`` (name -> module) on first use: a family's package
    re-exports its torch-bound base types without importing torch for a listing."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def did_you_mean(name: object, known: list[str]) -> str:
    """``"; did you mean 'dice'?"`` when ``name`` is a likely typo of a ``known`` name, else ``""``."""
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


def _numeric(hint: Any) -> bool:
    """Whether ``hint`` is int or float (or a union holding one) and does not also allow bool."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    return bool not in options and any(kind in (int, float) for kind in options)


@functools.lru_cache(maxsize=256)
def _adapter(hint: Any) -> TypeAdapter:
    return TypeAdapter(hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
