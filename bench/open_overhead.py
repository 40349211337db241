"""What jit adds to opening a rule: service.open() against one raw boto3 call.

    .venv/bin/python -m bench.open_overhead [--json] [--database-url URL] [--samples N]
    .venv/bin/python bench/open_overhead.py          (the same)

Set-up (not measured): moto runs in its own process (`python -m moto.server`). Two sets of
security groups of 50 rules each: one named by the policy's targets (for jit), one not (for
the raw calls). N grants (default 200) are requested and approved through the service, each
from its own source address; SQLite file database by default.

Measured, in one process and one run, interleaved (jit first on even samples, raw first on
odd ones), both filling their groups in the same order so moto's per-group cost stays equal:

  * jit:  `JitService.open(grant_id)`, APPROVED -> OPENING -> ACTIVE: two committed
          transactions with their audit events, the notifier, and AwsProvider.open_rule.
  * raw:  one `ec2.authorize_security_group_ingress` with the same permission, description
          and tags AwsProvider sends, from a client configured like AwsProvider's.

Ten warm-up calls of each go first (client creation, connection pool) and are not counted.
Reported: both medians, their ratio and difference. Target: ratio at most 1.15.
Finishes in about 15 s.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

if __package__ in (None, ""):  # run as a file: make `bench` and `jitcore` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    APPROVER,
    AWS_REGION,
    PORT,
    REQUESTER,
    RULES_PER_GROUP,
    SERVICE,
    Environment,
    Report,
    argument_parser,
    build_policy,
    create_groups,
    database_label,
    ec2_client,
    environment,
    percentile,
    progress,
    source_for,
    target_name,
)
from jitcore.domain import Status
from jitcore.ports import LogNotifier, SystemClock
from jitcore.providers.aws import AwsProvider
from jitcore.service import JitService
from jitcore.store import Store, make_engine

WARMUP = 10
RATIO_TARGET = 1.15
RAW_SOURCE_OFFSET = 1_000_000  # raw calls use other addresses than the grants


def raw_client() -> Any:
    """An EC2 client configured as AwsProvider configures its own."""
    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5.0,
                    read_timeout=30.0, user_agent_extra="jit")
    return boto3.client("ec2", region_name=AWS_REGION, config=config)


def raw_authorize(ec2: Any, group_id: str, source: str, marker: int) -> str:
    """The call AwsProvider makes for one grant, without jit around it."""
    response = ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": PORT, "ToPort": PORT,
                        "IpRanges": [{"CidrIp": source,
                                      "Description": f"jit grant #{marker} for {REQUESTER}"}]}],
        TagSpecifications=[{"ResourceType": "security-group-rule",
                            "Tags": [{"Key": "jit:grant", "Value": str(marker)},
                                     {"Key": "jit:managed-by", "Value": "jit"}]}],
    )
    return str(response["SecurityGroupRules"][0]["SecurityGroupRuleId"])


def approved(service: JitService, n: int, target: int) -> int:
    """A grant of `target_name(target)` from source n, requested and approved."""
    gid = service.request(REQUESTER, target_name(target), SERVICE, timedelta(minutes=30),
                          source_for(n), "benchmark").grant.id
    service.approve(gid, APPROVER)
    return gid


def timed(call: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def run(env: Environment, samples: int) -> Report:
    report = Report("open_overhead")
    per_side = -(-samples // RULES_PER_GROUP)
    report.context.update(database=database_label(env.database_url),
                          moto="separate process (python -m moto.server)",
                          samples_each=samples, warmup_each=WARMUP,
                          groups_each=per_side + 1)
    ec2 = ec2_client()
    # group 0 of each side takes the warm-up calls; samples go round-robin over the rest
    jit_groups = create_groups(ec2, per_side + 1, "jit")
    raw_groups = create_groups(ec2, per_side + 1, "raw")
    policy = build_policy(jit_groups)
    service = JitService(Store(make_engine(env.database_url)), policy, {"aws": AwsProvider()},
                         LogNotifier(), SystemClock())

    progress(f"requesting and approving {samples + WARMUP} grants")
    warm = [approved(service, n, 0) for n in range(WARMUP)]
    grants = [approved(service, WARMUP + i, 1 + i % per_side) for i in range(samples)]
    raw = raw_client()
    for n, gid in enumerate(warm):
        service.open(gid)
        raw_authorize(raw, raw_groups[0], source_for(RAW_SOURCE_OFFSET + n), n)

    progress(f"measuring {samples} interleaved pairs")
    jit_s: list[float] = []
    raw_s: list[float] = []
    failed = 0
    moto0 = env.moto.cpu_seconds()
    for i, gid in enumerate(grants):
        group = raw_groups[1 + i % per_side]
        source = source_for(RAW_SOURCE_OFFSET + WARMUP + i)

        def jit_call(gid: int = gid) -> object:
            return service.open(gid)

        def raw_call(group: str = group, source: str = source, marker: int = i) -> object:
            return raw_authorize(raw, group, source, 100_000 + marker)

        first, second = (jit_call, raw_call) if i % 2 == 0 else (raw_call, jit_call)
        a, result_a = timed(first)
        b, result_b = timed(second)
        jit_t, raw_t, view = (a, b, result_a) if i % 2 == 0 else (b, a, result_b)
        jit_s.append(jit_t)
        raw_s.append(raw_t)
        failed += getattr(view, "status", None) is not Status.ACTIVE
    moto_cpu = env.moto.cpu_seconds() - moto0
    service.store.dispose()

    jit_med, raw_med = statistics.median(jit_s), statistics.median(raw_s)
    ratio = jit_med / raw_med
    report.add("service.open median", jit_med * 1000, "ms")
    report.add("service.open p90", percentile(jit_s, 90) * 1000, "ms")
    report.add("raw authorize median", raw_med * 1000, "ms")
    report.add("raw authorize p90", percentile(raw_s, 90) * 1000, "ms")
    report.add("jit overhead (median difference)", (jit_med - raw_med) * 1000, "ms")
    report.add("ratio of medians (jit / raw)", ratio, "x", target=f"<= {RATIO_TARGET}",
               met=ratio <= RATIO_TARGET and failed == 0)
    report.add("opens that did not end ACTIVE", failed, "")
    report.add("moto CPU per measured call", moto_cpu / (2 * samples) * 1000, "ms")
    return report


def main(argv: list[str] | None = None, doc: str | None = __doc__,
         measure: Callable[[Environment, int], Report] = run) -> None:
    parser = argument_parser(doc)
    parser.add_argument("--samples", type=int, default=200, help="samples of each (200)")
    args = parser.parse_args(argv)
    with environment(args.database_url) as env:
        report = measure(env, args.samples)
    report.emit(args.json)


if __name__ == "__main__":
    main()
