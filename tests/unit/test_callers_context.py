"""Work handed to another thread (the close workers, the next batch's close) keeps the
caller's context: its checkout patience and its statement deadline."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from jitcore.store.deadlines import checkout_patience, in_callers_context, patient


def test_a_worker_thread_sees_the_callers_patience() -> None:
    with ThreadPoolExecutor(2) as pool:
        with patient(30.0):
            kept = list(pool.map(in_callers_context(lambda _: checkout_patience()), range(4)))
        plain = list(pool.map(lambda _: checkout_patience(), range(2)))
    assert kept == [30.0] * 4
    assert plain == [0.0, 0.0]  # (a bare thread starts with no patience)
