"""Registering handlers: `HandlerSpec`, the process-wide `Registry` that `@handler` fills, and
`load_modules`, which imports the modules that register them (after the built-in types)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jobd.domain import Backoff, InvalidJob, check_result_ttl

HandlerFn = Callable[[Any, dict[str, Any]], Any]
Validator = Callable[[dict[str, Any]], None]

#: Modules that are always loaded: the built-in types, `echo` and `sleep`.
BUILTIN_MODULES = ("jobd.handlers.builtin",)


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    name: str
    fn: HandlerFn
    max_attempts: int | None = None  # default for jobs submitted without one
    timeout: float | None = None  # seconds one attempt may run
    backoff: Backoff | None = None
    validator: Validator | None = None  # called at submit time; raises ValueError
    #: Seconds its jobs are kept once ended, for jobs submitted without one (ADR 0033).
    result_ttl: float | None = None

    def __post_init__(self) -> None:
        try:
            check_result_ttl(self.result_ttl)
        except InvalidJob as exc:
            raise ValueError(f"handler {self.name!r}: result_ttl {exc.problem}") from None


class HandlerImportError(RuntimeError):
    """A handler module named in the configuration could not be imported, or registers a job
    type that is already registered."""


class DuplicateHandlerError(ValueError):
    """A job type registered by two different functions: which one would run is anybody's
    guess, so the second registration is refused."""


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, HandlerSpec] = {}

    def register(self, spec: HandlerSpec) -> None:
        existing = self._handlers.get(spec.name)
        if existing is not None and existing.fn is not spec.fn:
            raise DuplicateHandlerError(
                f"job type {spec.name!r} is registered twice:"
                f" {_where(existing.fn)} and {_where(spec.fn)}"
            )
        self._handlers[spec.name] = spec

    def get(self, name: str) -> HandlerSpec | None:
        return self._handlers.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def types(self) -> list[str]:
        return sorted(self._handlers)


#: The process-wide registry the decorator fills.
registry = Registry()


def handler(
    name: str,
    *,
    max_attempts: int | None = None,
    timeout: float | None = None,
    backoff: Backoff | None = None,
    validator: Validator | None = None,
    result_ttl: float | None = None,
) -> Callable[[HandlerFn], HandlerFn]:
    """Register the decorated function as the handler of job type `name`."""

    def register(fn: HandlerFn) -> HandlerFn:
        spec = HandlerSpec(name, fn, max_attempts, timeout, backoff, validator, result_ttl)
        registry.register(spec)
        return fn

    return register


def load_modules(modules: Iterable[str]) -> Registry:
    """Import the built-in types and every module in `modules`; return the registry."""
    for module in (*BUILTIN_MODULES, *modules):
        try:
            importlib.import_module(module)
        except DuplicateHandlerError as exc:
            raise HandlerImportError(f"handler module {module!r}: {exc}") from exc
        except Exception as exc:
            raise HandlerImportError(
                f"handler module {module!r} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
    return registry


def _where(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{getattr(fn, '__qualname__', fn)}"
