"""The chaos harness (see harness.py): `python -m tests.chaos --jobs N --seed S --daemons 1-3`."""
