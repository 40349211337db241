"""Many approved grants opened at the same moment, one thread each, as a burst of Approve
clicks would: what each open returned, and how long the slowest took."""

from __future__ import annotations

import threading
import time

from jitcore.domain import GrantView
from jitcore.service import JitService


def open_together(service: JitService, grants: list[int]) -> tuple[dict[int, GrantView], float]:
    results: dict[int, GrantView] = {}
    barrier = threading.Barrier(len(grants))

    def open_one(gid: int) -> None:
        barrier.wait()
        results[gid] = service.open(gid)

    started = time.monotonic()
    threads = [threading.Thread(target=open_one, args=(gid,)) for gid in grants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results, time.monotonic() - started
