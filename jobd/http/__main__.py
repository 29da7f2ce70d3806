"""`python -m jobd.http`: the shim as `jobd run` starts it.

Its settings come as one JSON line on stdin (jobd.http.child.settings_line), so the tokens are in
neither argv nor the environment, where `ps` and /proc would show them; the pipe then stays open,
and its end means `jobd run` is gone, however it went (even SIGKILL): the shim stops.
People start the shim with `jobd http`, which reads the configuration instead.
"""

from __future__ import annotations

import sys

from jobd.http import StartError, serve
from jobd.http.child import settings_from_line


def main() -> int:
    settings = settings_from_line(sys.stdin.buffer.readline())
    try:
        return serve(settings, parent=sys.stdin.fileno())
    except StartError as exc:
        print(f"jobd http: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
