"""The garbage collector's setting while runs are driven (kale.engine.collect): raised for
the run, back as it was after, with nested and overlapping runs sharing one setting."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from kale.engine import collect


@pytest.fixture(autouse=True)
def default_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_the_threshold_is_raised_while_a_run_is_driven_and_restored_after() -> None:
    with collect.relaxed():
        assert gc.get_threshold() == (collect.THRESHOLD, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_runs_in_two_threads_restore_it_once_the_last_ends() -> None:
    first_in, second_out = threading.Event(), threading.Event()
    seen: list[tuple[int, int, int]] = []

    def other() -> None:
        with collect.relaxed():
            first_in.set()
            second_out.wait(60)
            seen.append(gc.get_threshold())

    t = threading.Thread(target=other)
    t.start()
    assert first_in.wait(60)
    with collect.relaxed():
        pass
    seen.append(gc.get_threshold())  # the other run still goes on
    second_out.set()
    t.join(60)
    assert seen == [(collect.THRESHOLD, 10, 10)] * 2
    assert gc.get_threshold() == (700, 10, 10)


def test_a_disabled_collector_or_a_higher_threshold_is_left_alone() -> None:
    gc.set_threshold(0)
    with collect.relaxed():
        assert gc.get_threshold()[0] == 0
    gc.set_threshold(50_000, 10, 10)
    with collect.relaxed():
        assert gc.get_threshold() == (50_000, 10, 10)
    assert gc.get_threshold() == (50_000, 10, 10)


def test_a_threshold_the_user_set_during_the_run_is_kept() -> None:
    with collect.relaxed():
        gc.set_threshold(1000, 10, 10)
    assert gc.get_threshold() == (1000, 10, 10)
