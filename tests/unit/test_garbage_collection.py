"""jobd.garbage_collection, each case in a fresh interpreter: settling changes the collector
of the whole process."""

from __future__ import annotations

import json
import subprocess
import sys

from jobd.garbage_collection import YOUNG_THRESHOLD

PROBE = """
import gc, json, sys
from jobd import garbage_collection
before = gc.get_threshold()
garbage_collection.settle(collect_first=sys.argv[1] == "collect")
frozen = gc.get_freeze_count()

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle made after the start
del a, b
print(json.dumps({
    "before": before,
    "after": gc.get_threshold(),
    "frozen": frozen,
    "frozen_later": gc.get_freeze_count(),
    "collected": gc.collect(),
}))
"""


def settle_in_a_fresh_process(collect: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, collect], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_what_exists_at_the_start_is_frozen_and_the_young_collected_less_often() -> None:
    for collect in ("collect", "no"):
        found = settle_in_a_fresh_process(collect)
        assert found["frozen"] > 1_000, found
        assert found["after"] == [YOUNG_THRESHOLD, *found["before"][1:]], found


def test_what_is_made_afterwards_is_still_collected() -> None:
    found = settle_in_a_fresh_process("collect")
    assert found["frozen_later"] == found["frozen"]  # the cycle is not frozen
    assert found["collected"] >= 2  # both of its objects went
