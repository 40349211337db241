"""Many approved grants opened at the same moment, one thread each, as a burst of Approve
clicks would: what each open returned, and how long the slowest took."""

from __future__ import annotations

import threading
import time

from jitcore.domain import GrantView
from jitcore.service import JitService


def open_together(service: JitService, grants: list[int]) -> tuple[dict[int, GrantView], float]:
    """Every open's result; an open that raised, or had not returned after two minutes,
    fails the caller's test with what happened to it."""
    results: dict[int, GrantView] = {}
    raised: dict[int, BaseException] = {}
    barrier = threading.Barrier(len(grants))

    def open_one(gid: int) -> None:
        barrier.wait()
        try:
            results[gid] = service.open(gid)
        except BaseException as exc:  # reported below, with every other one
            raised[gid] = exc

    started = time.monotonic()
    threads = [threading.Thread(target=open_one, args=(gid,)) for gid in grants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    took = time.monotonic() - started
    assert not raised, {gid: repr(exc) for gid, exc in raised.items()}
    assert set(results) == set(grants), f"opens still running: {set(grants) - set(results)}"
    return results, took
