"""A tiny name -> factory registry shared by datasets, models, losses and schemes.

Why a class of our own: the YAML names are the public interface, so an unknown name or
parameter must produce an error that lists the valid choices (never a bare ``KeyError``),
a duplicate registration is a bug (raise, do not warn), and parameter types are checked
*before* any training starts, from the factory's own signature.
"""

from __future__ import annotations

import difflib
import inspect
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
        self._aliases: dict[str, str] = {}
        self._versions: dict[str, int] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = (), version: int = 1) -> Callable:
        """Register a factory under ``name``. Bump ``version`` when what the factory computes
        changes meaning (a new formula, a changed default): the version is part of every run key,
        so finished runs of the old meaning are then no longer reused."""

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            for key in (name, *aliases):
                if key in self._factories or key in self._aliases:
                    raise RegistryError(f"{self.family} {key!r} is registered twice")
            self._factories[name] = factory
            self._versions[name] = version
            for alias in aliases:
                self._aliases[alias] = name
            return factory

        return decorate

    def names(self) -> list[str]:
        return sorted(self._factories)

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases."""
        if not isinstance(name, str):
            raise RegistryError(f"{self.family} name must be a string, got {name!r}")
        if name in self._factories:
            return name
        if name in self._aliases:
            return self._aliases[name]
        known = [*self.names(), *self._aliases]
        raise RegistryError(
            f"unknown {self.family} {name!r}{did_you_mean(name, known)}; available: {', '.join(self.names())}"
        )

    def get(self, name: str) -> Callable[..., T]:
        return self._factories[self.canonical(name)]

    def version(self, name: str) -> int:
        """The computation version of ``name`` (see ``register``)."""
        return self._versions[self.canonical(name)]

    def type_hints(self, name: str) -> dict[str, Any]:
        """Declared types of the factory's parameters (what ``check`` validates against)."""
        factory = self.get(name)
        return typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)

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

    def check(self, name: str, params: Mapping[str, Any]) -> None:
        """Raise ``RegistryError`` unless ``params`` are known and well typed for ``name``."""
        canonical = self.canonical(name)
        known = self.parameters(canonical)
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in known.values())
        named = {k: p for k, p in known.items() if p.kind not in _VARIADIC}
        hints = self.type_hints(canonical)
        for key, value in params.items():
            if key in self.reserved:
                raise RegistryError(f"{self.family} {canonical!r}: {key!r} is set by studybench, not by the study")
            if key not in named:
                if takes_any:
                    continue
                valid = ", ".join(named) or "(none)"
                raise RegistryError(
                    f"{self.family} {canonical!r} has no parameter {key!r}{did_you_mean(key, list(named))}; valid: {valid}"
                )
            if key in hints:
                try:
                    TypeAdapter(hints[key]).validate_python(value)
                except ValidationError as err:
                    expected = _type_name(hints[key])
                    raise RegistryError(
                        f"{self.family} {canonical!r} parameter {key!r} expects {expected}, "
                        f"got {value!r} ({err.errors()[0]['msg']})"
                    ) from None
        missing = [k for k, p in named.items() if p.default is inspect.Parameter.empty and k not in params]
        if missing:
            raise RegistryError(f"{self.family} {canonical!r} needs parameter(s): {', '.join(missing)}")

    def build(self, name: str, /, **params: Any) -> T:
        self.check(name, params)
        return self.get(name)(**params)


_VARIADIC = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)


def did_you_mean(name: object, known: list[str]) -> str:
    """``"; did you mean 'dice'?"`` when ``name`` is a likely typo of a ``known`` name, else ``""``."""
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
