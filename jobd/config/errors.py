"""The two errors of the configuration: a bad value as a kind sees it (`Problem`), and the same
problem placed at its key and source (`ConfigError`), which the CLI turns into exit status 2."""

from __future__ import annotations


class ConfigError(ValueError):
    """The configuration is not valid.  The message names the key and where its value came from
    (a file and line, an environment variable, or a flag)."""

    exit_code = 2  # what the CLI exits with

    def __init__(self, key: str | None, source: str, problem: str):
        self.key = key
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


class Problem(ValueError):
    """A bad value, as a kind sees it.  The loader, which knows the key and the source, turns it
    into a ConfigError.  `subkey` names a part inside a mapping value (`emails.concurrency` in
    `queues`)."""

    def __init__(self, message: str, subkey: str | None = None):
        super().__init__(message)
        self.subkey = subkey
