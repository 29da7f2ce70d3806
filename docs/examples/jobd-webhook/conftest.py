"""Lets pytest import jobd_webhook without installing it: when run from this directory, and
when jobd's own test run collects docs/examples."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
