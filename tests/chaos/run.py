#!/usr/bin/env python3
"""Run the chaos harness as a script: `tests/chaos/run.py --jobs 5000 --seed 3 --daemons 3`.

The same as `python -m tests.chaos ...` from the repository's root; see harness.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.chaos.harness import main

if __name__ == "__main__":
    sys.exit(main())
