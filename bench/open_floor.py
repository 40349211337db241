"""How close opening is to its database floor: open's own SQL replayed on the bare driver.

    .venv/bin/python -m bench.open_floor [--json] [--database-url URL] [--samples N]

`bench.open_overhead` compares `JitService.open` with one raw boto3 call. This one says how
much of that overhead the database work itself takes, whatever code sends it. It records
the statements one `service.open` sends, as the driver receives them (both transactions,
and on PostgreSQL the rule lock on its own connection), and replays them for other
approved grants straight on DB-API connections: no SQLAlchemy, and none of jit's Python
(no audit hashing, no Slack payloads, no records), around the same `AwsProvider.open_rule`
call at the same point. Only what must differ changes: the grant's id, and on SQLite the
audit link's sequence number (read from the chain's head, as jit does).

Measured in one process and one run, three series interleaved (their order rotates):
`service.open`, the replay ("floor"), and the raw boto3 call of `bench.open_overhead`.
Reported: the three medians and each one's ratio to the raw call. No target: the floor's
ratio is the least `bench.open_overhead`'s ratio could be with these statements.
Finishes in about 20 s.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, event

if __package__ in (None, ""):  # run as a file: make `bench` and `jitcore` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import open_overhead
from bench.common import (
    REQUESTER,
    RULES_PER_GROUP,
    SERVICE,
    Environment,
    Report,
    build_policy,
    create_groups,
    database_label,
    ec2_client,
    progress,
    source_for,
    target_name,
)
from bench.open_overhead import (
    RAW_SOURCE_OFFSET,
    WARMUP,
    approved,
    raw_authorize,
    raw_client,
    timed,
)
from jitcore.domain import Status
from jitcore.ports import LogNotifier, OpenedRule, RuleSpec, SystemClock
from jitcore.providers.aws import AwsProvider
from jitcore.service import JitService
from jitcore.store import Store, make_engine

CLOUD = "cloud call"
COMMIT = "commit"


@dataclass(slots=True)
class Step:
    """One thing the driver was asked to do, on the transaction's connection or another."""

    sql: str  # a statement, or CLOUD, or COMMIT
    params: Any = None
    many: bool = False
    names: Sequence[str] | None = None  # positional parameters' names (SQLite)
    aside: bool = False  # on a connection of its own (PostgreSQL's rule locks)


@dataclass(slots=True)
class Recording:
    steps: list[Step] = field(default_factory=list)
    main: int | None = None  # the DB-API connection of the first statement


class RecordingProvider(AwsProvider):
    """AwsProvider that marks, in a recording, where open's cloud call happens."""

    recording: Recording | None = None

    def open_rule(self, spec: RuleSpec) -> OpenedRule:
        if self.recording is not None:
            self.recording.steps.append(Step(CLOUD))
        return super().open_rule(spec)


@contextmanager
def recording(engine: Engine, provider: RecordingProvider) -> Iterator[Recording]:
    """Every statement and commit the engine sends while the block runs."""
    taken = Recording()

    def on_execute(conn: Any, _cursor: Any, statement: str, parameters: Any, context: Any,
                   executemany: bool) -> None:
        dbapi = id(conn.connection.dbapi_connection)
        taken.main = dbapi if taken.main is None else taken.main
        compiled = getattr(context, "compiled", None)
        taken.steps.append(Step(statement, parameters, executemany,
                                getattr(compiled, "positiontup", None),
                                aside=dbapi != taken.main))

    def on_commit(conn: Any) -> None:
        taken.steps.append(Step(COMMIT, aside=id(conn.connection.dbapi_connection)
                                != taken.main))

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    provider.recording = taken
    try:
        yield taken
    finally:
        provider.recording = None
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_commit)


class Replay:
    """Sends a recording's statements for another grant on bare DB-API connections."""

    def __init__(self, engine: Engine, taken: Recording) -> None:
        self.steps = taken.steps
        self.sqlite = engine.dialect.name == "sqlite"
        # Checked out of the pool for the replay's whole life (the pool must not lend them
        # to jit meanwhile); the statements go to the driver's connections underneath.
        self._pooled = [engine.raw_connection(), engine.raw_connection()]
        self._main = cast(Any, self._pooled[0].driver_connection)
        self._aside = cast(Any, self._pooled[1].driver_connection)
        if not self.sqlite:
            self._main.rollback()  # as the pool hands it out, not yet in a transaction
            self._aside.rollback()
            self._aside.autocommit = True
        self._head: int | None = None  # SQLite: the audit chain's last seq, as just read

    def __call__(self, grant_id: int, cloud_call: Callable[[], object]) -> None:
        for step in self.steps:
            if step.sql == CLOUD:
                cloud_call()
                continue
            connection = self._aside if step.aside else self._main
            if step.sql == COMMIT:  # SQLite's connection runs its own BEGIN and COMMIT
                if self.sqlite:
                    connection.execute("COMMIT")
                else:
                    connection.commit()
                continue
            cursor = connection.cursor()
            params = ([self._adapt(p, step, grant_id) for p in step.params] if step.many
                      else self._adapt(step.params, step, grant_id))
            if step.many:
                cursor.executemany(step.sql, params)
            else:
                cursor.execute(step.sql, params)
            if cursor.description is not None:
                rows = cursor.fetchall()
                if self.sqlite and step.sql.startswith("SELECT audit_events.seq"):
                    self._head = rows[0][0] if rows else 0
            cursor.close()

    def _adapt(self, params: Any, step: Step, grant_id: int) -> Any:
        if isinstance(params, dict):
            return {k: grant_id if k == "grant_id" else v for k, v in params.items()}
        if not step.names:
            return params
        values = list(params)
        for i, name in enumerate(step.names):
            if name == "grant_id":
                values[i] = grant_id
            elif name == "seq" and step.sql.startswith("INSERT INTO audit_events"):
                assert self._head is not None, "the chain's head is read before a link"
                self._head += 1
                values[i] = self._head
        return tuple(values)

    def close(self) -> None:
        for pooled in self._pooled:
            pooled.close()


def run(env: Environment, samples: int) -> Report:
    report = Report("open_floor")
    per_side = -(-samples // RULES_PER_GROUP)
    report.context.update(database=database_label(env.database_url),
                          moto="separate process (python -m moto.server)",
                          samples_each=samples, warmup_each=WARMUP)
    ec2 = ec2_client()
    # target 0 takes the warm-up calls; jit's and the replay's samples have targets of their own
    groups = create_groups(ec2, 1 + 2 * per_side, "jit")
    raw_groups = create_groups(ec2, per_side + 1, "raw")
    policy = build_policy(groups)
    provider = RecordingProvider()
    engine = make_engine(env.database_url)
    service = JitService(Store(engine), policy, {"aws": provider}, LogNotifier(), SystemClock())

    progress(f"requesting and approving {2 * samples + WARMUP} grants")
    warm = [approved(service, n, 0) for n in range(WARMUP)]
    mine = [approved(service, WARMUP + i, 1 + i % per_side) for i in range(samples)]
    floor = [approved(service, WARMUP + samples + i, 1 + per_side + i % per_side)
             for i in range(samples)]
    raw = raw_client()
    for n, gid in enumerate(warm[:-1]):
        service.open(gid)
        raw_authorize(raw, raw_groups[0], source_for(RAW_SOURCE_OFFSET + n), n)
    with recording(engine, provider) as taken:
        service.open(warm[-1])
    replay = Replay(engine, taken)
    report.context["statements replayed"] = sum(s.sql not in (CLOUD, COMMIT) for s in taken.steps)

    progress(f"measuring {samples} interleaved triples")
    series: dict[str, list[float]] = {"jit": [], "floor": [], "raw": []}
    failed = 0
    for i in range(samples):
        group = raw_groups[1 + i % per_side]
        source = source_for(RAW_SOURCE_OFFSET + WARMUP + i)
        target = policy.targets[target_name(1 + per_side + i % per_side)]
        spec = RuleSpec(grant_id=floor[i], target=target, port=target.ports[SERVICE],
                        source=source_for(WARMUP + samples + i),
                        description=f"jit grant #{floor[i]} for {REQUESTER}")
        calls: dict[str, Callable[[], object]] = {
            "jit": partial(service.open, mine[i]),
            "floor": partial(replay, floor[i], partial(provider.open_rule, spec)),
            "raw": partial(raw_authorize, raw, group, source, 100_000 + i),
        }
        order = list(calls)[i % 3:] + list(calls)[:i % 3]
        for name in order:
            spent, result = timed(calls[name])
            series[name].append(spent)
            if name == "jit":
                failed += getattr(result, "status", None) is not Status.ACTIVE
    replay.close()
    # The replay did the real work: its grants are ACTIVE, through jit's own statements.
    unreplayed = sum(service.get(gid).status is not Status.ACTIVE for gid in floor)
    service.store.dispose()

    medians = {name: statistics.median(values) for name, values in series.items()}
    for name, label in (("jit", "service.open"), ("floor", "replayed SQL + open_rule"),
                        ("raw", "raw authorize")):
        report.add(f"{label} median", medians[name] * 1000, "ms")
    report.add("service.open / raw (bench.open_overhead)", medians["jit"] / medians["raw"], "x")
    report.add("floor / raw (the least it could be)", medians["floor"] / medians["raw"], "x")
    report.add("jit's own work above the floor", (medians["jit"] - medians["floor"]) * 1000,
               "ms")
    report.add("opens that did not end ACTIVE", failed, "")
    report.add("replayed grants that did not end ACTIVE", unreplayed, "")
    return report


def main(argv: list[str] | None = None) -> None:
    open_overhead.main(argv, __doc__, run)


if __name__ == "__main__":
    main()
