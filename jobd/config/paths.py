"""Where jobd keeps its files when the configuration does not say: the defaults computed from
the environment (systemd's directories, then XDG's, then the home directory)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# A Unix socket path must fit in sun_path: 108 bytes on Linux, the terminating NUL included.
SUN_PATH_MAX = 107


def _first_dir(value: str | None) -> Path | None:
    # systemd sets STATE_DIRECTORY / RUNTIME_DIRECTORY to absolute paths, colon-separated when
    # the unit lists several; jobd uses the first.
    first = (value or "").split(":")[0]
    return Path(first) if os.path.isabs(first) else None


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME", "")
    return Path(home) if os.path.isabs(home) else Path.home()


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where jobd keeps its state: systemd's StateDirectory= (`$STATE_DIRECTORY`, usually
    /var/lib/jobd) for a system service, else `$XDG_STATE_HOME/jobd`, else ~/.local/state/jobd."""
    systemd = _first_dir(env.get("STATE_DIRECTORY"))
    if systemd:
        return systemd
    xdg = env.get("XDG_STATE_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec says to ignore a relative value
        return Path(xdg) / "jobd"
    return _home(env) / ".local" / "state" / "jobd"


def default_database_url(env: Mapping[str, str] = os.environ) -> str:
    return f"sqlite://{state_dir(env) / 'jobd.db'}"


def default_socket_path(env: Mapping[str, str] = os.environ) -> Path:
    """The control socket when none is configured; jobctl uses the same rule."""
    runtime = _first_dir(env.get("RUNTIME_DIRECTORY"))  # systemd's RuntimeDirectory=jobd
    if runtime:
        return runtime / "jobd.sock"
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "jobd.sock"
    # No runtime directory (a cron job, a container): the state directory, unless its path is
    # too long for a socket address.
    fallback = state_dir(env) / "jobd.sock"
    if len(os.fsencode(fallback)) <= SUN_PATH_MAX:
        return fallback
    return Path("/tmp") / f"jobd-{os.getuid()}" / "jobd.sock"
