"""The handler framework: which job types this process can run, and how.

Application code registers a handler with the decorator::

    from jobd import handler

    @handler("send_invoice", max_attempts=5, timeout=60)
    def send_invoice(ctx, payload):
        ...
        return {"sent": True}

A handler is a plain function `fn(ctx, payload) -> JSON-able result`, run in a worker process.
The modules that define handlers are named in the configuration (`handlers.modules`); the
supervisor imports them to learn the types (and their submit-time validators), and the fork
server imports them once so every worker starts with them loaded.

The built-in types, `echo` and `sleep`, are always there (jobd.handlers.builtin).  The sample
handlers (`send_email`, `generate_report`, `process_file`) are not part of the framework: they
live in jobd.samples and are enabled by `handlers.samples`.
"""

from __future__ import annotations

from jobd.handlers.registration import (
    BUILTIN_MODULES,
    HandlerFn,
    HandlerImportError,
    HandlerSpec,
    Registry,
    Validator,
    handler,
    load_modules,
    registry,
)

__all__ = [
    "BUILTIN_MODULES",
    "HandlerFn",
    "HandlerImportError",
    "HandlerSpec",
    "Registry",
    "Validator",
    "handler",
    "load_modules",
    "registry",
]
