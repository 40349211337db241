"""The coalescer: changes waiting on one resource go out in one write, each caller gets its
own outcome, and whoever's batch is done returns at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from jitcore.providers.coalesce import Coalescer


def run_all(coalescer: Coalescer[int, int], key_of: dict[int, str]) -> dict[int, object]:
    results: dict[int, object] = {}
    barrier = threading.Barrier(len(key_of))

    def one(change: int) -> None:
        barrier.wait()
        try:
            results[change] = coalescer.submit(key_of[change], change)
        except Exception as exc:  # recorded for the assertions
            results[change] = exc

    threads = [threading.Thread(target=one, args=(c,)) for c in key_of]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_a_burst_on_one_resource_is_written_in_a_few_batches() -> None:
    batches: list[list[int]] = []

    def write(key: str, changes: Sequence[int]) -> list[int]:
        batches.append(list(changes))
        time.sleep(0.05)  # a write that takes a while: everyone else arrives meanwhile
        return [change * 10 for change in changes]

    coalescer: Coalescer[int, int] = Coalescer(write)
    results = run_all(coalescer, dict.fromkeys(range(100), "nsg"))
    assert results == {change: change * 10 for change in range(100)}
    assert sorted(c for batch in batches for c in batch) == list(range(100))
    assert len(batches) <= 3, [len(b) for b in batches]
    assert coalescer.batches == len(batches)


def test_each_caller_gets_its_own_outcome_and_a_failed_write_fails_its_whole_batch() -> None:
    def write(key: str, changes: Sequence[int]) -> list[int | BaseException]:
        if key == "broken":
            raise RuntimeError("the resource refused the write")
        return [ValueError(f"change {c} refused") if c % 2 else c for c in changes]

    coalescer: Coalescer[int, int] = Coalescer(write)
    results = run_all(coalescer, {1: "ok", 2: "ok", 3: "broken", 4: "broken"})
    assert results[2] == 2
    assert isinstance(results[1], ValueError) and str(results[1]) == "change 1 refused"
    assert all(isinstance(results[c], RuntimeError) for c in (3, 4))


def test_resources_are_written_independently() -> None:
    running: set[str] = set()
    overlapped = threading.Event()
    lock = threading.Lock()

    def write(key: str, changes: Sequence[int]) -> list[int]:
        with lock:
            running.add(key)
            if len(running) > 1:
                overlapped.set()
        time.sleep(0.1)
        with lock:
            running.discard(key)
        return list(changes)

    coalescer: Coalescer[int, int] = Coalescer(write)
    results = run_all(coalescer, {1: "a", 2: "b"})
    assert results == {1: 1, 2: 2}
    assert overlapped.is_set(), "two resources were written one after the other"


def test_a_caller_returns_when_its_batch_is_written_not_when_the_queue_is_empty() -> None:
    first_in = threading.Event()
    release_second = threading.Event()
    calls = 0

    def write(key: str, changes: Sequence[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_in.set()
            time.sleep(0.1)  # the second caller queues meanwhile
        else:
            release_second.wait(5)  # the second batch hangs until the test lets it go
        return list(changes)

    coalescer: Coalescer[int, int] = Coalescer(write)
    done: dict[int, int] = {}
    first = threading.Thread(target=lambda: done.setdefault(1, coalescer.submit("nsg", 1)))
    first.start()
    assert first_in.wait(5)
    second = threading.Thread(target=lambda: done.setdefault(2, coalescer.submit("nsg", 2)))
    second.start()
    first.join(5)
    assert not first.is_alive() and done == {1: 1}, "the first caller waited on the second batch"
    release_second.set()
    second.join(5)
    assert done == {1: 1, 2: 2}


def test_a_batch_is_bounded() -> None:
    sizes: list[int] = []

    def write(key: str, changes: Sequence[int]) -> list[int]:
        sizes.append(len(changes))
        time.sleep(0.05)
        return list(changes)

    coalescer: Coalescer[int, int] = Coalescer(write, max_batch=10)
    results = run_all(coalescer, dict.fromkeys(range(35), "nsg"))
    assert len(results) == 35 and max(sizes) == 10


def test_an_outcome_count_that_does_not_match_is_an_error_for_everyone() -> None:
    coalescer: Coalescer[int, int] = Coalescer(lambda key, changes: [])
    with pytest.raises(AssertionError, match="0 outcomes for 1 changes"):
        coalescer.submit("nsg", 1)
