"""Loading the YAML policy file: the objects a good file gives, the words a bad one gets."""

from __future__ import annotations

import ipaddress
import textwrap
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from jitcore.domain import Protocol
from jitcore.errors import PolicyError
from jitcore.policy import (
    ANY_V4,
    AutoApprove,
    AwsLocation,
    AzureLocation,
    Policy,
    PortPolicy,
    SlackChannels,
    Target,
    check_request,
)
from jitcore.policy_file import load_policy, parse_policy

# DESIGN.md §5, with a security group id that has the 8 hex digits AWS uses (the design's
# `sg-0abc123` has 7), plus an Azure target and an AWS instance that use every option.
FULL_POLICY = """\
slack:
  approvals_channel: C0123APPROVE      # channel id
  audit_channel: C0123AUDIT
defaults:
  max_duration: 3h                     # never above 24h
  approval_timeout: 1h
  requesters: ["*"]                    # Slack user ids, @usergroup handles, or "*"
  approvers: ["U0LEAD1", "@sre-leads"]
targets:
  prod-db:
    aws: {region: us-east-1, security_group_id: sg-0abc1234}
    ports:
      ssh: {port: 22, max_duration: 1h, allowed_sources: ["0.0.0.0/0"]}
  web-vm:
    azure:
      subscription_id: 00000000-0000-0000-0000-000000000000
      resource_group: rg-web
      network_security_group: nsg-web
      destination: 10.0.1.4
    ports: {rdp: 3389, winrm: 5985}
    approvers: ["@windows-admins"]
    auto_approve: {users: ["U0ONCALL"], max_duration: 30m}
  gov-jump:
    azure:
      subscription_id: 0A1B2C3D-0000-4000-8000-00000000ABCD
      resource_group: rg-jump
      network_security_group: nsg-jump
      destination: "2001:DB8:0::0004"
      priority_band: [300, 349]
      cloud: usgov
      arm_endpoint: https://management.usgovcloudapi.net
    ports:
      ssh:
      dns: {port: 53, protocol: udp, max_duration: 8h,
            allowed_sources: [10.0.0.0/8, "2001:db8::/32"], widest_prefix_v4: 28,
            widest_prefix_v6: 64}
    requesters: ["@ops", "U0ALICE"]
    max_duration: 12h
    approval_timeout: 15m
  build-box:
    aws:
      region: us-gov-west-1
      instance_id: i-0123456789abcdef0
      role_arn: arn:aws-us-gov:iam::123456789012:role/jit/opener
    ports:
      winrm-https: {}
"""


def expected_full_policy() -> Policy:
    lead_approvers = ("U0LEAD1", "@sre-leads")
    return Policy(
        targets={
            "prod-db": Target(
                name="prod-db",
                location=AwsLocation("us-east-1", security_group_id="sg-0abc1234"),
                ports={"ssh": PortPolicy("ssh", 22, Protocol.TCP, timedelta(hours=1), (ANY_V4,))},
                requesters=("*",),
                approvers=lead_approvers,
                max_duration=timedelta(hours=3),
                approval_timeout=timedelta(hours=1),
            ),
            "web-vm": Target(
                name="web-vm",
                location=AzureLocation(
                    subscription_id="00000000-0000-0000-0000-000000000000",
                    resource_group="rg-web",
                    network_security_group="nsg-web",
                    destination="10.0.1.4",
                ),
                ports={"rdp": PortPolicy("rdp", 3389), "winrm": PortPolicy("winrm", 5985)},
                requesters=("*",),
                approvers=("@windows-admins",),
                max_duration=timedelta(hours=3),
                approval_timeout=timedelta(hours=1),
                auto_approve=AutoApprove(("U0ONCALL",), timedelta(minutes=30)),
            ),
            "gov-jump": Target(
                name="gov-jump",
                location=AzureLocation(
                    subscription_id="0a1b2c3d-0000-4000-8000-00000000abcd",
                    resource_group="rg-jump",
                    network_security_group="nsg-jump",
                    destination="2001:db8::4",
                    priority_band=(300, 349),
                    cloud="usgov",
                    arm_endpoint="https://management.usgovcloudapi.net",
                ),
                ports={
                    "ssh": PortPolicy("ssh", 22),
                    "dns": PortPolicy(
                        "dns", 53, Protocol.UDP, timedelta(hours=8),
                        (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")),
                        widest_prefix_v4=28, widest_prefix_v6=64,
                    ),
                },
                requesters=("@ops", "U0ALICE"),
                approvers=lead_approvers,
                max_duration=timedelta(hours=12),
                approval_timeout=timedelta(minutes=15),
            ),
            "build-box": Target(
                name="build-box",
                location=AwsLocation(
                    "us-gov-west-1", instance_id="i-0123456789abcdef0",
                    role_arn="arn:aws-us-gov:iam::123456789012:role/jit/opener",
                ),
                ports={"winrm-https": PortPolicy("winrm-https", 5986)},
                requesters=("*",),
                approvers=lead_approvers,
                max_duration=timedelta(hours=3),
                approval_timeout=timedelta(hours=1),
            ),
        },
        slack=SlackChannels("C0123APPROVE", "C0123AUDIT"),
        default_max_duration=timedelta(hours=3),
        default_approval_timeout=timedelta(hours=1),
    )


WritePolicy = Callable[[str], str]


@pytest.fixture
def policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WritePolicy:
    """Write YAML to ./jit.yaml in a fresh directory and return the name as a user gives it."""
    monkeypatch.chdir(tmp_path)

    def write(text: str) -> str:
        Path("jit.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
        return "jit.yaml"

    return write


def problems_in(path: str) -> str:
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    return str(caught.value)


# --- a good file --------------------------------------------------------------------------


def test_the_full_policy_loads_into_the_expected_objects(policy_file: WritePolicy) -> None:
    policy = load_policy(policy_file(FULL_POLICY))
    assert policy == expected_full_policy()
    assert policy.source_file == "jit.yaml"
    assert list(policy.targets) == ["prod-db", "web-vm", "gov-jump", "build-box"]
    assert list(policy.targets["web-vm"].ports) == ["rdp", "winrm"]


def test_the_loaded_policy_is_read_only(policy_file: WritePolicy) -> None:
    policy = load_policy(policy_file(FULL_POLICY))
    with pytest.raises(TypeError):
        policy.targets["new"] = policy.targets["prod-db"]  # type: ignore[index]
    with pytest.raises(TypeError):
        ports = policy.targets["prod-db"].ports
        ports["ssh"] = ports["ssh"]  # type: ignore[index]


def test_the_loaded_policy_drives_the_decisions(policy_file: WritePolicy) -> None:
    policy = load_policy(policy_file(FULL_POLICY))
    ok = check_request(policy, "U0ALICE", frozenset(), "prod-db", "ssh", timedelta(minutes=30),
                       "203.0.113.7")
    assert ok.decision.allowed
    # the port's 1h beats the defaults' 3h
    long = check_request(policy, "U0ALICE", frozenset(), "prod-db", "22", timedelta(hours=2),
                         "203.0.113.7")
    assert long.decision.detail == "2h is longer than the 1h allowed for ssh on prod-db"
    # prod-db's ssh lists only 0.0.0.0/0, so no IPv6 source
    v6 = check_request(policy, "U0ALICE", frozenset(), "prod-db", "ssh", timedelta(minutes=5),
                       "2001:db8::1")
    assert not v6.decision.allowed
    # gov-jump's dns lists 10.0.0.0/8 and accepts a /28 from it
    dns = check_request(policy, "U0ALICE", frozenset(), "gov-jump", "53/udp", timedelta(hours=8),
                        "10.1.2.0/28")
    assert dns.decision.allowed


def test_load_policy_accepts_a_path_object(tmp_path: Path) -> None:
    path = tmp_path / "jit.yaml"
    path.write_text(FULL_POLICY, encoding="utf-8")
    assert load_policy(path).source_file == str(path)


def test_parse_policy_takes_a_mapping() -> None:
    policy = parse_policy({
        "targets": {"db": {"aws": {"region": "eu-west-1", "security_group_id": "sg-01234567"},
                           "ports": {"ssh": None}, "approvers": ["U0LEAD1"]}},
    })
    target = policy.targets["db"]
    assert target.ports == {"ssh": PortPolicy("ssh", 22)}
    assert target.requesters == ("*",)
    assert target.max_duration == timedelta(hours=3)
    assert target.approval_timeout == timedelta(hours=1)
    assert policy.slack is None
    assert policy.source_file == "<policy>"


def test_target_settings_override_the_defaults() -> None:
    policy = parse_policy({
        "defaults": {"max_duration": "2h", "approval_timeout": "10m", "requesters": ["@devs"],
                     "approvers": ["U0LEAD1"]},
        "targets": {
            "a": {"aws": {"region": "us-east-1", "security_group_id": "sg-01234567"},
                  "ports": {"ssh": 22}},
            "b": {"aws": {"region": "us-east-1", "security_group_id": "sg-01234567"},
                  "ports": {"ssh": 22}, "max_duration": "20h", "approval_timeout": "1h",
                  "requesters": ["U0BOB"], "approvers": ["@b-owners"]},
        },
    })
    a, b = policy.targets["a"], policy.targets["b"]
    assert (a.max_duration, a.approval_timeout) == (timedelta(hours=2), timedelta(minutes=10))
    assert (a.requesters, a.approvers) == (("@devs",), ("U0LEAD1",))
    assert (b.max_duration, b.approval_timeout) == (timedelta(hours=20), timedelta(hours=1))
    assert (b.requesters, b.approvers) == (("U0BOB",), ("@b-owners",))


def test_auto_approve_alone_is_enough_without_approvers() -> None:
    policy = parse_policy({
        "targets": {"a": {"aws": {"region": "us-east-1", "security_group_id": "sg-01234567"},
                          "ports": {"ssh": 22},
                          "auto_approve": {"users": ["@oncall"]}}},
    })
    assert policy.targets["a"].approvers == ()
    assert policy.targets["a"].auto_approve == AutoApprove(("@oncall",), None)


def test_yaml_anchors_and_merge_keys_work(policy_file: WritePolicy) -> None:
    policy = load_policy(policy_file("""\
        defaults: {approvers: [U0LEAD1]}
        targets:
          a: &web
            aws: {region: us-east-1, security_group_id: sg-01234567}
            ports: {rdp: 3389}
          b:
            <<: *web
            max_duration: 1h
        """))
    assert policy.targets["b"].ports == {"rdp": PortPolicy("rdp", 3389)}
    assert policy.targets["b"].max_duration == timedelta(hours=1)


# --- bad files: one exact message each ----------------------------------------------------

GOOD_TARGET = """\
aws: {region: us-east-1, security_group_id: sg-0abc1234}
ports: {ssh: 22}
"""


def with_target(body: str, defaults: str = "  approvers: [U0LEAD1]\n") -> str:
    return f"defaults:\n{defaults}targets:\n  prod-db:\n{textwrap.indent(body, '    ')}"


BAD_FILES = [
    pytest.param(
        with_target(GOOD_TARGET, defaults="  approvers: [U0LEAD1]\n  max_duraton: 1h\n"),
        "jit.yaml: defaults.max_duraton: unknown field; did you mean max_duration?",
        id="unknown-field-with-suggestion",
    ),
    pytest.param(
        with_target(GOOD_TARGET + "colour: blue\n"),
        "jit.yaml: targets.prod-db.colour: unknown field; expected one of: aws, azure, ports, "
        "requesters, approvers, max_duration, approval_timeout, auto_approve",
        id="unknown-field-listing-fields",
    ),
    pytest.param(
        "slack: {approvals_channel: C0123APPROVE, audit_channel: C0123AUDIT}\n",
        "jit.yaml: targets: is required",
        id="missing-targets",
    ),
    pytest.param(
        "targets: {}\n",
        "jit.yaml: targets: lists no targets; a policy needs at least one",
        id="empty-targets",
    ),
    pytest.param(
        with_target("aws: {region: us-east-1, security_group_id: sg-0abc1234}\n"
                    "ports:\n  ssh: {port: 22, max_duration: 25h}\n"),
        "jit.yaml: targets.prod-db.ports.ssh.max_duration: 25h is longer than the 24h limit",
        id="duration-above-24h",
    ),
    pytest.param(
        with_target(GOOD_TARGET + "max_duration: 90 minutes\n"),
        "jit.yaml: targets.prod-db.max_duration: '90 minutes' is not a duration; "
        "use e.g. 90s, 30m, 2h, 1h30m or 1d",
        id="malformed-duration",
    ),
    pytest.param(
        with_target(GOOD_TARGET, defaults="  approvers: [U0LEAD1]\n  approval_timeout: 60\n"),
        "jit.yaml: defaults.approval_timeout: must be a duration with a unit, e.g. 60m or 60h, "
        "not a bare number",
        id="int-as-duration",
    ),
    pytest.param(
        with_target("aws: {region: us-east-1, security_group_id: sg-0abc1234}\n"
                    "ports:\n  ssh: {allowed_sources: [10.0.0.300/8]}\n"),
        "jit.yaml: targets.prod-db.ports.ssh.allowed_sources[0]: '10.0.0.300/8' is not an IP "
        "address or CIDR range such as 203.0.113.0/24",
        id="bad-cidr",
    ),
    pytest.param(
        with_target("aws: {region: us-east-1, security_group_id: sg-0abc1234}\n"
                    "ports:\n  ssh: {allowed_sources: [198.51.100.0/24, 10.0.0.1/8]}\n"),
        "jit.yaml: targets.prod-db.ports.ssh.allowed_sources[1]: '10.0.0.1/8' has host bits "
        "set; did you mean 10.0.0.0/8?",
        id="host-bits-set",
    ),
    pytest.param(
        with_target(GOOD_TARGET + "azure: {subscription_id: 00000000-0000-0000-0000-000000000000,"
                    " resource_group: rg, network_security_group: nsg, destination: 10.0.1.4}\n"),
        "jit.yaml: targets.prod-db: has both aws and azure; a target is in exactly one cloud",
        id="both-aws-and-azure",
    ),
    pytest.param(
        with_target("ports: {ssh: 22}\n"),
        "jit.yaml: targets.prod-db: needs an aws or an azure section",
        id="neither-aws-nor-azure",
    ),
    pytest.param(
        with_target("aws: {region: us-east-1, security_group_id: sg-0abc123}\nports: {ssh: 22}\n"),
        "jit.yaml: targets.prod-db.aws.security_group_id: 'sg-0abc123' is not a security group "
        "id (sg- and 8 or 17 hex digits)",
        id="bad-security-group-id",
    ),
    pytest.param(
        with_target("aws: {region: us-east-1, security_group_id: sg-0abc1234,"
                    " instance_id: i-0abc1234}\nports: {ssh: 22}\n"),
        "jit.yaml: targets.prod-db.aws: give security_group_id or instance_id, not both",
        id="security-group-and-instance",
    ),
    pytest.param(
        with_target("aws: {region: us-east-1, security_group_id: sg-0abc1234}\n"
                    "ports:\n  app: {protocol: tcp}\n"),
        "jit.yaml: targets.prod-db.ports.app.port: is required: app is not a well-known service "
        "(ssh 22/tcp, rdp 3389/tcp, winrm 5985/tcp, winrm-https 5986/tcp)",
        id="unknown-port-without-number",
    ),
    pytest.param(
        with_target("aws: {region: us-east-1, security_group_id: sg-0abc1234}\n"
                    "ports: {app: 70000}\n"),
        "jit.yaml: targets.prod-db.ports.app.port: 70000 is out of range: it must be from 1 "
        "to 65535",
        id="port-out-of-range",
    ),
    pytest.param(
        with_target("aws: {region: us-east-1, security_group_id: sg-0abc1234}\n"
                    "ports: {ssh: 22, admin: 22}\n"),
        "jit.yaml: targets.prod-db.ports.admin: 22/tcp is already listed as ssh",
        id="same-port-twice",
    ),
    pytest.param(
        with_target("aws: {region: us-east-1, security_group_id: sg-0abc1234}\n"
                    "ports: {dns: {port: 53, protocol: sctp}}\n"),
        "jit.yaml: targets.prod-db.ports.dns.protocol: must be 'tcp' or 'udp', not 'sctp'",
        id="bad-protocol",
    ),
    pytest.param(
        with_target(GOOD_TARGET, defaults='  approvers: ["U0LEAD1", "*"]\n'),
        'jit.yaml: defaults.approvers[1]: "*" is not allowed here: anyone could approve',
        id="star-in-approvers",
    ),
    pytest.param(
        with_target(GOOD_TARGET, defaults="  requesters: ['*']\n"),
        "jit.yaml: targets.prod-db: has no approvers: set approvers here or in defaults, "
        "or add auto_approve",
        id="no-approvers",
    ),
    pytest.param(
        with_target(GOOD_TARGET + "approvers: []\n"),
        "jit.yaml: targets.prod-db.approvers: is empty: nobody could approve requests; "
        "name approvers or add auto_approve",
        id="empty-approvers",
    ),
    pytest.param(
        with_target(GOOD_TARGET + "approvers: [alice]\n"),
        "jit.yaml: targets.prod-db.approvers[0]: 'alice' is not a Slack user id (U0123ABCD) "
        "or @usergroup handle",
        id="bad-principal",
    ),
    pytest.param(
        "slack: {approvals_channel: '#jit-approvals', audit_channel: C0123AUDIT}\n"
        + with_target(GOOD_TARGET),
        "jit.yaml: slack.approvals_channel: '#jit-approvals' is not a Slack channel id such "
        "as C0123ABCD",
        id="bad-channel-id",
    ),
    pytest.param(
        "slack: {approvals_channel: C0123APPROVE}\n" + with_target(GOOD_TARGET),
        "jit.yaml: slack.audit_channel: is required",
        id="missing-channel",
    ),
    pytest.param(
        with_target(GOOD_TARGET + "auto_approve: {users: [U0ONCALL], max_duration: 2h}\n"
                    "max_duration: 1h\n"),
        "jit.yaml: targets.prod-db.auto_approve.max_duration: 2h is longer than the target's "
        "max_duration (1h)",
        id="auto-approve-longer-than-target",
    ),
    pytest.param(
        with_target(GOOD_TARGET + "auto_approve: {users: [U0ONCALL], max_duration: 4h}\n"),
        "jit.yaml: targets.prod-db.auto_approve.max_duration: 4h is longer than "
        "defaults.max_duration (3h)",
        id="auto-approve-longer-than-default",
    ),
    pytest.param(
        with_target(GOOD_TARGET + "auto_approve: {users: ['*']}\n"),
        "jit.yaml: targets.prod-db.auto_approve.users[0]: \"*\" is not allowed here: "
        "everyone's requests would be approved automatically",
        id="star-in-auto-approve",
    ),
    pytest.param(
        "defaults: {approvers: [U0LEAD1]}\ntargets:\n  Prod_DB:\n"
        + textwrap.indent(GOOD_TARGET, "    "),
        "jit.yaml: targets.Prod_DB: 'Prod_DB' is not a valid target name (at most 63 lowercase "
        "letters, digits, '.', '_' or '-', starting with a letter or digit)",
        id="bad-target-name",
    ),
    pytest.param(
        with_target("azure:\n  subscription_id: 00000000-0000-0000-0000-000000000000\n"
                    "  resource_group: rg\n  network_security_group: nsg\n"
                    "  destination: 10.0.1.0/24\n  priority_band: [200, 150]\n"
                    "ports: {rdp: 3389}\n"),
        "jit.yaml: targets.prod-db.azure.destination: '10.0.1.0/24' is not an IP address such "
        "as 10.0.1.4\n"
        "jit.yaml: targets.prod-db.azure.priority_band: [200, 150] has its low end above its "
        "high end",
        id="bad-azure-location",
    ),
    pytest.param(
        with_target(GOOD_TARGET + "requesters: U0ALICE\n"),
        "jit.yaml: targets.prod-db.requesters: must be a list, not text",
        id="scalar-instead-of-list",
    ),
    pytest.param(
        "defaults: {approvers: [U0LEAD1]}\ntargets:\n  on:\n"
        + textwrap.indent(GOOD_TARGET, "    "),
        "jit.yaml: targets.on: must be a valid target name (at most 63 lowercase letters, "
        "digits, '.', '_' or '-', starting with a letter or digit), not true/false (put the "
        "text in quotes)",
        id="yaml-boolean-key",
    ),
    pytest.param(
        with_target(GOOD_TARGET) + "  prod-db:\n" + textwrap.indent(GOOD_TARGET, "    "),
        "jit.yaml: targets.prod-db: is defined twice (lines 4 and 7); remove one",
        id="duplicate-key",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_a_bad_file_gets_an_exact_message(
    policy_file: WritePolicy, text: str, expected: str
) -> None:
    assert problems_in(policy_file(text)) == expected


def test_every_problem_is_reported_in_file_order(policy_file: WritePolicy) -> None:
    path = policy_file("""\
        slack:
          approvals_channel: "#ops"
          audit_channel: C0123AUDIT
        defaults:
          max_duration: 36h
          approvers: [U0LEAD1]
        targets:
          prod-db:
            aws: {region: us-east-1, security_group_id: sg-0abc1234}
            ports:
              ssh: {port: 22, max_duration: 1d1h}
              rdp: {port: 0}
          web-vm:
            azure: {subscription_id: nope, resource_group: rg, network_security_group: nsg,
                    destination: 10.0.1.4}
            ports: {rdp: 3389}
            widgets: 3
        """)
    assert problems_in(path).splitlines() == [
        "jit.yaml: slack.approvals_channel: '#ops' is not a Slack channel id such as C0123ABCD",
        "jit.yaml: defaults.max_duration: 36h is longer than the 24h limit",
        "jit.yaml: targets.prod-db.ports.ssh.max_duration: 1d1h is longer than the 24h limit",
        "jit.yaml: targets.prod-db.ports.rdp.port: 0 is out of range: it must be from 1 to 65535",
        "jit.yaml: targets.web-vm.azure.subscription_id: 'nope' is not a subscription id "
        "(a UUID such as 00000000-0000-0000-0000-000000000000)",
        "jit.yaml: targets.web-vm.widgets: unknown field; expected one of: aws, azure, ports, "
        "requesters, approvers, max_duration, approval_timeout, auto_approve",
    ]


# --- files that are not policies at all ---------------------------------------------------


def test_file_not_found_says_how_to_point_at_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert problems_in("missing.yaml") == (
        "missing.yaml: file not found (set JIT_CONFIG or pass --config)"
    )


def test_a_directory_is_not_a_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("conf").mkdir()
    assert problems_in("conf") == "conf: is a directory, not a policy file"


def test_yaml_syntax_error_names_line_and_column(policy_file: WritePolicy) -> None:
    path = policy_file("targets:\n  prod-db:\n    ports: {ssh: 22\n    aws: x\n")
    assert problems_in(path) == (
        "jit.yaml: line 4, column 8: expected ',' or '}', but got ':' "
        "(while parsing a flow mapping)"
    )


def test_tab_indentation_is_a_syntax_error(policy_file: WritePolicy) -> None:
    path = policy_file("targets:\n\tprod-db: {}\n")
    assert problems_in(path) == (
        "jit.yaml: line 2, column 1: found character '\\t' that cannot start any token "
        "(while scanning for the next token)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "jit.yaml: the policy is empty; it needs at least a targets section"),
        ("# nothing but a comment\n",
         "jit.yaml: the policy is empty; it needs at least a targets section"),
        ("- prod-db\n- web-vm\n",
         "jit.yaml: the top level must be a mapping with slack, defaults and targets, not a list"),
        ("just some words\n",
         "jit.yaml: the top level must be a mapping with slack, defaults and targets, not text"),
    ],
)
def test_a_file_that_is_not_a_mapping(
    policy_file: WritePolicy, text: str, expected: str
) -> None:
    assert problems_in(policy_file(text)) == expected


def test_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("jit.yaml").write_bytes(b"targets: \xff\n")
    assert problems_in("jit.yaml") == "jit.yaml: not UTF-8 text (byte 9)"


def test_control_characters(policy_file: WritePolicy) -> None:
    assert problems_in(policy_file("targets:\n  a: \x01\n")) == (
        "jit.yaml: line 2: special characters are not allowed (character #x0001)"
    )


def test_a_value_yaml_cannot_build(policy_file: WritePolicy) -> None:
    assert problems_in(policy_file("targets: !!int twelve\n")) == (
        "jit.yaml: not valid YAML: invalid literal for int() with base 10: 'twelve'"
    )


def test_python_tags_are_refused(policy_file: WritePolicy) -> None:
    assert problems_in(policy_file("targets: !!python/object/apply:os.getcwd []\n")) == (
        "jit.yaml: line 1, column 10: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.getcwd'"
    )


def test_an_alias_bomb_is_refused_quickly(policy_file: WritePolicy) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    lines.append("targets: *a8")
    assert problems_in(policy_file("\n".join(lines) + "\n")) == (
        "jit.yaml: too large: aliases expand it past 100000 values"
    )


def test_a_self_referencing_alias_is_refused(policy_file: WritePolicy) -> None:
    assert problems_in(policy_file("targets:\n  a: &loop [*loop]\n")) == (
        "jit.yaml: line 2: an alias refers to the value that contains it"
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "<policy>: the policy is empty; it needs at least a targets section"),
        ([1], "<policy>: the top level must be a mapping with slack, defaults and targets, "
              "not a list"),
        ({"targets": {"a": {"aws": {"region": 1}, "ports": {"ssh": 22}}}},
         "<policy>: targets.a.aws.region: must be an AWS region such as us-east-1, not a number"),
        ({"targets": {"a": {"aws": [], "ports": {"ssh": {"allowed_sources": []}}}}},
         "<policy>: targets.a.aws: must be a mapping, not a list\n"
         "<policy>: targets.a.ports.ssh.allowed_sources: lists nothing; leave it out to allow "
         "any address"),
        ({"targets": {"a": {"aws": {"region": "us-east-1", "security_group_id": "sg-01234567"},
                            "ports": {"ssh": "22"}, "approvers": ["U1X"]}}},
         "<policy>: targets.a.ports.ssh: must be a port number or a mapping with port, protocol,"
         " max_duration, allowed_sources, not text"),
    ],
)
def test_parse_policy_messages(data: object, expected: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(data)
    assert str(caught.value) == expected
