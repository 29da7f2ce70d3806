"""The room of a limited claim (jobd.queue_limits.room): fixed windows aligned on the epoch,
the smaller of the global concurrency's and the rate's room."""

from __future__ import annotations

from jobd.queue_limits import FleetLimits, Rate, Window, room


def test_the_global_concurrency_leaves_what_is_not_running() -> None:
    assert room(10, 3, FleetLimits(global_concurrency=5), Window(), 100.0).room == 2
    assert room(10, 7, FleetLimits(global_concurrency=5), Window(), 100.0).room == 0


def test_a_new_window_starts_its_count_again() -> None:
    limits = FleetLimits(rate=Rate(10, 1.0))
    same = room(20, 0, limits, Window(100.0, 7), 100.4)
    assert (same.room, same.window) == (3, Window(100.0, 7))
    assert same.opens_in is not None and abs(same.opens_in - 0.6) < 1e-9
    assert same.taken(3) == Window(100.0, 10)
    later = room(20, 0, limits, Window(100.0, 10), 101.2)
    assert later.room == 10 and later.window == Window(101.0, 0)


def test_a_minute_window_is_aligned_on_the_minute() -> None:
    decided = room(5, 0, FleetLimits(rate=Rate(600, 60.0)), Window(), 125.0)
    assert decided.window.start == 120.0 and decided.room == 5 and decided.opens_in is None


def test_an_exhausted_window_says_when_the_next_opens() -> None:
    decided = room(1, 0, FleetLimits(rate=Rate(2, 60.0)), Window(120.0, 2), 150.0)
    assert decided.room == 0 and decided.opens_in == 30.0


def test_the_smaller_room_wins() -> None:
    limits = FleetLimits(global_concurrency=3, rate=Rate(10, 1.0))
    assert room(20, 0, limits, Window(), 5.0).room == 3
    assert room(20, 0, limits, Window(5.0, 9), 5.5).room == 1


def test_runtime_values_replace_the_files_one_by_one() -> None:
    file = FleetLimits(4, Rate(10, 1.0))
    assert file.over(FleetLimits(global_concurrency=2)) == FleetLimits(2, Rate(10, 1.0))
    assert file.over(FleetLimits()) == file
    assert not FleetLimits() and FleetLimits(rate=Rate(1, 1.0))
